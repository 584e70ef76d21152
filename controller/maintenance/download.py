"""Fetch one file over HTTP(S) or FTP(S) into a path: bounded, verified TLS, all or nothing."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urljoin

import aioftp
import aiohttp

from controller.maintenance.transfers import Downloaded, DownloadError, DownloadErrorKind
from controller.maintenance.urls import BadLocation, Location, parse_location

LOG = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
MAX_REDIRECTS = 3
MAX_RESUMES = 3


def default_tls_context() -> ssl.SSLContext:
    """The system trust store, hostname checked (https and ftps)."""
    return ssl.create_default_context()


async def download(
    location: str | Location,
    dest_path: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    tls_context: ssl.SSLContext | None = None,
    max_redirects: int = MAX_REDIRECTS,
    on_progress: Callable[[int], None] | None = None,
) -> Downloaded:
    """Fetch ``location`` to ``dest_path``. The bytes go to ``<dest>.part``, are fsynced and
    renamed only when complete, so ``dest_path`` either is the whole file or does not exist.
    ``timeout_s`` bounds connecting and every wait for data (a slow but moving transfer is
    fine; a stalled one fails). Raises DownloadError."""
    try:
        loc = location if isinstance(location, Location) else parse_location(location)
    except BadLocation as exc:
        raise DownloadError(DownloadErrorKind.BAD_LOCATION, str(exc)) from None
    ctx = tls_context or default_tls_context()
    dest_path = Path(dest_path)
    part = dest_path.with_name(dest_path.name + ".part")
    try:
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        dest_path.unlink(missing_ok=True)
    except OSError as exc:
        raise DownloadError(DownloadErrorKind.IO, f"{dest_path.parent}: {exc}") from None
    try:
        if loc.is_ftp:
            chunks = _ftp_chunks(loc, ctx, timeout_s, max_bytes)
        else:
            chunks = _http_chunks(loc, ctx, timeout_s, max_bytes, max_redirects)
        size = await _write(chunks, part, max_bytes, on_progress)
        await asyncio.to_thread(_commit, part, dest_path)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except asyncio.CancelledError:
        part.unlink(missing_ok=True)
        raise
    except BaseException as exc:
        part.unlink(missing_ok=True)
        raise _classify(exc, loc) from None
    LOG.info("downloaded %s (%d bytes)", loc.redacted(), size)
    return Downloaded(dest_path, size)


def _commit(part: Path, dest: Path) -> None:
    with part.open("rb+") as fh:
        os.fsync(fh.fileno())
    part.replace(dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _write(
    chunks: AsyncIterator[bytes],
    part: Path,
    max_bytes: int,
    on_progress: Callable[[int], None] | None,
) -> int:
    size = 0
    try:
        fh = part.open("wb")
    except OSError as exc:
        raise DownloadError(DownloadErrorKind.IO, f"{part}: {exc}") from None
    with fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise DownloadError(DownloadErrorKind.TOO_BIG, f"more than {max_bytes} bytes")
            try:
                fh.write(chunk)
            except OSError as exc:
                raise DownloadError(DownloadErrorKind.IO, f"{part}: {exc}") from None
            if on_progress is not None:
                on_progress(size)
    return size


def _classify(exc: BaseException, loc: Location) -> DownloadError:
    where = loc.redacted()
    if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
        return DownloadError(DownloadErrorKind.TLS, f"{where}: {exc}")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return DownloadError(DownloadErrorKind.TIMEOUT, f"{where}: no data in time")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return DownloadError(DownloadErrorKind.TRUNCATED, f"{where}: {exc}")
    if isinstance(exc, ConnectionRefusedError | aiohttp.ClientConnectorError):
        return DownloadError(DownloadErrorKind.REFUSED, f"{where}: {exc}")
    if isinstance(exc, aioftp.StatusCodeError):
        codes = {str(c) for c in exc.received_codes}
        if codes & {"550", "450", "551"}:
            return DownloadError(DownloadErrorKind.NOT_FOUND, f"{where}: {exc.info}")
        if codes & {"530", "532", "421"}:
            return DownloadError(DownloadErrorKind.REFUSED, f"{where}: {exc.info}")
        return DownloadError(DownloadErrorKind.PROTOCOL, f"{where}: {exc.info}")
    if isinstance(exc, OSError | aiohttp.ClientError | EOFError):
        return DownloadError(DownloadErrorKind.TRUNCATED, f"{where}: {type(exc).__name__} {exc}")
    return DownloadError(DownloadErrorKind.PROTOCOL, f"{where}: {type(exc).__name__} {exc}")


# ---------------------------------------------------------------------------- HTTP(S)


async def _http_chunks(
    loc: Location, ctx: ssl.SSLContext, timeout_s: float, max_bytes: int, max_redirects: int
) -> AsyncIterator[bytes]:
    timeout = aiohttp.ClientTimeout(
        total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
    )
    origin = loc
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        for _ in range(max_redirects + 1):
            headers: dict[str, str] = {"Accept-Encoding": "identity"}
            # Credentials go to the host they were given for, never to a redirect target.
            if loc.user is not None and (loc.host, loc.port) == (origin.host, origin.port):
                token = f"{loc.user}:{loc.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
            async with session.get(
                loc.http_url(), headers=headers, allow_redirects=False, ssl=ctx
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    loc = _redirect(loc, resp.headers.get("Location"))
                    continue
                if resp.status == 404 or resp.status == 410:
                    raise DownloadError(DownloadErrorKind.NOT_FOUND, f"{loc.redacted()}: 404")
                if resp.status in (401, 403):
                    raise DownloadError(
                        DownloadErrorKind.REFUSED, f"{loc.redacted()}: HTTP {resp.status}"
                    )
                if resp.status != 200:
                    raise DownloadError(
                        DownloadErrorKind.PROTOCOL, f"{loc.redacted()}: HTTP {resp.status}"
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise DownloadError(
                        DownloadErrorKind.TOO_BIG,
                        f"{resp.content_length} bytes announced, at most {max_bytes}",
                    )
                expected = resp.content_length
                got = 0
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    got += len(chunk)
                    yield chunk
                if expected is not None and got != expected:
                    raise DownloadError(
                        DownloadErrorKind.TRUNCATED, f"{got} of {expected} bytes received"
                    )
                return
        raise DownloadError(DownloadErrorKind.PROTOCOL, f"more than {max_redirects} redirects")


def _redirect(current: Location, target: str | None) -> Location:
    """A redirect stays on its scheme (http may go up to https, never down, never to FTP)."""
    if not target:
        raise DownloadError(DownloadErrorKind.PROTOCOL, "redirect without Location")
    try:
        nxt = parse_location(urljoin(current.http_url(), target))
    except BadLocation as exc:
        raise DownloadError(DownloadErrorKind.PROTOCOL, f"bad redirect: {exc}") from None
    allowed = {"http": ("http", "https"), "https": ("https",)}[current.scheme]
    if nxt.scheme not in allowed:
        raise DownloadError(
            DownloadErrorKind.PROTOCOL,
            f"redirect from {current.scheme} to {nxt.scheme} refused",
        )
    LOG.info("redirected to %s", nxt.redacted())
    # Keep the user's credentials only on the same host (checked when sending).
    return Location(
        nxt.scheme,
        nxt.host,
        nxt.port,
        nxt.path,
        current.user if nxt.user is None else nxt.user,
        current.password if nxt.user is None else nxt.password,
        nxt.query,
    )


# ---------------------------------------------------------------------------- FTP(S)


async def _ftp_chunks(
    loc: Location, ctx: ssl.SSLContext, timeout_s: float, max_bytes: int
) -> AsyncIterator[bytes]:
    """Passive mode (EPSV, then PASV); ftps = explicit TLS (AUTH TLS before the login, the
    data channel protected too). A transfer that breaks off before the size the server
    announced resumes where it stopped (REST), at most MAX_RESUMES times."""
    client = await _ftp_login(loc, ctx, timeout_s)
    try:
        size = await _ftp_size(client, loc.ftp_path)
        if size is not None and size > max_bytes:
            raise DownloadError(
                DownloadErrorKind.TOO_BIG, f"{size} bytes on the server, at most {max_bytes}"
            )
        got = 0
        resumes = 0
        while True:
            try:
                async with client.download_stream(loc.ftp_path, offset=got) as stream:
                    async for chunk in stream.iter_by_block(CHUNK_BYTES):
                        got += len(chunk)
                        yield chunk
                if size is None or got >= size:
                    break
                cause = f"the server ended the transfer at {got} of {size} bytes"
            except (ConnectionError, aioftp.StatusCodeError) as exc:
                if isinstance(exc, aioftp.StatusCodeError) and not {
                    str(c) for c in exc.received_codes
                } & {"426", "451"}:
                    raise
                if size is None or got >= size:
                    raise
                cause = f"{type(exc).__name__} at {got} of {size} bytes"
            if resumes >= MAX_RESUMES:
                raise DownloadError(DownloadErrorKind.TRUNCATED, cause)
            resumes += 1
            LOG.warning("FTP transfer of %s interrupted (%s); resuming", loc.redacted(), cause)
            client.close()
            client = await _ftp_login(loc, ctx, timeout_s)
        if size is not None and got != size:
            raise DownloadError(DownloadErrorKind.TRUNCATED, f"{got} of {size} bytes received")
        try:
            await client.quit()
        except Exception:  # the file is complete; a rude goodbye does not matter
            LOG.debug("FTP QUIT failed", exc_info=True)
    finally:
        client.close()


async def _ftp_login(loc: Location, ctx: ssl.SSLContext, timeout_s: float) -> aioftp.Client:
    client = aioftp.Client(
        socket_timeout=timeout_s,
        connection_timeout=timeout_s,
        passive_commands=("epsv", "pasv"),
    )
    try:
        await client.connect(loc.host, loc.port)
        if loc.tls:
            await client.upgrade_to_tls(ctx)
        await client.login(loc.user or "anonymous", loc.password or "anonymous@")
        await client.command("TYPE I", "200")  # SIZE and REST count bytes of a binary file
    except BaseException:
        client.close()
        raise
    return client


async def _ftp_size(client: aioftp.Client, path: str) -> int | None:
    """The file's size (SIZE), None when the server does not say."""
    try:
        _, info = await client.command(f"SIZE {path}", "213")
    except aioftp.StatusCodeError as exc:
        if {str(c) for c in exc.received_codes} & {"550", "450"}:
            raise
        return None
    try:
        return int(info[0].strip().split()[-1])
    except (ValueError, IndexError):
        return None
