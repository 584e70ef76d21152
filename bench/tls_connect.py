"""Benchmark: what TLS costs the CSMS connection (security profiles 2 and 3 against ws://).

Part 1, connect time (in-process, n per mode): the charger's context built from the PEM files
as at every attempt (controller.security.tls.client_context), then TCP + TLS handshake +
WebSocket upgrade with HTTP Basic auth (profile 1 and 2) to the dev CSMS on 127.0.0.1, until
the upgrade answered 101; no BootNotification (a reconnect does not boot again). Modes:
ws:// (profile 1), wss:// (profile 2, ECDSA P-256 server certificate from trustme), wss://
with a client certificate the CSMS requires (profile 3). Printed: median / p99 / max in ms
and the medians' ratio to ws://.

Part 2, RSS and idle CPU (subprocesses): ``evsed run`` with simulated hardware connected to
the dev CSMS in this process, once with ws:// and once with wss:// (profile 2); once booted,
VmRSS and utime+stime from /proc at the start and the end of an idle window (default 20 s).
Printed: RSS of each, the difference (what ssl and the TLS contexts add), CPU % of one core.

Nothing is asserted. Linux only (/proc). Usage: ``.venv/bin/python bench/tls_connect.py``
(``--n 200 --idle-s 20``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    kill,
    kill_all,
    quiet_logging,
    run_main,
    spawn,
    write_sim_charger_toml,
)

add_repo_root_to_sys_path()

import trustme  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from controller.csms.connection import basic_auth_header  # noqa: E402
from controller.dev.devcsms import DevCsms, server_ssl_context  # noqa: E402
from controller.security.tls import FileTlsMaterial, client_context  # noqa: E402

STATION_ID = "CP-BENCH-TLS"
PASSWORD = "0123456789abcdef0123"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def write_pki(directory: Path) -> dict[str, str]:
    csms_ca, charger_ca = trustme.CA(), trustme.CA()
    files = {
        "csms_root": directory / "csms-root.pem",
        "charger_root": directory / "charger-root.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
    }
    csms_ca.cert_pem.write_to_path(str(files["csms_root"]))
    charger_ca.cert_pem.write_to_path(str(files["charger_root"]))
    for leaf, cert, key in (
        (csms_ca.issue_cert("127.0.0.1"), "server_cert", "server_key"),
        (charger_ca.issue_cert(STATION_ID, common_name=STATION_ID), "client_cert", "client_key"),
    ):
        files[cert].write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        files[key].write_bytes(leaf.private_key_pem.bytes())
    return {k: str(v) for k, v in files.items()}


async def connect_times(pki: dict[str, str], n: int) -> dict[str, list[float]]:
    modes = {
        "ws:// (profile 1)": (None, 1),
        "wss:// (profile 2)": (server_ssl_context(pki["server_cert"], pki["server_key"]), 2),
        "wss:// + client cert (profile 3)": (
            server_ssl_context(pki["server_cert"], pki["server_key"], pki["charger_root"]),
            3,
        ),
    }
    material = FileTlsMaterial(pki["csms_root"], pki["client_cert"], pki["client_key"])
    results: dict[str, list[float]] = {}
    for name, (server_ctx, profile) in modes.items():
        passwords = {STATION_ID: PASSWORD} if profile < 3 else None
        async with DevCsms(ssl_context=server_ctx, passwords=passwords) as csms:
            url = f"{csms.url}/{STATION_ID}"
            headers = basic_auth_header(STATION_ID, PASSWORD) if profile < 3 else {}
            times: list[float] = []
            for i in range(n + 5):
                start = time.perf_counter()
                ctx = client_context(profile, material)
                async with connect(
                    url,
                    ssl=ctx,
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    additional_headers=headers,
                    ping_interval=None,
                ) as ws:
                    elapsed = time.perf_counter() - start
                    await ws.close()
                if i >= 5:  # warm-up
                    times.append(elapsed)
                await csms.wait_disconnected(STATION_ID)
            results[name] = times
    return results


def proc_sample(pid: int) -> tuple[float, float]:
    """(VmRSS in MB, utime + stime in s) of ``pid``."""
    rss_kb = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = float(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return rss_kb / 1024, cpu_s


async def idle_run(
    pki: dict[str, str], tmp: Path, tls: bool, idle_s: float
) -> tuple[float, float, float]:
    """(RSS at start MB, RSS at end MB, CPU % of one core) of a connected, idle evsed."""
    server_ctx = server_ssl_context(pki["server_cert"], pki["server_key"]) if tls else None
    name = "tls" if tls else "plain"
    async with DevCsms(ssl_context=server_ctx, passwords={STATION_ID: PASSWORD}) as csms:
        cfg = tmp / f"{name}.toml"
        write_sim_charger_toml(
            cfg, station_id=STATION_ID, csms_url=csms.url, storage=tmp / f"{name}.db"
        )
        extra = f'password = "{PASSWORD}"\n'
        if tls:
            extra += f'security_profile = 2\nca_bundle = "{pki["csms_root"]}"\n'
        text = cfg.read_text().replace(f'url = "{csms.url}"\n', f'url = "{csms.url}"\n{extra}')
        cfg.write_text(text)
        proc = spawn(
            [sys.executable, "-m", "controller.cli", "run", "-c", str(cfg), "--no-restart"],
            tmp / f"{name}.log",
        )
        try:
            await csms.wait_connected(STATION_ID, timeout_s=30)
            await csms.wait_for(lambda f: f.action == "StatusNotification", timeout_s=30)
            await asyncio.sleep(2.0)  # the first StatusNotifications settle
            rss0, cpu0 = proc_sample(proc.pid)
            t0 = time.monotonic()
            await asyncio.sleep(idle_s)
            rss1, cpu1 = proc_sample(proc.pid)
            elapsed = time.monotonic() - t0
        finally:
            kill(proc)
        return rss0, rss1, 100 * (cpu1 - cpu0) / elapsed


async def amain(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="evsed-tls-bench-") as d:
        tmp = Path(d)
        pki = write_pki(tmp)
        print(f"OpenSSL: {ssl.OPENSSL_VERSION}; n = {args.n} per mode, loopback")
        print("connect = context from PEM files + TCP + TLS + WebSocket upgrade (no boot)")
        results = await connect_times(pki, args.n)
        base = sorted(results["ws:// (profile 1)"])[len(results["ws:// (profile 1)"]) // 2]
        for name, times in results.items():
            med = sorted(times)[len(times) // 2]
            print(
                f"  {name:34s} {format_stats(times, digits=2, scale=1000, unit='ms')}"
                f"  (x{med / base:.1f} of ws://)"
            )
        if args.idle_s > 0:
            print(f"evsed run, connected and idle for {args.idle_s:.0f} s:")
            plain = await idle_run(pki, tmp, False, args.idle_s)
            tls = await idle_run(pki, tmp, True, args.idle_s)
            for name, (rss0, rss1, cpu) in (("ws://", plain), ("wss:// (profile 2)", tls)):
                print(f"  {name:20s} RSS {rss0:.1f} -> {rss1:.1f} MB, CPU {cpu:.3f} % of a core")
            print(f"  RSS added by TLS: {tls[1] - plain[1]:+.1f} MB")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="connections per mode")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle window (0: skip)")
    args = parser.parse_args()
    quiet_logging()
    try:
        return asyncio.run(amain(args))
    finally:
        kill_all()


if __name__ == "__main__":
    run_main(main, "tls_connect")
