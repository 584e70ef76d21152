"""The composite schedule: a connector's (or the station's) effective limit over time, pure.

Rules (OCPP 1.6 3.13.1-3.13.3, 5.7, 5.16 and errata; OCPP 2.0.1 K 3.4/3.5, K01, K08, SC.01):

* Per purpose, the prevailing profile at an instant is the one with the highest stack level
  among those valid then (validFrom <= t < validTo, K01.FR.36/37) whose schedule defines a
  limit then (2.0.1 3.5 "has a schedule period defined for that time"; 1.6 errata 3.43: after
  a schedule's duration "use a ChargingProfile with a lower stackLevel if available").
* A connector's own TX default beats the connector-0 one at the same stack level (1.6 3.13.1
  "replaced only for that specific connector"; 2.0.1 K01.FR.52/53 refuse that pair).
* A TX profile of the running transaction overrules every TX default wherever it defines a
  limit (1.6 3.13.1, 2.0.1 3.5); where it does not (after its duration), the TX default
  applies again (2.0.1 TC_K_41_CS expects exactly that).
* The station maximum and the external constraints cap the result (1.6 3.13.3, SC.01,
  K08.FR.04), and so does the hardware; where no profile defines a limit only the hardware
  limits (1.6 3.13.6 "as if no constraints apply", errata 3.43).
* Units: everything is compared in A per phase; W limits are converted with the nominal
  voltage and min(numberPhases (3 if absent), the connector's phases) (1.6 7.12, errata 3.34,
  K01.FR.49/50). The composite's numberPhases is the lowest of the applicable periods and
  the connector (2.0.1 errata 2.36).

Relative profiles (and 1.6 Absolute ones without startSchedule, 7.13) count from the
transaction start; without a transaction from the start of the evaluation, "as if there is a
transaction ongoing" that starts then (K08.FR.06; libocpp and OpenOCPP do the same).
Connector 0 is the station: the station maximum, the external constraints and the station-wide
TX defaults (K08.FR.06 for evse 0); TX profiles never apply there.
"""

from __future__ import annotations

import enum
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from controller.core.charging_profiles import (
    DEFAULT_PHASES,
    PILOT_MINIMUM_A,
    ChargingProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    amps_to_watts,
    to_decimal,
    watts_to_amps,
)
from controller.core.values import value

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_US_PER_S = 1_000_000
# How far next_change_s looks: a weekly recurrence repeats within it.
NEXT_CHANGE_HORIZON_S = 8 * 86_400

Number = Decimal | int | float


class LimitSource(enum.StrEnum):
    """Where an effective limit comes from."""

    HARDWARE = "Hardware"
    STATION_MAX = "StationMax"
    EXTERNAL_CONSTRAINTS = "ExternalConstraints"
    TX_DEFAULT = "TxDefault"
    TX = "Tx"
    # Not from a charging profile (the runtime's own limits, runtime/limits.py):
    SITE_SHARE = "SiteShare"  # the connector's share of [site] max_current_a
    LOCAL_LIMIT = "LocalLimit"  # POST /api/limit, refreshed within its timeout
    LOCAL_FALLBACK = "LocalLimitFallback"  # a local limit not refreshed in time


@value
class Source:
    """The profile (or the hardware) that sets a limit."""

    kind: LimitSource
    profile_id: int | None = None
    stack_level: int | None = None
    connector_id: int | None = None


HARDWARE = Source(LimitSource.HARDWARE)


@value
class EffectiveLimit:
    """The limit at one instant. Nothing is rounded up to what the pilot can offer: the
    runtime decides what to do when ``below_pilot_minimum`` or ``below_min_rate``."""

    limit_a: Decimal
    limit_w: Decimal
    phases: int
    source: Source
    # The highest minChargingRate of the prevailing profiles, in A (None: none given).
    min_rate_a: Decimal | None = None
    # limit_a < min_rate_a: the EV charges inefficiently or not at all (1.6 3.13.4).
    below_min_rate: bool = False
    # limit_a < 6 A: IEC 61851-1 cannot signal it; suspend (0 included).
    below_pilot_minimum: bool = False


@value
class CompositePeriod:
    """From ``start_s`` after the schedule start until the next period (or the end)."""

    start_s: float
    limit: Decimal
    phases: int


