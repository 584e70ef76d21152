"""`evsed proxy` figures: the latency it adds per message against a direct connection to the
same kind of backend in the same run (median, p99), messages per second through one proxy
process, and memory per connected charger with three backends each.

Three silent dev CSMSs run in one child process (the backends); `evsed proxy` runs as a child
process of its own (primary + two mirrors, each mirror with its durable SQLite queue); this
process plays the chargers with raw WebSocket clients sending StatusNotification CALLs (every
one is relayed to the primary and queued, fsync'd, for both mirrors). Everything on 127.0.0.1.

    python bench/proxy.py [--messages 1000] [--chargers 200] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    kill,
    median,
    percentile,
    run_main,
    spawn,
)

add_repo_root_to_sys_path()

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.procs import free_port  # noqa: E402

STATUS = {
    "connectorId": 1,
    "errorCode": "NoError",
    "status": "Available",
}
BOOT = {"chargePointVendor": "bench", "chargePointModel": "proxy"}


async def serve_backends(ports: list[int]) -> None:
    """The backends child: one silent DevCsms per port, until killed."""
    from controller.dev.devcsms import DevCsms

    servers = [DevCsms(port=p, heartbeat_interval_s=3600) for p in ports]
    for s in servers:
        s.on_event = None
        await s.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def call(ws: ClientConnection, action: str, payload: dict[str, object]) -> float:
    """One CALL and its answer; the round trip in seconds."""
    message_id = uuid.uuid4().hex[:16]
    start = time.perf_counter()
    await ws.send(json.dumps([2, message_id, action, payload]))
    while True:
        frame = json.loads(await ws.recv())
        if frame[1] == message_id:
            break
    elapsed = time.perf_counter() - start
    assert frame[0] == 3, frame
    return elapsed


async def charger(url: str, charger_id: str) -> ClientConnection:
    ws = await connect(f"{url}/{charger_id}", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
    await call(ws, "BootNotification", BOOT)
    return ws


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def measure(args: argparse.Namespace, work: Path) -> int:
    backend_ports = [free_port() for _ in range(3)]
    proxy_port, status_port = free_port(), free_port()
    backends = spawn(
        [sys.executable, __file__, "--serve-backends", *map(str, backend_ports)],
        work / "backends.log",
    )
    urls = [f"ws://127.0.0.1:{p}/ocpp" for p in backend_ports]
    (work / "proxy.toml").write_text(
        f"""[proxy]
listen_host = "127.0.0.1"
listen_port = {proxy_port}
status_port = {status_port}
storage = "{work / "proxy.db"}"
allow_unknown = true
rate_limit_burst = 1000000
rate_limit_per_s = 1000000

[[backends]]
name = "primary"
url = "{urls[0]}"
role = "primary"

[[backends]]
name = "mirror-a"
url = "{urls[1]}"
role = "mirror"

[[backends]]
name = "energy"
url = "{urls[2]}"
role = "energy-manager"
"""
    )
    proxy = spawn(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "proxy",
            "-c",
            str(work / "proxy.toml"),
            "--log-level",
            "ERROR",
            "--log-target",
            "stderr",
        ],
        work / "proxy.log",
    )
    try:
        for port in (*backend_ports, proxy_port):
            await wait_port(port)
        direct_url = urls[0]
        proxy_url = f"ws://127.0.0.1:{proxy_port}/ocpp"

        # 1. Latency: alternating rounds on one connection each, the same backend behind.
        direct = await charger(direct_url, "LAT-DIRECT")
        relayed = await charger(proxy_url, "LAT-PROXY")
        for ws in (direct, relayed):  # warm-up (schemas compiled, caches filled)
            for _ in range(50):
                await call(ws, "StatusNotification", STATUS)
        d_times: list[float] = []
        p_times: list[float] = []
        rounds = 5
        for _ in range(rounds):
            for _ in range(args.messages // rounds):
                d_times.append(await call(direct, "StatusNotification", STATUS))
            for _ in range(args.messages // rounds):
                p_times.append(await call(relayed, "StatusNotification", STATUS))
        await direct.close()
        await relayed.close()
        d_sorted, p_sorted = sorted(d_times), sorted(p_times)
        for name, times in (("direct round trip", d_times), ("through the proxy", p_times)):
            stats = format_stats(times, digits=3, scale=1e3, unit="ms")
            print(f"{name:<18} (n={len(times)}): {stats}")
        print(
            f"added by the proxy: median {(median(p_times) - median(d_times)) * 1e3:.3f} ms, "
            f"p99 {(percentile(p_sorted, 99) - percentile(d_sorted, 99)) * 1e3:.3f} ms "
            f"(x{median(p_times) / median(d_times):.2f} the direct median)"
        )

        # 2. Throughput: 20 chargers, each one CALL in flight, for --seconds.
        many = [await charger(proxy_url, f"TP-{i}") for i in range(20)]
        stop_at = time.monotonic() + args.seconds
        counts = [0] * len(many)

        async def pump(i: int, ws: ClientConnection) -> None:
            while time.monotonic() < stop_at:
                await call(ws, "StatusNotification", STATUS)
                counts[i] += 1

        cpu0 = proc_cpu_s(proxy.pid)
        t0 = time.monotonic()
        await asyncio.gather(*(pump(i, ws) for i, ws in enumerate(many)))
        wall = time.monotonic() - t0
        cpu = proc_cpu_s(proxy.pid) - cpu0
        total = sum(counts)
        print(
            f"throughput: {total / wall:.0f} charger messages/s through one proxy process "
            f"(20 chargers, {wall:.1f} s; each relayed to the primary and queued for 2 "
            f"secondaries); proxy CPU {cpu / wall * 100:.0f} % of a core, "
            f"{cpu / total * 1e3:.2f} ms per message"
        )
        for ws in many:
            await ws.close()

        # 3. Memory per connected charger, 3 backends each.
        await asyncio.sleep(1.0)
        base = rss_kib(proxy.pid)
        conns = []
        for i in range(args.chargers):
            conns.append(await charger(proxy_url, f"MEM-{i}"))
        await asyncio.sleep(2.0)
        after = rss_kib(proxy.pid)
        print(
            f"memory: {args.chargers} chargers connected, each with 3 backend connections: "
            f"RSS {base / 1024:.1f} -> {after / 1024:.1f} MiB, "
            f"{(after - base) / args.chargers:.0f} KiB per charger"
        )
        for ws in conns:
            await ws.close()
        return 0
    finally:
        kill(proxy)
        kill(backends)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve-backends", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_backends:
        asyncio.run(serve_backends(args.serve_backends))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        return asyncio.run(measure(args, Path(tmp)))


if __name__ == "__main__":
    run_main(main, "proxy")
