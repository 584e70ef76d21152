"""Smart charging at runtime: the installed charging profiles, local limits and the site
share, and each connector's current limit from them, applied at every period boundary and
every change, lowered before raised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

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
    Cap,
    CompositeSchedule,
    EffectiveLimit,
    LimitSource,
    Source,
    cap_schedule,
    composite_schedule,
    expired,
    limit_at,
    next_change_s,
)
from controller.core.loadshare import MIN_SHARE_A, Demand, SiteConfig, allocate, draw_cap
from controller.core.records import DEFAULT_BACKEND, StationRecords, StoreError
from controller.core.safety import wants_current
from controller.runtime.clock import Clock, sleep_or_event
from controller.runtime.connector import ConnectorRuntime

LOG = logging.getLogger(__name__)

#: Longest sleep between evaluations: a wall clock stepped by NTP or the CSMS is noticed
#: through the clock's trust listener, but a step the listener does not see (a confirmed
#: clock corrected again) is caught within this.
MAX_SLEEP_S = 3600.0
#: While more than one connector shares a site limit, what each EV draws is checked this
#: often (an EV drawing clearly less than offered leaves the rest to the others). With one
#: or no session there is nothing to share and no timer: an idle charger does not wake up.
SITE_RECHECK_S = 30.0
#: A draw is judged only once the offer stood this long (an EV ramps up over seconds).
DRAW_SETTLE_S = 20.0
#: Slack for comparing injected-clock instants (float sums).
_EPS_S = 1e-6


# Purposes that limit the whole charge point (connector 0) rather than one connector.
_STATION_PURPOSES = frozenset({ProfilePurpose.STATION_MAX, ProfilePurpose.EXTERNAL_CONSTRAINTS})
# "No hardware limit" for the station maximum alone: whatever the profile says applies.
_UNLIMITED_A = Decimal(1_000_000)


def _voltage(c: ConnectorRuntime) -> Decimal:
    return Decimal(str(c.hw.nominal_voltage_v))


@dataclass(frozen=True)
class LocalLimit:
    """A limit set through the local API (POST /api/limit): ``limit_a`` until
    ``set_at_s + timeout_s`` (monotonic), the site's fallback current after that."""

    limit_a: Decimal
    timeout_s: float
    set_at_s: float

    @property
    def expires_at_s(self) -> float:
        return self.set_at_s + self.timeout_s

    def expired(self, now_s: float) -> bool:
        return now_s >= self.expires_at_s - _EPS_S