@value
class CompositeSchedule:
    """GetCompositeSchedule's answer (1.6 6.22, 2.0.1 CompositeScheduleType), unrounded:
    the adapter puts ``quantize_down(limit)`` and whole seconds on the wire."""

    start: datetime
    duration_s: int
    unit: RateUnit
    periods: tuple[CompositePeriod, ...]
    # The highest minChargingRate in effect during the window, in ``unit`` (1.6 7.13).
    min_rate: Decimal | None = None


# ----------------------------------------------------------------------------- pieces


class _Piece(NamedTuple):
    """One profile's limit over [t0_us, t1_us)."""

    t0_us: int
    t1_us: int
    limit_a: Decimal
    native: Decimal
    unit: RateUnit
    phases: int
    min_rate_a: Decimal | None
    source: Source


class _Elementary(NamedTuple):
    t0_us: int
    t1_us: int
    limit_a: Decimal
    phases: int
    source: Source
    # The winner's own value if its unit is W and its phases are the result's (exact W).
    native_w: Decimal | None
    min_rate_a: Decimal | None


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_US


_SOURCE_KIND = {
    ProfilePurpose.STATION_MAX: LimitSource.STATION_MAX,
    ProfilePurpose.EXTERNAL_CONSTRAINTS: LimitSource.EXTERNAL_CONSTRAINTS,
    ProfilePurpose.TX_DEFAULT: LimitSource.TX_DEFAULT,
    ProfilePurpose.TX: LimitSource.TX,
}


