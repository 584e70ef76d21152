"""The same physical session on OCPP 1.6 and on 2.0.1 bills the same energy (issue 14): one
core, one journal, two protocol renderings. Each version's charger runs the identical
simulated session (plug, card, 10 minutes at 11 kW, card) against the dev CSMS on a manual
clock; the start and end registers and the periodic samples must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.app import App
from controller.config import parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config

SESSION_S = 600


def register_wh(payload: dict[str, Any], context: str) -> list[int]:
    """Energy.Active.Import.Register values of ``context`` in a 1.6 or 2.0.1 payload."""
    values = []
    for mv in payload.get("meterValue", []) + payload.get("transactionData", []):
        for sv in mv["sampledValue"]:
            if sv.get("measurand") == "Energy.Active.Import.Register" and (
                sv.get("context") == context
            ):
                values.append(int(sv["value"]))
    return values


async def run_session(tmp_path: Path, csms: DevCsms, version: str) -> Harness:
    clock = ManualClock()
    (tmp_path / version).mkdir()
    config = parse(charger_config(tmp_path / version, csms.url, ocpp_version=version))
    app = App(config, clock=clock, boot_id="boot-1")
    await app.start()
    h = Harness(app, clock, csms)
    await csms.wait_connected(STATION_ID, timeout_s=5)
    await h.settle(lambda: app.port is not None and app.port.connection_state() == "accepted")
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(SESSION_S)
    h.tap()
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(1)
    await h.settle(lambda: app.port is not None and app.port.queued_messages() == 0)
    return h


async def test_one_session_bills_the_same_on_both_versions(tmp_path: Path) -> None:
    """1.6 meterStart/meterStop and MeterValues against 2.0.1 TransactionEvent Started
    (Transaction.Begin) / Ended (Transaction.End) and Updated (Sample.Periodic): the same
    registers, the same billed energy (> 0), the same periodic readings."""
    billed: dict[str, int] = {}
    periodic: dict[str, list[int]] = {}
    for version in ("1.6", "2.0.1"):
        async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
            h = await run_session(tmp_path, csms, version)
            try:
                if version == "1.6":
                    start = h.frames("StartTransaction")[0].payload["meterStart"]
                    stop = h.frames("StopTransaction")[0].payload["meterStop"]
                    samples = [
                        wh
                        for f in h.frames("MeterValues")
                        for wh in register_wh(f.payload, "Sample.Periodic")
                    ]
                else:
                    sent = [f.payload for f in h.frames("TransactionEvent")]
                    start = register_wh(sent[0], "Transaction.Begin")[0]
                    stop = register_wh(sent[-1], "Transaction.End")[0]
                    samples = [wh for p in sent for wh in register_wh(p, "Sample.Periodic")]
                billed[version] = stop - start
                periodic[version] = [wh - start for wh in samples]
            finally:
                await h.app.stop(reason=None)
    # 11 kW for 600 s is about 1833 Wh.
    assert 1700 <= billed["1.6"] <= 1900, billed
    assert billed["1.6"] == billed["2.0.1"], billed
    assert len(periodic["1.6"]) >= SESSION_S // 60 - 1
    assert periodic["1.6"] == periodic["2.0.1"], periodic
