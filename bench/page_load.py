"""Benchmark: size and loopback load time of the status page served by ``evsed run``.

Starts ``python -m controller.cli run -c <cfg>`` (the ``evsed run`` entry point) with
simulated hardware and the API on a free 127.0.0.1 port, connected to a ``DevCsms`` in this
process, and starts a charging session (plug, card, car in C) so that /api/status and
/api/transactions carry a running transaction, as when someone looks at the page.

Printed:

* bytes of each static file (index.html, app.js, style.css), of one /api/status, /api/auth and
  /api/transactions answer (bodies, uncompressed: the server does not compress), and the
  first-load total = static files + /api/auth + /api/status + /api/transactions (what the page
  fetches before it shows data); also the bytes per minute of polling (/api/status every 2 s).
* time to load the page cold (new TCP connection, as a browser's first visit: index.html,
  then app.js and style.css in parallel, then /api/auth, /api/status, /api/transactions),
  warm-revalidated (keep-alive, If-None-Match -> 304 for the static files), and of one
  /api/status poll on a kept-alive connection: median/p99/max in ms over ``--iterations``.

Nothing is asserted; exit code 0 unless the benchmark itself fails (1).

Usage (from the repository root)::

    .venv/bin/python bench/page_load.py                  # 300 iterations
    .venv/bin/python bench/page_load.py --iterations 50
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    kill,
    log_tail,
    quiet_logging,
    run_main,
    spawn,
    write_sim_charger_toml,
)

add_repo_root_to_sys_path()

from controller.dev.devcsms import DevCsms  # noqa: E402

STATION_ID = "CP-BENCH-PAGE"
STATIC = ("/", "/app.js", "/style.css")
POLL_INTERVAL_S = 2.0  # app.js POLL_MS
BOOT_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fetch(
    session: aiohttp.ClientSession, url: str, etags: dict[str, str] | None = None
) -> tuple[int, int]:
    """(status, body bytes); with ``etags`` revalidates like a browser (no-cache)."""
    headers = {}
    if etags is not None and url in etags:
        headers["If-None-Match"] = etags[url]
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        if etags is not None and "ETag" in resp.headers:
            etags[url] = resp.headers["ETag"]
        return resp.status, len(body)


async def load_page(
    session: aiohttp.ClientSession, base: str, etags: dict[str, str] | None = None
) -> int:
    """What a browser does on opening the page; returns the body bytes transferred."""
    _, total = await fetch(session, base + "/", etags)
    assets = await asyncio.gather(*(fetch(session, base + p, etags) for p in STATIC[1:]))
    total += sum(size for _, size in assets)
    for path in ("/api/auth", "/api/status", "/api/transactions"):
        status, size = await fetch(session, base + path)
        if status != 200:
            raise RuntimeError(f"{path}: HTTP {status}")
        total += size
    return total


async def wait_api(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(base + "/api/status") as resp:
                    data = await resp.json()
                    if data["csms"]["state"] == "accepted":
                        return
            except (aiohttp.ClientError, OSError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"evsed did not come up:\n{log_tail(log)}")
            await asyncio.sleep(0.1)


async def start_session(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path, body in (
            ("/api/sim/plug", {"connector": 1}),
            ("/api/sim/card", {"uid": "04A1B2C3"}),
            ("/api/sim/vehicle", {"connector": 1, "state": "C"}),
        ):
            async with session.post(base + path, json=body) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{path}: HTTP {resp.status} {await resp.text()}")
        for _ in range(100):
            async with session.get(base + "/api/status") as resp:
                c = (await resp.json())["connectors"][0]
            if c["transaction_id"] is not None and c["contactor_closed"]:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("the session did not start")


async def measure(base: str, iterations: int) -> None:
    async with aiohttp.ClientSession() as session:
        sizes = {p: (await fetch(session, base + p))[1] for p in STATIC}
        api_sizes = {
            p: (await fetch(session, base + p))[1]
            for p in ("/api/auth", "/api/status", "/api/transactions")
        }
    static_total = sum(sizes.values())
    print("bytes (response bodies, uncompressed):")
    for path, size in {**sizes, **api_sizes}.items():
        print(f"  {path:<20} {size:>7}")
    print(f"  static files total   {static_total:>7}")
    print(f"  static + /api/status {static_total + api_sizes['/api/status']:>7}")
    first_load = static_total + sum(api_sizes.values())
    print(f"  first load total     {first_load:>7}  (static + auth + status + transactions)")
    per_min = api_sizes["/api/status"] * 60 / POLL_INTERVAL_S
    print(f"  polling              {per_min:>7.0f}  per minute (/api/status every 2 s)")

    cold: list[float] = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        # A new connector per load: a fresh TCP connection, as on a first visit.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=6)) as s:
            await load_page(s, base)
        cold.append(time.perf_counter() - t0)

    warm: list[float] = []
    polls: list[float] = []
    etags: dict[str, str] = {}
    async with aiohttp.ClientSession() as s:
        await load_page(s, base, etags)
        for _ in range(iterations):
            t0 = time.perf_counter()
            await load_page(s, base, etags)
            warm.append(time.perf_counter() - t0)
        for _ in range(iterations):
            t0 = time.perf_counter()
            status, _ = await fetch(s, base + "/api/status")
            polls.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"/api/status: HTTP {status}")

    print(f"time on loopback ({iterations} loads each):")
    print(f"  page load, cold      {format_stats(cold, digits=2, width=6, scale=1000, unit='ms')}")
    print(f"  page load, 304s      {format_stats(warm, digits=2, width=6, scale=1000, unit='ms')}")
    print(f"  /api/status poll     {format_stats(polls, digits=2, width=6, scale=1000, unit='ms')}")


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="evsed-page-bench-") as tmp:
        work = Path(tmp)
        async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
            port = free_port()
            config = work / "evsed.toml"
            write_sim_charger_toml(
                config, station_id=STATION_ID, csms_url=csms.url, storage=work / "evsed.db"
            )
            text = config.read_text(encoding="utf-8").replace("port = 0", f"port = {port}")
            config.write_text(text, encoding="utf-8")
            log = work / "evsed.log"
            proc = spawn([sys.executable, "-m", "controller.cli", "run", "-c", str(config)], log)
            base = f"http://127.0.0.1:{port}"
            try:
                await wait_api(base, proc, log)
                await start_session(base)
                print(f"evsed pid {proc.pid}, page on {base}/, one charging session running")
                await measure(base, args.iterations)
            finally:
                code = await asyncio.to_thread(kill, proc)
                print(f"evsed stopped (exit code {code})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Status page size and load time on loopback.")
    parser.add_argument("--iterations", type=int, default=300, help="loads per figure")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    quiet_logging()
    return asyncio.run(run(args))


if __name__ == "__main__":
    run_main(main, "page_load", sigterm_as_interrupt=True)
