"""OCPP 2.0.1 certificate management over a real WebSocket against the dev CSMS, with real
crypto: InstallCertificate (M05), GetInstalledCertificateIds (M03), DeleteCertificate (M04),
the station certificate by TriggerMessage -> SignCertificate -> CertificateSigned (A02), its
back-off (A02.FR.17-19) and the checks of a signed chain (A02.FR.06/07/16)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from controller.dev.devcsms import CsrSigner, DevCsms
from controller.ocpp201.certificates import RENEWAL_CHECK_INTERVAL_S, hash_data_201
from controller.security.certstore import CertStore
from controller.security.certtypes import CertificateUse
from tests.conftest import STATION_ID, Harness
from tests.ocpp16.test_e2e_certificates import write_pki
from tests.ocpp201.test_e2e_authorization import result, set_vars
from tests.ocpp201.test_e2e_boot import accepted, start
from tests.security.pki import T0, ec_key, issue, key_pem, make_root, name, pem

CPO = "Test CPO"


async def booted(charger: Any, csms: DevCsms, bundle: Path, **kwargs: Any) -> Harness:
    h = await start(charger, csms, ca_bundle=str(bundle), **kwargs)
    await accepted(h)
    return h


def store_of(h: Harness) -> CertStore:
    store = h.app.certstore
    assert store is not None
    return store


async def ids(csms: DevCsms, *types: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"certificateType": list(types)} if types else {}
    return await result(csms, "GetInstalledCertificateIds", payload)


async def install(csms: DevCsms, kind: str, cert_pem: str) -> str:
    answer = await result(
        csms, "InstallCertificate", {"certificateType": kind, "certificate": cert_pem}
    )
    return str(answer["status"])


async def delete(csms: DevCsms, hash_data: dict[str, Any]) -> str:
    answer = await result(csms, "DeleteCertificate", {"certificateHashData": hash_data})
    return str(answer["status"])


async def trigger_sign(csms: DevCsms) -> str:
    answer = await result(
        csms, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}
    )
    return str(answer["status"])


def security_events(h: Harness, kind: str) -> list[Any]:
    return [f for f in h.frames("SecurityEventNotification") if f.payload["type"] == kind]


async def test_install_list_delete(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """TC_M_01_CS .. TC_M_04_CS (M05.FR.01/02): a CSMS, manufacturer, V2G and MO root are
    installed; TC_M_07_CS (M05.FR.07): a leaf or garbage is Rejected; M05.FR.06: beyond
    CertificateEntries' maxLimit Rejected. TC_M_12/13/16/17/18_CS (M03.FR.01-04): the hash
    data per type, of every type without certificateType; TC_M_15/19_CS: NotFound.
    TC_M_20_CS / TC_M_22_CS (M04.FR.01-04): deleted, then NotFound."""
    root, _sub, bundle = write_pki(tmp_path)
    h = await booted(charger, csms, bundle)
    listed = await ids(csms, "CSMSRootCertificate")
    assert listed["status"] == "Accepted"
    [entry] = listed["certificateHashDataChain"]
    assert entry["certificateType"] == "CSMSRootCertificate"
    assert entry["certificateHashData"]["serialNumber"] == format(root.cert.serial_number, "X")
    assert entry["certificateHashData"]["hashAlgorithm"] == "SHA256"
    assert await ids(csms, "ManufacturerRootCertificate") == {"status": "NotFound"}
    assert await ids(csms, "V2GCertificateChain") == {"status": "NotFound"}

    roots = {
        "ManufacturerRootCertificate": make_root("Manufacturer Root"),
        "V2GRootCertificate": make_root("V2G Root"),
        "MORootCertificate": make_root("MO Root"),
    }
    for kind, ca in roots.items():
        assert await install(csms, kind, ca.pem) == "Accepted", kind
        assert await install(csms, kind, ca.pem) == "Accepted", kind  # M05.FR.17: again
    leaf = issue(name("not a CA"), ec_key().public_key(), root)
    assert await install(csms, "CSMSRootCertificate", pem(leaf)) == "Rejected"
    assert await install(csms, "CSMSRootCertificate", "garbage") == "Rejected"
    assert store_of(h).manufacturer_roots_pem() == roots["ManufacturerRootCertificate"].pem

    every = await ids(csms)
    kinds = sorted(e["certificateType"] for e in every["certificateHashDataChain"])
    assert kinds == sorted(["CSMSRootCertificate", *roots])
    two = await ids(csms, "CSMSRootCertificate", "ManufacturerRootCertificate")
    assert len(two["certificateHashDataChain"]) == 2

    [mo] = (await ids(csms, "MORootCertificate"))["certificateHashDataChain"]
    assert await delete(csms, mo["certificateHashData"]) == "Accepted"
    assert await delete(csms, mo["certificateHashData"]) == "NotFound"
    assert await ids(csms, "MORootCertificate") == {"status": "NotFound"}

    # M05.FR.06: the store holds at most CertificateEntries' maxLimit (20) roots.
    for n in range(17):
        assert await install(csms, "V2GRootCertificate", make_root(f"V2G {n}").pem) == "Accepted"
    assert await install(csms, "V2GRootCertificate", make_root("too many").pem) == "Rejected"
    entries = await result(
        csms,
        "GetVariables",
        {
            "getVariableData": [
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "CertificateEntries"}}
            ]
        },
    )
    assert entries["getVariableResult"][0]["attributeValue"] == "20"


async def test_station_certificate_round_trip(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """TC_A_11_CS (A02.FR.02/03/06/08, F06): TriggerMessage SignChargingStationCertificate
    is Accepted, then SignCertificate with certificateType ChargingStationCertificate and a
    PEM CSR with O = SecurityCtrlr.OrganizationName (A00.FR.509) and CN = the station id
    (A00.FR.511); the CA's chain in CertificateSigned is Accepted and is the certificate the
    next connection presents. TC_M_23_CS (M04.FR.06): it cannot be deleted."""
    _root, sub, bundle = write_pki(tmp_path)
    h = await booted(charger, csms, bundle)
    assert await trigger_sign(csms) == "Rejected"  # no OrganizationName yet
    await set_vars(csms, {"SecurityCtrlr.OrganizationName": CPO})
    signer = CsrSigner(sub.pem, sub.key_pem, chain_pem=sub.pem, now=h.clock.utc_now)
    csms.csr_signer = signer
    assert await trigger_sign(csms) == "Accepted"
    frame = await csms.wait_for(lambda f: f.action == "SignCertificate", timeout_s=10)
    assert frame.payload["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(frame.payload["csr"].encode())
    assert csr.is_signature_valid
    subject = csr.subject
    assert [a.value for a in subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)] == [
        STATION_ID
    ]
    orgs = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [a.value for a in orgs] == [CPO]
    await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
    summary = store_of(h).identity_summary()  # what client_identity() presents next
    assert summary is not None and summary["slot"] == "new"
    assert summary["serial"] == f"{signer.signed[0].serial_number:X}"
    await h.settle(lambda: bool(security_events(h, "ReconfigurationOfSecurityParameters")))
    [own] = store_of(h).installed_hashes(CertificateUse.CHARGING_STATION)
    assert await delete(csms, hash_data_201(own)) == "Failed"


async def test_invalid_signed_chain_is_rejected(
    charger: Any, csms: DevCsms, tmp_path: Path
) -> None:
    """TC_A_14_CS (A02.FR.06/07): a chain for another key, with a wrong CN or under a foreign
    root is Rejected, discarded, and an
    InvalidChargingStationCertificate security event goes to the CSMS; a V2GCertificate is
    Rejected (no ISO 15118 certificate). A02.FR.20: no SignCertificate follows by itself.
    (A02.FR.16: MaxCertificateChainSize is 10000, the schema's maxLength: a longer chain is
    a schema violation before it reaches the store.)"""
    _root, sub, bundle = write_pki(tmp_path)
    h = await booted(charger, csms, bundle)
    await set_vars(csms, {"SecurityCtrlr.OrganizationName": CPO})
    csms.csr_signer = lambda csr: None  # Accepted; the CA's answers come by hand below
    assert await trigger_sign(csms) == "Accepted"
    frame = await csms.wait_for(lambda f: f.action == "SignCertificate", timeout_s=10)
    csr = x509.load_pem_x509_csr(frame.payload["csr"].encode())
    pub: Any = csr.public_key()
    other = make_root("Other CPO Root")
    bad = {
        "wrong key": pem(issue(csr.subject, ec_key().public_key(), sub)) + sub.pem,
        "wrong CN": pem(issue(name("CP-ELSEWHERE", CPO), pub, sub)) + sub.pem,
        "foreign root": pem(issue(csr.subject, pub, other)) + other.pem,
    }
    for case, chain in bad.items():
        answer = await result(csms, "CertificateSigned", {"certificateChain": chain})
        assert answer["status"] == "Rejected", case
        assert store_of(h).client_identity() is None, case
    good = pem(issue(csr.subject, pub, sub)) + sub.pem
    v2g = await result(
        csms, "CertificateSigned", {"certificateChain": good, "certificateType": "V2GCertificate"}
    )
    assert v2g["status"] == "Rejected"
    await h.settle(lambda: bool(security_events(h, "InvalidChargingStationCertificate")))
    await h.advance(600, step_s=60)
    assert len(h.frames("SignCertificate")) == 1
    answer = await result(csms, "CertificateSigned", {"certificateChain": good})
    assert answer["status"] == "Accepted"


async def test_sign_certificate_back_off(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """TC_A_23_CS (A02.FR.17-19): no CertificateSigned after an Accepted SignCertificate:
    sent again after CertSigningWaitMinimum, then after twice that, CertSigningRepeatTimes
    times, then no more until the CSMS triggers again. TC_A_15_CS (A02.FR.12): a Rejected
    SignCertificate is not repeated."""
    _root, _sub, bundle = write_pki(tmp_path)
    h = await booted(charger, csms, bundle)
    await set_vars(
        csms,
        {
            "SecurityCtrlr.OrganizationName": CPO,
            "SecurityCtrlr.CertSigningWaitMinimum": "10",
            "SecurityCtrlr.CertSigningRepeatTimes": "2",
        },
    )
    csms.csr_signer = lambda csr: None  # Accepted, never signed
    assert await trigger_sign(csms) == "Accepted"
    await h.settle(lambda: len(h.frames("SignCertificate")) == 1)
    await h.advance(9)
    assert len(h.frames("SignCertificate")) == 1
    await h.advance(1)
    await h.settle(lambda: len(h.frames("SignCertificate")) == 2)
    await h.advance(19)
    assert len(h.frames("SignCertificate")) == 2
    await h.advance(1)
    await h.settle(lambda: len(h.frames("SignCertificate")) == 3)
    await h.advance(200, step_s=10)
    assert len(h.frames("SignCertificate")) == 3  # A02.FR.19
    first, second, third = (f.payload["csr"] for f in h.frames("SignCertificate"))
    assert first == second == third  # A02.FR.17: the same CSR

    csms.csr_signer = None  # the dev CSMS answers Rejected now
    assert await trigger_sign(csms) == "Accepted"
    await h.settle(lambda: len(h.frames("SignCertificate")) == 4)
    await h.advance(100, step_s=10)
    assert len(h.frames("SignCertificate")) == 4


async def test_renewal_a_month_before_expiry(charger: Any, csms: DevCsms, tmp_path: Path) -> None:
    """A03.FR.02/03/06: the station certificate in use expires within a month: at the next
    hourly check a new key pair and SignCertificate go out; the CA's chain is Accepted and
    waits on probation, so no further request follows."""
    _root, sub, bundle = write_pki(tmp_path)
    key = ec_key()
    cert = tmp_path / "old.pem"
    cert.write_text(
        pem(issue(name(STATION_ID, CPO), key.public_key(), sub, not_after=T0 + timedelta(days=20)))
        + sub.pem
    )
    key_file = tmp_path / "old.key"
    key_file.write_bytes(key_pem(key))
    h = await booted(charger, csms, bundle, client_cert=str(cert), client_key=str(key_file))
    await set_vars(csms, {"SecurityCtrlr.OrganizationName": CPO})
    csms.csr_signer = CsrSigner(sub.pem, sub.key_pem, chain_pem=sub.pem, now=h.clock.utc_now)
    assert h.frames("SignCertificate") == []
    await h.advance(RENEWAL_CHECK_INTERVAL_S, step_s=60)
    await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
    assert len(h.frames("SignCertificate")) == 1
    await h.advance(RENEWAL_CHECK_INTERVAL_S, step_s=60)
    assert len(h.frames("SignCertificate")) == 1
