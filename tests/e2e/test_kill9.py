"""SIGKILL the real `evsed run` process mid-session and restart it with the same config.

OCPP 1.6 section 4.10 (Stop Transaction) with 7.36 Reason "Reboot" ("a locally initiated
reset/reboot occurred, for instance watchdog kicked in"): the transaction a killed process
left open is stopped once at the next start, with the last persisted meter reading.
Section 3.7: transaction-related messages queued before the kill are delivered after it,
in order, and none twice (a StartTransaction confirmed before the kill is never resent).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import CALLRESULT, DevCsms, Frame
from tests.procs import Evsed, free_port, write_config

STATION = "CP-KILL9"
CARD = "04A1B2C3"


@pytest.fixture
def evsed(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Holder for the child process; every child is SIGKILLed (by pid) at teardown."""
    holder: dict[str, Any] = {}
    yield holder
    ev = holder.get("ev")
    if ev is not None:
        ev.cleanup()


# --------------------------------------------------------------------------- helpers


def energy(f: Frame) -> int:
    for sv in f.payload["meterValue"][0]["sampledValue"]:
        if sv.get("measurand") == "Energy.Active.Import.Register":
            return int(sv["value"])
    raise AssertionError(f"no energy register in {f.payload}")


def answered(csms: DevCsms) -> list[tuple[Frame, dict[str, Any]]]:
    """(CALL, CALLRESULT payload) for every transaction-related CALL the CSMS confirmed."""
    results = {r.unique_id: r.payload for r in csms.sent_results if r.message_type == CALLRESULT}
    return [
        (f, results[f.unique_id])
        for f in csms.received
        if f.action in ("StartTransaction", "MeterValues", "StopTransaction")
        and f.unique_id in results
    ]


def key(f: Frame) -> tuple[str, str]:
    if f.action == "MeterValues":
        return f.action, f.payload["meterValue"][0]["timestamp"]
    return f.action, f.payload["timestamp"]


def check_invariants(csms: DevCsms, kills: int) -> dict[int, dict[str, Any]]:
    """Per CSMS transactionId: one Start, one Stop, readings in order, stop >= readings."""
    ok = answered(csms)
    seen: dict[tuple[str, str], int] = {}
    for f, _ in ok:
        seen[key(f)] = seen.get(key(f), 0) + 1
    dupes = {k: n for k, n in seen.items() if n > 1}
    # Only a MeterValues in flight at the moment of a kill may be delivered twice
    # (at-least-once; its confirmation was not committed). Never a Start or Stop.
    assert all(k[0] == "MeterValues" for k in dupes), dupes
    assert sum(n - 1 for n in dupes.values()) <= kills, dupes

    txs: dict[int, dict[str, Any]] = {}
    for f, res in ok:
        if f.action == "StartTransaction":
            tx_id = int(res["transactionId"])
            assert tx_id not in txs
            txs[tx_id] = {"start": f, "mvs": [], "stops": []}
    for f, _ in ok:
        if f.action == "StartTransaction":
            continue
        tx_id = f.payload["transactionId"]
        assert tx_id in txs, f"{f.action} with unknown transactionId {tx_id}: {f.payload}"
        txs[tx_id]["mvs" if f.action == "MeterValues" else "stops"].append(f)
    # Queue order per transaction: Start < MeterValues... < Stop (3.7 chronological order).
    index = {id(f): i for i, (f, _) in enumerate(ok)}
    previous_stop: int | None = None
    for tx_id in sorted(txs):
        t = txs[tx_id]
        start = t["start"]
        assert len(t["stops"]) == 1, f"transaction {tx_id}: {len(t['stops'])} StopTransactions"
        stop = t["stops"][0]
        stamps = [key(m)[1] for m in t["mvs"]]
        assert stamps == sorted(stamps)
        assert all(index[id(start)] < index[id(m)] < index[id(stop)] for m in t["mvs"])
        meter_start = start.payload["meterStart"]
        assert stop.payload["meterStop"] >= meter_start
        if t["mvs"]:
            assert stop.payload["meterStop"] >= max(energy(m) for m in t["mvs"])
        # The (non-volatile) register never runs backwards across kills.
        if previous_stop is not None:
            assert meter_start >= previous_stop
        previous_stop = stop.payload["meterStop"]
        t["stop"] = stop
    return txs


async def wait_until(predicate: Any, timeout_s: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.02)


def mvs_for(csms: DevCsms, tx_id: int) -> list[Frame]:
    return [
        f for f in csms.frames(STATION, "MeterValues") if f.payload.get("transactionId") == tx_id
    ]


async def boot(ev: Evsed, csms: DevCsms) -> None:
    ev.start()
    await ev.wait_api()
    await csms.wait_connected(STATION, timeout_s=15)
    await ev.wait_status(lambda s: s["csms"]["state"] == "accepted", what="accepted")


async def go_offline(ev: Evsed, csms: DevCsms) -> None:
    csms.refuse_connections = True
    await csms.disconnect(STATION)
    await ev.wait_status(lambda s: s["csms"]["state"] != "accepted", what="offline")


def charging(s: dict[str, Any]) -> bool:
    c = s["connectors"][0]
    return bool(c["status"] == "Charging" and c["contactor_closed"])


# --------------------------------------------------------------------------- tests


