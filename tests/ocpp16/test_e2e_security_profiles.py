"""End-to-end: the CSMS raises SecurityProfile (A05) and changes AuthorizationKey (A01) over a
real WebSocket; the charger reconnects to a ws:// and a wss:// dev CSMS on two ports."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.csms.secprofile import FALLBACK_AFTER_FAILURES, PREVIOUS_KEY, PREVIOUS_PROFILE
from controller.dev.devcsms import CsmsEvent, DevCsms, StationDisconnected
from tests.conftest import STATION_ID
from tests.security.tlskit import HOST, Pki, accepted, advance_until, logged_kinds, notification

PASSWORD = "0123456789abcdef0123"  # the TOML's csms.password (A00.FR.205: >= 16 characters)
NEW_KEY = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


class Pair:
    """A ws:// CSMS (profile 1) and a wss:// CSMS (profiles 2/3) for the same station,
    on two ports (A00.FR.006), both with HTTP Basic auth; closures of the plain one are kept."""

    def __init__(self, pki: Pki) -> None:
        self.closures: list[StationDisconnected] = []
        self.plain = DevCsms(
            host=HOST,
            heartbeat_interval_s=3600,
            passwords={STATION_ID: PASSWORD},
            on_event=self._event,
        )
        self.tls = DevCsms(
            host=HOST,
            heartbeat_interval_s=3600,
            passwords={STATION_ID: PASSWORD},
            ssl_context=pki.server_context(),
        )

    def _event(self, event: CsmsEvent) -> None:
        if isinstance(event, StationDisconnected):
            self.closures.append(event)


@pytest.fixture
async def pair(pki: Pki) -> AsyncIterator[Pair]:
    p = Pair(pki)
    async with p.plain, p.tls:
        yield p


async def change(csms: DevCsms, key: str, value: str) -> str:
    frame = await csms.call_raw(
        STATION_ID, "ChangeConfiguration", {"key": key, "value": value}, timeout_s=5
    )
    assert frame[0] == 3, frame
    return str(frame[2]["status"])


async def start(charger: Any, pair: Pair, pki: Pki, **extra: Any) -> Any:
    return await charger(
        pair.plain,
        password=PASSWORD,
        tls_url=pair.tls.url,
        ca_bundle=str(pki.csms_root),
        **extra,
    )


# ----------------------------------------------------------------------------- A05


async def test_raise_1_to_2_reconnects_with_tls_and_never_goes_back(
    pki: Pki, pair: Pair, charger: Any
) -> None:
    """A05.FR.05/06/07: SecurityProfile 2 Accepted, the charger closes the ws:// connection
    normally and connects to the wss:// port ([csms] tls_url) with TLS + Basic auth;
    ReconfigurationOfSecurityParameters is reported. A05.FR.09: once connected, a TLS
    failure never brings the plain connection back."""
    h = await start(charger, pair, pki)
    assert h.app.client.url.startswith("ws://")
    assert await change(pair.plain, "SecurityProfile", "2") == "Accepted"
    await pair.tls.wait_connected(STATION_ID)
    await pair.plain.wait_disconnected(STATION_ID)
    assert [c.code for c in pair.closures] == [1000]
    await h.settle(lambda: accepted(h))
    assert h.app.client.url.startswith("wss://")
    # Queued while still on ws://: delivered there, or on wss:// if the pump had no time.
    await h.settle(
        lambda: any(
            f.action == "SecurityEventNotification"
            and "SecurityProfile 1 -> 2" in f.payload.get("techInfo", "")
            for f in pair.plain.received + pair.tls.received
        )
    )
    assert h.app.store.get_setting(PREVIOUS_PROFILE) is None  # confirmed for good
    result = await pair.tls.call_raw(
        STATION_ID, "GetConfiguration", {"key": ["SecurityProfile"]}, timeout_s=5
    )
    assert result[2]["configurationKey"][0]["value"] == "2"
    # The TLS side goes away: the charger keeps trying wss:// only.
    await pair.tls.stop()
    for _ in range(4 * FALLBACK_AFTER_FAILURES):
        await h.clock.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)
    assert not pair.plain.connected(STATION_ID)
    assert h.app.settings.get("SecurityProfile") == "2"


async def test_raise_falls_back_when_tls_fails(pki: Pki, pair: Pair, charger: Any) -> None:
    """A05.FR.08: the wss:// CSMS presents a certificate of an unknown CA; after
    FALLBACK_AFTER_FAILURES failed attempts the charger goes back to profile 1 and its ws://
    CSMS, and reports both the certificate failure and the abandoned raise."""
    await pair.tls.stop()
    rogue = DevCsms(
        host=HOST,
        port=pair.tls.port,
        heartbeat_interval_s=3600,
        ssl_context=pki.server_context(ca=pki.rogue_ca),
    )
    async with rogue:
        h = await start(charger, pair, pki)
        assert await change(pair.plain, "SecurityProfile", "2") == "Accepted"
        await pair.plain.wait_disconnected(STATION_ID)
        await advance_until(h, lambda: pair.plain.connected(STATION_ID))
        await h.settle(lambda: accepted(h))
        assert h.app.settings.get("SecurityProfile") == "1"
        assert h.app.store.get_setting(PREVIOUS_PROFILE) is None
        assert rogue.received == []
        await notification(pair.plain, "InvalidCentralSystemCertificate")
        await notification(
            pair.plain, "ReconfigurationOfSecurityParameters", "SecurityProfile 2 could not"
        )


async def test_raise_pending_survives_restart(pki: Pki, pair: Pair, charger: Any) -> None:
    """The raised profile is kept in the settings rows: a restart before the first TLS
    connection still tries profile 2, and once it connects, the previous one is gone."""
    await pair.tls.stop()  # not reachable yet
    h = await start(charger, pair, pki)
    assert await change(pair.plain, "SecurityProfile", "2") == "Accepted"
    await pair.plain.wait_disconnected(STATION_ID)
    assert h.app.store.get_setting(PREVIOUS_PROFILE) == "1"
    await h.app.stop(reason=None)
    await pair.tls.start()
    h2 = await charger(
        pair.plain,
        wait_accepted=False,
        boot_id="boot-2",
        password=PASSWORD,
        tls_url=pair.tls.url,
        ca_bundle=str(pki.csms_root),
    )
    await pair.tls.wait_connected(STATION_ID)
    await h2.settle(lambda: accepted(h2))
    assert h2.app.store.get_setting(PREVIOUS_PROFILE) is None
    assert h2.app.settings.get("SecurityProfile") == "2"


async def test_configuration_edit_replaces_csms_set_profile(
    pki: Pki, pair: Pair, charger: Any
) -> None:
    """A00.FR.004/005: the profile is configured locally before OCPP runs; a CSMS-set value
    is kept across restarts, but an operator's edit of [csms] security_profile (a value
    other than at the previous start) replaces it."""
    h = await start(charger, pair, pki)
    assert await change(pair.plain, "SecurityProfile", "2") == "Accepted"
    await pair.tls.wait_connected(STATION_ID)
    await h.settle(lambda: accepted(h))
    await h.app.stop(reason=None)
    pair.tls.passwords = None  # profile 3: the certificate, no Basic auth
    h2 = await charger(
        pair.tls,
        boot_id="boot-2",
        security_profile=3,
        ca_bundle=str(pki.csms_root),
        **pki.client(),
    )
    assert h2.app.settings.get("SecurityProfile") == "3"
    assert h2.app.client.security.headers() == {}


async def test_lowering_or_repeating_the_profile_is_rejected(
    pki: Pki, pair: Pair, charger: Any
) -> None:
    """A05.FR.01 (and A00.FR.005): a value <= the current profile is Rejected, nothing
    changes and the charger does not reconnect. A05.FR.04: profile 3 without a charger
    certificate is Rejected too."""
    h = await start(charger, pair, pki)
    for value in ("1", "0"):
        assert await change(pair.plain, "SecurityProfile", value) == "Rejected"
    assert await change(pair.plain, "SecurityProfile", "3") == "Rejected"  # A05.FR.04
    assert h.app.settings.get("SecurityProfile") == "1"
    assert pair.closures == [] and h.app.client.connects == 1
    assert "ReconfigurationOfSecurityParameters" not in logged_kinds(h.app.security_log)


async def test_raise_to_2_needs_a_csms_root(pki: Pki, pair: Pair, charger: Any) -> None:
    """A05.FR.03: no CentralSystemRootCertificate installed (no ca_bundle): Rejected, even
    though a TOML-configured wss:// would fall back to the system trust store."""
    h = await charger(pair.plain, password=PASSWORD, tls_url=pair.tls.url)
    assert await change(pair.plain, "SecurityProfile", "2") == "Rejected"
    assert h.app.settings.get("SecurityProfile") == "1"


