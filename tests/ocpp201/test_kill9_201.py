"""SIGKILL the real `evsed run` speaking OCPP 2.0.1 mid-session and restart it: the
transaction a killed process left open ends once, with stoppedReason Reboot, and its
TransactionEvents reach the CSMS in order with seqNo 0, 1, 2, ... without gaps across the
restart (E01.FR.07: the sequence is durable; Part 2 E 1.3.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import CALLRESULT, DevCsms, Frame
from tests.e2e.test_kill9 import CARD, STATION, boot, charging, wait_until
from tests.procs import Evsed, free_port, write_config


@pytest.fixture
def evsed() -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    yield holder
    ev = holder.get("ev")
    if ev is not None:
        ev.cleanup()


def confirmed_events(csms: DevCsms) -> list[Frame]:
    ok = {r.unique_id for r in csms.sent_results if r.message_type == CALLRESULT}
    return [f for f in csms.frames(STATION, "TransactionEvent") if f.unique_id in ok]


def energy(f: Frame, context: str | None = None) -> int | None:
    for mv in f.payload.get("meterValue", []):
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == "Energy.Active.Import.Register" and (
                context is None or sv["context"] == context
            ):
                return int(sv["value"])
    return None


async def test_kill9_mid_transaction_seqno_gap_free(tmp_path: Path, evsed: dict) -> None:
    """TC_E_40_CS-like outage by a kill: Started and periodic Updated before the kill; after
    the restart one Ended (AbnormalCondition / Reboot) with an end register >= every
    reading sent; seqNo 0..n each confirmed once (only the message in flight at the kill
    may be confirmed twice, at-least-once); one transactionId throughout."""
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(
            tmp_path, station_id=STATION, csms_url=csms.url, api_port=api_port, ocpp_version="2.0.1"
        )
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        await boot(ev, csms)
        # A sample every second (B05: SetVariables; persistent over the restart).
        answer = await csms.call_raw(
            STATION,
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                        "attributeValue": "1",
                    }
                ]
            },
        )
        assert answer[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
        await ev.post("/api/sim/plug", {"connector": 1})
        assert (await ev.post("/api/sim/card", {"uid": CARD}))["delivered"]
        await ev.wait_status(charging, what="charging")
        await wait_until(
            lambda: (
                sum(
                    f.payload["triggerReason"] == "MeterValuePeriodic"
                    for f in confirmed_events(csms)
                )
                >= 3
            ),
            what="3 periodic samples",
        )
        ev.kill9()
        await asyncio.sleep(0.1)
        before = confirmed_events(csms)
        last_wh = max(e for f in before if (e := energy(f)) is not None)

        await boot(ev, csms)
        await csms.wait_for(
            lambda f: f.action == "TransactionEvent" and f.payload["eventType"] == "Ended",
            timeout_s=15,
        )
        await ev.wait_status(lambda s: s["csms"]["queued_messages"] == 0, what="queue drained")
        await asyncio.sleep(0.5)  # room for anything duplicated to show up

        sent = confirmed_events(csms)
        seqs = [f.payload["seqNo"] for f in sent]
        assert sorted(set(seqs)) == list(range(max(seqs) + 1)), seqs
        assert len(seqs) - len(set(seqs)) <= 1, seqs
        assert seqs == sorted(seqs)
        assert len({f.payload["transactionInfo"]["transactionId"] for f in sent}) == 1
        kinds = [f.payload["eventType"] for f in sent]
        assert kinds[0] == "Started" and kinds.count("Started") == 1
        assert kinds[-1] == "Ended" and kinds.count("Ended") == 1
        ended = sent[-1].payload
        assert ended["transactionInfo"]["stoppedReason"] == "Reboot"
        assert ended["triggerReason"] == "AbnormalCondition"
        end_wh = energy(sent[-1], "Transaction.End")
        assert end_wh is not None and end_wh >= last_wh
        assert len(csms.frames(STATION, "BootNotification")) == 2
