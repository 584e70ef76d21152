"""The certificate store with real crypto (security whitepaper 2.6, A02/A03, M03-M05).

The store is version-neutral; the 1.6 round trips are in tests/ocpp16/test_e2e_certificates.py.
"""

from __future__ import annotations

import hashlib
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.core.security import SecurityEventKind
from controller.runtime.clock import ManualClock
from controller.security.certcheck import (
    BadCertificate,
    CertificateHashData,
    HashAlgorithm,
    KeyType,
    looks_like_url_or_ip,
    public_key_bits,
)
from controller.security.certstore import (
    CertificateUse,
    CertStore,
    DeleteStatus,
    InstallStatus,
)
from controller.security.log import SecurityLog
from controller.security.tls import client_identity_usable, valid_pem_certificates
from tests.security.pki import (
    T0,
    Ca,
    ec_key,
    issue,
    key_pem,
    make_root,
    make_sub_ca,
    name,
    pem,
    rsa_root,
)

STATION = "CP-TEST"
CPO = "Test CPO"
MAX_CHAIN = 10000


class Events:
    """Every security event the store records from now on (also the ones the log folds
    into a burst, which its listeners do not see)."""

    def __init__(self, log: SecurityLog) -> None:
        self.kinds: list[SecurityEventKind] = []
        record = log.record

        def spy(kind: SecurityEventKind, tech_info: str | None = None) -> object:
            self.kinds.append(kind)
            return record(kind, tech_info)

        log.record = spy  # type: ignore[method-assign]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log(tmp_path: Path, clock: ManualClock) -> SecurityLog:
    return SecurityLog(tmp_path / "security.log", clock=clock)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock, log: SecurityLog) -> CertStore:
    return CertStore(tmp_path / "sec", clock=clock, security_log=log)


def sign_csr(ca: Ca, csr_pem: str, **kwargs: object) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    return issue(csr.subject, csr.public_key(), ca, **kwargs)  # type: ignore[arg-type]


def test_csr_subject_and_pending_key_mode(store: CertStore) -> None:
    """A02/A03.FR.13: O = CpoName; A00.FR.511: CN = station id; A02.FR.02: a key made on the
    device, P-256 by default (A00.FR.503), kept 0600 (A02.FR.05)."""
    csr = x509.load_pem_x509_csr(store.new_csr(organization=CPO, station_id=STATION).encode())
    assert csr.is_signature_valid
    subject = {a.oid._name: a.value for a in csr.subject}
    assert subject == {"organizationName": CPO, "commonName": STATION}
    assert csr.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    [key_file] = (store.root / "charger" / "pending").glob("*.pem")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    rsa_csr = store.new_csr(organization=CPO, station_id=STATION, key_type=KeyType.RSA_2048)
    assert x509.load_pem_x509_csr(rsa_csr.encode()).public_key().key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize("cn", ["https://cp.example", "10.0.0.7", "::1", "cp/1", ""])
def test_csr_refuses_url_or_ip_cn(store: CertStore, cn: str) -> None:
    """A00.FR.511: the charger's CN is not a URL or an IP address."""
    assert looks_like_url_or_ip(cn) or cn == ""
    with pytest.raises(BadCertificate):
        store.new_csr(organization=CPO, station_id=cn)


def test_csr_needs_cpo_name(store: CertStore) -> None:
    """A02/A03 prerequisite: CpoName MUST be set."""
    with pytest.raises(BadCertificate):
        store.new_csr(organization="", station_id=STATION)


