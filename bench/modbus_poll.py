"""Benchmark: poll cycle of a full Eastron SDM630 read over Modbus RTU through a pty pair.

Starts ``socat`` (two linked ptys in a temporary directory), a pymodbus RTU server on one end
emulating an SDM630 (registers filled from a reading with the shipped map), and the "modbus"
meter driver (``hal.modbus``, model ``eastron_sdm630``, 9600 baud 8N1) on the other end; then
calls ``meter.read()`` ``--polls`` times back to back and reports, per poll:

- cycle time: median / p99 / max (wall clock around ``read()``),
- requests per poll and wire bytes per poll (request + response frames, from the driver's
  counters; the server's sent bytes are checked against them),
- the theoretical 9600-baud time of those bytes: bytes * 11 bits / 9600 (start, 8 data,
  parity or second stop, stop bit) plus the 3.5-character silence after every frame.

A pty does not throttle to the baud rate, so the measured cycle shows the software cost
(pymodbus framing, asyncio, the simulated server) and the computed wire time is what a real
RS-485 line adds on top (plus the meter's own answer latency, typically tens of ms, which no
simulation shows). Nothing is asserted; exit code 0 unless the benchmark itself fails.

Usage (from the repository root)::

    .venv/bin/python bench/modbus_poll.py            # 200 polls
    .venv/bin/python bench/modbus_poll.py --quick    # 50 polls
    .venv/bin/python bench/modbus_poll.py --polls 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from benchlib import add_repo_root_to_sys_path, median, percentile

add_repo_root_to_sys_path()

from hal.base import MeterReading  # noqa: E402
from hal.modbus import create_modbus_meter, load_model  # noqa: E402
from hal.modbus_bus import wire_time_s  # noqa: E402
from hal.registry import DriverContext  # noqa: E402
from tests.modbus_sim import SOCAT, SimLine, SimSlave, SocatPair  # noqa: E402

BAUDRATE = 9600
READING = MeterReading(
    energy_wh=1_234_500.0,
    power_w=7250.5,
    voltage_v=(230.1, 231.2, 229.3),
    current_a=(10.25, 11.5, 12.75),
    frequency_hz=49.9,
    energy_export_wh=5000.0,
)


async def run(polls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="evsed-modbus-bench-") as tmp:
        pair = SocatPair(Path(tmp)).start()
        line: SimLine | None = None
        meter = None
        try:
            slave = SimSlave(1)
            regmap = load_model("eastron_sdm630")
            slave.fill_meter(regmap, READING)
            line = await SimLine([slave]).start_rtu(pair.b, baudrate=BAUDRATE)
            meter = create_modbus_meter(
                {"model": "eastron_sdm630", "port": pair.a, "baudrate": BAUDRATE},
                DriverContext(connector_id=1),
            )
            await meter.read()  # open the port, warm up
            line.tx_bytes = 0
            before = meter.stats.total.wire_bytes
            times_ms: list[float] = []
            for _ in range(polls):
                started = time.perf_counter()
                await meter.read()
                times_ms.append((time.perf_counter() - started) * 1000)
            last = meter.stats.last_poll
            per_poll_rx = line.tx_bytes / polls
            per_poll_bytes = (meter.stats.total.wire_bytes - before) / polls
            frames = 2 * last.requests
            config = meter.link.bus.config
            wire_ms = wire_time_s(round(per_poll_bytes), BAUDRATE) * 1000
            gaps_ms = frames * config.frame_gap_s * 1000
            print(f"SDM630 full read over a socat pty, {BAUDRATE} baud 8N1, {polls} polls")
            blocks = ", ".join(f"FC{b.function} @{b.address} x{b.count}" for b in regmap.blocks)
            print(f"  blocks: {blocks}")
            sorted_ms = sorted(times_ms)
            print(
                f"  cycle time (pty, not baud-limited): median {median(sorted_ms):.2f} ms,"
                f" p99 {percentile(sorted_ms, 99):.2f} ms, max {sorted_ms[-1]:.2f} ms"
            )
            print(
                f"  (includes the driver's enforced 3.5-character silence after each answer: "
                f"{last.requests} x {config.frame_gap_s * 1000:.1f} ms)"
            )
            print(f"  requests per poll: {last.requests}")
            print(
                f"  wire bytes per poll: {per_poll_bytes:.0f} "
                f"(sent {last.tx_bytes}, received {last.rx_bytes}; server sent {per_poll_rx:.0f})"
            )
            print(
                f"  computed 9600-baud wire time: {wire_ms:.1f} ms for the bytes "
                f"(bytes * 11 bits / {BAUDRATE}) + {gaps_ms:.1f} ms inter-frame silence "
                f"({frames} frames x 3.5 chars) = {wire_ms + gaps_ms:.1f} ms per poll, "
                "before the meter's answer latency"
            )
        finally:
            if meter is not None:
                await meter.close_driver()
            if line is not None:
                await line.stop()
            pair.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--polls", type=int, default=None, help="reads to time (default 200, --quick 50)"
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run (50 polls)")
    args = parser.parse_args()
    polls = args.polls if args.polls is not None else (50 if args.quick else 200)
    if SOCAT is None:
        print("socat is not installed (apt-get install socat)", file=sys.stderr)
        return 1
    asyncio.run(run(max(1, polls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
