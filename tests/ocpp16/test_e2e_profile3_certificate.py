"""Security profile 3 end to end: the charger renews its certificate through the CSMS (A02:
ExtendedTriggerMessage, SignCertificate, CertificateSigned) and the next mutual-TLS connection
presents the new certificate, which then replaces the old one (A02.FR.08, A03.FR.10)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from controller.dev.devcsms import CsrSigner, DevCsms
from controller.ops.opscli import format_security
from tests.conftest import STATION_ID
from tests.security.tlskit import HOST, Pki, accepted, advance_until

CPO = "evsed"  # the O of the charger's first-boot certificate (tlskit) and CpoName


def presented_serial(csms: DevCsms) -> int:
    """The serial number of the client certificate the charger presented on its connection."""
    ws = csms._sessions[STATION_ID].link.ws
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def test_certificate_renewed_over_ocpp_is_used_for_the_next_profile_3_connection(
    tmp_path: Path, charger: Any
) -> None:
    pki = Pki.make(tmp_path / "pki")
    # The charger trusts the CSMS's CA and the CPO CA that signs charger certificates (the
    # signed chain must lead to an installed CSMS root, A02.FR.06).
    bundle = tmp_path / "roots.pem"
    bundle.write_text(pki.csms_root.read_text() + pki.charger_root.read_text())
    ctx = pki.server_context(require_client_cert=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    async with DevCsms(host=HOST, heartbeat_interval_s=3600, ssl_context=ctx) as csms:
        h = await charger(
            csms,
            security_profile=3,
            ca_bundle=str(bundle),
            ocpp={"CpoName": CPO},
            **pki.client(),
        )
        first = presented_serial(csms)
        signer = CsrSigner(
            pki.charger_ca.cert_pem.bytes(),
            pki.charger_ca.private_key_pem.bytes(),
            now=h.clock.utc_now,
        )
        csms.csr_signer = signer
        assert await csms.extended_trigger(STATION_ID, "SignChargePointCertificate") == "Accepted"
        await h.settle(lambda: csms.certificate_signed_statuses == ["Accepted"], timeout_s=10)
        new_serial = signer.signed[0].serial_number
        assert new_serial != first

        # The current connection stays; the next one presents the new certificate.
        await csms.disconnect(STATION_ID)
        await advance_until(h, lambda: h.app.client.connects == 2 and accepted(h))
        assert presented_serial(csms) == new_serial
        store = h.app.certstore
        assert store is not None
        ident = store.client_identity()
        assert ident is not None and "/current/" in ident[0]  # it worked: now the one in use

        # And it stays in use across a reconnect (the old one is only a fallback now).
        await csms.disconnect(STATION_ID)
        await advance_until(h, lambda: h.app.client.connects == 3 and accepted(h))
        assert presented_serial(csms) == new_serial


async def test_status_shows_the_certificate_in_use(tmp_path: Path, charger: Any) -> None:
    """The status (/api/status, `evsed status`, the page) names the profile, the charger
    certificate in use and its expiry, and the latest security event."""
    pki = Pki.make(tmp_path / "pki")
    ctx = pki.server_context(require_client_cert=True)
    async with DevCsms(host=HOST, heartbeat_interval_s=3600, ssl_context=ctx) as csms:
        h = await charger(csms, security_profile=3, ca_bundle=str(pki.csms_root), **pki.client())
        status = h.app.security_status()
        assert status["profile"] == 3
        assert status["certificate"]["subject"] == STATION_ID
        assert status["certificate"]["serial"] == f"{presented_serial(csms):X}"
        line = format_security(status)
        assert line.startswith(f"profile 3, certificate {STATION_ID} until ")
        assert "last security event StartupOfTheDevice" in line
