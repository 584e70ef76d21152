"""OCPP 2.0.1 network connection profiles over real WebSockets (B09 SetNetworkProfile, B10
migration through NetworkConfigurationPriority and a reboot, its fallback), and the security
profile raise a profile carries (A05.FR.08/09 on controller/csms/secprofile.py): two dev
CSMSs, one of them serving wss:// with trustme certificates."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from controller.csms.secprofile import PREVIOUS_PROFILE
from controller.dev.devcsms import CsrSigner, DevCsms
from controller.ocpp201.network import CONNECTED_KEY, SLOT_KEY
from tests.conftest import STATION_ID, Harness
from tests.ocpp201.test_e2e_authorization import result
from tests.ocpp201.test_e2e_boot import client
from tests.security.tlskit import HOST, Pki, advance_until

PASSWORD = "0123456789abcdef0123"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


def connection(url: str, profile: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "ocppVersion": "OCPP20",
        "ocppTransport": "JSON",
        "ocppCsmsUrl": url,
        "messageTimeout": 30,
        "securityProfile": profile,
        "ocppInterface": "Wired0",
        **extra,
    }


async def set_profile(csms: DevCsms, slot: int, data: dict[str, Any]) -> str:
    answer = await result(
        csms, "SetNetworkProfile", {"configurationSlot": slot, "connectionData": data}
    )
    return str(answer["status"])


async def set_priority(csms: DevCsms, value: str) -> str:
    answer = await result(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "NetworkConfigurationPriority"},
                    "attributeValue": value,
                }
            ]
        },
    )
    return str(answer["setVariableResult"][0]["attributeStatus"])


async def get_var(csms: DevCsms, component: str, variable: str) -> str:
    answer = await result(
        csms,
        "GetVariables",
        {"getVariableData": [{"component": {"name": component}, "variable": {"name": variable}}]},
    )
    return str(answer["getVariableResult"][0]["attributeValue"])


async def boot(charger: Any, csms: DevCsms, toml_csms: DevCsms, **config: Any) -> Harness:
    """A charger whose [csms] table (slot 1) is ``toml_csms``, connected to ``csms``."""
    h: Harness = await charger(toml_csms, wait_accepted=False, ocpp_version="2.0.1", **config)
    await csms.wait_connected(STATION_ID, timeout_s=10)
    await h.settle(lambda: client(h).connection_state() == "accepted", timeout_s=10)
    return h


async def reboot(
    h: Harness, charger: Any, csms: DevCsms, toml_csms: DevCsms, **config: Any
) -> Harness:
    """What a Reset does to the process: stop, start again on the same database (B10.FR.04
    applies "after a reboot")."""
    await h.app.stop(reason=None)
    h2: Harness = await charger(toml_csms, wait_accepted=False, ocpp_version="2.0.1", **config)
    await advance_until(h2, lambda: client(h2).connection_state() == "accepted", timeout_s=20)
    return h2


def dead_url() -> str:
    """A port nobody listens on: every attempt is refused."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    return f"ws://{HOST}:{port}/ocpp"


async def test_set_network_profile_rules(charger: Any, csms: DevCsms) -> None:
    """TC_B_42_CS (B09.FR.01): a valid profile for slot 2 is Accepted and stored;
    TC_B_43_CS (B09.FR.05): slot 999 is Rejected; B09.FR.02: SOAP, another OCPP version,
    a non-WebSocket URL, a TLS profile with ws://, a VPN are Rejected; B09.FR.04: a lower
    security profile than the active one is Rejected. B10.FR.02: a priority naming an
    empty slot is Rejected; the default is the [csms] slot, shown by ActiveNetworkProfile."""
    h = await boot(charger, csms, csms, password=PASSWORD)
    url = csms.url
    assert await set_profile(csms, 999, connection(url)) == "Rejected"
    assert await set_profile(csms, 2, connection(url, ocppTransport="SOAP")) == "Rejected"
    assert await set_profile(csms, 2, connection(url, ocppVersion="OCPP16")) == "Rejected"
    assert await set_profile(csms, 2, connection("http://example.test/ocpp")) == "Rejected"
    assert await set_profile(csms, 2, connection(url, 2)) == "Rejected"  # TLS needs wss://
    vpn = {"server": "vpn.test", "user": "u", "password": "p", "key": "k", "type": "IPSec"}
    assert await set_profile(csms, 2, connection(url, vpn=vpn)) == "Rejected"
    assert await set_profile(csms, 2, connection(url, 0)) == "Rejected"  # below profile 1
    assert await set_priority(csms, "2,1") == "Rejected"  # slot 2 is empty
    assert await set_profile(csms, 2, connection(url)) == "Accepted"
    assert h.app.store is not None
    assert h.app.store.get_setting(SLOT_KEY + "2") is not None
    assert await get_var(csms, "OCPPCommCtrlr", "ActiveNetworkProfile") == "1"
    assert await get_var(csms, "OCPPCommCtrlr", "NetworkConfigurationPriority") == "1"


