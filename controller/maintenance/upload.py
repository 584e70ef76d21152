"""Uploading a local file to a CSMS-given location: HTTP(S) PUT/POST and FTP(S) STOR."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from urllib.parse import quote

import aioftp
import aiohttp

from controller.maintenance.transfers import UploadOutcome, UploadResult
from controller.maintenance.urls import Location

LOG = logging.getLogger(__name__)

# One attempt, start to end: 4 MB (the default diagnostics_max_kb) at ~20 kB/s over a weak
# cellular link.
DEFAULT_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 15.0
_CHUNK_BYTES = 64 * 1024
# ftps:// on these ports is implicit TLS (TLS from the first byte, as curl reads ftps://);
# on any other port (the default 21) explicit TLS: AUTH TLS on the plain connection (RFC 4217).
IMPLICIT_FTPS_PORTS = {990}
# Refusals that say "this method is not how you put a file here": try a multipart POST.
_METHOD_REFUSED = (405, 501)


def target_path(location: Location, filename: str) -> str:
    """The location is a directory (OCPP 1.6 6.25 "location (directory)"): the file goes
    inside it under ``filename``."""
    base = location.path if location.path.endswith("/") else location.path + "/"
    return base + quote(filename)


async def upload_file(
    location: Location,
    data: bytes,
    filename: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
    resume: bool = False,
) -> UploadOutcome:
    """Upload ``data`` as ``filename`` into the directory ``location``; never raises for
    network or server trouble (the outcome says what happened). ``ssl_context``: what
    https/ftps verify the server with (default: the system trust store). ``resume``: an
    earlier attempt was interrupted, continue FTP(S) after what the server has (REST)."""
    try:
        if location.is_ftp:
            return await asyncio.wait_for(
                _ftp_upload(location, data, filename, ssl_context, resume), timeout_s
            )
        return await asyncio.wait_for(
            _http_upload(location, data, filename, ssl_context), timeout_s
        )
    except TimeoutError:
        return UploadOutcome(UploadResult.FAILED, f"no progress within {timeout_s:.0f} s")
    except ssl.SSLError as exc:
        return UploadOutcome(UploadResult.FAILED, f"TLS: {exc.reason or exc}")
    except OSError as exc:
        return UploadOutcome(UploadResult.FAILED, f"{exc.strerror or exc}")


# ------------------------------------------------------------------ HTTP(S)


def _http_result(status: int) -> UploadResult:
    if 200 <= status < 300:
        return UploadResult.UPLOADED
    if status in (401, 403, 407):
        return UploadResult.PERMISSION_DENIED
    if status in (400, 411, 413, 414, 415, 422):
        return UploadResult.BAD_MESSAGE
    if status in _METHOD_REFUSED:
        return UploadResult.NOT_SUPPORTED
    return UploadResult.FAILED


async def _http_upload(
    location: Location, data: bytes, filename: str, ssl_context: ssl.SSLContext | None
) -> UploadOutcome:
    """PUT the file to <location>/<filename>; a server that refuses PUT (405/501) gets the
    file as a multipart/form-data POST to the location itself (field ``file``), which is
    what simple upload endpoints (and many CSMS) accept."""
    headers = {"Content-Type": "application/octet-stream"}
    if location.user is not None:
        token = base64.b64encode(f"{location.user}:{location.password or ''}".encode())
        headers["Authorization"] = "Basic " + token.decode("ascii")
    host = f"[{location.host}]" if ":" in location.host else location.host
    query = f"?{location.query}" if location.query else ""
    put_url = f"{location.scheme}://{host}:{location.port}{target_path(location, filename)}{query}"
    tls: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        try:
            async with session.put(
                put_url,
                data=data,
                ssl=tls,
                headers=headers,
                allow_redirects=False,  # the credentials go to the CSMS-given host only
            ) as resp:
                status = resp.status
            if status not in _METHOD_REFUSED:
                result = _http_result(status)
                return UploadOutcome(
                    result, f"PUT: HTTP {status}", len(data) if status < 300 else 0
                )
            form = aiohttp.FormData()
            form.add_field("file", data, filename=filename, content_type="application/octet-stream")
            post_headers = {k: v for k, v in headers.items() if k == "Authorization"}
            async with session.post(
                location.http_url(),
                data=form,
                headers=post_headers,
                ssl=tls,
                allow_redirects=False,
            ) as resp:
                status = resp.status
            result = _http_result(status)
            return UploadOutcome(
                result,
                f"PUT refused, POST: HTTP {status}",
                len(data) if result is UploadResult.UPLOADED else 0,
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            return UploadOutcome(UploadResult.FAILED, f"TLS certificate: {exc.certificate_error}")
        except aiohttp.ClientConnectorError as exc:
            return UploadOutcome(UploadResult.FAILED, f"cannot connect: {exc.os_error}")
        except aiohttp.ClientError as exc:
            return UploadOutcome(UploadResult.FAILED, f"HTTP: {type(exc).__name__}")


# ------------------------------------------------------------------ FTP(S)


def _ftp_result(exc: aioftp.StatusCodeError) -> UploadResult:
    codes = [str(c) for c in exc.received_codes]
    if any(c in ("530", "532", "550", "553", "450") for c in codes):
        return UploadResult.PERMISSION_DENIED  # not logged in / no permission / no such dir
    if any(c in ("502", "504", "534", "522") for c in codes):
        return UploadResult.NOT_SUPPORTED  # command or TLS / protocol not implemented
    if any(c in ("500", "501") for c in codes):
        return UploadResult.BAD_MESSAGE
    return UploadResult.FAILED


async def _ftp_upload(
    location: Location,
    data: bytes,
    filename: str,
    ssl_context: ssl.SSLContext | None,
    resume: bool,
) -> UploadOutcome:
    """Passive mode (EPSV, then PASV: the whitepaper's N01 remark); ftps is explicit TLS
    (AUTH TLS), or implicit on port 990; then PBSZ 0 / PROT P so the data channel is
    encrypted too."""
    tls = ssl_context or ssl.create_default_context()
    implicit = location.scheme == "ftps" and location.port in IMPLICIT_FTPS_PORTS
    client = aioftp.Client(
        connection_timeout=CONNECT_TIMEOUT_S, socket_timeout=60, ssl=tls if implicit else None
    )
    # The FTP server names files as sent, not percent-encoded.
    destination = location.ftp_path.rstrip("/") + "/" + filename
    size_bytes = len(data)
    try:
        await client.connect(location.host, location.port)
        if location.scheme == "ftps" and not implicit:
            await client.upgrade_to_tls(tls)
        await client.login(location.user or "anonymous", location.password or "")
        if location.scheme == "ftps":  # RFC 4217: protect the data channel too
            await client.command("PBSZ 0", "200")
            await client.command("PROT P", "200")
        offset = await _remote_size(client, destination) if resume else 0
        if not 0 < offset < size_bytes:
            offset = 0
        stream = await client.upload_stream(destination, offset=offset)
        async with stream:
            for start in range(offset, size_bytes, _CHUNK_BYTES):
                await stream.write(data[start : start + _CHUNK_BYTES])
        await client.quit()
        how = f" (resumed at byte {offset})" if offset else ""
        return UploadOutcome(UploadResult.UPLOADED, f"STOR{how}", size_bytes - offset)
    except aioftp.StatusCodeError as exc:
        codes = ",".join(str(c) for c in exc.received_codes)
        return UploadOutcome(_ftp_result(exc), f"FTP {codes}: {' '.join(exc.info)[:120]}")
    except ConnectionError as exc:
        return UploadOutcome(UploadResult.FAILED, f"FTP connection: {exc}")
    finally:
        client.close()


async def _remote_size(client: aioftp.Client, destination: str) -> int:
    """What an interrupted attempt left on the server (SIZE, RFC 3659); 0 if unknown."""
    try:
        await client.command("TYPE I", "200")  # SIZE counts bytes only in binary mode
        _code, info = await client.command(f"SIZE {destination}", "213")
        return int(info[-1].strip().split()[-1])
    except (aioftp.StatusCodeError, ValueError, IndexError):
        return 0