def _profile_pieces(
    profile: ChargingProfile,
    w0: int,
    w1: int,
    anchor_us: int,
    phases_cap: int,
    voltage_v: Decimal,
) -> list[_Piece]:
    """Where ``profile`` defines a limit within [w0, w1), clipped to its validity."""
    lo = w0 if profile.valid_from is None else max(w0, _us(profile.valid_from))
    hi = w1 if profile.valid_to is None else min(w1, _us(profile.valid_to))
    if lo >= hi:
        return []
    schedule = profile.schedule
    periods = schedule.periods
    if not periods:
        return []
    span_us = None if schedule.duration_s is None else schedule.duration_s * _US_PER_S
    if profile.kind is ProfileKind.RELATIVE or schedule.start is None:
        origins = [anchor_us]
    else:
        origins = [_us(schedule.start)]
    if profile.kind is ProfileKind.RECURRING and profile.recurrency is not None:
        every_us = profile.recurrency.period_s * _US_PER_S
        # Errata 3.43/3.44: what is longer than the recurrence is not executed.
        span_us = every_us if span_us is None else min(span_us, every_us)
        first = origins[0]
        k = max(0, (lo - first) // every_us)
        origins = []
        while first + k * every_us < hi:
            origins.append(first + k * every_us)
            k += 1
    source = Source(
        _SOURCE_KIND[profile.purpose], profile.profile_id, profile.stack_level, profile.connector_id
    )
    offsets = [period.start_s * _US_PER_S for period in periods]
    # Converted lazily: a short window (limit_at) touches one period of 48.
    converted: dict[int, tuple[Decimal, int, Decimal | None]] = {}

    def convert(i: int) -> tuple[Decimal, int, Decimal | None]:
        period = periods[i]
        phases = min(period.phases or DEFAULT_PHASES, phases_cap)
        if schedule.unit is RateUnit.A:
            return period.limit, phases, schedule.min_rate
        min_rate = schedule.min_rate
        if min_rate is not None:
            min_rate = watts_to_amps(min_rate, phases, voltage_v)
        return watts_to_amps(period.limit, phases, voltage_v), phases, min_rate

    pieces: list[_Piece] = []
    last = len(offsets) - 1
    for origin in origins:
        end = hi if span_us is None else min(hi, origin + span_us)
        if end <= lo or origin >= hi:
            continue
        i = max(0, bisect_right(offsets, lo - origin) - 1)
        while i <= last:
            t0 = origin + offsets[i]
            if t0 >= end:
                break  # K01.FR.11: periods past the duration are not executed
            t1 = end if i == last else min(end, origin + offsets[i + 1])
            a, b = max(t0, lo), min(t1, hi)
            if a < b:
                if i not in converted:
                    converted[i] = convert(i)
                limit_a, phases, min_rate = converted[i]
                pieces.append(
                    _Piece(a, b, limit_a, periods[i].limit, schedule.unit, phases, min_rate, source)
                )
            i += 1
    return pieces


def _cover(
    free: list[tuple[int, int]], pieces: list[_Piece]
) -> tuple[list[_Piece], list[tuple[int, int]]]:
    """The parts of ``pieces`` inside the ``free`` gaps, and the gaps still free after them
    (both inputs sorted and disjoint)."""
    taken: list[_Piece] = []
    rest: list[tuple[int, int]] = []
    j = 0
    for g0, g1 in free:
        while j < len(pieces) and pieces[j].t1_us <= g0:
            j += 1
        cursor = g0
        k = j
        while k < len(pieces) and pieces[k].t0_us < g1:
            piece = pieces[k]
            a = max(piece.t0_us, cursor)
            b = min(piece.t1_us, g1)
            if a < b:
                if a > cursor:
                    rest.append((cursor, a))
                taken.append(piece._replace(t0_us=a, t1_us=b))
                cursor = b
            k += 1
        if cursor < g1:
            rest.append((cursor, g1))
    return taken, rest


def _prevailing(
    ranked: list[tuple[tuple[int, ...], list[_Piece]]], w0: int, w1: int
) -> list[_Piece]:
    """Per instant, the piece of the best-ranked profile that defines one (sorted, disjoint)."""
    ranked.sort(key=lambda item: item[0], reverse=True)
    free = [(w0, w1)]
    layer: list[_Piece] = []
    for _rank, pieces in ranked:
        if not free:
            break
        taken, free = _cover(free, pieces)
        layer.extend(taken)
    layer.sort(key=lambda piece: piece.t0_us)
    return layer


def _applies(profile: ChargingProfile, connector_id: int, tx_key: int | None) -> bool:
    purpose = profile.purpose
    if purpose is ProfilePurpose.STATION_MAX:
        return profile.connector_id == 0
    if connector_id == 0:
        return profile.connector_id == 0 and purpose is not ProfilePurpose.TX
    if purpose is ProfilePurpose.TX:
        return (
            profile.connector_id == connector_id and tx_key is not None and profile.tx_key == tx_key
        )
    return profile.connector_id in (0, connector_id)


def _elementary(
    profiles: Iterable[ChargingProfile],
    connector_id: int,
    w0: int,
    w1: int,
    *,
    hardware_limit_a: Decimal,
    phases: int,
    voltage_v: Decimal,
    tx_key: int | None,
    anchor_us: int,
    others: Sequence[Iterable[ChargingProfile]] = (),
) -> list[_Elementary]:
    """The composite over [w0, w1) as unmerged intervals: at each instant the lowest limit
    of every layer of ``profiles`` and of each set in ``others`` (another backend's
    profiles, issue 15: an energy manager's limits combine with the primary's as the
    minimum; each set stacks its own profiles, no set outranks another)."""
    layers: list[list[_Piece]] = []
    for book in (profiles, *others):
        layers.extend(
            _book_layers(book, connector_id, w0, w1, phases, voltage_v, tx_key, anchor_us)
        )
    return _lowest(layers, w0, w1, hardware_limit_a, phases)


def _book_layers(
    profiles: Iterable[ChargingProfile],
    connector_id: int,
    w0: int,
    w1: int,
    phases: int,
    voltage_v: Decimal,
    tx_key: int | None,
    anchor_us: int,
) -> list[list[_Piece]]:
    """One backend's prevailing TX, external and station-maximum layers over [w0, w1)."""
    tx_ranked: list[tuple[tuple[int, ...], list[_Piece]]] = []
    max_ranked: list[tuple[tuple[int, ...], list[_Piece]]] = []
    ext_ranked: list[tuple[tuple[int, ...], list[_Piece]]] = []
    for profile in profiles:
        if not _applies(profile, connector_id, tx_key):
            continue
        pieces = _profile_pieces(profile, w0, w1, anchor_us, phases, voltage_v)
        if not pieces:
            continue
        # Rank: TX above every TX default; then stack level; then the connector's own
        # profile above the connector-0 one; then the higher id (only reachable if two
        # profiles of one purpose and level are valid at once, which install_profile and
        # K01.FR.06 rule out).
        specific = 1 if profile.connector_id != 0 else 0
        rank = (profile.stack_level, specific, profile.profile_id)
        if profile.purpose is ProfilePurpose.TX:
            tx_ranked.append(((1, *rank), pieces))
        elif profile.purpose is ProfilePurpose.TX_DEFAULT:
            tx_ranked.append(((0, *rank), pieces))
        elif profile.purpose is ProfilePurpose.STATION_MAX:
            max_ranked.append((rank, pieces))
        else:
            ext_ranked.append((rank, pieces))
    # Ties go to the first layer: the transaction's own limit is the most specific source.
    return [_prevailing(ranked, w0, w1) for ranked in (tx_ranked, ext_ranked, max_ranked) if ranked]


def _lowest(
    layers: list[list[_Piece]], w0: int, w1: int, hardware_limit_a: Decimal, phases: int
) -> list[_Elementary]:
    """Per interval, the lowest limit of all layers (the hardware's when none defines one)."""
    bounds = {w0, w1}
    for layer in layers:
        for piece in layer:
            bounds.add(piece.t0_us)
            bounds.add(piece.t1_us)
    edges = sorted(bounds)
    cursors = [0] * len(layers)
    out: list[_Elementary] = []
    for t0, t1 in zip(edges, edges[1:], strict=False):
        best_a = hardware_limit_a
        best: _Piece | None = None
        low_phases = phases
        min_rate: Decimal | None = None
        for n, layer in enumerate(layers):
            c = cursors[n]
            while c < len(layer) and layer[c].t1_us <= t0:
                c += 1
            cursors[n] = c
            if c < len(layer) and layer[c].t0_us <= t0:
                piece = layer[c]
                low_phases = min(low_phases, piece.phases)
                if piece.min_rate_a is not None and (
                    min_rate is None or piece.min_rate_a > min_rate
                ):
                    min_rate = piece.min_rate_a
                if best is None and piece.limit_a <= best_a or piece.limit_a < best_a:
                    best_a, best = piece.limit_a, piece
        if best is None:
            out.append(_Elementary(t0, t1, best_a, low_phases, HARDWARE, None, min_rate))
        else:
            native_w = (
                best.native if best.unit is RateUnit.W and best.phases == low_phases else None
            )
            out.append(_Elementary(t0, t1, best_a, low_phases, best.source, native_w, min_rate))
    return out


def _watts(piece: _Elementary, voltage_v: Decimal) -> Decimal:
    if piece.native_w is not None:
        return piece.native_w
    return amps_to_watts(piece.limit_a, piece.phases, voltage_v)


# ----------------------------------------------------------------------------- public


def limit_at(
    profiles: Iterable[ChargingProfile],
    connector_id: int,
    at: datetime,
    *,
    hardware_limit_a: Number,
    phases: int = DEFAULT_PHASES,
    voltage_v: Number = 230,
    tx_key: int | None = None,
    tx_start: datetime | None = None,
    others: Sequence[Iterable[ChargingProfile]] = (),
) -> EffectiveLimit:
    """The effective limit of ``connector_id`` (0 = the station) at ``at`` and its source.

    ``tx_key``/``tx_start``: the transaction running on the connector, if any; without
    ``tx_start`` Relative profiles count from ``at`` (as if a transaction started now).
    """
    hw = to_decimal(hardware_limit_a)
    volts = to_decimal(voltage_v)
    w0 = _us(at)
    anchor = w0 if tx_start is None else _us(tx_start)
    (piece,) = _elementary(
        profiles,
        connector_id,
        w0,
        w0 + 1,
        hardware_limit_a=hw,
        phases=phases,
        voltage_v=volts,
        tx_key=tx_key,
        anchor_us=anchor,
        others=others,
    )
    return EffectiveLimit(
        limit_a=piece.limit_a,
        limit_w=_watts(piece, volts),
        phases=piece.phases,
        source=piece.source,
        min_rate_a=piece.min_rate_a,
        below_min_rate=piece.min_rate_a is not None and piece.limit_a < piece.min_rate_a,
        below_pilot_minimum=piece.limit_a < PILOT_MINIMUM_A,
    )


def composite_schedule(
    profiles: Iterable[ChargingProfile],
    connector_id: int,
    start: datetime,
    duration_s: int,
    *,
    unit: RateUnit = RateUnit.A,
    hardware_limit_a: Number,
    phases: int = DEFAULT_PHASES,
    voltage_v: Number = 230,
    tx_key: int | None = None,
    tx_start: datetime | None = None,
    others: Sequence[Iterable[ChargingProfile]] = (),
) -> CompositeSchedule:
    """GetCompositeSchedule (1.6 5.7 with errata 3.28/3.29, K08): the limit of
    ``connector_id`` (0 = the station) from ``start`` for ``duration_s`` seconds in ``unit``,
    adjacent periods with the same limit and phases merged.

    Without ``tx_start``, Relative profiles count from ``start`` (K08.FR.06)."""
    volts = to_decimal(voltage_v)
    w0 = _us(start)
    w1 = w0 + max(0, duration_s) * _US_PER_S
    if w1 == w0:
        return CompositeSchedule(start, duration_s, unit, ())
    pieces = _elementary(
        profiles,
        connector_id,
        w0,
        w1,
        hardware_limit_a=to_decimal(hardware_limit_a),
        phases=phases,
        voltage_v=volts,
        tx_key=tx_key,
        anchor_us=w0 if tx_start is None else _us(tx_start),
        others=others,
    )
    periods: list[CompositePeriod] = []
    min_rate: Decimal | None = None
    for piece in pieces:
        if unit is RateUnit.A:
            limit = piece.limit_a
            rate = piece.min_rate_a
        else:
            limit = _watts(piece, volts)
            rate = (
                None
                if piece.min_rate_a is None
                else amps_to_watts(piece.min_rate_a, piece.phases, volts)
            )
        if rate is not None and (min_rate is None or rate > min_rate):
            min_rate = rate
        if periods and periods[-1].limit == limit and periods[-1].phases == piece.phases:
            continue
        periods.append(CompositePeriod((piece.t0_us - w0) / _US_PER_S, limit, piece.phases))
    return CompositeSchedule(start, duration_s, unit, tuple(periods), min_rate)


def next_change_s(
    profiles: Iterable[ChargingProfile],
    connector_id: int,
    at: datetime,
    *,
    hardware_limit_a: Number,
    phases: int = DEFAULT_PHASES,
    voltage_v: Number = 230,
    tx_key: int | None = None,
    tx_start: datetime | None = None,
    others: Sequence[Iterable[ChargingProfile]] = (),
    horizon_s: int = NEXT_CHANGE_HORIZON_S,
) -> float | None:
    """Seconds from ``at`` to the next instant at which the limit (A) or the phases change,
    None if none within ``horizon_s`` (arm a timer for the horizon and ask again)."""
    schedule = composite_schedule(
        profiles,
        connector_id,
        at,
        horizon_s,
        hardware_limit_a=hardware_limit_a,
        phases=phases,
        voltage_v=voltage_v,
        tx_key=tx_key,
        tx_start=tx_start,
        others=others,
    )
    return schedule.periods[1].start_s if len(schedule.periods) > 1 else None


def expired(profile: ChargingProfile, now: datetime) -> bool:
    """Whether ``profile`` can never define a limit again after ``now`` (to drop it): past
    validTo, or an Absolute schedule with a startSchedule whose duration has ended."""
    if profile.valid_to is not None and profile.valid_to <= now:
        return True
    schedule = profile.schedule
    return (
        profile.kind is ProfileKind.ABSOLUTE
        and schedule.start is not None
        and schedule.duration_s is not None
        and schedule.start + timedelta(seconds=schedule.duration_s) <= now
    )


@value
class Cap:
    """A limit that is not a charging profile (the local API's, the site's) on a composite
    schedule: ``limit_a`` per phase from ``start_s`` until ``end_s`` (None: the end)."""

    start_s: float
    end_s: float | None
    limit_a: Decimal


def cap_schedule(
    schedule: CompositeSchedule, caps: Iterable[Cap], *, voltage_v: Number = 230
) -> CompositeSchedule:
    """``schedule`` with every period lowered to the caps in force during it (K08: "a
    combination of local limits and the prevailing charging profiles"), split where a cap
    begins or ends; adjacent periods with the same limit and phases merged. A cap in A
    lowers a W schedule by its power on the period's phases."""
    caps = [c for c in caps if c.end_s is None or c.end_s > c.start_s]
    if not caps or not schedule.periods:
        return schedule
    volts = to_decimal(voltage_v)
    duration_s = float(schedule.duration_s)
    bounds = {p.start_s for p in schedule.periods}
    for cap in caps:
        for edge in (cap.start_s, cap.end_s):
            if edge is not None and 0 < edge < duration_s:
                bounds.add(edge)
    starts = sorted(bounds)
    out: list[CompositePeriod] = []
    for start_s in starts:
        period = schedule.periods[bisect_right([p.start_s for p in schedule.periods], start_s) - 1]
        limit = period.limit
        for cap in caps:
            if cap.start_s <= start_s and (cap.end_s is None or start_s < cap.end_s):
                value_ = (
                    cap.limit_a
                    if schedule.unit is RateUnit.A
                    else amps_to_watts(cap.limit_a, period.phases, volts)
                )
                limit = min(limit, value_)
        if out and out[-1].limit == limit and out[-1].phases == period.phases:
            continue
        out.append(CompositePeriod(start_s, limit, period.phases))
    return replace(schedule, periods=tuple(out))