async def test_migrate_to_new_csms(charger: Any, csms: DevCsms) -> None:
    """TC_B_45_CS (B09.FR.01, B10.FR.01/04/06): slot 2 set to another CSMS, priority "2,1"
    answered RebootRequired; after the reboot the station connects to the new CSMS only
    (slot 2, ActiveNetworkProfile 2), and the profile survives further restarts."""
    async with DevCsms(host=HOST, heartbeat_interval_s=3600) as new:
        h = await boot(charger, csms, csms, password=PASSWORD)
        assert await set_profile(csms, 2, connection(new.url)) == "Accepted"
        assert await set_priority(csms, "2,1") == "RebootRequired"
        assert client(h).url.startswith(csms.url)  # nothing changes before the reboot
        h = await reboot(h, charger, new, csms, password=PASSWORD)
        assert client(h).url.startswith(new.url)
        assert new.received and new.received[0].action == "BootNotification"
        assert await get_var(new, "OCPPCommCtrlr", "ActiveNetworkProfile") == "2"
        assert h.app.store is not None and h.app.store.get_setting(CONNECTED_KEY) == "2"


async def test_fallback_to_next_slot(
    charger: Any, csms: DevCsms, caplog: pytest.LogCaptureFixture
) -> None:
    """TC_B_46_CS (B10.FR.03/04): slot 2 first in the priority but unreachable: after
    NetworkProfileConnectionAttempts (2) failed attempts the station connects with the next
    slot (the [csms] one)."""
    h = await boot(charger, csms, csms, password=PASSWORD)
    assert await set_profile(csms, 2, connection(dead_url())) == "Accepted"
    assert await result(
        csms,
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "NetworkProfileConnectionAttempts"},
                    "attributeValue": "2",
                }
            ]
        },
    )
    assert await set_priority(csms, "2,1") == "RebootRequired"
    h = await reboot(h, charger, csms, csms, password=PASSWORD)
    assert client(h).url.startswith(csms.url)
    assert await get_var(csms, "OCPPCommCtrlr", "ActiveNetworkProfile") == "1"
    assert "network profile 2 failed 2 attempt(s): trying slot 1" in caplog.text


async def test_security_profile_raise_through_a_network_profile(
    charger: Any, csms: DevCsms, pki: Pki
) -> None:
    """TC_A_19_CS (A05.FR.04-06, B09, B10): from profile 1, slot 2 with profile 2 on a wss://
    CSMS (the CSMS root installed); after the reboot the station connects over TLS and
    SecurityCtrlr.SecurityProfile is 2, confirmed (A05.FR.09). TC_A_22_CS / B09.FR.04: a
    profile 1 slot is Rejected then, and so is a priority naming the [csms] slot of
    profile 1 (errata A05.FR.10)."""
    async with DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        passwords={STATION_ID: PASSWORD},
        ssl_context=pki.server_context(),
    ) as tls:
        config = {"password": PASSWORD, "ca_bundle": str(pki.csms_root)}
        h = await boot(charger, csms, csms, **config)
        assert await set_profile(csms, 2, connection(tls.url, 2)) == "Accepted"
        assert await set_priority(csms, "2,1") == "RebootRequired"
        h = await reboot(h, charger, tls, csms, **config)
        assert client(h).url.startswith("wss://")
        assert await get_var(tls, "SecurityCtrlr", "SecurityProfile") == "2"
        assert h.app.store is not None and h.app.store.get_setting(PREVIOUS_PROFILE) is None
        assert await set_profile(tls, 1, connection(csms.url, 1)) == "Rejected"
        assert await set_priority(tls, "2,1") == "Rejected"
        assert await set_priority(tls, "2") == "RebootRequired"


async def test_raise_without_csms_root_is_refused(charger: Any, csms: DevCsms) -> None:
    """TC_A_20_CS (A05.FR.02/03): slot 2 with profile 2 is stored, but a priority naming it
    is Rejected while no valid CSMSRootCertificate is installed."""
    await boot(charger, csms, csms, password=PASSWORD)
    assert await set_profile(csms, 2, connection("wss://csms.test/ocpp", 2)) == "Accepted"
    assert await set_priority(csms, "2,1") == "Rejected"


