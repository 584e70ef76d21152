"""Benchmark: firmware download throughput, evsed's download() against the raw speed of the
same local server in the same run.

A file of ``--mib`` MiB (default 64) is served by a local aiohttp server and a local pyftpdlib
FTP server (127.0.0.1, in this process / a thread). Each round times:

- http evsed: ``controller.maintenance.download.download`` to a file (temp file, fsync, rename,
  size limit, stall timeout),
- http raw: a plain aiohttp GET read into nothing,
- ftp evsed: the same download() over FTP (aioftp, passive),
- ftp raw: ``ftplib`` RETR into nothing (the stdlib client; the same server).

It prints the median MB/s (10^6 bytes/s) of each and the ratio evsed/raw. The difference is
what the product adds: writing to disk, the fsync, the bounded and timed reads. Nothing is
asserted.

Usage (from the repository root)::

    .venv/bin/python bench/firmware_download.py            # 64 MiB, 5 rounds
    .venv/bin/python bench/firmware_download.py --quick    # 16 MiB, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import ftplib
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from benchlib import add_repo_root_to_sys_path, median, quiet_logging

add_repo_root_to_sys_path()

from controller.maintenance.download import download  # noqa: E402
from tests.maintenance.servers import FileServer, ftp_server  # noqa: E402


async def http_raw(url: str) -> int:
    got = 0
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        async for chunk in resp.content.iter_chunked(64 * 1024):
            got += len(chunk)
    return got


def ftp_raw(port: int) -> int:
    got = 0

    def sink(block: bytes) -> None:
        nonlocal got
        got += len(block)

    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", port)
        ftp.login("fw", "secret")
        ftp.retrbinary("RETR fw.bin", sink, blocksize=64 * 1024)
    return got


async def timed(coro: object) -> float:
    start = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - start


async def main(mib: int, rounds: int) -> None:
    size = mib * 1024 * 1024
    body = os.urandom(size)
    results: dict[str, list[float]] = {
        k: [] for k in ("http evsed", "http raw", "ftp evsed", "ftp raw")
    }
    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp) / "srv"
        served.mkdir()
        (served / "fw.bin").write_bytes(body)
        dest = Path(tmp) / "out" / "fw.bin"
        async with FileServer({"fw.bin": body}).running() as srv:
            with ftp_server(served) as port:
                ftp_url = f"ftp://fw:secret@127.0.0.1:{port}/fw.bin"
                for _ in range(rounds):
                    results["http evsed"].append(
                        size
                        / await timed(
                            download(srv.url("/f/fw.bin"), dest, max_bytes=size, timeout_s=30)
                        )
                    )
                    results["http raw"].append(size / await timed(http_raw(srv.url("/f/fw.bin"))))
                    results["ftp evsed"].append(
                        size / await timed(download(ftp_url, dest, max_bytes=size, timeout_s=30))
                    )
                    start = time.perf_counter()
                    await asyncio.to_thread(ftp_raw, port)
                    results["ftp raw"].append(size / (time.perf_counter() - start))
    print(f"firmware download, {mib} MiB file, {rounds} rounds, 127.0.0.1 (median MB/s)")
    for name, values in results.items():
        print(f"  {name:<10} {median(values) / 1e6:8.1f} MB/s")
    for proto in ("http", "ftp"):
        ratio = median(results[f"{proto} evsed"]) / median(results[f"{proto} raw"])
        print(f"  {proto} evsed/raw ratio {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="16 MiB, 3 rounds")
    args = parser.parse_args()
    quiet_logging()
    if args.quick:
        args.mib, args.rounds = 16, 3
    asyncio.run(main(args.mib, args.rounds))
