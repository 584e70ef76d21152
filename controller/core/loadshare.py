"""Local load management: a site current shared fairly among connectors, pure.

The rule (``allocate``), in two steps:

1. **Admission in order.** The connectors that want current are given in priority order
   (the runtime puts EVs asking for energy first, then paused ones; within each, the
   session that began first comes first). Each one is admitted if the site can still give
   it the 6 A pilot minimum on every line it uses, on top of 6 A for every connector
   admitted before it; otherwise it waits (share 0: SuspendedEVSE). A connector whose own
   limit is below 6 A gets nothing either (the pilot cannot offer it). Later connectors
   are still tried: a single-phase one on another line may fit where a three-phase one
   did not. Why this rule: a share below 6 A cannot be signalled on the pilot (IEC
   61851-1), so "everyone gets an equal part" would leave everyone at 0 A; first come,
   first served is what a driver understands ("the charger was busy when I came"), and it
   never takes current away from a session that is charging to give it to a newer one.
2. **Water-filling among the admitted.** Their shares rise together from 0; a connector
   stops rising at its own limit (hardware, schedule, local limit, what it draws), and
   every connector on a line stops when that line is full. The result is max-min fair:
   a connector gets less than its own limit only because a line it uses is full and no
   connector on that line got more than it (up to the 0.1 A step shares are rounded down
   to). Because step 1 admitted only what fits at 6 A, every admitted connector ends at
   6 A or more.

Invariants (tests/core/test_loadshare_properties.py): on every line the shares of the
connectors using it sum to at most the line's limit; every share is 0 or at least 6 A; no
share exceeds the connector's own limit; a waiting connector could not have been admitted at
6 A after the ones before it; the max-min fairness above; with one line, every admitted
connector below its own limit has the same share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from controller.core.values import value

#: IEC 61851-1: the lowest current a pilot can offer.
MIN_SHARE_A = Decimal(6)
#: Shares are rounded down to this step (pilots and EVSE boards take at most 0.1 A).
STEP_A = Decimal("0.1")
#: Lines of a three-phase supply.
ALL_LINES: frozenset[int] = frozenset({1, 2, 3})
#: "Draws clearly less than offered": more than this below the offer.
DRAW_HEADROOM_A = Decimal(2)


@value
class Demand:
    """A connector that wants current: its own limit (every cap but the site's) and the
    supply lines it draws from (1..3; a three-phase connector all three)."""

    connector_id: int
    limit_a: Decimal
    lines: frozenset[int] = ALL_LINES


#: Default of ``[site] fallback_current_a``: a local limit not refreshed in time falls back
#: to the pilot minimum, so a session goes on slowly instead of stopping or running free.
DEFAULT_FALLBACK_A = Decimal(6)


@value
class SiteConfig:
    """The ``[site]`` table: the supply's per-line limit for the chargers (None: no site
    limit, only local limits) and the current a local limit falls back to."""

    max_current_a: Mapping[int, Decimal] | None = None
    fallback_current_a: Decimal = DEFAULT_FALLBACK_A


def floor_step(value: Decimal) -> Decimal:
    return (value / STEP_A).to_integral_value(rounding=ROUND_FLOOR) * STEP_A


def ceil_step(value: Decimal) -> Decimal:
    return (value / STEP_A).to_integral_value(rounding=ROUND_CEILING) * STEP_A


def allocate(site_a: Mapping[int, Decimal], demands: Sequence[Demand]) -> dict[int, Decimal]:
    """Each connector's share (0 = wait) of the per-line site limits ``site_a`` (line ->
    A); ``demands`` in priority order, lines not in ``site_a`` are unlimited."""
    shares: dict[int, Decimal] = {d.connector_id: Decimal(0) for d in demands}
    # 1. Admission: 6 A each, in order, where it still fits.
    reserved = {line: Decimal(0) for line in site_a}
    admitted: list[Demand] = []
    for d in demands:
        if d.limit_a < MIN_SHARE_A:
            continue
        if all(reserved[ln] + MIN_SHARE_A <= site_a[ln] for ln in d.lines if ln in site_a):
            for ln in d.lines:
                if ln in site_a:
                    reserved[ln] += MIN_SHARE_A
            admitted.append(d)
    # 2. Progressive filling.
    rising = list(admitted)
    left = dict(site_a)  # per line: what the connectors still rising may share
    while rising:
        users = {
            ln: [d for d in rising if ln in d.lines]
            for ln in left
            if any(ln in d.lines for d in rising)
        }
        levels = {ln: left[ln] / len(ds) for ln, ds in users.items()}
        level = min(levels.values(), default=None)
        capped = [d for d in rising if level is None or d.limit_a <= level]
        if capped:
            # Their own limit comes first: they stop there, the others rise on.
            frozen = {d.connector_id: d.limit_a for d in capped}
        else:
            assert level is not None
            full = [ln for ln, lv in levels.items() if lv == level]
            value = floor_step(level)
            frozen = {d.connector_id: value for ln in full for d in users[ln]}
        for d in rising:
            if d.connector_id in frozen:
                shares[d.connector_id] = frozen[d.connector_id]
                for ln in d.lines:
                    if ln in left:
                        left[ln] -= frozen[d.connector_id]
        rising = [d for d in rising if d.connector_id not in frozen]
    return shares


def draw_cap(offered_a: Decimal, drawn_a: Decimal, cap_a: Decimal | None) -> Decimal | None:
    """How much to offer an EV that draws less than it is offered (None: no cap).

    An EV drawing more than DRAW_HEADROOM_A below its offer keeps its draw plus the
    headroom (never below 6 A), so the rest can go to others; a capped EV that comes
    within half the headroom of its cap is uncapped (it may want more: the next check
    caps it again if not)."""
    if cap_a is not None and drawn_a >= cap_a - DRAW_HEADROOM_A / 2:
        return None
    if offered_a - drawn_a > DRAW_HEADROOM_A:
        return max(MIN_SHARE_A, ceil_step(drawn_a + DRAW_HEADROOM_A))
    return cap_a
