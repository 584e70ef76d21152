"""Clock trust on a charger without a real-time clock (issue 4 item 7).

OCPP 1.6 4.2 / 4.6: BootNotification.conf and Heartbeat.conf carry the CSMS currentTime,
"RECOMMENDED to be used by the Charge Point to synchronize its internal clock"; errata 3.11:
without an RTC the charge point "may not have a valid date / time setting".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import LAST_GOOD_UTC_KEY, App
from controller.config import parse
from controller.core.connector import StopCause
from controller.core.timestamps import clamp_iso
from controller.dev import devcsms
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import (
    BUILD_FLOOR_UTC,
    Clock,
    ManualClock,
    MemoryTimeStore,
    TrustedClock,
    kernel_ntp_synchronized,
)
from tests.conftest import STATION_ID, Harness, charger_config
from tests.journal16 import confirm_start, start_msgs

EPOCH = datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC)
CSMS_TIME = datetime(2026, 6, 1, 10, 0, 0, tzinfo=UTC)


class FakeBase(Clock):
    """A base clock whose wall time can be stepped independently of monotonic time."""

    def __init__(self, wall: datetime) -> None:
        self.wall = wall
        self.mono = 500.0

    def monotonic_s(self) -> float:
        return self.mono

    def utc_now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)

    def step_wall(self, to: datetime) -> None:
        self.wall = to


def never_synced() -> bool | None:
    return False


# --------------------------------------------------------------------------- unit


def test_1970_system_time_continues_from_the_build_floor() -> None:
    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=never_synced)
    assert clock.utc_now() == BUILD_FLOOR_UTC
    base.advance(10)
    assert clock.utc_now() == BUILD_FLOOR_UTC + timedelta(seconds=10)  # advances monotonically
    assert not clock.trusted
    assert clock.trust_source == "none"
    assert clock.on_floor


def test_floor_is_the_last_persisted_good_time() -> None:
    last = datetime(2026, 5, 1, 8, 0, 0, tzinfo=UTC)
    clock = TrustedClock(
        FakeBase(EPOCH), time_store=MemoryTimeStore(last), ntp_synchronized=never_synced
    )
    assert clock.utc_now() == last
    assert not clock.trusted


def test_plausible_system_time_above_the_floor_is_used_but_untrusted() -> None:
    wall = datetime(2026, 7, 1, tzinfo=UTC)
    clock = TrustedClock(FakeBase(wall), ntp_synchronized=never_synced)
    assert clock.utc_now() == wall
    assert not clock.trusted
    assert not clock.on_floor


def test_csms_confirmation_corrects_trusts_and_persists() -> None:
    base = FakeBase(EPOCH)
    store = MemoryTimeStore()
    clock = TrustedClock(base, time_store=store, ntp_synchronized=never_synced)
    assert clock.utc_now() == BUILD_FLOOR_UTC
    applied = clock.confirm_from_csms(CSMS_TIME)
    assert applied == (CSMS_TIME - BUILD_FLOOR_UTC).total_seconds()
    assert clock.utc_now() == CSMS_TIME
    assert clock.trusted and clock.trust_source == "csms"
    assert store.moment == CSMS_TIME
    base.advance(30)
    assert clock.utc_now() == CSMS_TIME + timedelta(seconds=30)
    clock.persist()
    assert store.moment == CSMS_TIME + timedelta(seconds=30)


def test_small_csms_offsets_are_not_applied() -> None:
    wall = datetime(2026, 7, 1, tzinfo=UTC)
    clock = TrustedClock(FakeBase(wall), ntp_synchronized=never_synced)
    assert clock.confirm_from_csms(wall + timedelta(seconds=1.5)) == 0.0
    assert clock.utc_now() == wall  # no jump
    assert clock.trust_source == "csms"  # but confirmed
    assert clock.confirm_from_csms(wall - timedelta(seconds=1.9)) == 0.0
    assert clock.confirm_from_csms(wall + timedelta(seconds=3)) == 3.0
    assert clock.utc_now() == wall + timedelta(seconds=3)


def test_csms_time_before_the_build_floor_is_ignored() -> None:
    wall = datetime(2026, 7, 1, tzinfo=UTC)
    clock = TrustedClock(FakeBase(wall), ntp_synchronized=never_synced)
    assert clock.confirm_from_csms(datetime(2001, 1, 1, tzinfo=UTC)) == 0.0
    assert clock.utc_now() == wall
    assert not clock.trusted


def test_restart_uses_the_persisted_time_and_stays_untrusted() -> None:
    store = MemoryTimeStore()
    first = TrustedClock(FakeBase(EPOCH), time_store=store, ntp_synchronized=never_synced)
    first.confirm_from_csms(CSMS_TIME)
    # Power cut, the Pi boots at 1970 again without network.
    base = FakeBase(EPOCH)
    second = TrustedClock(base, time_store=store, ntp_synchronized=never_synced)
    assert second.utc_now() == CSMS_TIME
    assert not second.trusted
    base.advance(60)
    assert second.utc_now() == CSMS_TIME + timedelta(seconds=60)
    # Running on the floor the time is a lower bound of the real time: worth saving.
    second.persist()
    assert store.moment == CSMS_TIME + timedelta(seconds=60)


def test_untrusted_time_above_the_floor_is_not_persisted() -> None:
    store = MemoryTimeStore()
    clock = TrustedClock(
        FakeBase(datetime(2030, 1, 1, tzinfo=UTC)), time_store=store, ntp_synchronized=never_synced
    )
    clock.persist()  # a wrong future time must not become the floor of every later boot
    assert store.moment is None


def test_ntp_synchronised_base_is_trusted_and_wins_over_the_csms() -> None:
    wall = datetime(2026, 7, 1, tzinfo=UTC)
    store = MemoryTimeStore()
    clock = TrustedClock(FakeBase(wall), time_store=store, ntp_synchronized=lambda: True)
    assert clock.trusted and clock.trust_source == "ntp"
    assert clock.utc_now() == wall
    assert clock.confirm_from_csms(wall + timedelta(seconds=30)) == 0.0
    assert clock.utc_now() == wall
    assert clock.trust_source == "ntp"


def test_ntp_synchronising_later_replaces_the_floor_time_without_double_correction() -> None:
    synced = False
    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=lambda: synced)
    assert clock.utc_now() == BUILD_FLOOR_UTC
    base.advance(100)
    # timesyncd sets the system clock and the kernel reports synchronised.
    real = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    base.step_wall(real)
    synced = True
    assert clock.utc_now() == real
    assert clock.trust_source == "ntp"
    assert not clock.on_floor


def test_system_clock_step_after_csms_correction_is_not_applied_twice() -> None:
    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=never_synced)
    clock.confirm_from_csms(CSMS_TIME)
    base.advance(10)
    base.step_wall(datetime(2026, 6, 1, 10, 0, 10, tzinfo=UTC))  # e.g. `date -s` by someone
    # Timestamps stay continuous (not 2082); the next CSMS time settles any residual error.
    assert clock.utc_now() == CSMS_TIME + timedelta(seconds=10)
    base.advance(5)
    assert clock.utc_now() == CSMS_TIME + timedelta(seconds=15)


def test_clamp_iso() -> None:
    assert clamp_iso("1970-01-01T00:00:05.000+00:00", BUILD_FLOOR_UTC) == (
        "2026-01-01T00:00:00.000+00:00"
    )
    assert clamp_iso("2026-03-01T00:00:00Z", BUILD_FLOOR_UTC) == "2026-03-01T00:00:00Z"
    assert clamp_iso("garbage", BUILD_FLOOR_UTC) == "2026-01-01T00:00:00.000+00:00"


def test_kernel_ntp_query_does_not_raise() -> None:
    assert kernel_ntp_synchronized() in (True, False, None)


# --------------------------------------------------------------------------- end to end


def timestamps(value: Any) -> list[str]:
    """Every ``timestamp`` value anywhere in a payload."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "timestamp" and isinstance(v, str):
                found.append(v)
            else:
                found.extend(timestamps(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(timestamps(v))
    return found


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def csms_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev CSMS answers currentTime = CSMS_TIME."""
    monkeypatch.setattr(devcsms, "_now_iso", lambda: CSMS_TIME.isoformat())


@pytest.fixture
async def rtc_less(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a charger whose system clock starts at 1970 (a Pi without RTC or network)."""
    apps: list[App] = []

    async def factory(csms: DevCsms, **kwargs: Any) -> tuple[Harness, TrustedClock]:
        base = ManualClock(start=EPOCH)
        clock = TrustedClock(base, ntp_synchronized=never_synced)
        app = App(parse(charger_config(tmp_path, csms.url, **kwargs)), clock=clock)
        await app.start()
        apps.append(app)
        return Harness(app, base, csms), clock

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


async def wait_accepted(h: Harness) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while h.app.port is None or h.app.port.connection_state() != "accepted":
        assert loop.time() < deadline, "charger did not get accepted"
        await h.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)


async def test_e2e_1970_clock_follows_the_csms_time(
    csms: DevCsms, csms_time: None, rtc_less: Any
) -> None:
    h, clock = await rtc_less(csms)
    await wait_accepted(h)
    await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
    assert clock.trusted and clock.trust_source == "csms"

    h.plug()
    await h.advance(2)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    (start,) = h.frames("StartTransaction")
    started = parse_ts(start.payload["timestamp"])
    assert CSMS_TIME <= started <= CSMS_TIME + timedelta(seconds=10)

    # Everything on the CSMS timeline: statuses queued before the BootNotification.conf
    # (stamped on the floor timeline) were moved by the correction too.
    for frame in csms.received:
        for ts in timestamps(frame.payload):
            assert parse_ts(ts) >= CSMS_TIME - timedelta(seconds=5), (frame.action, ts)
    # Persisted as the last known good time.
    assert h.app.store is not None
    saved = h.app.store.get_setting(LAST_GOOD_UTC_KEY)
    assert saved is not None and parse_ts(saved) >= CSMS_TIME


async def test_e2e_offline_start_on_1970_clock_never_sends_a_time_before_the_floor(
    csms: DevCsms, csms_time: None, rtc_less: Any, tmp_path: Path
) -> None:
    """A session started before the CSMS was ever reached is stamped on the floor timeline
    (untrusted), never 1970; BootNotification.conf currentTime moves its queued messages
    onto the CSMS timeline before they are sent, later messages follow the CSMS time; a
    restart (1970 again) continues from the persisted good time."""
    csms.refuse_connections = True
    h, clock = await rtc_less(csms, ocpp={"AllowOfflineTxForUnknownId": True})
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    assert not clock.trusted
    assert h.app.port is not None and h.app.port.queued_messages() >= 1

    csms.refuse_connections = False
    await wait_accepted(h)
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    assert clock.trust_source == "csms"
    await h.advance(2)
    h.tap()  # stop
    await csms.wait_for(lambda f: f.action == "StopTransaction")

    (start,) = h.frames("StartTransaction")
    (stop,) = h.frames("StopTransaction")
    # The start was queued on the floor timeline; the CSMS confirmation moved it onto the
    # CSMS timeline before it was sent: a few seconds before the connection, not months.
    started = parse_ts(start.payload["timestamp"])
    assert CSMS_TIME - timedelta(seconds=60) <= started <= CSMS_TIME
    assert CSMS_TIME <= parse_ts(stop.payload["timestamp"]) <= CSMS_TIME + timedelta(seconds=30)
    assert h.app.store is not None
    (record,) = h.app.store.transactions()
    assert record.started_at == start.payload["timestamp"]
    # The samples kept in memory for transactionData moved too: Transaction.Begin carries
    # the same (moved) time as the StartTransaction.
    data = stop.payload["transactionData"]
    begin = [mv for mv in data if mv["sampledValue"][0].get("context") == "Transaction.Begin"]
    assert [mv["timestamp"] for mv in begin] == [start.payload["timestamp"]]
    assert all(parse_ts(mv["timestamp"]) >= started for mv in data), data
    for frame in csms.received:
        for ts in timestamps(frame.payload):
            assert parse_ts(ts) >= BUILD_FLOOR_UTC, (frame.action, ts)

    # Restart after a power cut: 1970 again, CSMS unreachable -> the persisted good time.
    await h.app.stop(reason=None)
    csms.refuse_connections = True
    config = parse(charger_config(tmp_path, csms.url))
    base = ManualClock(start=EPOCH)
    clock2 = TrustedClock(base, ntp_synchronized=never_synced)
    app2 = App(config, clock=clock2, boot_id="boot-2")
    await app2.start()
    try:
        assert clock2.utc_now() >= CSMS_TIME
        assert not clock2.trusted
    finally:
        await app2.stop(reason=None)
    assert STATION_ID


def test_confirmed_time_may_be_earlier_than_a_persisted_bad_time() -> None:
    """A wrong future time saved once must not pin the clock after NTP/CSMS confirmation."""
    store = MemoryTimeStore(datetime(2031, 1, 1, tzinfo=UTC))
    wall = datetime(2026, 7, 1, tzinfo=UTC)
    ntp = TrustedClock(FakeBase(wall), time_store=store, ntp_synchronized=lambda: True)
    assert ntp.utc_now() == wall
    csms = TrustedClock(FakeBase(EPOCH), time_store=store, ntp_synchronized=never_synced)
    assert csms.utc_now() == datetime(2031, 1, 1, tzinfo=UTC)  # unconfirmed: the floor
    csms.confirm_from_csms(CSMS_TIME)
    assert csms.utc_now() == CSMS_TIME
    assert store.moment == CSMS_TIME


# --------------------------------------------------------------------------- queued stamps


def test_trust_listeners_get_the_shift_once_from_the_csms() -> None:
    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=never_synced)
    shifts: list[float] = []
    clock.add_trust_listener(shifts.append)
    assert clock.utc_now() == BUILD_FLOOR_UTC
    clock.confirm_from_csms(CSMS_TIME)
    clock.confirm_from_csms(CSMS_TIME + timedelta(hours=1))  # already trusted: no event
    assert shifts == [(CSMS_TIME - BUILD_FLOOR_UTC).total_seconds()]


