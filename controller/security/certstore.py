"""The charger's certificate store on disk: CSMS and manufacturer roots, its own certificate."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from controller.core.security import SecurityEventKind
from controller.core.timestamps import iso_utc
from controller.runtime.clock import Clock
from controller.security.certcheck import (
    BadCertificate,
    CertificateHashData,
    HashAlgorithm,
    KeyType,
    check_ca,
    fingerprint,
    generate_key,
    hash_data,
    issuer_key_for,
    load_pem_chain,
    make_csr,
    to_pem,
    verify_station_chain,
)
from controller.security.certtypes import (
    ROOT_USES,
    CertificateUse,
    DeleteStatus,
    InstallStatus,
)
from controller.security.log import SecurityLog

LOG = logging.getLogger(__name__)

# A03.FR.02: a new certificate is asked for when the one in use expires within a month;
# at most once a day while none came (the whitepaper advises against tight retries: a CSR
# the CA refuses is not fixed by sending it again).
RENEW_BEFORE = timedelta(days=30)
RENEW_REQUEST_INTERVAL = timedelta(days=1)
# A03.FR.10: the certificate before the one that worked is kept a month as a fallback.
FALLBACK_KEEP = timedelta(days=30)

# What parsing or checking a certificate from the network may raise besides BadCertificate
# (a ValueError): malformed extensions, key types the library refuses.
_BAD_CERT = (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)

KEY_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class Identity:
    """A charger certificate slot: the chain (leaf first) and its private key's path."""

    slot: str
    chain: list[x509.Certificate]
    chain_path: Path
    key_path: Path

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


