"""The chargers' side over TLS: the handshake runs after the TCP accept (loop.start_tls), so a
charger whose TLS handshake fails is logged with its address and reason; asyncio's own TLS
server drops those silently."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection

from controller.runtime.tasks import TaskGroup

LOG = logging.getLogger(__name__)

# Called with the peer ("host:port") and the failure of its TLS handshake.
OnTlsFailure = Callable[[str, BaseException], None]


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """The proxy's server context: its certificate chain and key, TLS 1.2 at least (OCPP
    security whitepaper: TLS 1.2 or above)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def tls_connection_class(
    ctx: ssl.SSLContext,
    tasks: TaskGroup,
    on_failure: OnTlsFailure,
    handshake_timeout_s: float,
) -> type[ServerConnection]:
    """A ServerConnection that first completes the TLS handshake on the accepted socket and
    only then starts the WebSocket handshake; give it to serve() as create_connection (with
    no ssl=)."""

    class TlsServerConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            tcp: Any = transport
            tcp.pause_reading()  # the ClientHello waits for start_tls
            tasks.spawn(self._tls(tcp), name="tls-handshake")

        async def _tls(self, tcp: asyncio.Transport) -> None:
            peer = _peer(tcp.get_extra_info("peername"))
            try:
                tls = await self.loop.start_tls(
                    tcp,
                    self,
                    ctx,
                    server_side=True,
                    ssl_handshake_timeout=handshake_timeout_s,
                )
            except asyncio.CancelledError:
                tcp.abort()
                raise
            except (OSError, TimeoutError, ConnectionError, ssl.SSLError) as exc:
                tcp.abort()
                on_failure(peer, exc)
                return
            if tls is None:  # closed while the handshake ran
                tcp.abort()
                on_failure(peer, ConnectionResetError("closed during the handshake"))
                return
            super().connection_made(tls)

        def connection_lost(self, exc: Exception | None) -> None:
            if not hasattr(self, "transport"):
                return  # lost before TLS completed: the WebSocket side never started
            super().connection_lost(exc)

    return TlsServerConnection


def describe(exc: BaseException) -> str:
    """A failed handshake in words an operator can act on."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLError) and reason:
        return f"{reason} ({exc.strerror or exc})"
    if isinstance(exc, ConnectionError | EOFError) or (isinstance(exc, OSError) and not str(exc)):
        return (
            "the charger closed the connection during the handshake (a charger that does not"
            " trust the proxy's certificate does this)"
        )
    if isinstance(exc, TimeoutError):
        return "no TLS handshake in time"
    return str(exc) or type(exc).__name__


def _peer(name: Any) -> str:
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)