def drawn_a(c: ConnectorRuntime) -> Decimal | None:
    """What the EV draws per phase now (the highest measured phase current; from the
    power where the meter has no currents); None while the meter is silent."""
    reading = c.live_reading
    if reading is None:
        return None
    if reading.current_a:
        return Decimal(str(max(reading.current_a)))
    per_phase_w = c.hw.nominal_voltage_v * c.phases
    return Decimal(str(round(reading.power_w / per_phase_w, 2)))


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
        site: SiteConfig | None = None,
    ) -> None:
        self._records = records
        self._clock = clock
        self._connectors = connectors
        self._dispatch = dispatch
        self._backend = backend
        self._profiles: tuple[ChargingProfile, ...] = tuple(records.profiles(backend))
        # Other backends' own profiles (an energy manager's, issue 15): each set stacks on
        # its own and the limit is the lowest of all sets (core/composite.py ``others``).
        self._others: dict[str, tuple[ChargingProfile, ...]] = {}
        self._tx_start: dict[int, datetime] = {}  # tx_key -> when it started (wall clock)
        # Connector -> TX profile from a remote start, installed when its transaction starts.
        self._pending_tx_profile: dict[int, ChargingProfile] = {}
        self._applied: dict[int, EffectiveLimit] = {}
        self._site = site or SiteConfig()
        # Local limits (POST /api/limit): connector -> limit; 0 = the whole station.
        self._local: dict[int, LocalLimit] = {}
        # Connectors that want current -> the order they began wanting it (first come, first
        # served when the site cannot give everyone 6 A).
        self._order: dict[int, int] = {}
        self._seq = 0
        self._draw_caps: dict[int, Decimal] = {}  # EVs drawing clearly less than offered
        self._offer_since_s: dict[int, float] = {}  # when each limit last changed
        self._recheck_at_s: float | None = None  # next look at the draws (while shared)
        self._fell_back: set[int] = set()  # local limits at their fallback (logged once)
        self._wakeup = asyncio.Event()
        # Told each new local limit value (connector, A; None: cleared): 2.0.1 reports it as
        # an external limit (NotifyChargingLimit / ClearedChargingLimit, K12/K13).
        self._local_listeners: list[Callable[[int, Decimal | None], None]] = []
        add_listener = getattr(clock, "add_trust_listener", None)
        if add_listener is not None:
            add_listener(lambda _shift_s: self.refresh())

    # ------------------------------------------------------------------ profiles

    @property
    def profiles(self) -> tuple[ChargingProfile, ...]:
        return self._profiles

    def add_backend(self, backend: str) -> None:
        """Keep ``backend``'s own profiles too (those it installed before a restart load
        now); the primary's are kept from the start."""
        if backend != self._backend and backend not in self._others:
            self._others[backend] = tuple(self._records.profiles(backend))
            self.refresh()

    def profiles_of(self, backend: str | None) -> tuple[ChargingProfile, ...]:
        """The profiles one backend installed (None: the primary)."""
        if backend is None or backend == self._backend:
            return self._profiles
        return self._others.get(backend, ())

    def _other_books(self) -> list[tuple[ChargingProfile, ...]]:
        return [book for book in self._others.values() if book]

    def install(
        self,
        profile: ChargingProfile,
        *,
        same_level_replaces: bool = True,
        backend: str | None = None,
    ) -> None:
        """Install a validated profile of ``backend`` (None: the primary; it replaces what
        it replaces among that backend's own, see ``install_profile``) and apply it now."""
        book = self.profiles_of(backend)
        kept = install_profile(book, profile, same_level_replaces=same_level_replaces)
        gone = {p.profile_id for p in book} - {p.profile_id for p in kept}
        self._save(kept, put=[profile], drop=gone - {profile.profile_id}, backend=backend)

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
        backend: str | None = None,
    ) -> int:
        """ClearChargingProfile: remove what matches every given criterion among
        ``backend``'s profiles (None: the primary's); the count."""
        kept, cleared = clear_profiles(
            self.profiles_of(backend),
            profile_id=profile_id,
            connector_id=connector_id,
            purpose=purpose,
            stack_level=stack_level,
        )
        if cleared:
            self._save(kept, drop={p.profile_id for p in cleared}, backend=backend)
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
        backend: str | None = None,
    ) -> None:
        key = self._backend if backend is None else backend
        try:
            self._records.save_profiles(key, put or [], sorted(drop))
        except StoreError:
            # Not expected (a full disk keeps the write in memory); the profile still
            # applies in this process.
            LOG.exception("charging profiles could not be stored")
        if key == self._backend:
            self._profiles = profiles
        else:
            self._others[key] = profiles
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
        changed = False
        for backend in (None, *self._others):
            book = self.profiles_of(backend)
            kept = end_of_transaction(book, tx_key)
            if len(kept) != len(book):
                gone = {p.profile_id for p in book} - {p.profile_id for p in kept}
                self._save(kept, drop=gone, backend=backend)
                changed = True
        if not changed:
            self._wakeup.set()  # re-evaluated by the running task, off the stop path

    # ------------------------------------------------------------------ limits

    def _limit(
        self, c: ConnectorRuntime, at: datetime, phases: int | None = None
    ) -> EffectiveLimit:
        """The composite limit at ``at``; W converted with the phases switched in now
        (``phases``: another number, e.g. the wired phases to learn what is wanted)."""
        tx_key = c.tx_key
        return limit_at(
            self._profiles,
            c.connector_id,
            at,
            hardware_limit_a=Decimal(str(c.hw.max_current_a)),
            phases=c.phases if phases is None else phases,
            voltage_v=_voltage(c),
            tx_key=tx_key,
            tx_start=None if tx_key is None else self._tx_start.get(tx_key),
            others=self._other_books(),
        )

    def wanted_phases(self, c: ConnectorRuntime, at: datetime) -> int:
        """The phases the composite schedule asks for (numberPhases, at most the wired
        phases; the wired phases without a profile)."""
        if c.phases == c.hw.phases:
            limit = self._applied.get(c.connector_id)
            if limit is not None:
                return limit.phases
        return self._limit(c, at, c.hw.phases).phases

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
        schedule = composite_schedule(
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
            others=self._other_books(),
        )
        return cap_schedule(schedule, self._caps(connector_id), voltage_v=voltage_v)

    def _caps(self, connector_id: int) -> list[Cap]:
        """The limits besides charging profiles a composite schedule of ``connector_id``
        (0: the station) combines (K08 "local limits"): the local API's limit of the
        connector and of the station, each until its timeout and [site] fallback_current_a
        after it, and the site's current (its lowest line). A connector's share of the site
        changes with the other connectors' draws: not scheduled ahead, the site's limit is
        its upper bound."""
        now_s = self._clock.monotonic_s()
        caps: list[Cap] = []
        for cid in {connector_id, 0}:
            local = self._local.get(cid)
            if local is None:
                continue
            remaining_s = max(0.0, local.expires_at_s - now_s)
            if remaining_s > 0:
                caps.append(Cap(0.0, remaining_s, local.limit_a))
            caps.append(Cap(remaining_s, None, self._site.fallback_current_a))
        site = self._site.max_current_a
        if site:
            caps.append(Cap(0.0, None, min(site.values())))
        return caps

    def refresh(self) -> None:
        """Compute and apply every connector's limit now (profiles, transactions or the
        time changed); the running task then sleeps until the next boundary."""
        self._apply(self._clock.utc_now())
        self._wakeup.set()

    def _apply(self, now: datetime) -> None:
        for backend in (self._backend, *self._others):
            book = self.profiles_of(backend)
            stale = [p for p in book if expired(p, now)]
            if not stale:
                continue
            # validTo passed: gone for good (1.6 7.8), also from the database.
            kept = tuple(p for p in book if not expired(p, now))
            if backend == self._backend:
                self._profiles = kept
            else:
                self._others[backend] = kept
            try:
                self._records.save_profiles(backend, [], [p.profile_id for p in stale])
            except StoreError:
                LOG.exception("expired charging profiles could not be removed")
        now_s = self._clock.monotonic_s()
        for cid, local in self._local.items():
            if local.expired(now_s) and cid not in self._fell_back:
                self._fell_back.add(cid)
                LOG.warning(
                    "local limit for %s not refreshed within %g s: falling back to %s A",
                    "the station" if cid == 0 else f"connector {cid}",
                    local.timeout_s,
                    self._site.fallback_current_a,
                )
                if self._site.fallback_current_a != local.limit_a:
                    self._local_changed(cid, self._site.fallback_current_a)
        lowered, raised = self._plan(now)
        # Every decrease reaches the hardware before any increase (issue 12 item 3).
        for cid in lowered + raised:
            self._dispatch(cid, sm.CurrentLimitChanged(float(self._applied[cid].limit_a)))
        # numberPhases picks the phase relay's position (issue 12 item 4).
        for cid, c in self._connectors.items():
            if c.hw.phase_switch is not None:
                wanted = self.wanted_phases(c, now)
                if wanted != c.state.phases_wanted:
                    self._dispatch(cid, sm.PhasesWanted(wanted))

    def _plan(
        self, now: datetime, trial: Mapping[int, sm.ConnectorState] | None = None
    ) -> tuple[list[int], list[int]]:
        """Compute every connector's limit (``trial``: states about to be, see
        ``make_room``), record it as applied and return the connectors whose current
        changes: (lowered, raised)."""
        new = self._targets(now, trial or {})
        now_s = self._clock.monotonic_s()
        lowered: list[int] = []
        raised: list[int] = []
        for cid, limit in new.items():
            before = self._applied.get(cid)
            self._applied[cid] = limit
            if before is not None and before.limit_a == limit.limit_a:
                continue  # same current; the source may differ
            (lowered if before is None or limit.limit_a < before.limit_a else raised).append(cid)
            self._offer_since_s[cid] = now_s
            LOG.info(
                "connector %d: current limit %s A (%s)",
                cid,
                limit.limit_a,
                limit.source.kind.value,
                extra={"connector": cid},
            )
        return lowered, raised

    def make_room(
        self, connector_id: int, trial: sm.ConnectorState
    ) -> tuple[list[tuple[int, sm.Event]], list[tuple[int, sm.Event]]]:
        """A connector is about to want current (``trial`` is its next state): its share
        and the others' new limits, so that the station applies the lowered ones (and the
        newcomer's, which offers nothing yet) before the step and the raised ones after
        it; the newcomer then starts at its share, never above it, and never without one.
        """
        lowered, raised = self._plan(self._clock.utc_now(), {connector_id: trial})
        self._wakeup.set()  # the run loop re-arms its timers

        def event(cid: int) -> tuple[int, sm.Event]:
            return cid, sm.CurrentLimitChanged(float(self._applied[cid].limit_a))

        first = [event(cid) for cid in lowered]
        then = [event(cid) for cid in raised if cid != connector_id]
        if connector_id in raised:
            first.append(event(connector_id))
        return first, then

    # ------------------------------------------------------------------ site and local limits

    @property
    def shares_site(self) -> bool:
        """Whether the connectors share a limit: [site] max_current_a, a station-wide local
        limit, or a station maximum profile (ChargePointMaxProfile)."""
        return (
            self._site.max_current_a is not None
            or 0 in self._local
            or any(
                p.purpose in _STATION_PURPOSES
                for book in (self._profiles, *self._others.values())
                for p in book
            )
        )

    def _station_max_a(self, now: datetime) -> Decimal | None:
        """The station maximum at ``now`` (ChargePointMaxProfile / 2.0.1 station maximum and
        external constraints, connector 0), per phase: a limit for the whole charge point
        (1.6 3.13.1 "for the overall Charge Point"), so the connectors share it like the
        site current instead of each getting all of it. None: no such profile applies."""
        books = [
            [p for p in book if p.purpose in _STATION_PURPOSES]
            for book in (self._profiles, *self._others.values())
        ]
        station, others = books[0], [book for book in books[1:] if book]
        if not station and not others:
            return None
        connectors = list(self._connectors.values())
        limit = limit_at(
            station,
            0,
            now,
            hardware_limit_a=_UNLIMITED_A,
            phases=max(c.hw.phases for c in connectors),
            voltage_v=max(_voltage(c) for c in connectors),
            others=others,
        )
        return None if limit.source.kind is LimitSource.HARDWARE else limit.limit_a

    def set_local_limit(self, connector_id: int, limit_a: Decimal, timeout_s: float) -> None:
        """A local limit for a connector (0: the station, shared like the site limit) that
        falls back to ``[site] fallback_current_a`` unless set again within ``timeout_s``."""
        now_s = self._clock.monotonic_s()
        before = self._local.get(connector_id)
        self._local[connector_id] = LocalLimit(limit_a, timeout_s, now_s)
        self._fell_back.discard(connector_id)
        # A home energy manager refreshes every few seconds: only news is logged at INFO.
        news = before is None or before.limit_a != limit_a or before.expired(now_s)
        if before is None or self._local_value(before, now_s)[0] != limit_a:
            self._local_changed(connector_id, limit_a)
        LOG.log(
            logging.INFO if news else logging.DEBUG,
            "local limit for %s: %s A for %g s (then %s A)",
            "the station" if connector_id == 0 else f"connector {connector_id}",
            limit_a,
            timeout_s,
            self._site.fallback_current_a,
        )
        self.refresh()

    def clear_local_limit(self, connector_id: int) -> bool:
        """Remove a local limit; False if there was none."""
        self._fell_back.discard(connector_id)
        if self._local.pop(connector_id, None) is None:
            return False
        LOG.info("local limit for connector %d cleared", connector_id)
        self._local_changed(connector_id, None)
        self.refresh()
        return True

    def add_local_limit_listener(self, listener: Callable[[int, Decimal | None], None]) -> None:
        """``listener(connector, value_a)`` whenever a local limit's value in effect changes
        (set, fallen back after its timeout, or cleared: None)."""
        self._local_listeners.append(listener)

    def _local_changed(self, connector_id: int, value_a: Decimal | None) -> None:
        for listener in self._local_listeners:
            try:
                listener(connector_id, value_a)
            except Exception:
                LOG.exception("local limit listener failed")

    def local_limits(self) -> dict[int, dict[str, Any]]:
        """The local limits for the status: connector (0 = station) -> details."""
        now_s = self._clock.monotonic_s()
        out = {}
        for cid, local in sorted(self._local.items()):
            value, kind = self._local_value(local, now_s)
            out[cid] = {
                "limit_a": float(local.limit_a),
                "timeout_s": local.timeout_s,
                "expires_in_s": round(max(0.0, local.expires_at_s - now_s), 1),
                "fallback": kind is LimitSource.LOCAL_FALLBACK,
                "effective_a": float(value),
            }
        return out

    @property
    def fallback_current_a(self) -> Decimal:
        return self._site.fallback_current_a

    def _local_value(self, local: LocalLimit, now_s: float) -> tuple[Decimal, LimitSource]:
        if local.expired(now_s):
            return self._site.fallback_current_a, LimitSource.LOCAL_FALLBACK
        return local.limit_a, LimitSource.LOCAL_LIMIT

    def _capped(
        self, limit: EffectiveLimit, c: ConnectorRuntime, value_a: Decimal, kind: LimitSource
    ) -> EffectiveLimit:
        """``limit`` lowered to ``value_a`` by a limit that is not a charging profile."""
        return replace(
            limit,
            limit_a=value_a,
            limit_w=value_a * limit.phases * _voltage(c),
            source=Source(kind),
            below_min_rate=limit.min_rate_a is not None and value_a < limit.min_rate_a,
            below_pilot_minimum=value_a < MIN_SHARE_A,
        )

    def _pool(self, now_s: float, now: datetime) -> tuple[dict[int, Decimal], LimitSource] | None:
        """The per-line limit the connectors share and what sets it; None: nothing shared."""
        site = self._site.max_current_a
        station = self._local.get(0)
        station_max = self._station_max_a(now)
        if site is None and station is None and station_max is None:
            return None
        lines = dict(site) if site is not None else {}
        kind = LimitSource.SITE_SHARE
        caps: list[tuple[Decimal, LimitSource]] = []
        if station is not None:
            caps.append(self._local_value(station, now_s))
        if station_max is not None:
            caps.append((station_max, LimitSource.STATION_MAX))
        for value, cap_kind in caps:
            for line in (1, 2, 3):
                if line not in lines or value < lines[line]:
                    lines[line] = value
                    kind = cap_kind
        return lines, kind

    def _targets(
        self, now: datetime, trial: Mapping[int, sm.ConnectorState]
    ) -> dict[int, EffectiveLimit]:
        """Each connector's limit: min(hardware, composite schedule, local limit, site
        share)."""
        now_s = self._clock.monotonic_s()
        own: dict[int, EffectiveLimit] = {}
        for cid, c in self._connectors.items():
            limit = self._limit(c, now)
            local = self._local.get(cid)
            if local is not None:
                value, kind = self._local_value(local, now_s)
                if value < limit.limit_a:
                    limit = self._capped(limit, c, value, kind)
            own[cid] = limit
        pool = self._pool(now_s, now)
        if pool is None:
            self._order.clear()
            self._draw_caps.clear()
            self._recheck_at_s = None
            return own
        lines, pool_kind = pool
        states = {cid: trial.get(cid, c.state) for cid, c in self._connectors.items()}
        wanting = [cid for cid, st in states.items() if wants_current(st)]
        for cid in list(self._order):
            if cid not in wanting:
                del self._order[cid]
                self._draw_caps.pop(cid, None)
        for cid in wanting:
            if cid not in self._order:
                self._seq += 1
                self._order[cid] = self._seq
        # EVs asking for energy first, then those paused by the EV; first come first.
        ranked = sorted(
            wanting, key=lambda cid: (not states[cid].vehicle.requests_energy, self._order[cid])
        )
        shared = len(wanting) > 1
        if not shared:
            self._recheck_at_s = None
        elif self._recheck_at_s is None:
            self._recheck_at_s = now_s + SITE_RECHECK_S
        demands = []
        for cid in ranked:
            cap = own[cid].limit_a
            if shared:
                if not states[cid].vehicle.requests_energy:
                    # Paused by the EV: the pilot minimum, so it can resume; the rest goes
                    # to those charging (reallocated the moment it asks again).
                    cap = min(cap, MIN_SHARE_A)
                drawn_cap = self._draw_caps.get(cid)
                if drawn_cap is not None:
                    cap = min(cap, drawn_cap)
            demands.append(Demand(cid, cap, self._connectors[cid].lines))
        shares = allocate(lines, demands)
        out = {}
        for cid, limit in own.items():
            share = shares.get(cid, Decimal(0))
            if share < limit.limit_a:
                limit = self._capped(limit, self._connectors[cid], share, pool_kind)
            out[cid] = limit
        return out

    def _recheck_draws(self, now_s: float) -> None:
        """Cap the offer of an EV that draws clearly less than it is offered (its draw
        plus a headroom), uncap one that uses its cap (core/loadshare.py ``draw_cap``)."""
        self._recheck_at_s = now_s + SITE_RECHECK_S
        for cid in self._order:
            c = self._connectors[cid]
            st = c.state
            if not (st.contactor_closed and st.vehicle.requests_energy):
                continue
            if now_s - self._offer_since_s.get(cid, now_s) < DRAW_SETTLE_S - _EPS_S:
                continue  # the EV may still be ramping
            drawn = drawn_a(c)
            if drawn is None:
                continue
            offered = Decimal(str(st.offered_current_a))
            cap = draw_cap(offered, drawn, self._draw_caps.get(cid))
            if cap != self._draw_caps.get(cid):
                LOG.info(
                    "connector %d: EV draws %s A of %s A offered: %s",
                    cid,
                    drawn,
                    offered,
                    "uncapped" if cap is None else f"offer capped at {cap} A",
                    extra={"connector": cid},
                )
            if cap is None:
                self._draw_caps.pop(cid, None)
            else:
                self._draw_caps[cid] = cap

    def _next_boundary_s(self, now: datetime) -> float | None:
        """Seconds until the first instant any connector's limit changes."""
        others = self._other_books()
        if not self._profiles and not others:
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
                others=others,
            )
            if change is not None and (soonest is None or change < soonest):
                soonest = change
        return soonest

    def _next_wake_s(self, now: datetime, now_s: float) -> float:
        """Until the next schedule boundary, local-limit timeout or draw check."""
        delays = [MAX_SLEEP_S]
        boundary = self._next_boundary_s(now)
        if boundary is not None:
            delays.append(boundary)
        delays += [
            local.expires_at_s - now_s for local in self._local.values() if not local.expired(now_s)
        ]
        if self._recheck_at_s is not None:
            delays.append(max(0.0, self._recheck_at_s - now_s))
        return min(delays)

    async def run(self) -> None:
        """Apply limits at every boundary of the composite schedules, local-limit timeout
        and (while a site limit is shared) draw check; sleep in between (no polling: one
        wake-up per boundary or change)."""
        while True:
            self._wakeup.clear()
            now = self._clock.utc_now()
            now_s = self._clock.monotonic_s()
            if self._recheck_at_s is not None and now_s >= self._recheck_at_s - _EPS_S:
                self._recheck_draws(now_s)
            self._apply(now)
            await sleep_or_event(self._clock.sleep(self._next_wake_s(now, now_s)), self._wakeup)
