"""OCPP 2.0.1 security profiles over a real TLS WebSocket (A00) and the Basic auth password
(A01), on the connection security shared with 1.6 (controller/csms/secprofile.py): locally
made certificates (trustme), the dev CSMS serving wss://."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.ocpp201.test_e2e_boot import client
from tests.security.tlskit import HOST, Pki, logged_kinds

PASSWORD = "0123456789abcdef0123"
NEW_PASSWORD = "fedcba9876543210fedcba98"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


async def booted(charger: Any, csms: DevCsms, **config: Any) -> Any:
    h = await charger(csms, wait_accepted=False, ocpp_version="2.0.1", **config)
    await csms.wait_connected(STATION_ID, timeout_s=10)
    await h.settle(lambda: client(h).connection_state() == "accepted", timeout_s=10)
    return h


def notified(csms: DevCsms, kind: str) -> bool:
    return any(
        f.action == "SecurityEventNotification" and f.payload["type"] == kind for f in csms.received
    )


async def test_profile_2_tls_with_basic_auth(charger: Any, pki: Pki) -> None:
    """TC_A_01_CS / TC_A_04_CS (A00.FR.202-205, A00.FR.309/312/313): wss:// with the CSMS
    certificate verified against the installed root, TLS >= 1.2, HTTP Basic auth; the
    subprotocol is ocpp2.0.1 and the boot is accepted."""
    async with DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        passwords={STATION_ID: PASSWORD},
        ssl_context=pki.server_context(),
    ) as csms:
        h = await booted(
            charger, csms, password=PASSWORD, security_profile=2, ca_bundle=str(pki.csms_root)
        )
        assert client(h).url.startswith("wss://")
        assert h.frames("BootNotification")


async def test_profile_3_client_certificate(charger: Any, pki: Pki) -> None:
    """TC_A_07_CS (A00.FR.402-407): the CSMS requires the charger's client certificate; the
    charger presents the one from its certificate store and sends no Basic password."""
    async with DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        ssl_context=pki.server_context(require_client_cert=True),
    ) as csms:
        h = await booted(
            charger, csms, security_profile=3, ca_bundle=str(pki.csms_root), **pki.client()
        )
        assert h.frames("BootNotification")


async def test_untrusted_csms_certificate_is_refused_and_notified(charger: Any, pki: Pki) -> None:
    """TC_A_05_CS (A00.FR.317, A00.FR.320): a CSMS whose certificate does not verify against
    the installed root is never talked to; InvalidCsmsCertificate is in the security log
    (and queued as a SecurityEventNotification for when a trusted CSMS accepts)."""
    rogue = Pki.make(pki.dir / "rogue")
    async with DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        passwords={STATION_ID: PASSWORD},
        ssl_context=rogue.server_context(),
    ) as bad:
        h = await charger(
            bad,
            wait_accepted=False,
            ocpp_version="2.0.1",
            password=PASSWORD,
            security_profile=2,
            ca_bundle=str(pki.csms_root),
        )
        await h.settle(
            lambda: "InvalidCsmsCertificate" in logged_kinds(h.app.security_log), timeout_s=10
        )
        assert bad.received == []


async def test_new_basic_auth_password(charger: Any, pki: Pki) -> None:
    """TC_A_09_CS (A01.FR.01-03, A01.FR.11): SetVariables SecurityCtrlr.BasicAuthPassword
    is Accepted, recorded as ReconfigurationOfSecurityParameters (without the password),
    and the charger reconnects with it; TC_A_10_CS: a too short one is Rejected."""
    async with DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        passwords={STATION_ID: PASSWORD},
        ssl_context=pki.server_context(),
    ) as csms:
        h = await booted(
            charger, csms, password=PASSWORD, security_profile=2, ca_bundle=str(pki.csms_root)
        )
        short = await csms.call_raw(
            STATION_ID,
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "SecurityCtrlr"},
                        "variable": {"name": "BasicAuthPassword"},
                        "attributeValue": "short",
                    }
                ]
            },
        )
        assert short[2]["setVariableResult"][0]["attributeStatus"] == "Rejected"
        connects = client(h).connects
        csms.passwords[STATION_ID] = NEW_PASSWORD
        answer = await csms.call_raw(
            STATION_ID,
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "SecurityCtrlr"},
                        "variable": {"name": "BasicAuthPassword"},
                        "attributeValue": NEW_PASSWORD,
                    }
                ]
            },
        )
        assert answer[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await h.settle(lambda: client(h).connects > connects, timeout_s=10)
        await h.settle(lambda: client(h).connection_state() == "accepted", timeout_s=10)
        await h.settle(lambda: notified(csms, "ReconfigurationOfSecurityParameters"))
        texts = [str(f.payload) for f in csms.received if f.action == "SecurityEventNotification"]
        assert all(NEW_PASSWORD not in t for t in texts)