def test_trust_listeners_get_the_shift_from_ntp() -> None:
    synced = False
    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=lambda: synced)
    shifts: list[float] = []
    clock.add_trust_listener(shifts.append)
    assert clock.utc_now() == BUILD_FLOOR_UTC
    base.advance(100)
    before = clock.utc_now()
    assert before == BUILD_FLOOR_UTC + timedelta(seconds=100)
    real = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    base.step_wall(real)
    synced = True
    assert clock.utc_now() == real
    assert shifts == [(real - before).total_seconds()]


def test_queued_offline_session_moves_onto_the_confirmed_timeline(tmp_path: Path) -> None:
    """Errata 3.11 (no valid time without RTC) + 4.2 currentTime: everything this process
    stamped on the unconfirmed clock - StartTransaction, MeterValues, StopTransaction and
    the transaction row - moves by the confirmation's shift; a StopTransaction that closes
    a transaction left open by an earlier process (its last persisted reading time) and a
    message queued after the confirmation do not move."""
    from controller.core.port import Sample, TxStart, TxStop
    from controller.core.timestamps import iso_utc
    from controller.ocpp16.settings import Settings, core_keys
    from controller.ocpp16.txmessages import TxMessages16
    from controller.storage.journal import TxJournal
    from controller.storage.store import Store
    from hal.base import MeterReading

    store = Store(tmp_path / "s.db")
    settings = Settings(store, core_keys(2))
    # A transaction an earlier process left open, stamped on a trusted clock.
    earlier = store.begin_transaction(
        connector_id=2,
        id_tag="OLD",
        meter_start_wh=10,
        started_at="2026-05-01T08:00:00.000+00:00",
        reservation_id=None,
        messages=start_msgs(
            {
                "connectorId": 2,
                "idTag": "OLD",
                "meterStart": 10,
                "timestamp": "2026-05-01T08:00:00.000+00:00",
            }
        ),
        boot_id="b0",
    )
    confirm_start(store, store.outbox_head().seq, earlier, 7)  # type: ignore[union-attr]

    base = FakeBase(EPOCH)
    clock = TrustedClock(base, ntp_synchronized=never_synced)
    journal = TxJournal(store, [TxMessages16(settings)], boot_id="b1", clock=clock)

    def now() -> str:
        return iso_utc(clock.utc_now())

    t_start = now()
    key = journal.start_transaction(TxStart(1, "CARD", 1000, t_start))
    base.advance(60)
    journal.record_samples(1, key, [Sample(MeterReading(1100.0, 7000.0), now())])
    base.advance(60)
    journal.stop_transaction(key, TxStop(1200, now(), StopCause.LOCAL))
    journal.stop_transaction(
        earlier,
        TxStop(500, "2026-05-01T09:00:00.000+00:00", StopCause.POWER_LOSS, stamped_now=False),
    )
    shift = CSMS_TIME - clock.utc_now()
    clock.confirm_from_csms(CSMS_TIME)
    t_late = now()
    late = journal.start_transaction(TxStart(2, "NEW", 1, t_late))  # after: not moved

    def moved(text: str) -> str:
        return iso_utc(parse_ts(text) + shift)

    sent = {(m.action, m.tx_key): m.payload for m in store.outbox_batch(0, 100)}
    assert sent[("StartTransaction", key)]["timestamp"] == moved(t_start)
    assert timestamps(sent[("MeterValues", key)]) == [
        moved(iso_utc(BUILD_FLOOR_UTC + timedelta(seconds=60)))
    ]
    assert sent[("StopTransaction", key)]["timestamp"] == iso_utc(CSMS_TIME)
    assert sent[("StopTransaction", earlier)]["timestamp"] == "2026-05-01T09:00:00.000+00:00"
    assert sent[("StartTransaction", late)]["timestamp"] == t_late
    row = store.get_transaction(key)
    assert row is not None
    assert (row.started_at, row.stopped_at) == (moved(t_start), iso_utc(CSMS_TIME))
    old = store.get_transaction(earlier)
    assert old is not None and old.started_at == "2026-05-01T08:00:00.000+00:00"
    assert old.stopped_at == "2026-05-01T09:00:00.000+00:00"


