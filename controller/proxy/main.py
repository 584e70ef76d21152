"""`evsed proxy --config proxy.toml`: run the proxy and its status page until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from controller.proxy.config import ProxyConfig
from controller.proxy.server import ProxyServer
from controller.proxy.status import StatusServer

LOG = logging.getLogger(__name__)


async def run_proxy(config: ProxyConfig, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); then close every connection."""
    proxy = ProxyServer(config)
    status = StatusServer(proxy.status, config.status_host, config.status_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await proxy.start()
    try:
        await status.start()
        LOG.info("status on http://%s:%d/api/status", config.status_host, status.port)
        print(
            f"evsed proxy listening on port {proxy.port}, status on port {status.port}",
            flush=True,
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await status.stop()
        await proxy.stop()
        LOG.info("evsed proxy stopped")