def test_signed_certificate_installed_on_probation_then_current(
    store: CertStore, clock: ManualClock, log: SecurityLog
) -> None:
    """A02/A03.FR.06 valid chain -> installed; A03.FR.08 used from the next connection;
    A03.FR.10 the old one is kept as fallback for a month after the new one worked."""
    events = Events(log)
    root = make_root()
    sub = make_sub_ca(root)
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    # An old certificate in use (the first-boot preset).
    old_key = ec_key()
    old = issue(name(STATION, CPO), old_key.public_key(), sub)
    old_chain = store.root.parent / "old.pem"
    old_chain.write_text(pem(old) + sub.pem)
    old_key_file = store.root.parent / "old.key"
    old_key_file.write_bytes(key_pem(old_key))
    store.apply_presets(client_cert=str(old_chain), client_key=str(old_key_file))
    assert store.client_identity() == (
        str(store.root / "charger/current/chain.pem"),
        str(store.root / "charger/current/key.pem"),
    )
    csr = store.new_csr(organization=CPO, station_id=STATION)
    new = sign_csr(sub, csr, not_before=T0 - timedelta(hours=1))
    assert store.accept_signed(
        pem(new) + sub.pem, organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    assert events.kinds[-1] is SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS
    assert not (store.root / "charger/pending").exists()
    ident = store.client_identity()
    assert ident is not None and ident[0].endswith("charger/new/chain.pem")
    assert stat.S_IMODE(Path(ident[1]).stat().st_mode) == 0o600
    leaf = x509.load_pem_x509_certificates(Path(ident[0]).read_bytes())[0]
    assert leaf.serial_number == new.serial_number
    store.connection_succeeded(3)
    ident = store.client_identity()
    assert ident is not None and ident[0].endswith("charger/current/chain.pem")
    assert (store.root / "charger/previous/chain.pem").exists()
    # A03.FR.10: the previous one goes after a month.
    clock.step_wall(T0 + timedelta(days=31))
    store.client_identity()
    assert not (store.root / "charger/previous").exists()


def test_failed_probation_returns_to_the_old_certificate(store: CertStore) -> None:
    root = make_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    old_key = ec_key()
    (store.root.parent / "c.pem").write_text(
        pem(issue(name(STATION, CPO), old_key.public_key(), root))
    )
    (store.root.parent / "c.key").write_bytes(key_pem(old_key))
    store.apply_presets(
        client_cert=str(store.root.parent / "c.pem"), client_key=str(store.root.parent / "c.key")
    )
    new = sign_csr(root, store.new_csr(organization=CPO, station_id=STATION))
    assert store.accept_signed(
        pem(new), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    ident = store.client_identity()
    assert ident is not None and "/new/" in ident[0]
    store.connection_failed(3)
    ident = store.client_identity()
    assert ident is not None and "/current/" in ident[0]
    store.connection_succeeded(3)  # with the old one: nothing to promote
    assert (store.root / "charger/new").exists()


def test_not_yet_valid_certificate_waits_for_its_not_before(
    store: CertStore, clock: ManualClock
) -> None:
    """A03.FR.08: switch to the new certificate once its notBefore passed."""
    root = make_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    old_key = ec_key()
    (store.root.parent / "c.pem").write_text(
        pem(issue(name(STATION, CPO), old_key.public_key(), root))
    )
    (store.root.parent / "c.key").write_bytes(key_pem(old_key))
    store.apply_presets(
        client_cert=str(store.root.parent / "c.pem"), client_key=str(store.root.parent / "c.key")
    )
    later = sign_csr(
        root, store.new_csr(organization=CPO, station_id=STATION), not_before=T0 + timedelta(days=2)
    )
    assert store.accept_signed(
        pem(later), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    ident = store.client_identity()
    assert ident is not None and "/current/" in ident[0]
    clock.step_wall(T0 + timedelta(days=2, seconds=1))
    ident = store.client_identity()
    assert ident is not None and "/new/" in ident[0]


def _bad_chains(root: Ca, sub: Ca, csr_pem: str) -> dict[str, str]:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    pub = csr.public_key()
    other_root = make_root("Other Root")
    return {
        "malformed PEM": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        "not PEM": "hello",
        "wrong key": pem(issue(name(STATION, CPO), ec_key().public_key(), sub)) + sub.pem,
        "expired": pem(
            issue(
                csr.subject,
                pub,
                sub,
                not_before=T0 - timedelta(days=30),
                not_after=T0 - timedelta(days=1),
            )  # type: ignore[arg-type]
        )
        + sub.pem,
        "not yet valid (beyond a month)": pem(
            issue(csr.subject, pub, sub, not_before=T0 + timedelta(days=31))  # type: ignore[arg-type]
        )
        + sub.pem,
        "wrong CN": pem(issue(name("CP-OTHER", CPO), pub, sub)) + sub.pem,  # type: ignore[arg-type]
        "wrong O": pem(issue(name(STATION, "Evil CPO"), pub, sub)) + sub.pem,  # type: ignore[arg-type]
        "not to an installed root": pem(issue(csr.subject, pub, other_root)) + other_root.pem,  # type: ignore[arg-type]
        "missing sub-CA": pem(issue(csr.subject, pub, sub)),  # type: ignore[arg-type]
        "a CA": pem(issue(csr.subject, pub, sub, ca=True)) + sub.pem,  # type: ignore[arg-type]
        "too long chain": pem(issue(csr.subject, pub, sub)) + sub.pem * 20,  # type: ignore[arg-type]
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed PEM",
        "not PEM",
        "wrong key",
        "expired",
        "not yet valid (beyond a month)",
        "wrong CN",
        "wrong O",
        "not to an installed root",
        "missing sub-CA",
        "a CA",
        "too long chain",
    ],
)
def test_invalid_signed_certificate_discarded_with_event(
    store: CertStore, log: SecurityLog, case: str
) -> None:
    """A02/A03.FR.06/07: an invalid certificate is discarded and raises
    InvalidChargingStationCertificate; CertificateSignedMaxChainSize bounds the chain."""
    root = make_root()
    sub = make_sub_ca(root)
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    events = Events(log)
    csr = store.new_csr(organization=CPO, station_id=STATION)
    chain = _bad_chains(root, sub, csr)[case]
    max_chars = 3000 if case == "too long chain" else MAX_CHAIN
    assert not store.accept_signed(
        chain, organization=CPO, station_id=STATION, max_chain_chars=max_chars
    )
    assert events.kinds == [SecurityEventKind.INVALID_CHARGING_STATION_CERTIFICATE]
    assert store.client_identity() is None
    assert not (store.root / "charger/new").exists()
    # The CSR stays open: a correct certificate for it is still taken.
    good = sign_csr(sub, csr)
    assert store.accept_signed(
        pem(good) + sub.pem, organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )


def test_signed_without_open_csr_rejected(store: CertStore, log: SecurityLog) -> None:
    root = make_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    events = Events(log)
    cert = issue(name(STATION, CPO), ec_key().public_key(), root)
    assert not store.accept_signed(
        pem(cert), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    assert events.kinds == [SecurityEventKind.INVALID_CHARGING_STATION_CERTIFICATE]


def test_hash_data_follows_ocsp(store: CertStore) -> None:
    """6.1 CertificateHashDataType (RFC 6960 CertID): issuerNameHash over the issuer DN's
    DER, issuerKeyHash over the issuer key's BIT STRING value, serial in hex without
    leading zeros; M03.FR.04."""
    key = ec_key()
    root = Ca(
        issue(name("Root 4095"), key.public_key(), None, signing_key=key, ca=True, serial=4095), key
    )
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    for algorithm, h in (
        (HashAlgorithm.SHA256, hashlib.sha256),
        (HashAlgorithm.SHA384, hashlib.sha384),
        (HashAlgorithm.SHA512, hashlib.sha512),
    ):
        [data] = store.installed_hashes(CertificateUse.CSMS_ROOT, algorithm)
        assert data.serial_number == "FFF"
        assert data.issuer_name_hash == h(root.cert.issuer.public_bytes()).hexdigest()
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        assert public_key_bits(key.public_key()) == point
        assert data.issuer_key_hash == h(point).hexdigest()
    rsa = rsa_root(2048)
    pkcs1 = rsa.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert public_key_bits(rsa.cert.public_key()) == pkcs1


def test_install_checks(store: CertStore, clock: ManualClock, log: SecurityLog) -> None:
    """M05.FR.02/03/06: Accepted; Rejected for malformed, non-CA, expired, weak key, more
    than one certificate, a full store (CertificateStoreMaxLength counts both kinds)."""
    events = Events(log)
    root = make_root()
    csms = CertificateUse.CSMS_ROOT
    assert store.install_root(csms, root.pem, max_count=2) is InstallStatus.ACCEPTED
    assert events.kinds == [SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS]
    assert store.install_root(csms, root.pem, max_count=2) is InstallStatus.ACCEPTED  # again
    assert len(store.roots(csms)) == 1
    leaf = issue(name("leaf"), ec_key().public_key(), root)
    no_bc = issue(name("nobc"), ec_key().public_key(), root, basic_constraints=False)
    expired = make_root(
        "old", not_before=T0 - timedelta(days=10), not_after=T0 - timedelta(seconds=1)
    )
    for bad in (
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        pem(leaf),
        pem(no_bc),
        expired.pem,
        rsa_root(1024).pem,
        make_root("a").pem + make_root("b").pem,
    ):
        assert store.install_root(csms, bad, max_count=20) is InstallStatus.REJECTED
    manu = CertificateUse.MANUFACTURER_ROOT
    assert store.install_root(manu, make_root("M").pem, max_count=2) is InstallStatus.ACCEPTED
    assert store.install_root(manu, make_root("M2").pem, max_count=2) is InstallStatus.REJECTED
    assert store.manufacturer_roots_pem().count("BEGIN CERTIFICATE") == 1
    assert store.csms_roots_pem() == root.pem


def test_install_write_error_is_failed(store: CertStore) -> None:
    """M05.FR.04: a valid certificate that cannot be written (its directory is gone, as
    on a failing SD card; permissions would not stop root) is Failed, not Rejected."""
    import shutil

    shutil.rmtree(store.root / "csms-root")
    status = store.install_root(CertificateUse.CSMS_ROOT, make_root().pem, max_count=20)
    assert status is InstallStatus.FAILED


def test_delete_rules(store: CertStore, log: SecurityLog) -> None:
    """M04.FR.02/04/05/06/07."""
    root1, root2 = make_root("R1"), make_root("R2")
    store.install_root(CertificateUse.CSMS_ROOT, root1.pem, max_count=20)
    store.install_root(CertificateUse.CSMS_ROOT, root2.pem, max_count=20)
    manu = make_root("M")
    store.install_root(CertificateUse.MANUFACTURER_ROOT, manu.pem, max_count=20)
    events = Events(log)
    h384 = store.installed_hashes(CertificateUse.CSMS_ROOT, HashAlgorithm.SHA384)
    h256 = store.installed_hashes(CertificateUse.CSMS_ROOT, HashAlgorithm.SHA256)
    # M04.FR.07: the hash is matched with the algorithm given; a SHA384 digest labelled
    # SHA256 matches nothing.
    wrong = CertificateHashData(
        HashAlgorithm.SHA256,
        *[getattr(h384[0], f) for f in ("issuer_name_hash", "issuer_key_hash", "serial_number")],
    )
    assert store.delete(wrong, keep_last_csms_root=True) is DeleteStatus.NOT_FOUND
    # Upper case hex and a leading zero in the serial still match.
    first = h384[0]
    loose = CertificateHashData(
        first.hash_algorithm,
        first.issuer_name_hash.upper(),
        first.issuer_key_hash.upper(),
        "0" + first.serial_number,
    )
    assert store.delete(loose, keep_last_csms_root=True) is DeleteStatus.DELETED
    assert events.kinds == [SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS]
    remaining = store.installed_hashes(CertificateUse.CSMS_ROOT)
    assert len(remaining) == 1 and remaining[0] in h256
    # M04.FR.06: not the last CSMS root while TLS is in use.
    assert store.delete(remaining[0], keep_last_csms_root=True) is DeleteStatus.FAILED
    assert store.delete(remaining[0], keep_last_csms_root=False) is DeleteStatus.DELETED
    assert store.installed_hashes(CertificateUse.CSMS_ROOT) == []
    [m] = store.installed_hashes(CertificateUse.MANUFACTURER_ROOT)
    assert store.delete(m, keep_last_csms_root=True) is DeleteStatus.DELETED  # allowed (M04 remark)
    assert store.delete(m, keep_last_csms_root=True) is DeleteStatus.NOT_FOUND


def test_charger_certificate_cannot_be_deleted(store: CertStore) -> None:
    """M04.FR.05."""
    root = make_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    cert = sign_csr(root, store.new_csr(organization=CPO, station_id=STATION))
    assert store.accept_signed(
        pem(cert), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    [own] = store.installed_hashes(CertificateUse.CHARGING_STATION)
    assert own.serial_number == format(cert.serial_number, "X")
    assert store.delete(own, keep_last_csms_root=False) is DeleteStatus.FAILED
    assert store.client_identity() is not None


def test_presets_once_and_restart_keeps_store(
    tmp_path: Path, clock: ManualClock, log: SecurityLog
) -> None:
    """[csms] ca_bundle installed once when the store has none; a later edit of the TOML
    file does not bring back a root the CSMS deleted; a new process sees the same store."""
    r1, r2 = make_root("R1"), make_root("R2")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(r1.pem + r2.pem)
    store = CertStore(tmp_path / "sec", clock=clock, security_log=log)
    store.apply_presets(ca_bundle=str(bundle))
    assert len(store.roots(CertificateUse.CSMS_ROOT)) == 2
    for h in store.installed_hashes(CertificateUse.CSMS_ROOT):
        store.delete(h, keep_last_csms_root=False)
    bundle.write_text(make_root("R3").pem)
    again = CertStore(tmp_path / "sec", clock=clock, security_log=log)  # a restart
    again.apply_presets(ca_bundle=str(bundle))
    assert again.roots(CertificateUse.CSMS_ROOT) == []
    again.install_root(CertificateUse.MANUFACTURER_ROOT, r1.pem, max_count=20)
    third = CertStore(tmp_path / "sec", clock=clock, security_log=log)
    assert len(third.roots(CertificateUse.MANUFACTURER_ROOT)) == 1


def test_preset_key_must_match(tmp_path: Path, clock: ManualClock) -> None:
    root = make_root()
    cert = issue(name(STATION, CPO), ec_key().public_key(), root)
    (tmp_path / "c.pem").write_text(pem(cert))
    (tmp_path / "k.pem").write_bytes(key_pem(ec_key()))
    store = CertStore(tmp_path / "sec", clock=clock)
    store.apply_presets(client_cert=str(tmp_path / "c.pem"), client_key=str(tmp_path / "k.pem"))
    assert store.client_identity() is None


def test_renewal_due_a_month_before_expiry_once_a_day(store: CertStore, clock: ManualClock) -> None:
    """A03.FR.02: a CSR when the certificate expires within a month; at most daily."""
    root = make_root(not_after=T0 + timedelta(days=400))
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    key = ec_key()
    cert = issue(name(STATION, CPO), key.public_key(), root, not_after=T0 + timedelta(days=40))
    (store.root.parent / "c.pem").write_text(pem(cert))
    (store.root.parent / "c.key").write_bytes(key_pem(key))
    store.apply_presets(
        client_cert=str(store.root.parent / "c.pem"), client_key=str(store.root.parent / "c.key")
    )
    assert not store.renewal_due()
    clock.step_wall(T0 + timedelta(days=11))
    assert store.renewal_due()
    store.note_renewal_requested()
    clock.step_wall(T0 + timedelta(days=11, hours=23))
    assert not store.renewal_due()
    clock.step_wall(T0 + timedelta(days=12, seconds=1))
    assert store.renewal_due()
    store.note_renewal_requested()
    renewed = sign_csr(
        root,
        store.new_csr(organization=CPO, station_id=STATION),
        not_before=T0 + timedelta(days=12),
        not_after=T0 + timedelta(days=300),
    )
    assert store.accept_signed(
        pem(renewed), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    clock.step_wall(T0 + timedelta(days=14))
    assert not store.renewal_due()


def test_chain_may_carry_the_root_and_prerequisites(store: CertStore, clock: ManualClock) -> None:
    """A02.FR.06 with the root in the chain as well; A05.FR.03/04 prerequisites (a valid
    CSMS root, a valid charger certificate) for the security profile guard."""
    root = make_root(not_after=T0 + timedelta(days=100))
    sub = make_sub_ca(root, not_after=T0 + timedelta(days=100))

    def has_valid_csms_root() -> bool:  # the checks the SecurityProfile guard runs on it
        return valid_pem_certificates(store.csms_roots_pem(), clock.utc_now()) > 0

    def has_valid_identity() -> bool:
        return client_identity_usable(store, clock.utc_now()) is None

    assert not has_valid_csms_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    assert has_valid_csms_root() and not has_valid_identity()
    cert = sign_csr(sub, store.new_csr(organization=CPO, station_id=STATION))
    chain = pem(cert) + sub.pem + root.pem
    assert store.accept_signed(
        chain, organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    assert has_valid_identity()
    clock.step_wall(T0 + timedelta(days=400))
    assert not has_valid_csms_root() and not has_valid_identity()


def test_certificate_for_an_earlier_open_csr_fits(store: CertStore) -> None:
    """A CSMS that triggered twice before its CA answered: the certificate for the first
    CSR is still taken (the last three CSRs' keys are kept); afterwards none is open."""
    root = make_root()
    store.install_root(CertificateUse.CSMS_ROOT, root.pem, max_count=20)
    csrs = [store.new_csr(organization=CPO, station_id=STATION) for _ in range(4)]
    assert len(list((store.root / "charger/pending").glob("*.pem"))) == 3
    first = sign_csr(root, csrs[0])  # pruned: too old
    assert not store.accept_signed(
        pem(first), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    second = sign_csr(root, csrs[1])
    assert store.accept_signed(
        pem(second), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
    late = sign_csr(root, csrs[3])
    assert not store.accept_signed(
        pem(late), organization=CPO, station_id=STATION, max_chain_chars=MAX_CHAIN
    )
