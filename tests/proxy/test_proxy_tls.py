"""`evsed proxy` over TLS on both sides, with trustme certificates: an evsed charger on
security profile 2 (wss:// + Basic auth, the proxy's CA as its ca_bundle) behind the proxy,
the primary and a secondary on wss:// with their own CA (each backend's ca_bundle); and what
happens, and what is logged, when either side's certificate is not trusted."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from websockets.asyncio.client import connect

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.proxy.proxyrig import Rig, accepted, backend, eventually, proxy_config, session
from tests.proxy.proxyrig import tx_frames as mirror_tx
from tests.security.tlskit import HOST, Pki

pytestmark = pytest.mark.timeout(60)

CHARGER_PASSWORD = "charger-to-proxy-0123456789"  # A00.FR.205: >= 16 characters
BACKEND_PASSWORD = "proxy-to-backends-0123456789"
TLS_LOG = "controller.proxy.server"


class Certs:
    """The backends' CA (Pki.csms_ca, certificates for 127.0.0.1), the proxy's own CA and
    its server certificate, as files."""

    def __init__(self, directory: Path) -> None:
        self.pki = Pki.make(directory)
        self.proxy_ca = trustme.CA()
        self.proxy_root = directory / "proxy-root.pem"
        self.proxy_ca.cert_pem.write_to_path(str(self.proxy_root))
        self.proxy_cert, self.proxy_key = self.pki.write_leaf(
            self.proxy_ca.issue_cert(HOST), "proxy"
        )

    def backend_server(self, rogue: bool = False) -> ssl.SSLContext:
        """A backend's server context; ``rogue``: from a CA the proxy does not trust."""
        return self.pki.server_context(ca=self.pki.rogue_ca if rogue else None)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "pki")


def tls_backend(certs: Certs, rogue: bool = False) -> DevCsms:
    server = DevCsms(
        host=HOST,
        heartbeat_interval_s=3600,
        passwords={STATION_ID: BACKEND_PASSWORD},
        ssl_context=certs.backend_server(rogue),
    )
    return server


def tls_rig(tmp_path: Path, certs: Certs, primary: DevCsms, mirror: DevCsms) -> Rig:
    ca = str(certs.pki.csms_root)
    return Rig(
        proxy_config(
            tmp_path,
            [
                backend("billing", primary.url, "primary", password=BACKEND_PASSWORD, ca_bundle=ca),
                backend("watch", mirror.url, "mirror", password=BACKEND_PASSWORD, ca_bundle=ca),
            ],
            chargers=[{"id": STATION_ID, "password": CHARGER_PASSWORD}],
            tls_cert=certs.proxy_cert,
            tls_key=certs.proxy_key,
        )
    )


