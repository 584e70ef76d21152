"""Benchmark (issue 13): a diagnostics archive built from a full log ring and a busy database,
then uploaded to a local FTP server (pyftpdlib) and a local HTTP server (aiohttp PUT).

Setup: a real SQLite store with 1000 closed sessions, a full in-memory ring (2000 records of
~160 characters), the archive limited to the default 4096 kB. Printed per round: the time to
build the archive (``build_archive``: database summary on the event loop, tar.gz in a
thread), the largest event-loop stall while it is built (a 1 ms ticker measures how late it
wakes; the station's tick loop shares this loop), the archive size and the upload times.
Figures only; exit code 0 unless the benchmark fails.

Usage (from the repository root)::

    .venv/bin/python bench/diagnostics_upload.py            # 30 rounds
    .venv/bin/python bench/diagnostics_upload.py --quick    # 5 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import add_repo_root_to_sys_path, format_stats, run_main

add_repo_root_to_sys_path()

from controller.maintenance.diagnostics import (  # noqa: E402
    DiagnosticsSources,
    LogKind,
    build_archive,
)
from controller.maintenance.upload import UploadResult, upload_file  # noqa: E402
from controller.maintenance.urls import parse_location  # noqa: E402
from controller.ops.logsetup import RingHandler, SecretFilter  # noqa: E402
from controller.runtime.clock import ManualClock  # noqa: E402
from controller.storage.store import open_store  # noqa: E402
from tests.transfer_servers import ftp_peer, http_peer  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _fill(db_path: Path, ring: RingHandler, clock: ManualClock) -> None:
    store = open_store(db_path)
    for i in range(1000):
        started = T0 + timedelta(hours=i)
        key = store.begin_transaction(
            connector_id=1 + i % 2,
            id_tag=f"{i:08X}",
            meter_start_wh=i * 10_000,
            started_at=started.isoformat(),
            reservation_id=None,
        )
        store.end_transaction(
            key,
            meter_stop_wh=i * 10_000 + 7_500,
            stopped_at=(started + timedelta(minutes=45)).isoformat(),
            reason="Local",
        )
    store.close()
    log = logging.getLogger("bench.diag")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(ring)
    for i in range(ring._records.maxlen or 0):
        log.warning(
            "connector %d: meter %d Wh, offered %.1f A, CSMS accepted, queue %d, tick %d ok",
            1 + i % 2,
            i * 37,
            16.0,
            i % 5,
            i,
        )


async def _round(sources: DiagnosticsSources, ftp_url: str, http_url: str) -> dict[str, float]:
    lag_s = [0.0]
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.001)
            lag_s[0] = max(lag_s[0], loop.time() - before - 0.001)

    tick = asyncio.create_task(ticker())
    t = time.perf_counter()
    archive = await build_archive(sources, LogKind.DIAGNOSTICS)
    build_s = time.perf_counter() - t
    stop.set()
    await tick
    t = time.perf_counter()
    ftp = await upload_file(parse_location(ftp_url), archive.data, archive.filename)
    ftp_s = time.perf_counter() - t
    t = time.perf_counter()
    http = await upload_file(parse_location(http_url), archive.data, archive.filename)
    http_s = time.perf_counter() - t
    assert ftp.result is UploadResult.UPLOADED and http.result is UploadResult.UPLOADED
    return {
        "build": build_s,
        "lag": lag_s[0],
        "size": len(archive.data),
        "lines": archive.log_lines,
        "ftp": ftp_s,
        "http": http_s,
    }


async def _main(rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="evsed-diag-bench") as tmp:
        clock = ManualClock(T0 + timedelta(days=60))
        ring = RingHandler()
        ring.now = clock.utc_now
        _fill(Path(tmp) / "evsed.db", ring, clock)
        store = open_store(Path(tmp) / "evsed.db")

        async def log_lines(
            since: datetime | None, until: datetime | None
        ) -> tuple[str, list[str]]:
            return "ring", ring.lines(since, until)

        sources = DiagnosticsSources(
            station_id="CP-BENCH",
            clock=clock,
            max_bytes=4096 * 1024,
            log_lines=log_lines,
            store=store,
            config=lambda: {"station": {"id": "CP-BENCH"}},
            state=lambda: {"version": "bench"},
            secrets=lambda: ["a-password-1234", "an-authorization-key-5678"],
            mask=SecretFilter().mask,
        )
        logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
        results = []
        with ftp_peer(Path(tmp) / "ftp") as ftp:
            async with http_peer() as peer:
                for _ in range(rounds):
                    results.append(await _round(sources, ftp.url(), f"{peer.base_url}/put/"))
        store.close()
    print(
        f"diagnostics archive + upload, {rounds} rounds ({platform.machine()}, Python "
        f"{platform.python_version()}); 1000 sessions, {results[0]['lines']} log lines"
    )
    print(f"  archive size      {results[0]['size'] / 1024:.1f} kB")
    for label, key, digits in (
        ("build_archive", "build", 1),
        ("event-loop stall", "lag", 2),
        ("FTP upload", "ftp", 1),
        ("HTTP PUT upload", "http", 1),
    ):
        values = [r[key] for r in results]
        print(f"  {label:<17} {format_stats(values, digits=digits, scale=1e3, unit='ms')}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="rounds (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(_main(5 if args.quick else args.n))


if __name__ == "__main__":
    run_main(main, "diagnostics_upload")