# Slots of the charger's certificate (directories under certs/charger/):
CURRENT = "current"  # the one in use (worked, or the first-boot preset)
NEW = "new"  # from CertificateSigned, on probation until a connection with it worked
PREVIOUS = "previous"  # the one before, kept FALLBACK_KEEP after the new one worked
CHAIN_FILE = "chain.pem"
KEY_FILE = "key.pem"
PENDING_DIR = "pending"  # keys of open CSRs, named by their public key's SHA-256
# A CSMS may trigger twice before its CA answers: the certificate for either CSR fits.
PENDING_KEEP = 3
STATE_FILE = "state.json"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` so that a power cut leaves the old or the new content: a temporary
    file in the same directory, fsynced, renamed over it, then the directory fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_id(key: PublicKeyTypes) -> str:
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertStore:
    """The certificate store under ``directory`` (``[security] dir``)::

        certs/                      0700
          csms-root/<sha256>.pem    CSMS (CPO) roots: TLS server validation, charger chains
          manufacturer-root/<sha256>.pem   firmware signing roots
          charger/                  the charger's own certificate (profile 3)
            current/chain.pem, key.pem     in use
            new/chain.pem, key.pem         installed by the CSMS, on probation
            previous/chain.pem, key.pem    the one before, a month as fallback
            pending/<sha256>.pem           keys of the open CSRs (the last 3)
            state.json                     timestamps and first-boot markers

    Every file is written atomically; private keys are 0600, directories 0700, owned by
    the service user that runs evsed. Implements ``TlsMaterial`` and ``FirmwareTrust``
    (controller/security/material.py). Methods never raise on bad input: they answer a
    status (and record a security event where one applies)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        clock: Clock,
        security_log: SecurityLog | None = None,
    ) -> None:
        self.root = Path(directory) / "certs"
        self._clock = clock
        self._log = security_log
        self._offered: str | None = None  # the slot client_identity() gave last
        for sub in (self.root, *(self.root / u.value for u in CertificateUse)):
            sub.mkdir(parents=True, exist_ok=True)
            os.chmod(sub, DIR_MODE)
        self._charger = self.root / CertificateUse.CHARGING_STATION.value
        if hasattr(os, "geteuid") and self.root.stat().st_uid != os.geteuid():
            LOG.warning(
                "%s belongs to uid %d, not to the service user (uid %d): fix its owner",
                self.root,
                self.root.stat().st_uid,
                os.geteuid(),
            )

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, object]:
        try:
            data = json.loads((self._charger / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            LOG.error("certificate store state unreadable (%s): starting afresh", exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, **changes: object) -> None:
        state = self._state()
        state.update(changes)
        try:
            write_atomic(
                self._charger / STATE_FILE, json.dumps(state, sort_keys=True).encode(), 0o600
            )
        except OSError as exc:
            LOG.error("certificate store state not written: %s", exc.strerror)

    def _state_time(self, name: str) -> datetime | None:
        value = self._state().get(name)
        if not isinstance(value, str):
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None

    def _event(self, kind: SecurityEventKind, info: str) -> None:
        if self._log is not None:
            self._log.record(kind, info)
        else:
            LOG.warning("security event %s: %s", kind.value, info)

    # ------------------------------------------------------------------ roots

    def _root_files(self, use: CertificateUse) -> list[Path]:
        return sorted((self.root / use.value).glob("*.pem"))

    def roots(self, use: CertificateUse) -> list[x509.Certificate]:
        """The installed certificates of a root kind (an unreadable file is skipped)."""
        certs = []
        for path in self._root_files(use):
            try:
                certs.append(load_pem_chain(path.read_text(encoding="ascii"))[0])
            except (OSError, UnicodeDecodeError, BadCertificate) as exc:
                LOG.error("certificate %s unreadable: %s", path.name, exc)
        return certs

    def _roots_pem(self, use: CertificateUse) -> str:
        return "".join(to_pem(cert) for cert in self.roots(use))

    def csms_roots_pem(self) -> str:
        return self._roots_pem(CertificateUse.CSMS_ROOT)

    def manufacturer_roots_pem(self) -> str:
        return self._roots_pem(CertificateUse.MANUFACTURER_ROOT)

    def root_count(self) -> int:
        return sum(len(self._root_files(use)) for use in ROOT_USES)

    def install_root(
        self, use: CertificateUse, pem: str, *, max_count: int, preset: bool = False
    ) -> InstallStatus:
        """M05: install one root/CA certificate. REJECTED when it is not exactly one
        well-formed, unexpired CA certificate with a strong enough key (M05.FR.06) or the
        store holds ``max_count`` roots already (M05.FR.03, both kinds count); FAILED when
        it could not be written (M05.FR.04). Installing one that is there is ACCEPTED.

        AdditionalRootCertificateCheck is false (read-only), so M05.FR.08-13 (one CSMS root
        replaced by a successor it signed) do not apply: several roots of a kind coexist."""
        if use not in ROOT_USES:
            return InstallStatus.REJECTED
        try:
            certs = load_pem_chain(pem)
            if len(certs) != 1:
                raise BadCertificate(f"{len(certs)} certificates, one expected")
            check_ca(certs[0], self._clock.utc_now())
        except _BAD_CERT as exc:
            LOG.warning("%s certificate rejected: %s", use.value, exc)
            return InstallStatus.REJECTED
        cert = certs[0]
        path = self.root / use.value / f"{fingerprint(cert)}.pem"
        if path.exists():
            return InstallStatus.ACCEPTED
        if self.root_count() >= max_count:
            LOG.warning("%s certificate rejected: the store is full (%d)", use.value, max_count)
            return InstallStatus.REJECTED
        try:
            write_atomic(path, to_pem(cert).encode("ascii"))
        except OSError as exc:
            LOG.error("%s certificate not written: %s", use.value, exc.strerror)
            return InstallStatus.FAILED
        LOG.info("%s certificate installed: %s", use.value, cert.subject.rfc4514_string())
        if preset:
            return InstallStatus.ACCEPTED  # provisioning from the TOML, not a reconfiguration
        self._event(
            SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
            f"{use.value} certificate installed: {cert.subject.rfc4514_string()}",
        )
        return InstallStatus.ACCEPTED

    def _all_known(self) -> list[x509.Certificate]:
        known = [c for use in ROOT_USES for c in self.roots(use)]
        for ident in self._identities():
            known.extend(ident.chain[1:])
        return known

    def _hash(
        self, cert: x509.Certificate, algorithm: HashAlgorithm, known: list[x509.Certificate]
    ) -> CertificateHashData:
        # A CA installed as a "root" that is not self-signed (a sub-CA) is hashed with its
        # issuer's key when that is in the store, else with its own key (the best we know).
        issuer_key = issuer_key_for(cert, known) or cert.public_key()
        return hash_data(cert, issuer_key, algorithm)

    def installed_hashes(
        self, use: CertificateUse, algorithm: HashAlgorithm = HashAlgorithm.SHA256
    ) -> list[CertificateHashData]:
        """M03.FR.04: the hash data of each installed certificate of ``use``."""
        known = self._all_known()
        if use is CertificateUse.CHARGING_STATION:
            certs = [ident.leaf for ident in self._identities()]
        else:
            certs = self.roots(use)
        return [self._hash(cert, algorithm, known) for cert in certs]

    def delete(self, wanted: CertificateHashData, *, keep_last_csms_root: bool) -> DeleteStatus:
        """M04: delete the root whose hash data (computed with the request's algorithm,
        M04.FR.07) is ``wanted``. FAILED for the charger's own certificate (M04.FR.05), for
        the last CSMS root while the connection uses TLS (``keep_last_csms_root``; the CSMS
        root that validates the connection, M04.FR.06) and when the file cannot be removed
        (M04.FR.03); NOT_FOUND when nothing matches (M04.FR.04)."""
        known = self._all_known()
        for ident in self._identities():
            if self._hash(ident.leaf, wanted.hash_algorithm, known).matches(wanted):
                LOG.warning("DeleteCertificate of the charger's own certificate refused")
                return DeleteStatus.FAILED
        for use in ROOT_USES:
            files = self._root_files(use)
            for path in files:
                try:
                    cert = load_pem_chain(path.read_text(encoding="ascii"))[0]
                except (OSError, UnicodeDecodeError, BadCertificate):
                    continue
                if not self._hash(cert, wanted.hash_algorithm, known).matches(wanted):
                    continue
                if use is CertificateUse.CSMS_ROOT and keep_last_csms_root and len(files) == 1:
                    LOG.warning("DeleteCertificate of the last CSMS root refused (TLS in use)")
                    return DeleteStatus.FAILED
                try:
                    path.unlink()
                    fsync_dir(path.parent)
                except OSError as exc:
                    LOG.error("%s certificate not deleted: %s", use.value, exc.strerror)
                    return DeleteStatus.FAILED
                LOG.info("%s certificate deleted: %s", use.value, cert.subject.rfc4514_string())
                self._event(
                    SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                    f"{use.value} certificate deleted: {cert.subject.rfc4514_string()}",
                )
                return DeleteStatus.DELETED
        return DeleteStatus.NOT_FOUND

    # ------------------------------------------------------------------ charger certificate

    def _slot(self, slot: str) -> Identity | None:
        directory = self._charger / slot
        chain_path, key_path = directory / CHAIN_FILE, directory / KEY_FILE
        try:
            chain = load_pem_chain(chain_path.read_text(encoding="ascii"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, BadCertificate) as exc:
            LOG.error("charger certificate %s unreadable: %s", slot, exc)
            return None
        if not key_path.exists():
            LOG.error("charger certificate %s has no key", slot)
            return None
        return Identity(slot, chain, chain_path, key_path)

    def _identities(self) -> list[Identity]:
        return [i for s in (CURRENT, NEW, PREVIOUS) if (i := self._slot(s)) is not None]

    def _write_slot(self, slot: str, chain_pem: str, key_pem: bytes) -> None:
        """Build the slot in a temporary directory and rename it into place, so a slot is
        always a chain with its key."""
        tmp = Path(tempfile.mkdtemp(dir=self._charger, prefix=".slot-"))
        try:
            os.chmod(tmp, DIR_MODE)
            write_atomic(tmp / CHAIN_FILE, chain_pem.encode("ascii"))
            write_atomic(tmp / KEY_FILE, key_pem, KEY_MODE)
            target = self._charger / slot
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            fsync_dir(self._charger)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def new_csr(
        self, *, organization: str, station_id: str, key_type: KeyType = KeyType.EC_P256
    ) -> str:
        """A02/A03.FR.02-03: a new key pair (kept as a pending key, 0600; it never leaves
        the charger, A02.FR.05) and its CSR (PEM). Raises BadCertificate when CpoName is not
        set or the station id is URL/IP-like, OSError when the key cannot be written. The
        keys of the last PENDING_KEEP CSRs are kept: a certificate for any of them fits."""
        key = generate_key(key_type)
        csr = make_csr(key, organization=organization, common_name=station_id)
        pending = self._charger / PENDING_DIR
        pending.mkdir(mode=DIR_MODE, exist_ok=True)
        write_atomic(pending / f"{_key_id(key.public_key())}.pem", _key_pem(key), KEY_MODE)
        files = sorted(pending.glob("*.pem"), key=lambda f: f.stat().st_mtime_ns, reverse=True)
        for old in files[PENDING_KEEP:]:
            old.unlink(missing_ok=True)
        return csr

    def _pending_key(self, public_key: PublicKeyTypes) -> tuple[Path, PrivateKeyTypes] | None:
        path = self._charger / PENDING_DIR / f"{_key_id(public_key)}.pem"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return path, serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            LOG.error("pending key unreadable: %s", exc)
            return None

    def accept_signed(
        self, chain_pem: str, *, organization: str, station_id: str, max_chain_chars: int
    ) -> bool:
        """A02/A03: install the certificate chain a CA signed for the pending CSR, after
        checking it (certcheck.verify_station_chain: chain size, PEM, the pending key,
        validity, O/CN, the CSMS root hierarchy). Invalid: discarded, an
        InvalidChargingStationCertificate event (A02/A03.FR.07), False. Valid: installed
        on probation (used from the next connection once its notBefore passed, A03.FR.08),
        a ReconfigurationOfSecurityParameters event, True."""
        try:
            if len(chain_pem) > max_chain_chars:
                raise BadCertificate(f"chain of {len(chain_pem)} characters > {max_chain_chars}")
            chain = load_pem_chain(chain_pem)
            pending = self._pending_key(chain[0].public_key())
            if pending is None:
                raise BadCertificate("the certificate is not for the key of an open CSR")
            key_path, key = pending
            verify_station_chain(
                chain,
                roots=self.roots(CertificateUse.CSMS_ROOT),
                key=key.public_key(),
                organization=organization,
                station_id=station_id,
                now=self._clock.utc_now(),
            )
        except _BAD_CERT as exc:
            LOG.warning("charger certificate rejected: %s", exc)
            self._event(SecurityEventKind.INVALID_CHARGING_STATION_CERTIFICATE, str(exc))
            return False
        try:
            self._write_slot(NEW, "".join(to_pem(c) for c in chain), _key_pem(key))
            # The other open CSRs are superseded: a certificate for them would be older.
            shutil.rmtree(key_path.parent)
        except OSError as exc:
            LOG.error("charger certificate not written: %s", exc.strerror)
            return False
        self._save_state(new_failed=None, renewal_requested_at=None)
        leaf = chain[0]
        LOG.info(
            "charger certificate installed on probation: serial %X, valid %s .. %s",
            leaf.serial_number,
            iso_utc(leaf.not_valid_before_utc),
            iso_utc(leaf.not_valid_after_utc),
        )
        self._event(
            SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
            f"new charger certificate, serial {leaf.serial_number:X}",
        )
        return True

    def identity_summary(self) -> dict[str, str] | None:
        """The charger certificate in use, for the status page: subject CN, serial (hex) and
        expiry; None when there is none."""
        ident = self._in_use()
        if ident is None:
            return None
        leaf = ident.leaf
        names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return {
            "subject": str(names[0].value) if names else "",
            "serial": f"{leaf.serial_number:X}",
            "not_after": iso_utc(leaf.not_valid_after_utc),
            "slot": ident.slot,
        }

    def _valid(self, ident: Identity, now: datetime) -> bool:
        return ident.leaf.not_valid_before_utc <= now < ident.leaf.not_valid_after_utc

    def _in_use(self) -> Identity | None:
        """A03.FR.08/09: of the valid certificates, the newest by notBefore; a new one on
        probation that failed its connection yields to the current one while that is
        valid."""
        self._retire_fallback()
        now = self._clock.utc_now()
        current, new = self._slot(CURRENT), self._slot(NEW)
        if new is not None and current is not None and self._valid(current, now):
            if self._state().get("new_failed") == fingerprint(new.leaf):
                new = None
        valid = [i for i in (new, current) if i is not None and self._valid(i, now)]
        if valid:
            return max(valid, key=lambda i: i.leaf.not_valid_before_utc)
        return current  # expired or not yet valid: the CSMS will say so (and log it)

    def client_identity(self) -> tuple[str, str] | None:
        ident = self._in_use()
        self._offered = None if ident is None else ident.slot
        if ident is None:
            return None
        return str(ident.chain_path), str(ident.key_path)

    def connection_succeeded(self, profile: int) -> None:
        """A03.FR.10: the certificate on probation worked: it becomes the current one and
        the one before is kept FALLBACK_KEEP as ``previous``."""
        if profile != 3 or self._offered != NEW:
            return
        self._offered = CURRENT
        try:
            previous = self._charger / PREVIOUS
            if previous.exists():
                shutil.rmtree(previous)
            if (self._charger / CURRENT).exists():
                os.replace(self._charger / CURRENT, previous)
            os.replace(self._charger / NEW, self._charger / CURRENT)
            fsync_dir(self._charger)
        except OSError as exc:
            LOG.error("charger certificate not promoted: %s", exc.strerror)
            return
        self._save_state(previous_retired_at=iso_utc(self._clock.utc_now()), new_failed=None)
        LOG.info("the new charger certificate worked: it is the current one now")

    def connection_failed(self, profile: int) -> None:
        """The certificate on probation failed the TLS handshake: the next connection uses
        the current one again (the new one stays set aside until a newer one comes)."""
        if profile != 3 or self._offered != NEW:
            return
        new = self._slot(NEW)
        if new is None:
            return
        LOG.warning("the new charger certificate failed the TLS handshake: back to the old one")
        self._save_state(new_failed=fingerprint(new.leaf))

    def _retire_fallback(self) -> None:
        retired = self._state_time("previous_retired_at")
        if retired is None or self._clock.utc_now() - retired < FALLBACK_KEEP:
            return
        shutil.rmtree(self._charger / PREVIOUS, ignore_errors=True)
        self._save_state(previous_retired_at=None)
        LOG.info("the previous charger certificate was removed (kept a month as fallback)")

    def renewal_due(self) -> bool:
        """A03.FR.02: the certificate in use expires within RENEW_BEFORE, no newer one is
        waiting, and no CSR went out in the last RENEW_REQUEST_INTERVAL."""
        ident = self._in_use()
        if ident is None:
            return False
        now = self._clock.utc_now()
        if ident.leaf.not_valid_after_utc - now > RENEW_BEFORE:
            return False
        new = self._slot(NEW)
        if new is not None and new.leaf.not_valid_after_utc > ident.leaf.not_valid_after_utc:
            return False  # renewed, waiting for its notBefore or its first connection
        asked = self._state_time("renewal_requested_at")
        return asked is None or now - asked >= RENEW_REQUEST_INTERVAL

    def note_renewal_requested(self) -> None:
        self._save_state(renewal_requested_at=iso_utc(self._clock.utc_now()))

    # ------------------------------------------------------------------ first boot

    def apply_presets(
        self,
        *,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        max_roots: int = 20,
    ) -> None:
        """The TOML's certificates for the first boot: every CA of ``ca_bundle`` becomes a
        CSMS root when the store has none, ``client_cert``/``client_key`` the current
        charger certificate when there is none. Each is done once (a marker in state.json):
        later edits of those files never override what the CSMS installed or deleted."""
        state = self._state()
        if (
            ca_bundle
            and not state.get("csms_roots_seeded")
            and not self.roots(CertificateUse.CSMS_ROOT)
        ):
            try:
                certs = load_pem_chain(Path(ca_bundle).read_text(encoding="ascii"))
            except (OSError, UnicodeDecodeError, BadCertificate) as exc:
                LOG.error("[csms] ca_bundle %s not installed: %s", ca_bundle, exc)
            else:
                for cert in certs:
                    status = self.install_root(
                        CertificateUse.CSMS_ROOT, to_pem(cert), max_count=max_roots, preset=True
                    )
                    if status is not InstallStatus.ACCEPTED:
                        LOG.error(
                            "[csms] ca_bundle: %s not installed (%s)",
                            cert.subject.rfc4514_string(),
                            status.value,
                        )
                self._save_state(csms_roots_seeded=True)
        if (
            client_cert
            and client_key
            and not state.get("charger_seeded")
            and self._slot(CURRENT) is None
        ):
            self._seed_identity(client_cert, client_key)

    def _seed_identity(self, cert_path: str, key_path: str) -> None:
        try:
            chain = load_pem_chain(Path(cert_path).read_text(encoding="ascii"))
            key_pem = Path(key_path).read_bytes()
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (OSError, UnicodeDecodeError, BadCertificate, ValueError, TypeError) as exc:
            LOG.error("[csms] client_cert/client_key not installed: %s", exc)
            return
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if chain[0].public_key().public_bytes(der, fmt) != key.public_key().public_bytes(der, fmt):
            LOG.error("[csms] client_key is not the key of client_cert: not installed")
            return
        try:
            self._write_slot(CURRENT, "".join(to_pem(c) for c in chain), _key_pem(key))
        except OSError as exc:
            LOG.error("[csms] client_cert not installed: %s", exc.strerror)
            return
        self._save_state(charger_seeded=True)
        LOG.info("charger certificate installed from [csms] client_cert")
