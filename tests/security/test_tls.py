"""Security profiles 2 and 3 over real TLS (trustme certificates, the dev CSMS on 127.0.0.1):
what the charger accepts, what it refuses, and the security event each refusal raises."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.asyncio.server import serve

from controller.dev.devcsms import DevCsms
from controller.security.tls import (
    TLS12_CIPHERS,
    FileTlsMaterial,
    TlsSetupError,
    client_context,
)
from tests.conftest import STATION_ID
from tests.security.tlskit import (
    HOST,
    HandshakeOnlyServer,
    Pki,
    accepted,
    advance_until,
    logged_kinds,
    notification,
)

PASSWORD = "0123456789abcdef0123"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.make(tmp_path / "pki")


async def start_csms(ctx: ssl.SSLContext, **kwargs: Any) -> DevCsms:
    csms = DevCsms(host=HOST, port=0, heartbeat_interval_s=3600, ssl_context=ctx, **kwargs)
    await csms.start()
    return csms


@pytest.fixture
async def servers() -> AsyncIterator[list[DevCsms]]:
    started: list[DevCsms] = []
    yield started
    for csms in started:
        await csms.stop()


# ----------------------------------------------------------------------------- the context


def test_client_context_profile_2_settings(pki: Pki) -> None:
    """A00.FR.312 (TLS 1.2 minimum), A00.FR.318/319 (AEAD suites only), A00.FR.320 (no
    compression), A00.FR.307/308 (chain and host name verified against the installed roots
    only)."""
    assert client_context(1, FileTlsMaterial(str(pki.csms_root))) is None
    ctx = client_context(2, FileTlsMaterial(str(pki.csms_root)))
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.options & ssl.OP_NO_COMPRESSION
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(TLS12_CIPHERS.split(":"))
    assert all(c["aead"] for c in ctx.get_ciphers())
    # Only the installed root, not the system store.
    assert len(ctx.get_ca_certs()) == 1


def test_client_context_profile_3_needs_identity(pki: Pki) -> None:
    """A00.FR.401/402: profile 3 presents the charger's certificate; without one it does not
    connect at all (a local problem: no security event)."""
    with pytest.raises(TlsSetupError):
        client_context(3, FileTlsMaterial(str(pki.csms_root)))
    ctx = client_context(3, FileTlsMaterial(str(pki.csms_root), **pki.client()))
    assert ctx is not None


# ----------------------------------------------------------------------------- profile 2


async def test_profile_2_connects_to_csms_with_installed_root(
    pki: Pki, servers: list[DevCsms], charger: Any
) -> None:
    """A00.FR.305-308/311/312: wss:// only, the CSMS certificate verified against the
    installed root, TLS 1.2 or newer, HTTP Basic inside the TLS channel (A00.FR.301)."""
    csms = await start_csms(pki.server_context(), passwords={STATION_ID: PASSWORD})
    servers.append(csms)
    h = await charger(csms, security_profile=2, ca_bundle=str(pki.csms_root), password=PASSWORD)
    assert h.app.client.url.startswith("wss://")
    ws = csms._sessions[STATION_ID].link.ws
    tls = ws.transport.get_extra_info("ssl_object")
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert csms.auth_refusals == []


@pytest.mark.parametrize(
    ("case", "make_server", "tech_info"),
    [
        ("wrong CA (A00.FR.309)", lambda pki: pki.server_context(ca=pki.rogue_ca), "verif"),
        (
            "wrong host name (A00.FR.308)",
            lambda pki: pki.server_context("csms.example.org"),
            "host name",
        ),
        ("expired (A00.FR.309)", lambda pki: pki.expired_server_context(), "expired"),
    ],
)
async def test_invalid_csms_certificate_is_refused_and_reported(
    pki: Pki,
    servers: list[DevCsms],
    charger: Any,
    case: str,
    make_server: Callable[[Pki], ssl.SSLContext],
    tech_info: str,
) -> None:
    """A00.FR.309/310: a CSMS certificate that does not verify (another CA, another host
    name, expired) ends the connection before anything is sent and raises
    InvalidCentralSystemCertificate; the event reaches the CSMS once a good certificate is
    back (SecurityEventNotification from the durable outbox)."""
    ctx = make_server(pki)
    csms = await start_csms(ctx)
    servers.append(csms)
    h = await charger(csms, wait_accepted=False, security_profile=2, ca_bundle=str(pki.csms_root))
    await h.settle(lambda: "InvalidCsmsCertificate" in logged_kinds(h.app.security_log))
    entry = next(e for e in h.app.security_log.entries() if e["kind"] == "InvalidCsmsCertificate")
    assert tech_info in str(entry["tech_info"])
    assert csms.received == []  # the WebSocket never opened
    # The CSMS gets a good certificate (new handshakes use it): the charger connects and
    # reports what happened.
    leaf = pki.csms_ca.issue_cert(HOST)
    cert, key = pki.write_leaf(leaf, "server-good")
    ctx.load_cert_chain(cert, key)
    await advance_until(h, lambda: accepted(h))
    frame = await notification(csms, "InvalidCentralSystemCertificate")
    assert tech_info in frame.payload.get("techInfo", "")


async def test_repeated_certificate_failures_are_folded(
    pki: Pki, servers: list[DevCsms], charger: Any
) -> None:
    """A failing CSMS does not flood the log or the CSMS: attempts go on with back-off, the
    security log keeps one record per burst (non-critical events are folded for 60 s)."""
    csms = await start_csms(pki.server_context(ca=pki.rogue_ca))
    servers.append(csms)
    h = await charger(csms, wait_accepted=False, security_profile=2, ca_bundle=str(pki.csms_root))
    await h.settle(lambda: "InvalidCsmsCertificate" in logged_kinds(h.app.security_log))
    first = h.app.client._link.connects
    for _ in range(4):  # 4 more attempts within the 60 s burst window (back-off <= 0.2 s)
        await h.clock.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.1)
    assert h.app.client._link.connects == first == 0
    assert logged_kinds(h.app.security_log).count("InvalidCsmsCertificate") == 1
    queued = [
        m
        for m in h.app.store.outbox_batch(0, 100, "csms")
        if m.action == "SecurityEventNotification"
        and m.payload["type"] == "InvalidCentralSystemCertificate"
    ]
    assert len(queued) == 1


async def refused_then_fixed(
    pki: Pki,
    servers: list[DevCsms],
    charger: Any,
    bad: ssl.SSLContext,
    kind: str,
    type_16: str,
    **config: Any,
) -> None:
    """The charger against a handshake-only TLS server with ``bad`` settings: ``kind`` is
    logged and nothing reaches a CSMS; then a good dev CSMS takes the same port, the charger
    connects and the queued SecurityEventNotification ``type_16`` arrives."""
    srv = HandshakeOnlyServer(bad)
    try:
        url = SimpleNamespace(url=f"wss://{HOST}:{srv.port}/ocpp")
        h = await charger(url, wait_accepted=False, ca_bundle=str(pki.csms_root), **config)
        await h.settle(lambda: kind in logged_kinds(h.app.security_log))
        assert srv.handshakes_failed >= 1
    finally:
        srv.close()
    good = pki.server_context()  # takes any client certificate, or none
    csms = DevCsms(host=HOST, port=srv.port, heartbeat_interval_s=3600, ssl_context=good)
    await csms.start()
    servers.append(csms)
    await advance_until(h, lambda: accepted(h))
    await notification(csms, type_16)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_below_1_2_is_refused(pki: Pki, servers: list[DevCsms], charger: Any) -> None:
    """A00.FR.312/313/315: a CSMS that only speaks TLS 1.1 (OpenSSL 3 allows it at security
    level 0) is refused and InvalidTLSVersion is raised and reported once connected."""
    ctx = pki.server_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1  # the test server may go lower than we do
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    await refused_then_fixed(
        pki,
        servers,
        charger,
        ctx,
        "InvalidTLSVersion",
        "InvalidTLSVersion",
        security_profile=2,
    )


async def test_no_shared_cipher_suite_is_refused(
    pki: Pki, servers: list[DevCsms], charger: Any
) -> None:
    """A00.FR.318/319/322: a CSMS that offers only a CBC suite with SHA-1 (TLS 1.2) shares no
    suite with the charger: the handshake ends and InvalidTLSCipherSuite is raised."""
    ctx = pki.server_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    await refused_then_fixed(
        pki,
        servers,
        charger,
        ctx,
        "InvalidTLSCipherSuite",
        "InvalidTLSCipherSuite",
        security_profile=2,
    )


async def test_refused_password_raises_failed_to_authenticate(
    pki: Pki, servers: list[DevCsms], charger: Any
) -> None:
    """A00.FR.301-304: HTTP 401 at the upgrade is FailedToAuthenticationAtCentralSystem."""
    csms = await start_csms(pki.server_context(), passwords={STATION_ID: "the-csms-expects-this"})
    servers.append(csms)
    h = await charger(
        csms,
        wait_accepted=False,
        security_profile=2,
        ca_bundle=str(pki.csms_root),
        password=PASSWORD,
    )
    await h.settle(lambda: "FailedToAuthenticateAtCsms" in logged_kinds(h.app.security_log))
    assert STATION_ID in csms.auth_refusals
    csms.passwords = {STATION_ID: PASSWORD}
    await advance_until(h, lambda: accepted(h))
    await notification(csms, "FailedToAuthenticationAtCentralSystem")


# ----------------------------------------------------------------------------- profile 3


async def test_profile_3_with_client_certificate(
    pki: Pki, servers: list[DevCsms], charger: Any
) -> None:
    """A00.FR.401/402/409-415: the CSMS requires a client certificate; the charger presents
    its own and connects; no Basic auth header is sent in profile 3."""
    csms = await start_csms(pki.server_context(require_client_cert=True))
    servers.append(csms)
    h = await charger(
        csms, security_profile=3, ca_bundle=str(pki.csms_root), password=PASSWORD, **pki.client()
    )
    assert h.app.client.security.headers() == {}
    ws = csms._sessions[STATION_ID].link.ws
    peer = ws.transport.get_extra_info("ssl_object").getpeercert()
    assert ("commonName", "CP-TEST") in [rdn[0] for rdn in peer["subject"]]


@pytest.mark.parametrize("rogue", [False, True], ids=["no client cert", "unknown CA"])
async def test_client_certificate_refused_by_csms(
    pki: Pki, servers: list[DevCsms], charger: Any, rogue: bool
) -> None:
    """A00.FR.403/407: a CSMS that requires a client certificate refuses a charger without
    one (profile 2 against a profile 3 port, A00.FR.002) or with one from a CA it does not
    know; the charger raises FailedToAuthenticationAtCentralSystem. (In TLS 1.3 the refusal
    comes after the client's side of the handshake: the CSMS closes before the upgrade.)"""
    bad = pki.server_context(require_client_cert=True)
    if rogue:
        await refused_then_fixed(
            pki,
            servers,
            charger,
            bad,
            "FailedToAuthenticateAtCsms",
            "FailedToAuthenticationAtCentralSystem",
            security_profile=3,
            **pki.client(rogue=True),
        )
        return
    srv = HandshakeOnlyServer(bad)
    try:
        url = SimpleNamespace(url=f"wss://{HOST}:{srv.port}/ocpp")
        h = await charger(url, wait_accepted=False, ca_bundle=str(pki.csms_root), password=PASSWORD)
        await h.settle(lambda: "FailedToAuthenticateAtCsms" in logged_kinds(h.app.security_log))
    finally:
        srv.close()


# ----------------------------------------------------------------------------- plain text


async def test_redirect_to_plain_websocket_is_refused(
    pki: Pki, charger: Any, tmp_path: Path
) -> None:
    """A00.FR.311: a TLS profile never continues in plain text, not even when the wss://
    CSMS redirects to a ws:// URL: the charger refuses and raises InvalidTLSVersion."""

    def redirect(connection: Any, request: Any) -> Any:
        response = connection.respond(302, "moved\n")
        response.headers["Location"] = f"ws://{HOST}:1/ocpp/{STATION_ID}"
        return response

    async def never(ws: Any) -> None:  # pragma: no cover - no WebSocket is opened
        await ws.close()

    async with serve(never, HOST, 0, ssl=pki.server_context(), process_request=redirect) as srv:
        port = list(srv.sockets)[0].getsockname()[1]
        fake = DevCsms(host=HOST, port=port)  # only its url is used by the fixture
        fake._port = port
        fake.ssl_context = ssl.create_default_context()
        h = await charger(
            fake, wait_accepted=False, security_profile=2, ca_bundle=str(pki.csms_root)
        )
        await h.settle(lambda: "InvalidTLSVersion" in logged_kinds(h.app.security_log))
        entry = next(e for e in h.app.security_log.entries() if e["kind"] == "InvalidTLSVersion")
        assert "without TLS" in str(entry["tech_info"])