async def test_e2e_ntp_confirmation_while_offline_moves_the_waiting_statuses(
    csms: DevCsms, csms_time: None, rtc_less: Any
) -> None:
    """Statuses waiting to be reported (CSMS unreachable) were stamped on the unconfirmed
    clock: when NTP confirms the time they move with it, as they do for the CSMS time."""
    csms.refuse_connections = True
    h, clock = await rtc_less(csms)
    h.plug()  # Preparing, waiting in memory while offline (stamped on the floor timeline)
    await h.advance(2)
    assert not clock.trusted
    clock._ntp_check = lambda: True
    h.clock._wall = CSMS_TIME  # type: ignore[attr-defined]  # NTP sets the system clock
    clock.utc_now()  # the next timestamp taken notices it
    assert clock.trust_source == "ntp"
    csms.refuse_connections = False
    await wait_accepted(h)
    await h.settle(
        lambda: any(f.payload["status"] == "Preparing" for f in h.frames("StatusNotification"))
    )
    for frame in h.frames("StatusNotification"):
        stamped = parse_ts(frame.payload["timestamp"])
        assert stamped >= CSMS_TIME - timedelta(seconds=10), frame.payload


async def test_e2e_csms_time_correction_is_a_setting_system_time_event(
    csms: DevCsms, csms_time: None, rtc_less: Any
) -> None:
    """Security whitepaper section 8: SettingSystemTime (critical) when the charger's time
    base moves; its StartupOfTheDevice, stamped before, was moved onto the CSMS timeline."""
    h, _ = await rtc_less(csms)
    await wait_accepted(h)
    frame = await csms.wait_for(
        lambda f: (
            f.action == "SecurityEventNotification" and f.payload["type"] == "SettingSystemTime"
        )
    )
    assert "CSMS currentTime" in frame.payload["techInfo"]
    assert parse_ts(frame.payload["timestamp"]) >= CSMS_TIME
    startup = await csms.wait_for(
        lambda f: (
            f.action == "SecurityEventNotification" and f.payload["type"] == "StartupOfTheDevice"
        )
    )
    assert parse_ts(startup.payload["timestamp"]) >= CSMS_TIME - timedelta(seconds=5)