@pytest.fixture
async def servers(certs: Certs, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """(primary, mirror), both wss://; parametrized (indirect) with "rogue primary" or
    "rogue mirror": that backend's certificate is of a CA the proxy does not trust."""
    rogue = getattr(request, "param", "")
    primary = tls_backend(certs, rogue=rogue == "rogue primary")
    mirror = tls_backend(certs, rogue=rogue == "rogue mirror")
    async with primary, mirror:
        primary._last_transaction_id = 100
        mirror._last_transaction_id = 500
        yield primary, mirror


@pytest.fixture
async def rig(tmp_path: Path, certs: Certs, servers: Any) -> AsyncIterator[Rig]:
    r = tls_rig(tmp_path, certs, *servers)
    await r.start()
    yield r
    await r.stop()


async def start_charger(charger: Any, rig: Rig, ca_bundle: Path) -> Any:
    return await charger(
        rig.as_csms,
        wait_accepted=False,
        password=CHARGER_PASSWORD,
        security_profile=2,
        ca_bundle=str(ca_bundle),
    )


async def test_tls_on_both_sides_a_session_reaches_both_backends(
    rig: Rig, certs: Certs, servers: Any, charger: Any
) -> None:
    """Security profile 2 end to end (A00.FR.301/302: TLS with the server's certificate
    checked against the configured roots, Basic auth inside): the evsed charger connects to
    wss:// on the proxy trusting only the proxy's CA; the proxy connects to the primary and
    the mirror over wss:// trusting only their CA, with Basic auth. The session reaches the
    primary (ids 101) and the mirror (its own id 501), and every connection is TLS 1.2+."""
    primary, mirror = servers
    assert rig.url.startswith("wss://")
    h = await start_charger(charger, rig, certs.proxy_root)
    await accepted(h)
    await session(h)
    await eventually(lambda: ("StopTransaction", 501) in mirror_tx(mirror))
    assert {tx for a, tx in mirror_tx(primary) if a != "StartTransaction"} == {101}
    assert [a for a, _ in mirror_tx(primary)] == [a for a, _ in mirror_tx(mirror)]
    assert h.app.client.url.startswith("wss://")
    proxy = rig.proxy
    assert proxy is not None and proxy.tls_failures == 0
    ws = proxy.sessions[STATION_ID]._ws
    ssl_object = ws.transport.get_extra_info("ssl_object")
    assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    primary_ws = proxy.sessions[STATION_ID]._primary_ws
    assert primary_ws.transport.get_extra_info("ssl_object") is not None


async def test_charger_that_does_not_trust_the_proxy_is_refused_and_logged(
    rig: Rig, certs: Certs, servers: Any, charger: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The charger's ca_bundle is the backends' CA, not the proxy's: its TLS handshake
    fails (A00.FR.303 on the charger's side), it never reaches the primary, and the proxy
    logs each failed handshake with the charger's address and counts it (tls_failures on
    /api/status). evsed closes without a TLS alert, so the proxy says it closed the
    connection during the handshake."""
    primary, _ = servers
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    h = await start_charger(charger, rig, certs.pki.csms_root)
    proxy = rig.proxy
    assert proxy is not None

    async def tried() -> None:
        while proxy.tls_failures < 2:
            await h.advance(0.25, step_s=0.25)
            await asyncio.sleep(0.02)

    await asyncio.wait_for(tried(), 10)
    assert h.app.port is None or h.app.port.connection_state() != "accepted"
    assert primary.received == [] and not primary.connected(STATION_ID)
    assert proxy.sessions == {}
    assert proxy.status()["tls_failures"] >= 2
    lines = [r.getMessage() for r in caplog.records if r.name == TLS_LOG]
    assert any(
        "TLS handshake of a charger failed: 127.0.0.1:" in line
        and "closed the connection during the handshake" in line
        for line in lines
    ), lines


def _blocking_client(port: int, ctx: ssl.SSLContext) -> str:
    """A charger's TLS stack that sends its alert before closing (OpenSSL, mbedTLS do)."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            return type(exc).__name__
    return "connected"


@pytest.mark.parametrize(
    ("case", "logged"),
    [
        ("untrusted", "TLSV1_ALERT_UNKNOWN_CA"),
        ("tls1.1", "UNSUPPORTED_PROTOCOL"),
        ("plain", "HTTP_REQUEST"),
    ],
)
async def test_failed_handshakes_are_logged_with_the_reason(
    rig: Rig, certs: Certs, case: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """What the proxy logs for a charger whose TLS stack sends an alert: it does not trust
    the proxy's certificate (unknown CA); it offers TLS 1.1 only (the proxy requires 1.2,
    security whitepaper / A00.FR.309 "TLS v1.2 or above"); it speaks plain HTTP (ws://) to the
    wss:// port. None of them gets a session."""
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    proxy = rig.proxy
    assert proxy is not None
    port = rig.config.listen_port
    if case == "plain":
        with pytest.raises((websockets.exceptions.WebSocketException, OSError)):
            async with connect(f"ws://{HOST}:{port}/ocpp/{STATION_ID}", open_timeout=5):
                pass
    else:
        ctx = ssl.create_default_context(
            cafile=str(certs.pki.csms_root if case == "untrusted" else certs.proxy_root)
        )
        if case == "tls1.1":
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the point of the case
                ctx.minimum_version = ssl.TLSVersion.TLSv1_1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        assert await asyncio.to_thread(_blocking_client, port, ctx) != "connected"
    await eventually(lambda: proxy.tls_failures == 1)
    lines = [r.getMessage() for r in caplog.records if r.name == TLS_LOG]
    assert len(lines) == 1 and logged in lines[0] and "127.0.0.1:" in lines[0], lines
    assert proxy.sessions == {}


async def _upgrade_status(rig: Rig, certs: Certs) -> int:
    ctx = ssl.create_default_context(cafile=str(certs.proxy_root))
    token = base64.b64encode(f"{STATION_ID}:{CHARGER_PASSWORD}".encode()).decode()
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect(
            f"{rig.url}/{STATION_ID}",
            ssl=ctx,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {token}"},
            open_timeout=10,
        ):
            pass
    return int(refused.value.response.status_code)


@pytest.mark.parametrize("servers", ["rogue primary"], indirect=True)
async def test_primary_with_an_untrusted_certificate_refuses_the_charger_with_502(
    rig: Rig, certs: Certs, servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The primary presents a certificate of a CA not in its ca_bundle: the proxy does not
    talk to it, and the charger's upgrade is answered HTTP 502 (the charger keeps its
    messages and retries, as when its CSMS is unreachable); the log names the reason."""
    primary, _ = servers
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    assert await _upgrade_status(rig, certs) == 502
    assert primary.received == [] and not primary.connected(STATION_ID)
    lines = [r.getMessage() for r in caplog.records if r.name == TLS_LOG]
    assert any(
        "primary billing unreachable" in x and "CERTIFICATE_VERIFY_FAILED" in x for x in lines
    )
    proxy = rig.proxy
    assert proxy is not None and proxy.sessions == {}


@pytest.mark.parametrize("servers", ["rogue mirror"], indirect=True)
async def test_secondary_with_an_untrusted_certificate_stays_queued(
    rig: Rig, certs: Certs, servers: Any, charger: Any
) -> None:
    """The mirror presents a certificate the proxy does not trust: the charger is served
    by the primary as usual; the mirror gets nothing, its link shows `failed: ...` with the
    certificate error and its queue keeps every message (boot, statuses, the session)."""
    primary, mirror = servers
    h = await start_charger(charger, rig, certs.proxy_root)
    await accepted(h)
    await session(h)
    await eventually(lambda: any(f.action == "StopTransaction" for f in primary.received))
    proxy = rig.proxy
    assert proxy is not None
    watch = next(b for b in proxy.status()["chargers"][0]["backends"] if b["name"] == "watch")
    assert watch["state"].startswith("failed") and "certificate" in watch["state"].lower()
    assert watch["queue_length"] >= 6
    assert watch["queue_length"] == proxy.store.queue_length(STATION_ID, "watch")
    assert mirror.received == [] and not mirror.connected(STATION_ID)
