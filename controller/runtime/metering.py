"""Metering: meter polling, periodic and clock-aligned samples, persisting what they read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from controller.core import connector as sm
from controller.core.policy import ChargingPolicy
from controller.core.port import CsmsPort, Sample
from controller.core.records import StationRecords, StoreError
from controller.core.timestamps import iso_utc, shift_iso
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime
from controller.runtime.faults import Faults
from hal.base import DeviceError, FaultKind, MeterReading

LOG = logging.getLogger(__name__)

METER_FAILURES_BEFORE_FAULT = 3
MAX_STOP_TX_SAMPLES = 48
# The last reading of a running transaction is persisted at least this often (and every
# MeterValueSampleInterval when that is shorter), so an unclean stop loses at most this
# much energy from the bill; nothing is written while the register stands still.
MAX_PERSIST_INTERVAL_S = 60
# While the database cannot be written (disk full), a write is retried this often.
STORAGE_PROBE_INTERVAL_S = 60


class Metering:
    """Reads the meters and turns readings into samples and durable meter values."""

    def __init__(
        self,
        *,
        connectors: dict[int, ConnectorRuntime],
        store: StationRecords,
        clock: Clock,
        policy: Callable[[], ChargingPolicy],
        port: Callable[[], CsmsPort],
        faults: Faults,
        dispatch: Callable[[int, sm.Event], None],
        tick_interval_s: float,
    ) -> None:
        self._connectors = connectors
        self._store = store
        self._clock = clock
        self._policy = policy  # the current one: the CSMS may change it at any time
        self._port = port  # attached after construction
        self._faults = faults
        self._dispatch = dispatch
        self._tick_interval_s = tick_interval_s
        self._last_aligned: int | None = None  # clock-aligned slot of the last tick
        self._storage_probe_at_s: float | None = None  # next write probe while degraded

    def _now_iso(self) -> str:
        return iso_utc(self._clock.utc_now())

    def on_time_confirmed(self, shift_s: float) -> None:
        """The clock was confirmed (NTP / CSMS): samples kept for StopTransaction's
        transactionData were stamped on the unconfirmed clock in this process; move them
        as the journal moves the queued messages (issue 4 item 7)."""
        if not shift_s:
            return
        for c in self._connectors.values():
            c.samples = [replace(s, timestamp=shift_iso(s.timestamp, shift_s)) for s in c.samples]
            if c.reading_at is not None:
                c.reading_at = shift_iso(c.reading_at, shift_s)

    async def poll(self, c: ConnectorRuntime) -> None:
        """Read the meter; repeated failures are a meter fault, the first answer MeterReady."""
        c.polled_s = self._clock.monotonic_s()
        try:
            reading = await c.hw.meter.read()
        except (TimeoutError, DeviceError, OSError) as exc:
            c.meter_failures += 1
            LOG.warning("connector %d: meter read failed (%s)", c.connector_id, exc)
            if c.meter_failures >= METER_FAILURES_BEFORE_FAULT:
                self._faults.set(c, "meter", FaultKind.METER)
            return
        if c.reading is not None and reading.energy_wh < c.reading.energy_wh:
            # A register must never run backwards; keep the higher value (meter reset).
            LOG.warning("connector %d: meter register went backwards", c.connector_id)
            reading = MeterReading(
                c.reading.energy_wh,
                reading.power_w,
                reading.voltage_v,
                reading.current_a,
                reading.frequency_hz,
                reading.energy_export_wh,
            )
        c.reading = reading
        c.reading_at = self._now_iso()
        if c.meter_failures:
            c.meter_failures = 0
            self._faults.set(c, "meter", None)
        if not c.state.meter_ready:
            LOG.info("connector %d: meter answered, %.0f Wh", c.connector_id, reading.energy_wh)
            self._dispatch(c.connector_id, sm.MeterReady())

    def measure_energy(self, c: ConnectorRuntime) -> None:
        """Feed the register to a state machine that enforces a MaxEnergyOnInvalidId limit."""
        if c.state.energy_limit_wh is not None and c.reading is not None:
            self._dispatch(c.connector_id, sm.EnergyMeasured(c.reading.energy_wh))

    def maybe_sample(self, c: ConnectorRuntime, now_s: float) -> None:
        """A periodic transaction sample every MeterValueSampleInterval."""
        interval_s = self._policy().sample_interval_s
        reading = c.live_reading
        if c.tx_key is None or interval_s <= 0 or reading is None or c.reading_at is None:
            # A silent meter gives no sample: the gap shows in the data, and the first
            # sample after it comes from the first good reading (due at once).
            return
        # Due half a tick early: the loop only looks every tick, so "at least interval_s"
        # would space samples interval_s + up to a tick apart (and a crash could lose that
        # much energy); this way the gaps are centred on interval_s.
        if now_s - c.last_sample_s < interval_s - self._tick_interval_s / 2:
            return
        c.last_sample_s = now_s
        sample = Sample(
            reading, c.reading_at, "Sample.Periodic", c.state.offered_current_a, c.offered_power_w
        )
        self._port().meter_values(c.connector_id, c.tx_key, [sample])
        keep_for_stop(c, sample)

    def persist_interval_s(self) -> int:
        """How often the reading of a running transaction is made durable: every
        MeterValueSampleInterval, but at least every MAX_PERSIST_INTERVAL_S."""
        sample_s = self._policy().sample_interval_s
        return sample_s if 0 < sample_s <= MAX_PERSIST_INTERVAL_S else MAX_PERSIST_INTERVAL_S

    def maybe_persist(self, c: ConnectorRuntime, now_s: float) -> None:
        """Bound the energy an unclean stop loses to one persist interval (crash recovery
        bills the last persisted reading), writing only when the register advanced."""
        if c.tx_key is None or c.reading is None:
            return
        if now_s - c.last_persist_s < self.persist_interval_s() - self._tick_interval_s / 2:
            return  # half a tick early, as maybe_sample
        c.last_persist_s = now_s
        energy_wh = round(c.reading.energy_wh)
        if energy_wh <= c.persisted_wh:
            return  # no energy flowed: no write (flash wear)
        tx = self._store.get_transaction(c.tx_key)
        if tx is not None and tx.last_meter_wh >= energy_wh:
            c.persisted_wh = tx.last_meter_wh  # a MeterValues already stored it
            return
        try:
            self._store.record_meter(c.tx_key, energy_wh, c.reading_at or self._now_iso())
        except StoreError:
            LOG.exception("connector %d: could not persist the reading", c.connector_id)
            return
        c.persisted_wh = energy_wh

    def next_aligned_in_s(self, utc_now: datetime) -> float | None:
        """Seconds until the next ClockAlignedDataInterval boundary (None: not configured)."""
        aligned_s = self._policy().aligned_interval_s
        if aligned_s <= 0:
            return None
        now_ts = utc_now.timestamp()
        return (int(now_ts) // aligned_s + 1) * aligned_s - now_ts

    def maybe_aligned(self, utc_now: datetime) -> None:
        """A clock-aligned sample of every connector at each ClockAlignedDataInterval
        boundary the clock crossed since the last tick."""
        aligned_s = self._policy().aligned_interval_s
        if aligned_s > 0:
            slot = int(utc_now.timestamp()) // aligned_s
            if self._last_aligned is not None and slot != self._last_aligned:
                self._aligned_sample()
            self._last_aligned = slot
        else:
            self._last_aligned = None

    def _aligned_sample(self) -> None:
        port = self._port()
        now = self._now_iso()
        for c in self._connectors.values():
            if c.live_reading is None:
                continue  # no invented sample while the meter is silent
            sample = Sample(c.live_reading, now, "Sample.Clock")
            port.meter_values(c.connector_id, c.tx_key, [sample])
            if c.tx_key is not None:
                keep_for_stop(c, sample)

    def maybe_probe_storage(self, now_s: float) -> None:
        """While the database is not writable (transaction data kept in memory), try to
        write it out every STORAGE_PROBE_INTERVAL_S."""
        if not self._store.degraded:
            self._storage_probe_at_s = None
            return
        if self._storage_probe_at_s is None:
            self._storage_probe_at_s = now_s + STORAGE_PROBE_INTERVAL_S
            return
        if now_s < self._storage_probe_at_s:
            return
        if self._store.flush():
            self._storage_probe_at_s = None
        else:
            self._storage_probe_at_s = now_s + STORAGE_PROBE_INTERVAL_S


def keep_for_stop(c: ConnectorRuntime, sample: Sample) -> None:
    """Remember a sample for StopTransaction.transactionData, bounded in size."""
    c.samples.append(sample)
    if len(c.samples) > MAX_STOP_TX_SAMPLES:
        # Keep Transaction.Begin and thin out the middle.
        c.samples = c.samples[:1] + c.samples[2::2]
