"""Local file servers for the firmware tests: aiohttp (HTTP/HTTPS) and pyftpdlib (FTP)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


class FileServer:
    """An aiohttp app serving ``files`` plus misbehaving routes:

    /f/<name> the file; /slow (one chunk, then silence); /redirect/<n>/<name> (n hops to
    /f/<name>); /to-http/<name> (an https page redirecting to plain http); /huge (announces
    a size above any limit); /endless (no length, never ends); /missing (404).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        self.auth_seen: list[str | None] = []
        self.port = 0
        self.scheme = "http"
        self._runner: web.AppRunner | None = None
        self.silence = asyncio.Event()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/f/{name}", self._file)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/redirect/{n}/{name}", self._redirect)
        app.router.add_get("/to-http/{name}", self._to_http)
        app.router.add_get("/to-ftp", self._to_ftp)
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/endless", self._endless)
        return app

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        self.auth_seen.append(request.headers.get("Authorization"))
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name])

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10_000
        await resp.prepare(request)
        await resp.write(b"x" * 100)
        await self.silence.wait()  # until the test ends
        return resp

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        n = int(request.match_info["n"])
        name = request.match_info["name"]
        target = f"/f/{name}" if n <= 1 else f"/redirect/{n - 1}/{name}"
        raise web.HTTPFound(target)

    async def _to_http(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"http://127.0.0.1:{self.port}/f/{request.match_info['name']}")

    async def _to_ftp(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("ftp://127.0.0.1:21/fw.bin")

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10 * 1024 * 1024 * 1024
        await resp.prepare(request)
        await resp.write(b"x" * 1024)
        return resp

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = b"y" * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(100_000):
                await resp.write(block)
        return resp

    @contextlib.asynccontextmanager
    async def running(self, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[FileServer]:
        runner = web.AppRunner(self.app(), shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.scheme = "https" if ssl_context else "http"
        try:
            yield self
        finally:
            self.silence.set()
            await runner.cleanup()


@contextlib.asynccontextmanager
async def truncating_server(announced: int, sent: bytes) -> AsyncIterator[str]:
    """A raw HTTP server announcing ``announced`` bytes, sending ``sent`` and hanging up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % announced
        )
        writer.write(sent)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/fw.bin"
    finally:
        server.close()


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) from a local trustme CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


class _Cut:
    """A file that ends after ``limit`` bytes (the server then reports the transfer done)."""

    def __init__(self, fh: Any, limit: int) -> None:
        self._fh = fh
        self._left = limit

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._fh.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@contextlib.contextmanager
def ftp_server(
    root: Path, user: str = "fw", password: str = "secret", *, cut_first_after: int | None = None
) -> Iterator[int]:
    """pyftpdlib on 127.0.0.1 in a thread; ``user`` may read ``root``. Yields the port.
    ``cut_first_after``: the first RETR ends after that many bytes (an interrupted transfer)."""
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elr")
    cuts = [cut_first_after] if cut_first_after is not None else []

    class CuttingFS(AbstractedFS):  # type: ignore[misc]
        def open(self, filename: str, mode: str) -> Any:
            fh = super().open(filename, mode)
            return _Cut(fh, cuts.pop()) if cuts and "r" in mode else fh

    handler = type(
        "Handler",
        (FTPHandler,),
        {
            "authorizer": authorizer,
            "banner": "test",
            "abstracted_fs": CuttingFS,
            "use_sendfile": False,
        },
    )
    handler.passive_ports = None
    server = FTPServer(("127.0.0.1", 0), handler)
    port = server.address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close_all()
        thread.join(timeout=5)
