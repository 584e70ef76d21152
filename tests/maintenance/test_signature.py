"""Firmware signing certificate and signature checks (L01.FR.04, L01.FR.12, L01.FR.23/24)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.maintenance.signature import (
    CertificateInvalid,
    check_signing_certificate,
    verify_file_signature,
)
from tests.maintenance.pki import Roots, manufacturer_ca, signing_cert

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_chain_to_an_installed_root() -> None:
    ca = manufacturer_ca()
    signer = signing_cert(ca)
    assert check_signing_certificate(signer.pem, Roots(ca).manufacturer_roots_pem(), NOW)
    other = manufacturer_ca("Other Root")
    with pytest.raises(CertificateInvalid, match="does not chain"):
        check_signing_certificate(signer.pem, Roots(other).manufacturer_roots_pem(), NOW)
    with pytest.raises(CertificateInvalid, match="no ManufacturerRootCertificate"):
        check_signing_certificate(signer.pem, "", NOW)
    with pytest.raises(CertificateInvalid, match="not valid now"):
        check_signing_certificate(signer.pem, ca.pem, datetime(2031, 1, 1, tzinfo=UTC))
    with pytest.raises(CertificateInvalid, match="not PEM"):
        check_signing_certificate("-----BEGIN CERTIFICATE-----\nxx\n", ca.pem, NOW)


def test_a_root_named_like_the_issuer_but_with_another_key_is_refused() -> None:
    ca = manufacturer_ca("Same Name")
    impostor = manufacturer_ca("Same Name")
    with pytest.raises(CertificateInvalid):
        check_signing_certificate(signing_cert(ca).pem, impostor.pem, NOW)


@pytest.mark.parametrize("kind", ["ecdsa", "rsa-pss", "rsa-pkcs1"])
def test_signature_over_the_whole_file(tmp_path: Path, kind: str) -> None:
    ca = manufacturer_ca()
    signer = signing_cert(ca, rsa_key=kind != "ecdsa")
    data = b"firmware" * 100_000
    fw = tmp_path / "fw.bin"
    fw.write_bytes(data)
    good = signer.sign(data, pss=kind == "rsa-pss")
    assert verify_file_signature(fw, good, signer.cert)
    fw.write_bytes(data[:-1] + b"X")  # one byte changed
    assert not verify_file_signature(fw, good, signer.cert)
    assert not verify_file_signature(fw, "not base64!", signer.cert)
