"""End-to-end: the security whitepaper's certificate messages over a real WebSocket CSMS
(A02/A03 SignCertificate -> CertificateSigned, M03 GetInstalledCertificateIds, M04
DeleteCertificate, M05 InstallCertificate, 5.5 ExtendedTriggerMessage), with real crypto.

The profile-3 connection with the installed certificate is the TLS work's test; here
``client_identity()`` is what the next connection would present.
"""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from controller.dev.devcsms import CsrSigner, DevCsms
from controller.ocpp16.routes import TRIGGERS
from controller.security.certstore import CertificateUse, CertStore
from tests.conftest import STATION_ID, Harness
from tests.security.pki import T0, Ca, ec_key, issue, key_pem, make_root, make_sub_ca, name, pem

CPO = "Test CPO"
CSMS_ROOT = "CentralSystemRootCertificate"
MANUFACTURER_ROOT = "ManufacturerRootCertificate"


def write_pki(tmp_path: Path) -> tuple[Ca, Ca, Path]:
    """A CPO root, a sub-CA that signs charger certificates, the root as [csms] ca_bundle."""
    root = make_root("Test CPO Root", not_after=T0 + timedelta(days=3650))
    sub = make_sub_ca(root, not_after=T0 + timedelta(days=1825))
    bundle = tmp_path / "cpo-root.pem"
    bundle.write_text(root.pem)
    return root, sub, bundle


async def start(charger: Any, csms: DevCsms, bundle: Path, **kwargs: Any) -> Harness:
    ocpp = {"CpoName": CPO, **kwargs.pop("ocpp", {})}
    h: Harness = await charger(csms, ocpp=ocpp, ca_bundle=str(bundle), **kwargs)
    return h


def store_of(h: Harness) -> CertStore:
    store = h.app.certstore
    assert store is not None
    return store


def readonly_key(h: Harness, name: str, value: str) -> None:
    """Set a key neither the TOML nor the CSMS may change (read-only), as a build would."""
    assert h.app.client is not None
    h.app.client.settings.set_internal(name, value)


def security_events(h: Harness, kind: str) -> list[Any]:
    return [f for f in h.frames("SecurityEventNotification") if f.payload["type"] == kind]


