"""Smart charging at runtime: the installed charging profiles, and each connector's current
limit from their composite schedule, applied at every period boundary, lowered before raised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from controller.core import connector as sm
from controller.core.charging_profiles import (
    ChargingProfile,
    ProfilePurpose,
    RateUnit,
    clear_profiles,
    end_of_transaction,
    install_profile,
)
from controller.core.composite import (
    CompositeSchedule,
    EffectiveLimit,
    composite_schedule,
    expired,
    limit_at,
    next_change_s,
)
from controller.core.records import DEFAULT_BACKEND, StationRecords, StoreError
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime

LOG = logging.getLogger(__name__)

#: Longest sleep between evaluations: a wall clock stepped by NTP or the CSMS is noticed
#: through the clock's trust listener, but a step the listener does not see (a confirmed
#: clock corrected again) is caught within this.
MAX_SLEEP_S = 3600.0


def _voltage(c: ConnectorRuntime) -> Decimal:
    return Decimal(str(c.hw.nominal_voltage_v))


class SmartCharging:
    """Keeps one backend's installed charging profiles (durably, in the station records)
    and drives every connector's current limit from them.

    The limit of a connector is the composite schedule at the current time (never above the
    connector's hardware maximum; controller/core/composite.py). It reaches the state
    machine as ``CurrentLimitChanged``, which offers min(hardware, limit) and nothing below
    the 6 A pilot minimum: below it the connector is SuspendedEVSE with the contactor open
    (core/safety.py). When limits change on several connectors at once, every lowered one
    is applied before any raised one, so the sum never overshoots, even briefly.

    Time: limits follow ``clock.utc_now()``. Until the clock is confirmed (no RTC, no NTP,
    no CSMS yet) that is the charger's best guess, never earlier than the last confirmed
    time; absolute schedules run on it, and when the time is confirmed (the trust
    listener) every limit is computed again at once on the confirmed time.
    """

    def __init__(
        self,
        *,
        records: StationRecords,
        clock: Clock,
        connectors: Mapping[int, ConnectorRuntime],
        dispatch: Callable[[int, sm.Event], None],
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        self._records = records
        self._clock = clock
        self._connectors = connectors
        self._dispatch = dispatch
        self._backend = backend
        self._profiles: tuple[ChargingProfile, ...] = tuple(records.profiles(backend))
        self._tx_start: dict[int, datetime] = {}  # tx_key -> when it started (wall clock)
        # Connector -> TX profile from a remote start, installed when its transaction starts.
        self._pending_tx_profile: dict[int, ChargingProfile] = {}
        self._applied: dict[int, EffectiveLimit] = {}
        self._wakeup = asyncio.Event()
        add_listener = getattr(clock, "add_trust_listener", None)
        if add_listener is not None:
            add_listener(lambda _shift_s: self.refresh())

    # ------------------------------------------------------------------ profiles

    @property
    def profiles(self) -> tuple[ChargingProfile, ...]:
        return self._profiles

    def install(self, profile: ChargingProfile) -> None:
        """Install a validated profile (it replaces what it replaces) and apply it now."""
        kept = install_profile(self._profiles, profile)
        gone = {p.profile_id for p in self._profiles} - {p.profile_id for p in kept}
        self._save(kept, put=[profile], drop=gone - {profile.profile_id})

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
    ) -> int:
        """ClearChargingProfile: remove what matches every given criterion; the count."""
        kept, cleared = clear_profiles(
            self._profiles,
            profile_id=profile_id,
            connector_id=connector_id,
            purpose=purpose,
            stack_level=stack_level,
        )
        if cleared:
            self._save(kept, drop={p.profile_id for p in cleared})
        return len(cleared)

    def set_pending_tx_profile(self, connector_id: int, profile: ChargingProfile | None) -> None:
        """The TX profile of a remote start: it binds to the transaction that starts next on
        the connector (OCPP 1.6 5.11); None forgets it (the session never started)."""
        if profile is None:
            self._pending_tx_profile.pop(connector_id, None)
        else:
            self._pending_tx_profile[connector_id] = profile

    def _save(
        self,
        profiles: tuple[ChargingProfile, ...],
        *,
        put: list[ChargingProfile] | None = None,
        drop: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        try:
            self._records.save_profiles(self._backend, put or [], sorted(drop))
        except StoreError:
            # Not expected (a full disk keeps the write in memory); the profile still
            # applies in this process.
            LOG.exception("charging profiles could not be stored")
        self._profiles = profiles
        self.refresh()

    # ------------------------------------------------------------------ transactions

    def transaction_started(self, connector_id: int, tx_key: int, started_at: datetime) -> None:
        """A transaction runs (new or resumed): Relative schedules count from its start,
        and a remote start's TX profile binds to it."""
        self._tx_start[tx_key] = started_at
        pending = self._pending_tx_profile.pop(connector_id, None)
        if pending is not None:
            self.install(replace(pending, connector_id=connector_id, tx_key=tx_key))
        else:
            # Nothing new applies at once (TX defaults already did; a Relative schedule
            # counted from "now" until this start is the same): the running task
            # re-evaluates right after this step, off the tap-to-contactor path.
            self._wakeup.set()

    def transaction_ended(self, tx_key: int) -> None:
        """Its TX profiles cease to be valid (1.6 7.10) and are removed."""
        self._tx_start.pop(tx_key, None)
        kept = end_of_transaction(self._profiles, tx_key)
        if len(kept) != len(self._profiles):
            gone = {p.profile_id for p in self._profiles} - {p.profile_id for p in kept}
            self._save(kept, drop=gone)
        else:
            self._wakeup.set()  # re-evaluated by the running task, off the stop path

    # ------------------------------------------------------------------ limits

    def _limit(self, c: ConnectorRuntime, at: datetime) -> EffectiveLimit:
        tx_key = c.tx_key
        return limit_at(
            self._profiles,
            c.connector_id,
            at,
            hardware_limit_a=Decimal(str(c.hw.max_current_a)),
            phases=c.hw.phases,
            voltage_v=_voltage(c),
            tx_key=tx_key,
            tx_start=None if tx_key is None else self._tx_start.get(tx_key),
        )

    def limit(self, connector_id: int) -> EffectiveLimit | None:
        """The limit last applied to the connector (None before the first evaluation)."""
        return self._applied.get(connector_id)

    def composite(
        self, connector_id: int, duration_s: int, unit: RateUnit | None = None
    ) -> CompositeSchedule:
        """GetCompositeSchedule from now; connector 0 is the station (1.6 5.7)."""
        now = self._clock.utc_now()
        c = self._connectors.get(connector_id)
        tx_key = c.tx_key if c is not None else None
        if c is not None:
            hardware_a = Decimal(str(c.hw.max_current_a))
            phases, voltage_v = c.hw.phases, _voltage(c)
        else:
            # The station: as much as all connectors together may draw per phase.
            hardware_a = sum(
                (Decimal(str(x.hw.max_current_a)) for x in self._connectors.values()),
                Decimal(0),
            )
            phases = max(x.hw.phases for x in self._connectors.values())
            voltage_v = max(_voltage(x) for x in self._connectors.values())
        return composite_schedule(
            self._profiles,
            connector_id,
            now,
            duration_s,
            unit=unit or RateUnit.A,
            hardware_limit_a=hardware_a,
            phases=phases,
            voltage_v=voltage_v,
            tx_key=tx_key,
            tx_start=None if tx_key is None else self._tx_start.get(tx_key),
        )

    def refresh(self) -> None:
        """Compute and apply every connector's limit now (profiles, transactions or the
        time changed); the running task then sleeps until the next boundary."""
        self._apply(self._clock.utc_now())
        self._wakeup.set()

    def _apply(self, now: datetime) -> None:
        stale = [p for p in self._profiles if expired(p, now)]
        if stale:
            # validTo passed: gone for good (1.6 7.8), also from the database.
            self._profiles = tuple(p for p in self._profiles if not expired(p, now))
            try:
                self._records.save_profiles(self._backend, [], [p.profile_id for p in stale])
            except StoreError:
                LOG.exception("expired charging profiles could not be removed")
        new = {cid: self._limit(c, now) for cid, c in self._connectors.items()}
        lowered, raised = [], []
        for cid, limit in new.items():
            before = self._applied.get(cid)
            if before is not None and before.limit_a == limit.limit_a:
                self._applied[cid] = limit  # same current; the source may differ
                continue
            if before is None or limit.limit_a < before.limit_a:
                lowered.append(cid)
            else:
                raised.append(cid)
        # Every decrease reaches the hardware before any increase (issue 12 item 3).
        for cid in lowered + raised:
            limit = new[cid]
            self._applied[cid] = limit
            LOG.info(
                "connector %d: current limit %s A (%s)",
                cid,
                limit.limit_a,
                limit.source.kind.value,
                extra={"connector": cid},
            )
            self._dispatch(cid, sm.CurrentLimitChanged(float(limit.limit_a)))

    def _next_boundary_s(self, now: datetime) -> float | None:
        """Seconds until the first instant any connector's limit changes."""
        if not self._profiles:
            return None
        soonest: float | None = None
        for c in self._connectors.values():
            tx_key = c.tx_key
            change = next_change_s(
                self._profiles,
                c.connector_id,
                now,
                hardware_limit_a=Decimal(str(c.hw.max_current_a)),
                phases=c.hw.phases,
                voltage_v=_voltage(c),
                tx_key=tx_key,
                tx_start=None if tx_key is None else self._tx_start.get(tx_key),
            )
            if change is not None and (soonest is None or change < soonest):
                soonest = change
        return soonest

    async def run(self) -> None:
        """Apply limits at every boundary of the composite schedules; sleep in between
        (no polling: one wake-up per boundary or change)."""
        while True:
            self._wakeup.clear()
            now = self._clock.utc_now()
            self._apply(now)
            delay_s = self._next_boundary_s(now)
            await self._sleep_or_wake(MAX_SLEEP_S if delay_s is None else min(delay_s, MAX_SLEEP_S))

    async def _sleep_or_wake(self, delay_s: float) -> None:
        waiters = [
            asyncio.ensure_future(self._wakeup.wait()),
            asyncio.ensure_future(self._clock.sleep(delay_s)),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
