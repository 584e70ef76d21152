"""One WebSocket to one CSMS for any OCPP version: back-off, Basic auth, TLS, subprotocol."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import CloseCode

from controller.csms.deferred import proxy_setting
from controller.csms.versions import VersionChoice
from controller.runtime.clock import Clock
from controller.security.tls import (
    ClosedAfterHandshake,
    HandshakeRefused,
    PlainTextRefused,
    TlsSetupError,
)

LOG = logging.getLogger(__name__)

# How long close() waits for the CSMS to answer the closing handshake.
CLOSE_TIMEOUT_S = 2.0
# OCPP-J frames are small; a CSMS sending more than this is broken or hostile.
MAX_FRAME_BYTES = 2**20


@dataclass(frozen=True)
class ConnectionOptions:
    """Where the CSMS is and how patiently to talk to it (the ``[csms]`` table)."""

    csms_url: str
    password: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    response_timeout_s: float = 30.0
    open_timeout_s: float = 10.0
    # wss:// URL for security profiles 2 and 3 when csms_url is ws:// (A00.FR.006: a CSMS may
    # serve each profile on its own port); None: csms_url with wss://.
    tls_url: str | None = None
    # permessage-deflate (RFC 7692): "default" (websockets' offer; the CSMS picks the window,
    # up to 32 KiB: ~170 KiB of zlib state), "small" (2 KiB windows, memLevel 4: many
    # connections in one process, evsed fleet) or "off".
    compression: str = "default"


def _compression_args(mode: str) -> dict[str, Any]:
    """connect() arguments for ConnectionOptions.compression."""
    if mode == "off":
        return {"compression": None}
    if mode == "small":
        # The settings websockets' documentation gives to reduce memory (topics/compression).
        factory = ClientPerMessageDeflateFactory(
            server_max_window_bits=11, client_max_window_bits=11, compress_settings={"memLevel": 4}
        )
        return {"compression": None, "extensions": [factory]}
    return {}


def backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": half fixed, half random (OCPP-J errata 3.4)."""
    ceiling = min(max_s, min_s * (2 ** min(attempt, 30)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# The wait before reconnect attempt ``attempt`` (0: the first after a lost connection or
# after a successful one; it grows while attempts fail). Called before each wait, so a
# strategy reading settings follows a change at the next attempt.
Backoff = Callable[[int], float]


def exponential_backoff(options: ConnectionOptions, rng: random.Random) -> Backoff:
    """The ``[csms]`` table's back-off (reconnect_min_s doubling up to reconnect_max_s,
    equal jitter): OCPP 1.6, and 2.0.1 without a device model."""
    return lambda attempt: backoff_s(attempt, options.reconnect_min_s, options.reconnect_max_s, rng)


def station_url(csms_url: str, station_id: str) -> str:
    """OCPP-J 3.1.1 (1.6) / 2.0.1 part 4 3.1: the URL ends with the station's identity."""
    return csms_url.rstrip("/") + "/" + quote(station_id, safe="")


def basic_auth_header(station_id: str, password: str | None) -> dict[str, str]:
    """Security profile 1: HTTP Basic with user = the station's identity."""
    if not password:
        return {}
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


Session = Callable[[ClientConnection], Awaitable[None]]


class CsmsConnection:
    """Connects, runs ``session`` on each open WebSocket, reconnects with back-off.

    What differs between versions and backends is passed in: the subprotocol, the headers
    (called per attempt: a CSMS-set key applies to the next connection), the ping interval,
    an optional TLS context (``wss://``), and ``on_state`` ("connecting", "connected",
    "offline") for the owner's view of the link. ``url_of`` (per attempt) replaces ``url``
    when the URL depends on the security profile; ``on_failure`` hears why an attempt failed
    before a session ran (TLS, HTTP status at the upgrade, network). ``backoff`` is the
    version's reconnect wait (2.0.1: the OCPPCommCtrlr RetryBackOff* variables); without it
    the ``[csms]`` reconnect_min_s / reconnect_max_s back-off.
    """

    def __init__(
        self,
        *,
        url: str,
        subprotocol: str,
        options: ConnectionOptions,
        clock: Clock,
        session: Session,
        headers: Callable[[], dict[str, str]] = dict,
        ping_interval_s: Callable[[], int] = lambda: 0,
        ssl_context: Callable[[], ssl.SSLContext | None] | None = None,
        on_state: Callable[[str], None] = lambda state: None,
        rng: random.Random | None = None,
        url_of: Callable[[], str] | None = None,
        on_failure: Callable[[BaseException], None] = lambda exc: None,
        versions: VersionChoice | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        # Every listed version is offered; a CSMS picking another than ``subprotocol`` ends
        # run() (``handed_over``): the owner builds that version's adapter.
        self._versions = versions
        self.handed_over = False
        self._url_of = url_of
        self._on_failure = on_failure
        self.subprotocol = subprotocol
        self.options = options
        self._clock = clock
        self._session = session
        self._headers = headers
        self._ping_interval_s = ping_interval_s
        self._ssl_context = ssl_context
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._backoff = backoff or exponential_backoff(options, self._rng)
        self._ws: ClientConnection | None = None
        self._closing = False  # close() was called: no reconnecting
        self._reconnect_now = False  # reconnect() was called: the next attempt without delay
        # Set by hold_offline() until release(): no attempts meanwhile (simulated outages).
        self._released: asyncio.Event | None = None
        self.connects = 0

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def reconnecting(self) -> bool:
        """reconnect() closed the connection on purpose; a new one follows at once."""
        return self._reconnect_now

    def _open_args(self) -> tuple[str, ssl.SSLContext | None]:
        """The URL and TLS context of the next attempt (raises TlsSetupError or
        PlainTextRefused: nothing is sent)."""
        if self._url_of is not None:
            self.url = self._url_of()
        # None: websockets makes its default context for a wss:// URL itself.
        tls = self._ssl_context() if self._ssl_context is not None else None
        if tls is not None and not self.url.startswith("wss://"):
            # A00.FR.311: a TLS profile never falls back to plain text.
            raise PlainTextRefused(f"TLS is required but the URL is {self.url.split(':')[0]}://")
        return self.url, tls

    async def run(self) -> None:
        """Stay connected until close(), with jittered exponential back-off between attempts."""
        attempt = 0
        while not self._closing:
            released = self._released
            if released is not None:
                await released.wait()
                attempt = 0
                continue
            self._on_state("connecting")
            self._reconnect_now = False
            opened = False
            tls: ssl.SSLContext | None = None
            try:
                ping_s = self._ping_interval_s()
                url, tls = self._open_args()
                offer = self._versions.offered() if self._versions else [self.subprotocol]
                async with connect(
                    url,
                    subprotocols=offer,  # type: ignore[arg-type]
                    additional_headers=self._headers(),
                    ping_interval=ping_s or None,
                    ping_timeout=ping_s or None,
                    open_timeout=self.options.open_timeout_s,
                    # Bounds close(): a CSMS that never answers the closing handshake must
                    # not hold up a stop or a Reset.
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_FRAME_BYTES,
                    ssl=tls,
                    **_compression_args(self.options.compression),
                    proxy=proxy_setting(),  # no urllib.request import without a proxy
                ) as ws:
                    opened = True
                    if self._versions is not None and not self._versions.picked(
                        ws.subprotocol, self.subprotocol
                    ):
                        if self._versions.switch_to is not None:
                            self.handed_over = True
                            self._closing = True
                        await ws.close(CloseCode.NORMAL_CLOSURE, "OCPP version not used")
                    elif ws.subprotocol != self.subprotocol:
                        LOG.error("CSMS did not accept subprotocol %s", self.subprotocol)
                        await ws.close()
                    elif self._released is not None:
                        # hold_offline() came during the handshake: no session.
                        await ws.close(CloseCode.NORMAL_CLOSURE, "held offline")
                    else:
                        attempt = 0
                        self.connects += 1
                        LOG.info("connected to %s", self.url)
                        self._on_state("connected")
                        self._ws = ws
                        try:
                            await self._session(ws)
                        finally:
                            self._ws = None
            except asyncio.CancelledError:
                raise
            except TlsSetupError as exc:
                LOG.error("CSMS connection not attempted: %s", exc)
                self._failed(exc, True)
            except (
                OSError,
                websockets.exceptions.WebSocketException,
                TimeoutError,
                PlainTextRefused,
            ) as exc:
                if isinstance(exc, PlainTextRefused | websockets.exceptions.SecurityError):
                    LOG.error("CSMS connection refused: %s (A00.FR.311)", exc)
                else:
                    LOG.warning("CSMS connection failed: %s", exc)
                if not opened:
                    self._failed(exc, tls is not None)
            except Exception:
                LOG.exception("CSMS session ended with an error")
            self._on_state("offline")
            if self._closing:
                break
            if self._released is not None:
                continue  # held offline: wait for release() instead of backing off
            if self._reconnect_now:
                attempt = 0
                LOG.info("reconnecting now")
                continue
            try:
                delay_s = self._backoff(attempt)
            except Exception:
                # A strategy's bug must not end the connection for good.
                LOG.exception("reconnect back-off failed; using the [csms] one")
                delay_s = backoff_s(
                    attempt, self.options.reconnect_min_s, self.options.reconnect_max_s, self._rng
                )
            attempt += 1
            LOG.info("reconnecting in %.1f s", delay_s)
            await self._clock.sleep(delay_s)

    def _failed(self, exc: BaseException, tls: bool) -> None:
        """Tell the owner why an attempt failed, in neutral exceptions."""
        if tls and isinstance(exc, websockets.exceptions.InvalidMessage):
            # The request is sent only after the TLS handshake completed.
            exc = ClosedAfterHandshake(str(exc))
        elif isinstance(exc, websockets.exceptions.InvalidStatus):
            exc = HandshakeRefused(exc.response.status_code)
        elif isinstance(exc, websockets.exceptions.SecurityError):
            exc = PlainTextRefused(str(exc))
        try:
            self._on_failure(exc)
        except Exception:
            LOG.exception("connection failure handler failed")

    async def reconnect(self, reason: str) -> None:
        """Close the connection normally (1000) and open a new one at once: new credentials
        or a new security profile apply to the next connection."""
        ws = self._ws
        if ws is None or self._closing:
            return
        self._reconnect_now = True
        LOG.info("closing the CSMS connection to reconnect: %s", reason)
        try:
            await ws.close(CloseCode.NORMAL_CLOSURE, reason[:120])
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            LOG.info("closing the CSMS connection failed: %s", exc)

    @property
    def held_offline(self) -> bool:
        return self._released is not None

    async def hold_offline(self, reason: str) -> None:
        """Close the connection normally (1000) and make no attempt until release(): an
        offline period of a simulated charger (evsed fleet), or a test's network outage."""
        if self._released is None:
            self._released = asyncio.Event()
        await self._close_ws(reason)

    def release(self) -> None:
        """End hold_offline(): the next attempt starts at once."""
        released, self._released = self._released, None
        if released is not None:
            released.set()

    async def close(self, reason: str) -> None:
        """Close the connection normally (1000) and stop reconnecting.

        The owner cancels ``run`` afterwards; cancelling it with the connection still open
        would close it with 1011 (internal error), which a CSMS may report as a fault.
        """
        self._closing = True
        self.release()  # a held connection's run() returns instead of waiting
        await self._close_ws(reason)

    async def _close_ws(self, reason: str) -> None:
        """Close the open WebSocket, if any, normally (1000) with ``reason``."""
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.close(CloseCode.NORMAL_CLOSURE, reason[:120])
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            LOG.info("closing the CSMS connection failed: %s", exc)