async def test_kill9_mid_transaction_reboot_stop_once(tmp_path: Path, evsed: dict) -> None:
    """4.10/7.36: SIGKILL while charging -> after restart exactly one StopTransaction, reason
    Reboot (same OS boot id), meterStop >= the last MeterValues the CSMS received."""
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(tmp_path, station_id=STATION, csms_url=csms.url, api_port=api_port)
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        await boot(ev, csms)

        await ev.post("/api/sim/plug", {"connector": 1})
        assert (await ev.post("/api/sim/card", {"uid": CARD}))["delivered"]
        start = await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=10)
        st = await ev.wait_status(
            lambda s: charging(s) and s["connectors"][0]["transaction_id"] is not None,
            what="charging",
        )
        tx_id = st["connectors"][0]["transaction_id"]
        await wait_until(lambda: len(mvs_for(csms, tx_id)) >= 3, what="3 MeterValues")

        ev.kill9()
        assert ev.proc is not None and ev.proc.returncode == -9
        await asyncio.sleep(0.1)
        received = mvs_for(csms, tx_id)
        last_mv = max(energy(f) for f in received)
        assert csms.frames(STATION, "StopTransaction") == []

        await boot(ev, csms)
        stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
        await ev.wait_status(lambda s: s["csms"]["queued_messages"] == 0, what="queue drained")
        await asyncio.sleep(0.5)  # room for anything duplicated to show up

        assert stop.payload["transactionId"] == tx_id
        assert stop.payload["reason"] == "Reboot"
        assert stop.payload["meterStop"] >= last_mv
        assert stop.payload["meterStop"] >= start.payload["meterStart"]
        assert len(csms.frames(STATION, "StopTransaction")) == 1
        assert len(csms.frames(STATION, "StartTransaction")) == 1
        assert len(csms.frames(STATION, "BootNotification")) == 2
        txs = check_invariants(csms, kills=1)
        assert list(txs) == [tx_id]
        st = await ev.status()
        assert st["connectors"][0]["transaction_key"] is None
        assert st["connectors"][0]["status"] == "Available"
        # The meter register survived the kill (state_file): no energy went missing.
        assert round(st["connectors"][0]["energy_wh"]) >= stop.payload["meterStop"]


PHASES = ("charging", "just_started", "offline_tx", "stop_queued", "idle")


async def test_kill9_at_random_points_of_a_session_loop(tmp_path: Path, evsed: dict) -> None:
    """Five kills at seeded random points of sessions; every transaction ends with exactly
    one StopTransaction (Reboot for a kill mid-transaction, Local when the stop was queued),
    nothing is confirmed twice except possibly a MeterValues in flight at the kill."""
    rng = random.Random(20240607)
    phases = list(PHASES)
    rng.shuffle(phases)
    expected_reasons: list[str] = []

    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(
            tmp_path,
            station_id=STATION,
            csms_url=csms.url,
            api_port=api_port,
            ocpp={"AllowOfflineTxForUnknownId": True},
        )
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        await boot(ev, csms)

        for phase in phases:
            stops_before = len(csms.frames(STATION, "StopTransaction"))
            if phase == "offline_tx":
                await go_offline(ev, csms)
            if phase != "idle":
                await ev.post("/api/sim/plug", {"connector": 1})
                await ev.post("/api/sim/card", {"uid": CARD})
                await ev.wait_status(charging, what=f"{phase}: charging")

            if phase == "charging":
                st = await ev.wait_status(
                    lambda s: s["connectors"][0]["transaction_id"] is not None
                )
                tx_id = st["connectors"][0]["transaction_id"]
                n = rng.randint(1, 3)
                await wait_until(lambda: len(mvs_for(csms, tx_id)) >= n)  # noqa: B023
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                expected_reasons.append("Reboot")
            elif phase == "just_started":
                # Kill soon after StartTransaction.conf was committed (id visible in the API).
                await ev.wait_status(lambda s: s["connectors"][0]["transaction_id"] is not None)
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                expected_reasons.append("Reboot")
            elif phase == "offline_tx":
                await asyncio.sleep(rng.uniform(1.0, 2.0))  # MeterValues pile up offline
                st = await ev.status()
                assert st["csms"]["queued_messages"] >= 2
                expected_reasons.append("Reboot")
            elif phase == "stop_queued":
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                await go_offline(ev, csms)
                await ev.post("/api/sim/card", {"uid": CARD})  # local stop while offline
                await ev.wait_status(
                    lambda s: (
                        s["connectors"][0]["transaction_key"] is None
                        and s["csms"]["queued_messages"] >= 1
                    ),
                    what="stop queued",
                )
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                expected_reasons.append("Local")
            else:  # idle: plugged in, no card
                await ev.post("/api/sim/plug", {"connector": 1})
                await asyncio.sleep(rng.uniform(0.2, 0.6))

            ev.kill9()
            csms.refuse_connections = False
            await boot(ev, csms)
            await ev.wait_status(
                lambda s: s["csms"]["queued_messages"] == 0, what=f"{phase}: queue drained"
            )
            want = stops_before + (0 if phase == "idle" else 1)
            await wait_until(
                lambda: len(csms.frames(STATION, "StopTransaction")) >= want,  # noqa: B023
                what=f"{phase}: StopTransaction",
            )

        await asyncio.sleep(0.5)
        txs = check_invariants(csms, kills=len(phases))
        reasons = [txs[t]["stop"].payload["reason"] for t in sorted(txs)]
        assert reasons == expected_reasons, (phases, reasons)
        assert len(csms.frames(STATION, "StopTransaction")) == len(expected_reasons)
        assert len(csms.frames(STATION, "BootNotification")) == len(phases) + 1
        ids = [f.unique_id for f in csms.frames(STATION)]
        assert len(ids) == len(set(ids)), "a message id was reused across restarts"
