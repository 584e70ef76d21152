"""The monitoring rules of OCPP 2.0.1 (N04, N07, N08) without a connection: which monitors a
variable takes, threshold / delta evaluation, clock alignment, persistence, and the
NotifyEvent payloads queued in the outbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from controller.ocpp201.dm import ComponentKey, DeviceModel, VariableKey
from controller.ocpp201.dm.monitors import Monitor, MonitorStore, supports, value_problem
from controller.ocpp201.monitoring import Monitoring, evaluate, next_aligned_s
from controller.runtime.clock import ManualClock
from controller.storage.store import Store
from controller.storage.writes import EventKind, Outgoing
from hal.base import FaultKind
from tests.ocpp201.dm_support import Live, station_model, validate

EVSE1 = ComponentKey("EVSE", evse_id=1)
POWER = VariableKey("Power")


def upper(value: int, tripped: bool = False) -> Monitor:
    return Monitor(1000, EVSE1, POWER, "UpperThreshold", Decimal(value), 4, tripped=tripped)


def test_thresholds_trigger_beyond_not_on_and_clear() -> None:
    """N07.FR.16/17 (beyond the value, not on it), N07.FR.02 (back within: cleared)."""
    assert evaluate(upper(100), "100", True, None)[0] is None
    found, tripped, _ = evaluate(upper(100), "100.5", True, None)
    assert found is not None and found.trigger == "Alerting" and not found.cleared and tripped
    assert evaluate(upper(100, tripped=True), "150", True, None)[0] is None  # once
    found, tripped, _ = evaluate(upper(100, tripped=True), "99", True, None)
    assert found is not None and found.cleared and not tripped
    lower = Monitor(1001, EVSE1, POWER, "LowerThreshold", Decimal(10), 4)
    assert evaluate(lower, "10", True, None)[0] is None
    found, _, _ = evaluate(lower, "9.9", True, None)
    assert found is not None and found.trigger == "Alerting"
    assert evaluate(upper(100), None, True, None)[0] is None  # no value now: nothing


def test_delta_numeric_and_not_numeric() -> None:
    """N07.FR.18 (more than the value since the reference, which moves on each event),
    N07.FR.19 (any change of a non-numeric value)."""
    delta = Monitor(1002, EVSE1, POWER, "Delta", Decimal(100), 5)
    assert evaluate(delta, "1000", True, None) == (None, False, "1000")  # first reference
    assert evaluate(delta, "1100", True, "1000")[0] is None  # not more than 100
    found, _, reference = evaluate(delta, "1100.5", True, "1000")
    assert found is not None and found.trigger == "Delta" and reference == "1100.5"
    found, _, reference = evaluate(delta, "899", True, "1000")
    assert found is not None and reference == "899"
    state = Monitor(1003, EVSE1, VariableKey("AvailabilityState"), "Delta", Decimal(1), 5)
    assert evaluate(state, "Available", False, "Available")[0] is None
    found, _, reference = evaluate(state, "Occupied", False, "Available")
    assert found is not None and found.actual == "Occupied" and reference == "Occupied"
    found, _, _ = evaluate(state, "Occupied", False, None)  # an unset value got one
    assert found is not None


def test_clock_aligned_intervals() -> None:
    """N08.FR.07: 900 s fires at 0, 15, 30 and 45 minutes past the hour."""
    at = datetime(2026, 1, 1, 12, 7, 30, tzinfo=UTC).timestamp()
    assert next_aligned_s(at, Decimal(900)) == pytest.approx(450)
    on = datetime(2026, 1, 1, 12, 15, tzinfo=UTC).timestamp()
    assert next_aligned_s(on, Decimal(900)) == pytest.approx(900)


def test_which_monitors_fit_which_variables(tmp_path: Path) -> None:
    """Part 1 4.4 table, N04.FR.05 (type), N04.FR.06 (threshold beyond the range),
    N04.FR.14 (negative delta), periodic intervals of at least 10 s."""
    model = station_model(Store(tmp_path / "evsed.db"))
    power = model.find(EVSE1, POWER)
    state = model.find(EVSE1, "AvailabilityState")
    password = model.find("SecurityCtrlr", "BasicAuthPassword")
    interval = model.find("OCPPCommCtrlr", "HeartbeatInterval")
    supply = model.find(EVSE1, "SupplyPhases")
    assert power and state and password and interval and supply
    assert supports(power, "UpperThreshold") and supports(power, "PeriodicClockAligned")
    assert supports(state, "Delta") and not supports(state, "LowerThreshold")
    assert supports(password, "Delta")  # write-only: monitored, never its value (N07.FR.10)
    assert supports(interval, "UpperThreshold")  # a writable setting is monitorable
    assert not supports(supply, "Delta")  # a fixed rating is not
    assert value_problem(power, "UpperThreshold", Decimal(10**9)) == "ValueOutOfRange"
    assert value_problem(power, "Delta", Decimal(-1)) == "ValuePositiveOnly"
    assert value_problem(power, "Periodic", Decimal(5)) == "ValueTooLow"
    assert value_problem(power, "UpperThreshold", Decimal(5000)) is None


@dataclass
class View:
    tx_key: int | None = None


@dataclass
class FakeStation:
    views: dict[int, View] = field(default_factory=lambda: {1: View(), 2: View()})

    def connector_ids(self) -> list[int]:
        return list(self.views)

    def view(self, cid: int) -> View:
        return self.views[cid]


class FakeJournal:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def enqueue(self, kind: EventKind, messages: list[Outgoing]) -> None:
        assert kind is EventKind.NOTICE
        for message in messages:
            assert message.action == "NotifyEvent"
            validate("NotifyEventRequest", message.payload)
            self.sent.extend(message.payload["eventData"])


class FakePump:
    def wake(self) -> None:
        pass


class FakeClient:
    """What Monitoring uses of Ocpp201Client."""

    backend = "ocpp2.0.1"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = ManualClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
        self.station = FakeStation()
        self.journal = FakeJournal()
        self.pump = FakePump()
        self.state = "accepted"

    def connection_state(self) -> str:
        return self.state


def monitoring(
    tmp_path: Path, live: Live | None = None
) -> tuple[Monitoring, FakeClient, DeviceModel]:
    store = Store(tmp_path / "evsed.db")
    client = FakeClient(store)
    model = station_model(store, live)
    return Monitoring(client, model), client, model  # type: ignore[arg-type]


def data(
    component: ComponentKey, variable: str, kind: str, value: float, severity: int
) -> dict[str, Any]:
    return {
        "component": component.wire(),
        "variable": {"name": variable},
        "type": kind,
        "value": value,
        "severity": severity,
    }


def test_stored_value_threshold_persists_over_restart(tmp_path: Path) -> None:
    """TC_N_53_CS, N07.FR.13 (monitors persist), N07.FR.14 (a threshold exceeded before a restart is
    reported cleared when the value is back after it), N07.FR.11 (a changed threshold
    that the value no longer exceeds clears)."""
    mon, client, model = monitoring(tmp_path)
    comm = ComponentKey("OCPPCommCtrlr")
    (result,) = mon.set_monitors([data(comm, "HeartbeatInterval", "UpperThreshold", 600, 5)])
    assert result["status"] == "Accepted"
    model.set_internal(comm, "HeartbeatInterval", "900")
    (event,) = client.journal.sent
    assert event["trigger"] == "Alerting" and event["actualValue"] == "900"
    assert event["eventNotificationType"] == "CustomMonitor"
    assert event["variableMonitoringId"] == result["id"]
    client.store.close()

    store = Store(tmp_path / "evsed.db")
    client2 = FakeClient(store)
    model2 = station_model(store)
    mon2 = Monitoring(client2, model2)  # type: ignore[arg-type]
    stored = mon2.store.get(result["id"])
    assert stored is not None and stored.tripped
    model2.set_internal(comm, "HeartbeatInterval", "300")
    (cleared,) = client2.journal.sent
    assert cleared["cleared"] is True and cleared["actualValue"] == "300"
    # N07.FR.11: raised again, then the threshold moved above the value: cleared at once.
    model2.set_internal(comm, "HeartbeatInterval", "900")
    (again,) = mon2.set_monitors(
        [{**data(comm, "HeartbeatInterval", "UpperThreshold", 1000, 5), "id": result["id"]}]
    )
    assert again["status"] == "Accepted"
    assert [e.get("cleared", False) for e in client2.journal.sent] == [True, False, True]


def test_level_offline_and_write_only(tmp_path: Path) -> None:
    """N07.FR.15 (above the level: not sent), N07.FR.04 (offline only at or below
    OfflineQueuingSeverity), N07.FR.10 / TC_N_48_CS (write-only: empty actualValue)."""
    mon, client, model = monitoring(tmp_path)
    sec = ComponentKey("SecurityCtrlr")
    (result,) = mon.set_monitors([data(sec, "BasicAuthPassword", "Delta", 1, 5)])
    assert result["status"] == "Accepted"
    model.set_internal(sec, "BasicAuthPassword", "0123456789abcdefXYZ")
    (event,) = client.journal.sent
    assert event["actualValue"] == "" and event["trigger"] == "Delta"
    model.set_internal("MonitoringCtrlr", "ActiveMonitoringLevel", "4")
    model.set_internal(sec, "BasicAuthPassword", "0123456789abcdefXYZ2")
    assert len(client.journal.sent) == 1
    model.set_internal("MonitoringCtrlr", "ActiveMonitoringLevel", "9")
    client.state = "offline"
    model.set_internal(sec, "BasicAuthPassword", "0123456789abcdefXYZ3")  # 5 > 4: dropped
    assert len(client.journal.sent) == 1
    model.set_internal("MonitoringCtrlr", "OfflineQueuingSeverity", "5")
    model.set_internal(sec, "BasicAuthPassword", "0123456789abcdefXYZ4")
    assert len(client.journal.sent) == 2


def test_transaction_monitor_only_during_a_transaction(tmp_path: Path) -> None:
    """SetMonitoringData.transaction: active only while the EVSE has a transaction."""
    live = Live()
    mon, client, _ = monitoring(tmp_path, live)
    (result,) = mon.set_monitors(
        [{**data(EVSE1, "Power", "UpperThreshold", 1000, 5), "transaction": True}]
    )
    assert result["status"] == "Accepted"
    live.power_w[1] = Decimal(5000)
    mon.check_live(sampled=True)
    assert client.journal.sent == []
    client.station.views[1].tx_key = 7
    mon.check_live(sampled=True)
    (event,) = client.journal.sent
    assert event["actualValue"] == "5000"


def test_faults_are_hard_wired_notifications(tmp_path: Path) -> None:
    """TC_N_21_CS: a fault appears and goes as HardWiredNotification, on the part that
    failed (a welded contactor on PowerContactor), severity 0 so also sent at level 0."""
    mon, client, model = monitoring(tmp_path)
    model.set_internal("MonitoringCtrlr", "ActiveMonitoringLevel", "0")
    mon.station_changed(1, FaultKind.POWER_SWITCH)
    mon.station_changed(1, FaultKind.POWER_SWITCH)  # the same fault: once
    mon.station_changed(1, None)
    raised, cleared = client.journal.sent
    assert raised["component"] == {"name": "PowerContactor", "evse": {"id": 1}}
    assert raised["techCode"] == "PowerSwitchFailure" and "cleared" not in raised
    assert cleared["cleared"] is True
    assert {raised["eventNotificationType"], cleared["eventNotificationType"]} == {
        "HardWiredNotification"
    }
    assert raised["eventId"] != cleared["eventId"]


def test_set_limits_ids_and_store(tmp_path: Path) -> None:
    """N04.FR.11 (ids from the station, unique), N04.FR.13/16/18, the stored set survives a
    reload and a monitor whose variable is gone is dropped (N04 remark)."""
    mon, client, _ = monitoring(tmp_path)
    results = mon.set_monitors(
        [
            data(EVSE1, "Power", "UpperThreshold", 1000, 5),
            data(EVSE1, "Power", "UpperThreshold", 2000, 6),
            {**data(EVSE1, "Power", "Delta", 1, 5), "id": 5},
        ]
    )
    assert [r["status"] for r in results] == ["Accepted", "Accepted", "Rejected"]
    assert results[0]["id"] != results[1]["id"]
    gone = Monitor(2000, ComponentKey("EVSE", evse_id=9), POWER, "Delta", Decimal(1), 5)
    mon.store.put(gone)
    client.store.close()
    store = Store(tmp_path / "evsed.db")
    reloaded = Monitoring(FakeClient(store), station_model(store))  # type: ignore[arg-type]
    ids = {m.id for m in reloaded.store.all()}
    assert results[0]["id"] in ids and 2000 not in ids
    assert MonitorStore(store).get(2000) is None


def test_periodic_fires_every_interval(tmp_path: Path) -> None:
    """N08.FR.05/06: trigger Periodic every interval from when the monitor was set."""
    mon, client, _ = monitoring(tmp_path)
    (result,) = mon.set_monitors([data(EVSE1, "AvailabilityState", "Periodic", 30, 7)])
    assert result["status"] == "Accepted"

    async def run() -> None:
        task = asyncio.create_task(mon.run())
        await asyncio.sleep(0)
        for _ in range(65):
            await client.clock.advance(1)
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(run())
    periodic = [e for e in client.journal.sent if e["trigger"] == "Periodic"]
    assert len(periodic) == 2
    assert periodic[0]["actualValue"] == "Available"


def test_removing_an_exceeded_threshold_sends_no_cleared(tmp_path: Path) -> None:
    """TC_N_52_CS (N07.FR.12): a cleared monitor whose threshold was exceeded sends no
    cleared event; N06.FR.02 an unknown id is NotFound."""
    live = Live()
    mon, client, _ = monitoring(tmp_path, live)
    (result,) = mon.set_monitors([data(EVSE1, "Power", "UpperThreshold", 1000, 5)])
    live.power_w[1] = Decimal(2000)
    mon.check_live(sampled=True)
    assert len(client.journal.sent) == 1
    assert mon.clear_monitors([result["id"], 31337]) == [
        {"id": result["id"], "status": "Accepted"},
        {"id": 31337, "status": "NotFound"},
    ]
    live.power_w[1] = Decimal(0)
    mon.check_live(sampled=True)
    assert len(client.journal.sent) == 1


def test_clock_aligned_monitor_fires_on_the_quarter(tmp_path: Path) -> None:
    """N08.FR.07: set at 12:07:30 with 900 s, it fires at 12:15 and 12:30."""
    mon, client, _ = monitoring(tmp_path)

    async def run() -> None:
        await client.clock.advance(450)  # 12:07:30
        (result,) = mon.set_monitors(
            [data(EVSE1, "AvailabilityState", "PeriodicClockAligned", 900, 7)]
        )
        assert result["status"] == "Accepted"
        task = asyncio.create_task(mon.run())
        await asyncio.sleep(0)
        for _ in range(30):
            await client.clock.advance(60)  # to 12:37:30
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(run())
    stamps = [e["timestamp"] for e in client.journal.sent if e["trigger"] == "Periodic"]
    assert [s[11:16] for s in stamps] == ["12:15", "12:30"]
