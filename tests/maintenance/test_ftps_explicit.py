"""FTPS with explicit TLS (AUTH TLS, RFC 4217) against a real server: pyftpdlib's TLS handler
that refuses plain-text logins and data (security whitepaper N01 and L01: FTPS uploads of logs
and downloads of firmware)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from controller.maintenance.download import DownloadError, download
from controller.maintenance.transfers import UploadResult
from controller.maintenance.upload import upload_file
from controller.maintenance.urls import parse_location

USER, PASSWORD = "fw", "ftps-pass-31"


class Ftps:
    def __init__(self, home: Path, port: int, ca: trustme.CA) -> None:
        self.home = home
        self.port = port
        self.ca = ca

    def url(self, path: str = "/") -> str:
        return f"ftps://{USER}:{PASSWORD}@127.0.0.1:{self.port}{path}"

    def client_context(self, ca: trustme.CA | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        (ca or self.ca).configure_trust(ctx)
        return ctx


@pytest.fixture
def ftps(tmp_path: Path) -> Iterator[Ftps]:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    pem.write_bytes(
        b"".join(b.bytes() for b in leaf.cert_chain_pems) + leaf.private_key_pem.bytes()
    )
    home = tmp_path / "home"
    home.mkdir()
    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, PASSWORD, str(home), perm="elradfmwMT")

    class Handler(TLS_FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.certfile = str(pem)
    Handler.tls_control_required = True  # no login before AUTH TLS
    Handler.tls_data_required = True  # PROT P: the file itself encrypted
    server = ThreadedFTPServer(("127.0.0.1", 0), Handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    try:
        yield Ftps(home, port, ca)
    finally:
        server.close_all()
        thread.join(timeout=5)


async def test_upload_over_explicit_ftps(ftps: Ftps) -> None:
    data = b"diagnostics " * 5000
    (ftps.home / "logs").mkdir()  # the location is a directory on the server (1.6 6.25)
    outcome = await upload_file(
        parse_location(ftps.url("/logs/")), data, "diag.tar.gz", ssl_context=ftps.client_context()
    )
    assert outcome.result is UploadResult.UPLOADED, outcome
    assert (ftps.home / "logs" / "diag.tar.gz").read_bytes() == data


async def test_upload_refuses_a_server_it_cannot_verify(ftps: Ftps) -> None:
    outcome = await upload_file(
        parse_location(ftps.url("/")),
        b"x",
        "diag.tar.gz",
        ssl_context=ftps.client_context(trustme.CA()),
    )
    assert outcome.result is not UploadResult.UPLOADED
    assert not (ftps.home / "diag.tar.gz").exists()


async def test_download_over_explicit_ftps(ftps: Ftps, tmp_path: Path) -> None:
    image = bytes(range(256)) * 4096
    (ftps.home / "evsed.whl").write_bytes(image)
    got = await download(
        parse_location(ftps.url("/evsed.whl")),
        tmp_path / "fw.bin",
        max_bytes=10 * len(image),
        timeout_s=10,
        tls_context=ftps.client_context(),
    )
    assert got.path.read_bytes() == image


async def test_download_refuses_a_server_it_cannot_verify(ftps: Ftps, tmp_path: Path) -> None:
    (ftps.home / "evsed.whl").write_bytes(b"image")
    with pytest.raises(DownloadError):
        await download(
            parse_location(ftps.url("/evsed.whl")),
            tmp_path / "fw.bin",
            max_bytes=1000,
            timeout_s=10,
            tls_context=ftps.client_context(trustme.CA()),
        )
    assert not (tmp_path / "fw.bin").exists()
