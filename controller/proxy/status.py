"""The proxy's status on a small local HTTP port: ``/api/status`` (JSON) and ``/`` (a page)."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

StatusSource = Callable[[], dict[str, Any]]


def _age(at: float | None) -> str:
    return "" if at is None else f"{max(0.0, time.time() - at):.0f} s ago"


def render(status: dict[str, Any]) -> str:
    rows = []
    for charger in status["chargers"]:
        for b in charger["backends"]:
            cells = (
                charger["id"],
                "connected" if charger["connected"] else "offline",
                b["name"],
                b["role"],
                b["state"],
                f"{b.get('last_message', '')} {_age(b.get('last_message_at'))}".strip(),
                str(b["queue_length"]),
            )
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Charger", "", "Backend", "Role", "State", "Last message", "Queued")
    )
    body = "\n".join(rows) or '<tr><td colspan="7">no charger</td></tr>'
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>evsed proxy</title>"
        "<meta http-equiv='refresh' content='5'></head><body><h1>evsed proxy</h1>"
        f"<table border='1' cellpadding='4'><tr>{head}</tr>\n{body}</table></body></html>"
    )


class StatusServer:
    def __init__(self, source: StatusSource, host: str, port: int) -> None:
        self._source = source
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/status", self._json)
        app.router.add_get("/", self._page)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _json(self, request: web.Request) -> web.Response:
        return web.json_response(self._source())

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=render(self._source()), content_type="text/html")
