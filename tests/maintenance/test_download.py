"""download(): HTTP(S) and FTP against real local servers (aiohttp, pyftpdlib); every failure
leaves no file behind (only a complete file is ever renamed into place)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.maintenance.download import DownloadError, DownloadErrorKind, download
from tests.maintenance.servers import FileServer, ftp_server, tls_pair, truncating_server

BODY = os.urandom(300_000)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def fails(kind: DownloadErrorKind, url: str, dest: Path, **kw: object) -> None:
    with pytest.raises(DownloadError) as info:
        await download(url, dest, **{"max_bytes": 1 << 20, "timeout_s": 5.0, **kw})  # type: ignore[arg-type]
    assert info.value.kind is kind, info.value
    assert leftovers(dest.parent) == []


async def test_http_good_file(tmp_path: Path) -> None:
    async with FileServer({"fw.bin": BODY}).running() as srv:
        got = await download(
            srv.url("/f/fw.bin"), tmp_path / "fw.bin", max_bytes=1 << 20, timeout_s=5
        )
    assert got.size_bytes == len(BODY)
    assert (tmp_path / "fw.bin").read_bytes() == BODY
    assert leftovers(tmp_path) == ["fw.bin"]


async def test_http_404_is_not_found(tmp_path: Path) -> None:
    async with FileServer({}).running() as srv:
        await fails(DownloadErrorKind.NOT_FOUND, srv.url("/f/nothing"), tmp_path / "fw.bin")


async def test_http_too_big_announced_and_streamed(tmp_path: Path) -> None:
    async with FileServer({"fw.bin": BODY}).running() as srv:
        await fails(DownloadErrorKind.TOO_BIG, srv.url("/huge"), tmp_path / "a")
        await fails(DownloadErrorKind.TOO_BIG, srv.url("/endless"), tmp_path / "b")
        # The limit is the file's size, not a guess: one byte less fails too.
        await fails(
            DownloadErrorKind.TOO_BIG, srv.url("/f/fw.bin"), tmp_path / "c", max_bytes=len(BODY) - 1
        )


async def test_http_truncated_transfer(tmp_path: Path) -> None:
    async with truncating_server(10_000, b"z" * 4000) as url:
        await fails(DownloadErrorKind.TRUNCATED, url, tmp_path / "fw.bin")


async def test_http_stalled_transfer_times_out(tmp_path: Path) -> None:
    async with FileServer({}).running() as srv:
        await fails(DownloadErrorKind.TIMEOUT, srv.url("/slow"), tmp_path / "fw.bin", timeout_s=0.3)


async def test_http_connection_refused(tmp_path: Path) -> None:
    async with FileServer({}).running() as srv:
        port = srv.port
    await fails(DownloadErrorKind.REFUSED, f"http://127.0.0.1:{port}/f/x", tmp_path / "fw.bin")


async def test_redirects_followed_a_few_times_only(tmp_path: Path) -> None:
    async with FileServer({"fw.bin": BODY}).running() as srv:
        got = await download(
            srv.url("/redirect/3/fw.bin"), tmp_path / "fw.bin", max_bytes=1 << 20, timeout_s=5
        )
        assert got.size_bytes == len(BODY)
        await fails(DownloadErrorKind.PROTOCOL, srv.url("/redirect/4/fw.bin"), tmp_path / "x" / "y")


async def test_redirect_to_ftp_refused(tmp_path: Path) -> None:
    async with FileServer({}).running() as srv:
        await fails(DownloadErrorKind.PROTOCOL, srv.url("/to-ftp"), tmp_path / "fw.bin")


async def test_credentials_sent_as_basic_auth_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with FileServer({"fw.bin": BODY}).running() as srv:
        url = srv.url("/f/fw.bin").replace("http://", "http://user:s3cret@")
        await download(url, tmp_path / "fw.bin", max_bytes=1 << 20, timeout_s=5)
    assert srv.auth_seen == ["Basic dXNlcjpzM2NyZXQ="]
    assert "s3cret" not in caplog.text


async def test_https_verified_against_the_trust_store(tmp_path: Path) -> None:
    """L01.FR.08: HTTPS with the server verified; an unknown CA is a TLS failure; an https
    page redirecting to http is refused (no downgrade)."""
    server_ctx, client_ctx = tls_pair()
    async with FileServer({"fw.bin": BODY}).running(server_ctx) as srv:
        got = await download(
            srv.url("/f/fw.bin"),
            tmp_path / "fw.bin",
            max_bytes=1 << 20,
            timeout_s=5,
            tls_context=client_ctx,
        )
        assert got.size_bytes == len(BODY)
        (tmp_path / "fw.bin").unlink()
        # The system trust store does not know the test CA.
        await fails(DownloadErrorKind.TLS, srv.url("/f/fw.bin"), tmp_path / "fw.bin")
        await fails(
            DownloadErrorKind.PROTOCOL,
            srv.url("/to-http/fw.bin"),
            tmp_path / "fw.bin",
            tls_context=client_ctx,
        )


async def test_bad_location(tmp_path: Path) -> None:
    await fails(DownloadErrorKind.BAD_LOCATION, "gopher://x/y", tmp_path / "fw.bin")


# ---------------------------------------------------------------------------- FTP


async def test_ftp_good_missing_and_refused(tmp_path: Path) -> None:
    served = tmp_path / "srv"
    served.mkdir()
    (served / "fw.bin").write_bytes(BODY)
    out = tmp_path / "out"
    out.mkdir()
    with ftp_server(served) as port:
        got = await download(
            f"ftp://fw:secret@127.0.0.1:{port}/fw.bin",
            out / "fw.bin",
            max_bytes=1 << 20,
            timeout_s=5,
        )
        assert got.size_bytes == len(BODY)
        assert (out / "fw.bin").read_bytes() == BODY
        (out / "fw.bin").unlink()
        await fails(
            DownloadErrorKind.NOT_FOUND,
            f"ftp://fw:secret@127.0.0.1:{port}/nope.bin",
            out / "fw.bin",
        )
        await fails(
            DownloadErrorKind.REFUSED, f"ftp://fw:wrong@127.0.0.1:{port}/fw.bin", out / "fw.bin"
        )
        await fails(
            DownloadErrorKind.TOO_BIG,
            f"ftp://fw:secret@127.0.0.1:{port}/fw.bin",
            out / "fw.bin",
            max_bytes=1000,
        )


async def test_ftp_interrupted_transfer_resumes_with_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first transfer stops after 100,000 bytes; the rest comes with REST 100000."""
    served = tmp_path / "srv"
    served.mkdir()
    (served / "fw.bin").write_bytes(BODY)
    out = tmp_path / "out"
    out.mkdir()
    with ftp_server(served, cut_first_after=100_000) as port:
        got = await download(
            f"ftp://fw:secret@127.0.0.1:{port}/fw.bin",
            out / "fw.bin",
            max_bytes=1 << 20,
            timeout_s=5,
        )
    assert got.size_bytes == len(BODY)
    assert (out / "fw.bin").read_bytes() == BODY
    assert "ended the transfer at 100000 of 300000 bytes" in caplog.text