async def test_sign_certificate_round_trip(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """A02.FR.02/03: ExtendedTriggerMessage(SignChargePointCertificate) -> a new key pair and
    SignCertificate with a PEM CSR, O = CpoName (A02.FR.13), CN = station id (A00.FR.511);
    the dev CSMS's CA signs it -> CertificateSigned Accepted (A02.FR.06) -> the next
    connection presents it (A02.FR.08); ReconfigurationOfSecurityParameters is sent."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    signer = CsrSigner(sub.pem, sub.key_pem, chain_pem=sub.pem, now=h.clock.utc_now)
    csms.csr_signer = signer
    assert store_of(h).client_identity() is None
    status = await csms.extended_trigger(STATION_ID, "SignChargePointCertificate")
    assert status == "Accepted"
    frame = await csms.wait_for(lambda f: f.action == "SignCertificate", timeout_s=10)
    csr = x509.load_pem_x509_csr(frame.payload["csr"].encode())
    assert csr.is_signature_valid
    assert [a.value for a in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)] == [
        STATION_ID
    ]
    orgs = csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [a.value for a in orgs] == [CPO]
    await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
    ident = store_of(h).client_identity()
    assert ident is not None
    chain_path, key_path = map(Path, ident)
    leaf = x509.load_pem_x509_certificates(chain_path.read_bytes())[0]
    assert leaf.serial_number == signer.signed[0].serial_number
    # A02.FR.05: the private key stays on the charger, readable by its service user only.
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.parent.parent.stat().st_mode) == 0o700
    await h.settle(lambda: bool(security_events(h, "ReconfigurationOfSecurityParameters")))


async def test_rejected_certificates_keep_the_old_one(
    charger: Any, csms: DevCsms, tmp_path: Path
) -> None:
    """A02/A03.FR.06/07: malformed PEM, a certificate for another key, expired, not yet
    valid (beyond a month), wrong CN, not under an installed CSMS root, a chain longer than
    CertificateSignedMaxChainSize -> Rejected, InvalidChargePointCertificate, and the
    certificate in use stays."""
    root, sub, bundle = write_pki(tmp_path)
    old_key = ec_key()
    old_cert = tmp_path / "old.pem"
    old_cert.write_text(pem(issue(name(STATION_ID, CPO), old_key.public_key(), sub)) + sub.pem)
    old_key_file = tmp_path / "old.key"
    old_key_file.write_bytes(key_pem(old_key))
    h = await start(
        charger,
        csms,
        bundle,
        client_cert=str(old_cert),
        client_key=str(old_key_file),
    )
    readonly_key(h, "CertificateSignedMaxChainSize", "3000")
    store = store_of(h)
    in_use = store.client_identity()
    assert in_use is not None and "/current/" in in_use[0]
    csms.csr_signer = lambda csr: None  # Accepted, but the CA answers by hand below
    assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Accepted"
    frame = await csms.wait_for(lambda f: f.action == "SignCertificate", timeout_s=10)
    csr = x509.load_pem_x509_csr(frame.payload["csr"].encode())
    pub: Any = csr.public_key()
    other = make_root("Other CPO Root")
    bad = {
        "malformed": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "wrong key": pem(issue(csr.subject, ec_key().public_key(), sub)) + sub.pem,
        "expired": pem(
            issue(csr.subject, pub, sub, not_before=T0 - timedelta(days=9), not_after=T0)
        )
        + sub.pem,
        "not yet valid": pem(issue(csr.subject, pub, sub, not_before=T0 + timedelta(days=40)))
        + sub.pem,
        "wrong CN": pem(issue(name("CP-ELSEWHERE", CPO), pub, sub)) + sub.pem,
        "foreign root": pem(issue(csr.subject, pub, other)) + other.pem,
        "too long": pem(issue(csr.subject, pub, sub)) + sub.pem * 5,
    }
    for case, chain in bad.items():
        assert await csms.certificate_signed(STATION_ID, chain) == "Rejected", case
        assert store.client_identity() == in_use, case
    # The log folds a burst into one record; the CSMS hears of it (A02.FR.07).
    await h.settle(lambda: bool(security_events(h, "InvalidChargePointCertificate")))
    good = pem(issue(csr.subject, pub, sub)) + sub.pem
    assert await csms.certificate_signed(STATION_ID, good) == "Accepted"
    new = store.client_identity()
    assert new is not None and "/new/" in new[0]


async def test_sign_certificate_rejected_by_csms_asks_again_on_next_trigger(
    charger: Any, csms: DevCsms, tmp_path: Path
) -> None:
    """A02.FR.12: SignCertificate.conf Rejected is logged; the next trigger sends a new CSR.
    Without CpoName (the use case's prerequisite) the trigger is Rejected."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    assert csms.csr_signer is None  # the dev CSMS answers Rejected
    assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Accepted"
    await h.settle(lambda: len(h.frames("SignCertificate")) == 1)
    assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Accepted"
    await h.settle(lambda: len(h.frames("SignCertificate")) == 2)
    first, second = (f.payload["csr"] for f in h.frames("SignCertificate"))
    assert first != second  # a new key pair each time
    assert h.app.client is not None
    h.app.client.settings.set_internal("CpoName", "")
    assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Rejected"


async def test_install_get_delete_round_trip(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """M05.FR.02/03/06, M03.FR.02/03/04, M04.FR.02/04/06: install, list, delete, NotFound;
    a full store (CertificateStoreMaxLength) and a non-CA certificate are Rejected; the
    last CSMS root is not deleted while the connection uses TLS."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    readonly_key(h, "CertificateStoreMaxLength", "3")
    listed = await csms.installed_certificate_ids(STATION_ID, CSMS_ROOT)
    assert listed["status"] == "Accepted" and len(listed["certificateHashData"]) == 1
    assert listed["certificateHashData"][0]["serialNumber"] == format(root.cert.serial_number, "X")
    assert (await csms.installed_certificate_ids(STATION_ID, MANUFACTURER_ROOT)) == {
        "status": "NotFound"
    }
    manu = make_root("Manufacturer Root")
    assert await csms.install_certificate(STATION_ID, MANUFACTURER_ROOT, manu.pem) == "Accepted"
    leaf = issue(name("not a CA"), ec_key().public_key(), root)
    assert await csms.install_certificate(STATION_ID, CSMS_ROOT, pem(leaf)) == "Rejected"
    assert await csms.install_certificate(STATION_ID, CSMS_ROOT, "garbage") == "Rejected"
    second = make_root("Second CPO Root")
    assert await csms.install_certificate(STATION_ID, CSMS_ROOT, second.pem) == "Accepted"
    full = make_root("One Too Many")
    assert await csms.install_certificate(STATION_ID, CSMS_ROOT, full.pem) == "Rejected"
    assert store_of(h).manufacturer_roots_pem() == manu.pem
    [manu_hash] = (await csms.installed_certificate_ids(STATION_ID, MANUFACTURER_ROOT))[
        "certificateHashData"
    ]
    assert await csms.delete_certificate(STATION_ID, manu_hash) == "Accepted"
    assert await csms.delete_certificate(STATION_ID, manu_hash) == "NotFound"
    assert (await csms.installed_certificate_ids(STATION_ID, MANUFACTURER_ROOT))[
        "status"
    ] == "NotFound"
    roots = (await csms.installed_certificate_ids(STATION_ID, CSMS_ROOT))["certificateHashData"]
    assert len(roots) == 2
    assert await csms.delete_certificate(STATION_ID, roots[0]) == "Accepted"
    # M04.FR.06: the connection uses TLS (SecurityProfile 2): the last CSMS root stays.
    assert h.app.client is not None
    readonly_key(h, "SecurityProfile", "2")
    assert await csms.delete_certificate(STATION_ID, roots[1]) == "Failed"
    assert len(store_of(h).roots(CertificateUse.CSMS_ROOT)) == 1
    await h.settle(lambda: bool(security_events(h, "ReconfigurationOfSecurityParameters")))


async def test_charger_certificate_not_deletable_and_store_survives_restart(
    charger: Any, csms: DevCsms, tmp_path: Path
) -> None:
    """M04.FR.05: DeleteCertificate of the charger's own certificate is Failed; a restart
    keeps roots and the charger certificate (the TOML presets are not applied again)."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    csms.csr_signer = CsrSigner(sub.pem, sub.key_pem, chain_pem=sub.pem, now=h.clock.utc_now)
    assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Accepted"
    await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
    store = store_of(h)
    [own] = store.installed_hashes(CertificateUse.CHARGING_STATION)
    own_16 = {
        "hashAlgorithm": own.hash_algorithm.value,
        "issuerNameHash": own.issuer_name_hash,
        "issuerKeyHash": own.issuer_key_hash,
        "serialNumber": own.serial_number,
    }
    assert await csms.delete_certificate(STATION_ID, own_16) == "Failed"
    ident = store.client_identity()
    assert await csms.install_certificate(STATION_ID, MANUFACTURER_ROOT, root.pem) == "Accepted"
    await h.app.stop(reason=None)
    await csms.wait_disconnected(STATION_ID)
    bundle.write_text(make_root("Edited bundle").pem)  # not installed: the store has roots
    h2 = await start(charger, csms, bundle, boot_id="boot-2")
    again = store_of(h2)
    assert again.client_identity() == ident
    assert again.csms_roots_pem() == root.pem
    assert again.manufacturer_roots_pem() == root.pem
    listed = await csms.installed_certificate_ids(STATION_ID, CSMS_ROOT)
    assert listed["status"] == "Accepted" and len(listed["certificateHashData"]) == 1


async def test_extended_trigger_message_values(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """5.5/6.16 MessageTriggerEnumType: BootNotification (Rejected once Accepted, errata
    3.35 as TriggerMessage), Heartbeat, MeterValues, StatusNotification through the same
    helper as TriggerMessage; FirmwareStatusNotification / LogStatusNotification answer
    NotImplemented until their feature registers them; an unknown connector is Rejected."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    assert await csms.extended_trigger(STATION_ID, "BootNotification") == "Rejected"
    beats = len(h.frames("Heartbeat"))
    assert await csms.extended_trigger(STATION_ID, "Heartbeat") == "Accepted"
    await h.settle(lambda: len(h.frames("Heartbeat")) == beats + 1)
    statuses = len(h.frames("StatusNotification"))
    assert await csms.extended_trigger(STATION_ID, "StatusNotification", 1) == "Accepted"
    await h.settle(lambda: len(h.frames("StatusNotification")) == statuses + 1)
    assert h.frames("StatusNotification")[-1].payload["connectorId"] == 1
    meters = len(h.frames("MeterValues"))
    assert await csms.extended_trigger(STATION_ID, "MeterValues", 1) == "Accepted"
    await h.settle(lambda: len(h.frames("MeterValues")) == meters + 1)
    for message in ("FirmwareStatusNotification", "LogStatusNotification"):
        status = await csms.extended_trigger(STATION_ID, message)
        if message not in TRIGGERS:  # registered by the firmware / diagnostics features
            assert status == "NotImplemented"
    assert await csms.extended_trigger(STATION_ID, "Heartbeat", 7) == "Rejected"


async def test_renewal_a_month_before_expiry(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """A03.FR.02: the charger certificate expires within 30 days -> SignCertificate by the
    charger itself, at most once a day while no new certificate came (time injected)."""
    root, sub, bundle = write_pki(tmp_path)
    key = ec_key()
    cert = tmp_path / "soon.pem"
    cert.write_text(
        pem(issue(name(STATION_ID, CPO), key.public_key(), sub, not_after=T0 + timedelta(days=20)))
        + sub.pem
    )
    key_file = tmp_path / "soon.key"
    key_file.write_bytes(key_pem(key))
    h = await start(charger, csms, bundle, client_cert=str(cert), client_key=str(key_file))
    await h.advance(3600, step_s=600)
    await h.settle(lambda: len(h.frames("SignCertificate")) == 1)
    await h.advance(6 * 3600, step_s=1800)
    assert len(h.frames("SignCertificate")) == 1  # Rejected by the CSMS, asked again tomorrow
    await h.advance(18 * 3600, step_s=1800)
    await h.settle(lambda: len(h.frames("SignCertificate")) == 2)
    # Renewed: the CA signs the next CSR, and no more requests follow.
    csms.csr_signer = CsrSigner(sub.pem, sub.key_pem, chain_pem=sub.pem, now=h.clock.utc_now)
    await h.advance(25 * 3600, step_s=1800)
    await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
    count = len(h.frames("SignCertificate"))
    await h.advance(25 * 3600, step_s=1800)
    assert len(h.frames("SignCertificate")) == count


async def test_hostile_certificate_requests_answered_without_effect(
    charger: Any, csms: DevCsms, tmp_path: Path
) -> None:
    """Untrusted input: out-of-schema requests get the OCPP-J error, in-schema garbage the
    right status; nothing is installed and the connection stays."""
    root, sub, bundle = write_pki(tmp_path)
    h = await start(charger, csms, bundle)
    frame = await csms.call_raw(
        STATION_ID, "InstallCertificate", {"certificateType": "EvilRoot", "certificate": "x"}
    )
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation"
    frame = await csms.call_raw(
        STATION_ID,
        "DeleteCertificate",
        {
            "certificateHashData": {
                "hashAlgorithm": "MD5",
                "issuerNameHash": "00",
                "issuerKeyHash": "00",
                "serialNumber": "1",
            }
        },
    )
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation"
    header, footer = "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"
    for junk in ("é" * 50, header + "A" * 4000 + footer, header + "MIIB" + footer, root.pem[:200]):
        assert await csms.install_certificate(STATION_ID, CSMS_ROOT, junk) == "Rejected"
        assert await csms.certificate_signed(STATION_ID, junk) == "Rejected"
    unknown = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "ab" * 32,
        "issuerKeyHash": "cd" * 32,
        "serialNumber": "0",
    }
    assert await csms.delete_certificate(STATION_ID, unknown) == "NotFound"
    assert store_of(h).csms_roots_pem() == root.pem
    assert csms.connected(STATION_ID)
