"""Helpers for the proxy tests: a proxy configuration for backends on 127.0.0.1, an
in-process proxy that can be restarted on its port, and an evsed charger pointed at it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from controller.proxy.config import ProxyConfig, parse
from controller.proxy.server import ProxyServer
from controller.runtime.clock import Clock
from tests.conftest import STATION_ID


def proxy_config(
    tmp_path: Path,
    backends: list[dict[str, Any]],
    *,
    port: int = 0,
    chargers: list[dict[str, Any]] | None = None,
    **proxy: Any,
) -> ProxyConfig:
    return parse(
        {
            "proxy": {
                "listen_host": "127.0.0.1",
                "listen_port": port,
                "storage": str(tmp_path / "proxy.db"),
                "status_host": "127.0.0.1",
                "status_port": 0,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
                "response_timeout_s": 2.0,
                "open_timeout_s": 2.0,
                **proxy,
            },
            "backends": backends,
            "chargers": chargers if chargers is not None else [{"id": STATION_ID}],
        }
    )


def backend(name: str, url: str, role: str = "mirror", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "role": role, **extra}


class Rig:
    """Starts the proxy in this process; ``restart()`` stops it and starts a new one on the
    same port and database, as after a service restart."""

    def __init__(self, config: ProxyConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock
        self.proxy: ProxyServer | None = None

    async def start(self) -> ProxyServer:
        self.proxy = ProxyServer(self.config, clock=self.clock)
        await self.proxy.start()
        if self.config.listen_port == 0:
            # Keep the port across restarts: chargers have it in their configuration.
            self.config = _with_port(self.config, self.proxy.port)
        return self.proxy

    async def stop(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
            self.proxy = None

    async def restart(self) -> ProxyServer:
        await self.stop()
        return await self.start()

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls_cert else "ws"
        return f"{scheme}://127.0.0.1:{self.config.listen_port}/ocpp"

    @property
    def as_csms(self) -> Any:
        """What the ``charger`` fixture reads of a CSMS: its URL."""
        return SimpleNamespace(url=self.url)


def _with_port(config: ProxyConfig, port: int) -> ProxyConfig:
    from dataclasses import replace

    return replace(config, listen_port=port)


async def accepted(h: Any, timeout_s: float = 10.0) -> None:
    """Move the charger's clock until it is connected and its boot accepted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while h.app.port is None or h.app.port.connection_state() != "accepted":
        assert loop.time() < deadline, "the charger did not get through the proxy"
        await h.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)


async def eventually(predicate: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def session(h: Any, minutes: int = 2) -> None:
    """A local session: plug, card, ``minutes`` of charging (MeterValues each 60 s), card."""
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed, timeout_s=10)
    await h.advance(60 * minutes + 1, step_s=5)
    h.tap()
    await h.settle(lambda: not h.connector().hw.contactor.closed, timeout_s=10)


def tx_frames(csms: Any) -> list[tuple[str, Any]]:
    """(action, transactionId) of a dev CSMS's received transaction messages, in order."""
    out = []
    for f in csms.received:
        if f.action in ("StartTransaction", "StopTransaction", "MeterValues"):
            out.append((f.action, f.payload.get("transactionId")))
    return out