async def test_unreachable_raised_profile_falls_back(
    charger: Any, csms: DevCsms, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A05.FR.08 with B10.FR.03: the raised slot (profile 2) cannot connect: after its
    attempts the station is back on the [csms] slot with profile 1, SecurityProfile shows 1
    again, and a ReconfigurationOfSecurityParameters event says so."""
    config = {"password": PASSWORD, "ca_bundle": str(pki.csms_root)}
    h = await boot(charger, csms, csms, **config)
    dead = dead_url().replace("ws://", "wss://")
    assert await set_profile(csms, 2, connection(dead, 2)) == "Accepted"
    assert await set_priority(csms, "2,1") == "RebootRequired"
    h = await reboot(h, charger, csms, csms, **config)
    assert client(h).url.startswith(csms.url)
    assert await get_var(csms, "SecurityCtrlr", "SecurityProfile") == "1"
    assert h.app.store is not None and h.app.store.get_setting(PREVIOUS_PROFILE) is None
    assert "SecurityProfile 1 -> 2: network profile 2" in caplog.text
    assert "back to profile 1 (A05.FR.08)" in caplog.text
    assert "network profile 2 failed 3 attempt(s): trying slot 1" in caplog.text
    log = h.app.security_log
    assert log is not None
    assert any("could not connect" in str(e) and "back to 1" in str(e) for e in log.entries())


async def test_raise_to_profile_3_with_a_signed_station_certificate(
    charger: Any, csms: DevCsms, pki: Pki
) -> None:
    """TC_A_19_CS from profile 2 (A02.FR.02-08, A05.FR.04, B09, B10): over TLS the station
    gets its certificate (TriggerMessage SignChargingStationCertificate -> SignCertificate
    -> CertificateSigned from the CA whose root the CSMS installed), then slot 2 with profile
    3 on a CSMS that requires a client certificate; after the reboot the station presents
    the new certificate, sends no password, SecurityProfile is 3 and the certificate is no
    longer on probation (A02.FR.10)."""
    ca = pki.charger_ca
    async with (
        DevCsms(
            host=HOST,
            heartbeat_interval_s=3600,
            passwords={STATION_ID: PASSWORD},
            ssl_context=pki.server_context(),
        ) as tls,
        DevCsms(
            host=HOST,
            heartbeat_interval_s=3600,
            ssl_context=pki.server_context(require_client_cert=True),
        ) as mutual,
    ):
        config = {"password": PASSWORD, "ca_bundle": str(pki.csms_root), "security_profile": 2}
        h = await boot(charger, tls, tls, **config)
        assert await set_priority(tls, "2,1") == "Rejected"  # nothing set yet
        charger_root = ca.cert_pem.bytes().decode()
        installed = await result(
            tls,
            "InstallCertificate",
            {"certificateType": "CSMSRootCertificate", "certificate": charger_root},
        )
        assert installed["status"] == "Accepted"
        mutual_url = mutual.url
        assert await set_profile(tls, 2, connection(mutual_url, 3)) == "Accepted"
        # A05.FR.04 / TC_A_21_CS: no station certificate yet.
        assert await set_priority(tls, "2,1") == "Rejected"
        await result(
            tls,
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "SecurityCtrlr"},
                        "variable": {"name": "OrganizationName"},
                        "attributeValue": "evsed",
                    }
                ]
            },
        )
        tls.csr_signer = CsrSigner(
            ca.cert_pem.bytes(), ca.private_key_pem.bytes(), validity_days=3650, now=h.clock.utc_now
        )
        trigger = await result(
            tls, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}
        )
        assert trigger["status"] == "Accepted"
        await h.settle(lambda: tls.certificate_signed_statuses == ["Accepted"], timeout_s=10)
        assert await set_priority(tls, "2,1") == "RebootRequired"
        h = await reboot(h, charger, mutual, tls, **config)
        assert client(h).url.startswith(mutual_url)
        assert await get_var(mutual, "SecurityCtrlr", "SecurityProfile") == "3"
        store = h.app.certstore
        assert store is not None
        summary = store.identity_summary()
        assert summary is not None and summary["slot"] == "current"


async def test_every_slot_failed_back_to_the_last_connected(
    charger: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """TC_B_49_CS-like (B10.FR.03/07): slot 2 unreachable, slot 1 (the one that connected
    last) refusing for a while: after each had NetworkProfileConnectionAttempts, the station
    keeps reconnecting with slot 1 (not back to slot 2) and connects once it accepts."""
    async with DevCsms(
        host=HOST, heartbeat_interval_s=3600, passwords={STATION_ID: PASSWORD}
    ) as csms:
        h = await boot(charger, csms, csms, password=PASSWORD)
        assert await set_profile(csms, 2, connection(dead_url())) == "Accepted"
        await result(
            csms,
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "NetworkProfileConnectionAttempts"},
                        "attributeValue": "2",
                    }
                ]
            },
        )
        assert await set_priority(csms, "2,1") == "RebootRequired"
        await h.app.stop(reason=None)
        csms.passwords = {STATION_ID: "not-the-password-0000"}  # slot 1 refuses (401)
        h = await charger(csms, wait_accepted=False, ocpp_version="2.0.1", password=PASSWORD)
        await advance_until(h, lambda: "failed 2 attempt(s): trying slot 1" in caplog.text)
        for _ in range(40):  # several rounds of attempts on slot 1
            await h.clock.advance(0.25, step_s=0.25)
            await asyncio.sleep(0.02)
        assert "network profile 1 failed" not in caplog.text
        assert "trying slot 2" not in caplog.text
        assert client(h).url.startswith(csms.url)
        csms.passwords = {STATION_ID: PASSWORD}
        await advance_until(h, lambda: client(h).connection_state() == "accepted")
        assert await get_var(csms, "OCPPCommCtrlr", "ActiveNetworkProfile") == "1"
