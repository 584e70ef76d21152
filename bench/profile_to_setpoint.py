"""Benchmark: SetChargingProfile.conf to the new setpoint on the Modbus bus (issue 12).

The rig of tests/e2e/test_e2e_smart_charging_modbus.py (``ModbusCharger``), on the wall
clock: an in-process ``App`` with the real "evse-din" board driver (unit 2) and "modbus"
SDM630 meter (unit 1) on one end of a socat pty pair (RTU, 9600 8N1), the "gpio" contactor
on mock pins and the "sim" reader; a pymodbus RTU server on the other end emulating the
meter and the board with a car (C from 6 A); a DevCsms on 127.0.0.1.

A session charges at 16 A. Then, N times, the CSMS sends a TxDefaultProfile (same id, so
each replaces the last; one period, alternating 10 A and 13 A, both >= 6 A so the contactor
stays closed) and measures

* conf -> register: from the SetChargingProfile.conf coming off the CSMS's socket
  (``Frame.received_at``) to the server handling the write of the new value to register
  1000 (``time.monotonic()`` in its request handler; same process, same clock). The station
  applies the profile before it answers, so this can be near 0 or even negative.
* CALL -> register and CALL -> conf, from the CALL leaving the CSMS.
* writes per change: how many writes of register 1000 each change caused (1 expected).

Between rounds a random pause (0.05..0.35 s, seeded) puts each change at a different phase
of the board poll (0.2 s) and the station tick (meter reads on the same line).

Bound, measured in the same run on the same line before the charger opens it: one station
tick interval plus one Modbus register write (median of a bare pymodbus client writing
register 1000 of unit 2, FC 16). Printed as ratios; nothing is asserted. Note that a pty has
no baud rate: a write here costs software time only; on a real 9600-baud RS-485 line the
frames alone take the wire time printed alongside.

Usage (from the repository root)::

    .venv/bin/python bench/profile_to_setpoint.py            # 100 rounds
    .venv/bin/python bench/profile_to_setpoint.py --quick    # 20
    .venv/bin/python bench/profile_to_setpoint.py -n 300 --tick-interval 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchlib import (
    add_repo_root_to_sys_path,
    format_stats,
    median,
    percentile,
    quiet_logging,
    run_main,
)

add_repo_root_to_sys_path()

from hal.modbus_bus import wire_time_s  # noqa: E402

STEP_TIMEOUT_S = 10.0
LIMITS_A = (10.0, 13.0)
BARE_WRITES = 50
GAP_S = (0.05, 0.35)
BAUDRATE = 9600
# FC 16, one register: request unit+fc+addr+count+bytes+value+crc = 11 bytes, answer 8.
WRITE_FRAME_BYTES = 11 + 8
# FC 3, three registers (what the driver reads before it writes): request 8, answer 11.
READ_FRAME_BYTES = 8 + 11


async def _until(predicate: Any, what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.0005)


async def bare_writes(port: str, unit: int, register: int, n: int) -> tuple[list[float], ...]:
    """A bare pymodbus client on ``port``: n writes of ``register`` (FC 16, value 0), and n
    reads of 3 registers + one write (what the board driver does per change); seconds."""
    from pymodbus.client import AsyncModbusSerialClient

    client = AsyncModbusSerialClient(
        port, baudrate=BAUDRATE, parity="N", stopbits=1, bytesize=8, timeout=1.0, retries=0
    )
    if not await client.connect():
        raise RuntimeError(f"cannot open {port}")
    writes: list[float] = []
    cycles: list[float] = []
    try:
        for _ in range(3):  # warm-up
            await client.write_registers(register, [0], device_id=unit)
        for _ in range(n):
            t0 = time.perf_counter()
            rr = await client.write_registers(register, [0], device_id=unit)
            writes.append(time.perf_counter() - t0)
            if rr.isError():
                raise RuntimeError(f"write answered {rr}")
            t0 = time.perf_counter()
            await client.read_holding_registers(register, count=3, device_id=unit)
            await client.write_registers(register, [0], device_id=unit)
            cycles.append(time.perf_counter() - t0)
    finally:
        client.close()
    return writes, cycles


async def run(n: int, tick_interval_s: float, poll_interval_s: float, seed: int) -> int:
    from tests.e2e.test_e2e_smart_charging_modbus import (
        BOARD_UNIT,
        ModbusCharger,
        tx_default_profile,
    )

    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="evsed-bench-sc-"))
    rig = ModbusCharger(
        workdir, None, tick_interval_s=tick_interval_s, board_poll_interval_s=poll_interval_s
    )
    conf_to_reg: list[float] = []
    call_to_reg: list[float] = []
    call_to_conf: list[float] = []
    writes_per_change: list[int] = []
    t_begin = time.monotonic()
    try:
        await rig.start_line()
        write_s, cycle_s = await bare_writes(rig.pair.a, BOARD_UNIT, 1000, BARE_WRITES)
        await rig.start()
        assert rig.app is not None
        await rig.start_session()
        print(
            f"evsed in-process on {rig.pair.a} (EVSE-DIN unit 2, SDM630 unit 1, {BAUDRATE} 8N1 "
            f"on a pty); tick_interval_s {tick_interval_s}, board poll_interval_s "
            f"{poll_interval_s}; {n} profile changes",
            flush=True,
        )
        clock = rig.app.clock
        csms = rig.csms
        for i in range(n):
            amps = LIMITS_A[i % 2]
            want = rig.car.register_for(amps)
            start = clock.utc_now() - timedelta(minutes=1)
            body = tx_default_profile(1, [(0, amps)], start, None)
            k = len(rig.car.setpoint_log)
            n_resp = len(csms.received_responses)
            n_calls = len(csms.sent_calls)
            status = await rig.set_profile(body)
            if status != "Accepted":
                raise RuntimeError(f"SetChargingProfile {status}")
            conf = next(
                f
                for f in csms.received_responses[n_resp:]
                if f.action == "SetChargingProfile" and f.message_type == 3
            )
            sent = next(f for f in csms.sent_calls[n_calls:] if f.action == "SetChargingProfile")
            await _until(
                lambda k=k, want=want: any(v == want for _, v in rig.car.setpoint_log[k:]),
                f"register 1000 = {want}",
            )
            t_reg = next(t for t, v in rig.car.setpoint_log[k:] if v == want)
            conf_to_reg.append(t_reg - conf.received_at)
            call_to_reg.append(t_reg - sent.sent_at)
            call_to_conf.append(conf.received_at - sent.sent_at)
            await asyncio.sleep(rng.uniform(*GAP_S))
            writes_per_change.append(len(rig.car.setpoint_log) - k)
        st = await rig.connector()
        if not (st["contactor_closed"] and st["status"] == "Charging"):
            raise RuntimeError(f"session not charging at the end: {st}")
    finally:
        await rig.close()
        shutil.rmtree(workdir, ignore_errors=True)

    write_med = median(write_s)
    bound = tick_interval_s + write_med

    def ms(values: list[float]) -> str:
        return format_stats(values, digits=2, width=7, scale=1000.0, unit="ms")

    print()
    print(f"conf -> register 1000     {ms(conf_to_reg)}   min {min(conf_to_reg) * 1000:.2f} ms")
    print(f"CALL -> register 1000     {ms(call_to_reg)}")
    print(f"CALL -> conf at the CSMS  {ms(call_to_conf)}")
    print(f"bare write (FC 16)        {ms(write_s)}")
    print(f"bare read 3 + write       {ms(cycle_s)}")
    extra = [w for w in writes_per_change if w != 1]
    print(
        f"writes per change         {'all 1' if not extra else extra} "
        f"({sum(writes_per_change)} writes for {n} changes)"
    )
    print()
    s = sorted(conf_to_reg)
    print(
        f"bound: one tick ({tick_interval_s * 1000:.0f} ms) + one write "
        f"({write_med * 1000:.2f} ms, median) = {bound * 1000:.1f} ms"
    )
    print(
        f"conf -> register / bound: median {median(s) / bound:.3f}  "
        f"p99 {percentile(s, 99) / bound:.3f}  max {s[-1] / bound:.3f}"
    )
    wire_w = wire_time_s(WRITE_FRAME_BYTES, BAUDRATE)
    wire_rw = wire_w + wire_time_s(READ_FRAME_BYTES, BAUDRATE)
    print(
        f"(on a real {BAUDRATE}-baud line the frames alone take {wire_w * 1000:.1f} ms per "
        f"write, {wire_rw * 1000:.1f} ms per read + write as the driver does it, plus the "
        f"board's reply delay; the pty has no baud rate)"
    )
    print(f"({time.monotonic() - t_begin:.1f} s in all)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="profile changes (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 profile changes")
    parser.add_argument(
        "--tick-interval", type=float, default=1.0, help="station tick_interval_s (1.0)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.2, help="EVSE board poll_interval_s (0.2)"
    )
    parser.add_argument("--seed", type=int, default=12, help="seed of the pauses (12)")
    args = parser.parse_args()
    n = args.n if args.n is not None else (20 if args.quick else 100)
    if n < 1:
        parser.error("-n must be at least 1")
    if importlib.util.find_spec("pymodbus") is None:
        print("cannot run: pymodbus is not installed", file=sys.stderr)
        return 1
    if shutil.which("socat") is None:
        print("cannot run: socat is not installed (apt-get install socat)", file=sys.stderr)
        return 1
    quiet_logging()
    return asyncio.run(run(n, args.tick_interval, args.poll_interval, args.seed))


if __name__ == "__main__":
    run_main(main, "profile_to_setpoint")