async def test_raise_to_2_needs_a_key(pki: Pki, pair: Pair, charger: Any) -> None:
    """A05.FR.02: no AuthorizationKey and no password of 16+ characters: Rejected."""
    pair.plain.passwords = None
    h = await charger(pair.plain, tls_url=pair.tls.url, ca_bundle=str(pki.csms_root))
    assert await change(pair.plain, "SecurityProfile", "2") == "Rejected"
    assert h.app.settings.get("SecurityProfile") == "1"


async def test_raise_2_to_3_with_client_certificate(pki: Pki, charger: Any) -> None:
    """A05.FR.04/05/07 and A00.FR.401/402: with a charger certificate installed the CSMS
    raises 2 -> 3 on the same wss:// URL; the charger reconnects presenting its certificate
    and without Basic auth."""
    # The CSMS asks for a client certificate but takes a connection without one (profile 2).
    ctx = pki.server_context(require_client_cert=True)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    async with DevCsms(host=HOST, heartbeat_interval_s=3600, ssl_context=ctx) as csms:
        h = await charger(
            csms,
            security_profile=2,
            ca_bundle=str(pki.csms_root),
            password=PASSWORD,
            **pki.client(),
        )
        assert await change(csms, "SecurityProfile", "3") == "Accepted"
        await advance_until(h, lambda: h.app.client.connects == 2 and accepted(h))
        ws = csms._sessions[STATION_ID].link.ws
        assert ws.transport.get_extra_info("ssl_object").getpeercert()
        assert "Authorization" not in ws.request.headers
        assert h.app.store.get_setting(PREVIOUS_PROFILE) is None


