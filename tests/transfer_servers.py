"""Real upload peers for tests: an aiohttp HTTP(S) server and a pyftpdlib FTP server."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

HTTP_USER, HTTP_PASSWORD = "uploader", "http-pass-9f3k"
FTP_USER, FTP_PASSWORD = "diag", "ftp-pass-7q2w"
FTP_READONLY, FTP_READONLY_PASSWORD = "reader", "ro-pass-5t6y"


@dataclass
class HttpPeer:
    """Paths: /put/ takes PUT; /post/ refuses PUT (405) and takes multipart POST; /auth/
    needs Basic auth; /bad/ answers 400; /broken/ 500; /nowrite/ 405 to every method; /slow/
    waits for ``release``."""

    base_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)


def _authorized(request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    expected = base64.b64encode(f"{HTTP_USER}:{HTTP_PASSWORD}".encode()).decode()
    return header == f"Basic {expected}"


@asynccontextmanager
async def http_peer(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[HttpPeer]:
    peer = HttpPeer("")

    async def handle(request: web.Request) -> web.StreamResponse:
        peer.requests.append((request.method, request.path))
        parts = request.path.strip("/").split("/", 1)
        area, name = parts[0], (parts[1] if len(parts) > 1 else "")
        if area == "bad":
            return web.Response(status=400)
        if area == "broken":
            return web.Response(status=500)
        if area == "nowrite":  # takes no uploads at all
            return web.Response(status=405)
        if area == "auth" and not _authorized(request):
            return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})
        if area == "slow":
            peer.slow_started.set()
            await peer.release.wait()
        if area == "post":
            if request.method != "POST":
                return web.Response(status=405)
            reader = await request.multipart()
            async for part in reader:
                if part.name == "file":  # type: ignore[union-attr]
                    peer.files[part.filename or ""] = await part.read()  # type: ignore[union-attr]
            return web.Response(status=201)
        if request.method != "PUT":
            return web.Response(status=405)
        peer.files[name] = await request.read()
        return web.Response(status=201)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    peer.base_url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield peer
    finally:
        peer.release.set()
        await runner.cleanup()


@dataclass
class FtpPeer:
    home: Path
    port: int

    def url(self, user: str = FTP_USER, password: str = FTP_PASSWORD, path: str = "/") -> str:
        return f"ftp://{user}:{password}@127.0.0.1:{self.port}{path}"


@contextmanager
def ftp_peer(home: Path) -> Iterator[FtpPeer]:
    """pyftpdlib with a read-write user and a read-only one (PermissionDenied)."""
    home.mkdir(parents=True, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(home), perm="elradfmwMT")
    authorizer.add_user(FTP_READONLY, FTP_READONLY_PASSWORD, str(home), perm="elr")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.passive_ports = None
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    server.max_cons = 16
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    try:
        yield FtpPeer(home, port)
    finally:
        server.close_all()
        thread.join(timeout=5)
