"""Quiet when idle (issue 16 item 2): the station's loop ticks every interval only while
energy may flow; idle it sleeps until the next thing time alone changes, and any event wakes
it at once. Time is the injected ManualClock; meter reads count the loop's work."""

from __future__ import annotations

from typing import Any

from controller.core.connector import Phase
from controller.runtime.station import IDLE_METER_POLL_S
from tests.conftest import CARD


def count_reads(h: Any, connector_id: int = 1) -> list[float]:
    """Patch the simulated meter to record the (manual clock) time of every read."""
    meter = h.rig(connector_id).meter
    reads: list[float] = []
    original = meter.read

    async def read() -> Any:
        reads.append(h.clock.monotonic_s())
        return await original()

    meter.read = read
    return reads


async def test_idle_station_reads_its_meter_once_a_minute(csms: Any, charger: Any) -> None:
    h = await charger(csms)
    reads = count_reads(h)
    await h.advance(600)
    # One health read per IDLE_METER_POLL_S instead of one per tick (600).
    assert 600 / IDLE_METER_POLL_S - 1 <= len(reads) <= 600 / IDLE_METER_POLL_S + 1


async def test_a_session_reads_every_tick_and_idle_again_after_it(csms: Any, charger: Any) -> None:
    h = await charger(csms)
    reads = count_reads(h)
    h.plug()
    h.tap()
    await h.settle(lambda: h.station.view(1).phase is Phase.CHARGING)
    before = len(reads)
    await h.advance(30)
    assert len(reads) - before >= 29  # energy flows: every tick (1 s) reads the meter
    h.tap()  # stop
    await h.settle(lambda: h.connector().tx_key is None)
    h.unplug()
    await h.settle(lambda: h.station.view(1).phase is Phase.AVAILABLE)
    await h.advance(5)  # the stop's own reads settle
    after_stop = len(reads)
    await h.advance(300)
    assert len(reads) - after_stop <= 300 / IDLE_METER_POLL_S + 1


async def test_a_failing_meter_is_watched_every_tick_until_it_is_faulted(
    csms: Any, charger: Any
) -> None:
    """The idle health read notices the failure; from then on the loop ticks every interval
    so the meter fault (3 failed reads) comes within seconds, not minutes."""
    h = await charger(csms)
    h.rig().meter.fail(True)
    await h.advance(IDLE_METER_POLL_S + 4)
    assert h.station.view(1).phase is Phase.FAULTED
    h.rig().meter.fail(False)
    await h.advance(3)
    assert h.station.view(1).phase is Phase.AVAILABLE


async def test_connection_timeout_counts_from_the_tap_after_a_long_idle_time(
    csms: Any, charger: Any
) -> None:
    """ConnectionTimeOut (1.6 9.1.6, default 60 s here): the event brings the machine's clock
    up to now first, so half an hour without a tick does not shorten the driver's time."""
    h = await charger(csms)
    await h.advance(1800, step_s=60)
    h.tap(CARD)
    await h.settle(lambda: h.station.view(1).phase is Phase.PREPARING)
    timeout_s = h.connector().state.connection_timeout_s
    await h.advance(timeout_s - 5)
    assert h.station.view(1).phase is Phase.PREPARING
    await h.advance(6)
    assert h.station.view(1).phase is Phase.AVAILABLE