# ----------------------------------------------------------------------------- A01


async def test_authorization_key_change_reconnects_with_new_key(
    pair: Pair, charger: Any, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A01.FR.01/03: Accepted, stored, and the charger reconnects at once with the new key
    (HTTP Basic); A01.FR.11/12: the change is in the security log and reported, the key is
    in no log line, no security log entry and no notification."""
    caplog.set_level(logging.DEBUG)
    h = await start(charger, pair, pki)
    pair.plain.passwords = {STATION_ID: NEW_KEY}  # the CSMS stored the new key
    assert await change(pair.plain, "AuthorizationKey", NEW_KEY) == "Accepted"
    await pair.plain.wait_disconnected(STATION_ID)
    await pair.plain.wait_connected(STATION_ID)
    await h.settle(lambda: accepted(h))
    assert pair.plain.auth_refusals == []
    assert [c.code for c in pair.closures] == [1000]
    frame = await notification(
        pair.plain, "ReconfigurationOfSecurityParameters", "AuthorizationKey changed"
    )
    assert NEW_KEY not in str(frame.payload)
    assert h.app.store.get_setting(PREVIOUS_KEY) is None  # the new key is confirmed
    assert NEW_KEY not in str(list(h.app.security_log.entries()))
    # The caplog handler has no SecretFilter (that is the CLI's): the controller's own
    # messages must not contain the key in the first place.
    own = [r.getMessage() for r in caplog.records if r.name.startswith("controller.")]
    assert not [m for m in own if NEW_KEY in m and "ChangeConfiguration" not in m]


async def test_refused_new_key_falls_back_to_previous(pair: Pair, charger: Any, pki: Pki) -> None:
    """The CSMS answered Accepted but did not store the key (A01.FR.03 broken on its side):
    the new key gets HTTP 401, the next attempt uses the previous one, which is accepted and
    becomes the only key again. FailedToAuthenticationAtCentralSystem and a second
    ReconfigurationOfSecurityParameters tell the CSMS."""
    h = await start(charger, pair, pki)
    assert await change(pair.plain, "AuthorizationKey", NEW_KEY) == "Accepted"
    await pair.plain.wait_disconnected(STATION_ID)
    await advance_until(h, lambda: pair.plain.connected(STATION_ID) and accepted(h))
    assert pair.plain.auth_refusals == [STATION_ID]
    assert h.app.settings.get("AuthorizationKey") == ""  # back to the TOML password
    assert h.app.store.get_setting(PREVIOUS_KEY) is None
    await notification(pair.plain, "FailedToAuthenticationAtCentralSystem", "HTTP 401")
    await notification(pair.plain, "ReconfigurationOfSecurityParameters", "accepted the previous")


async def test_both_keys_refused_alternate_until_one_works(
    pair: Pair, charger: Any, pki: Pki
) -> None:
    """Neither key works for a while (the CSMS lost both): the charger alternates between
    them with back-off, one FailedToAuthenticationAtCentralSystem per burst; when the CSMS
    accepts the new key, it becomes the only key."""
    h = await start(charger, pair, pki)
    pair.plain.passwords = {STATION_ID: "neither-of-the-two-keys"}
    assert await change(pair.plain, "AuthorizationKey", NEW_KEY) == "Accepted"
    await pair.plain.wait_disconnected(STATION_ID)
    await advance_until(h, lambda: len(pair.plain.auth_refusals) >= 4)
    assert logged_kinds(h.app.security_log).count("FailedToAuthenticateAtCsms") == 1
    pair.plain.passwords = {STATION_ID: NEW_KEY}
    await advance_until(h, lambda: pair.plain.connected(STATION_ID) and accepted(h))
    assert h.app.settings.get("AuthorizationKey") == NEW_KEY
    assert h.app.store.get_setting(PREVIOUS_KEY) is None
