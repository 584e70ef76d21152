"""controller/maintenance/upload.py against real peers: an aiohttp server (PUT, POST multipart,
Basic auth, HTTPS with a trustme CA) and pyftpdlib (passive STOR, login, read-only user, resume
with REST). The neutral results are what GetLog maps to N01.FR.09/N01.FR.10 statuses."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trustme

from controller.maintenance.upload import UploadResult, upload_file
from controller.maintenance.urls import parse_location
from tests.transfer_servers import (
    FTP_PASSWORD,
    FTP_READONLY,
    FTP_READONLY_PASSWORD,
    FTP_USER,
    HTTP_PASSWORD,
    HTTP_USER,
    ftp_peer,
    http_peer,
)

DATA = bytes(range(256)) * 1000  # 256 kB, not text: the bytes must arrive unchanged
NAME = "CP-1-diagnostics-20260101T120000Z.tar.gz"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_http_put_into_the_location_directory() -> None:
    """6.25: location is a directory; the file is PUT inside it under the file name."""
    async with http_peer() as peer:
        outcome = await upload_file(parse_location(f"{peer.base_url}/put/dir"), DATA, NAME)
        assert outcome.result is UploadResult.UPLOADED, outcome
        assert peer.files[f"dir/{NAME}"] == DATA
        assert peer.requests == [("PUT", f"/put/dir/{NAME}")]


async def test_http_put_refused_falls_back_to_multipart_post() -> None:
    async with http_peer() as peer:
        outcome = await upload_file(parse_location(f"{peer.base_url}/post/"), DATA, NAME)
        assert outcome.result is UploadResult.UPLOADED, outcome
        assert peer.files[NAME] == DATA
        assert [m for m, _ in peer.requests] == ["PUT", "POST"]


async def test_http_basic_auth_from_the_url() -> None:
    async with http_peer() as peer:
        host = peer.base_url.removeprefix("http://")
        good = parse_location(f"http://{HTTP_USER}:{HTTP_PASSWORD}@{host}/auth/")
        assert (await upload_file(good, DATA, NAME)).result is UploadResult.UPLOADED
        bad = parse_location(f"http://{HTTP_USER}:wrong@{host}/auth/")
        outcome = await upload_file(bad, DATA, NAME)
        assert outcome.result is UploadResult.PERMISSION_DENIED
        assert "wrong" not in outcome.detail


@pytest.mark.parametrize(
    ("area", "result"), [("bad", UploadResult.BAD_MESSAGE), ("broken", UploadResult.FAILED)]
)
async def test_http_errors_are_neutral_results(area: str, result: UploadResult) -> None:
    async with http_peer() as peer:
        outcome = await upload_file(parse_location(f"{peer.base_url}/{area}/"), DATA, NAME)
        assert outcome.result is result


async def test_unreachable_host_fails_without_raising() -> None:
    port = _closed_port()
    for url in (f"http://127.0.0.1:{port}/x/", f"ftp://u:p@127.0.0.1:{port}/x/"):
        outcome = await upload_file(parse_location(url), DATA, NAME)
        assert outcome.result is UploadResult.FAILED
        assert not outcome.result.final  # worth a retry


async def test_https_verifies_the_server(tmp_path: Path) -> None:
    """https: the server certificate is verified (by default against the system trust
    store, which does not know this test CA)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with http_peer(server_ctx) as peer:
        location = parse_location(f"{peer.base_url}/put/")
        outcome = await upload_file(location, DATA, NAME, ssl_context=client_ctx)
        assert outcome.result is UploadResult.UPLOADED
        untrusted = await upload_file(location, DATA, "other.tar.gz")
        assert untrusted.result is UploadResult.FAILED
        assert "other.tar.gz" not in peer.files


async def test_ftp_passive_stor(tmp_path: Path) -> None:
    with ftp_peer(tmp_path / "ftp") as ftp:
        (ftp.home / "in").mkdir()
        outcome = await upload_file(parse_location(ftp.url(path="/in")), DATA, NAME)
        assert outcome.result is UploadResult.UPLOADED, outcome
        assert (ftp.home / "in" / NAME).read_bytes() == DATA


async def test_ftp_refused_login_is_permission_denied(tmp_path: Path) -> None:
    with ftp_peer(tmp_path / "ftp") as ftp:
        outcome = await upload_file(parse_location(ftp.url(FTP_USER, "nope")), DATA, NAME)
        assert outcome.result is UploadResult.PERMISSION_DENIED
        assert FTP_PASSWORD not in outcome.detail


async def test_ftp_read_only_user_is_permission_denied(tmp_path: Path) -> None:
    with ftp_peer(tmp_path / "ftp") as ftp:
        location = parse_location(ftp.url(FTP_READONLY, FTP_READONLY_PASSWORD))
        outcome = await upload_file(location, DATA, NAME)
        assert outcome.result is UploadResult.PERMISSION_DENIED, outcome
        assert not (ftp.home / NAME).exists()


async def test_ftp_resume_after_an_interrupted_upload(tmp_path: Path) -> None:
    """Whitepaper N01 error handling: "it is recommended that the Charge Point tries
    resume": a retry asks the server's SIZE and continues with REST + STOR."""
    with ftp_peer(tmp_path / "ftp") as ftp:
        half = len(DATA) // 2 + 17
        (ftp.home / NAME).write_bytes(DATA[:half])  # what the interrupted attempt left
        outcome = await upload_file(parse_location(ftp.url()), DATA, NAME, resume=True)
        assert outcome.result is UploadResult.UPLOADED, outcome
        assert f"resumed at byte {half}" in outcome.detail
        assert outcome.sent_bytes == len(DATA) - half
        assert (ftp.home / NAME).read_bytes() == DATA


async def test_ftps_implicit_tls_on_control_and_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ftps on an implicit-TLS port (990, here the test server's): TLS from the first byte,
    PBSZ 0 / PROT P, the file over a TLS data connection; the server certificate is verified
    (a client that does not trust the CA fails). Peer: aioftp's server with a trustme cert
    (pyftpdlib's TLS needs pyOpenSSL, not installed; explicit AUTH TLS is not tested)."""
    import aioftp

    from controller.maintenance import upload as upload_module

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    home = tmp_path / "ftps"
    home.mkdir()
    user = aioftp.User("tls-user", "tls-pass-1x2y", base_path=home)
    server = aioftp.Server([user], ssl=server_ctx)
    await server.start("127.0.0.1", 0)
    try:
        port = server.address[1]
        monkeypatch.setattr(upload_module, "IMPLICIT_FTPS_PORTS", {990, port})
        location = parse_location(f"ftps://tls-user:tls-pass-1x2y@127.0.0.1:{port}/")
        outcome = await upload_file(location, DATA, NAME, ssl_context=client_ctx)
        assert outcome.result is UploadResult.UPLOADED, outcome
        assert (home / NAME).read_bytes() == DATA
        untrusted = await upload_file(location, DATA, "other.tar.gz", timeout_s=10)
        assert untrusted.result is UploadResult.FAILED
        assert not (home / "other.tar.gz").exists()
    finally:
        await server.close()
