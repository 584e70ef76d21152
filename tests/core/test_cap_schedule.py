"""A composite schedule combined with limits that are not charging profiles (K08: "a
combination of local limits and the prevailing charging profiles"; TC_K_39/40/41_CS)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from controller.core.charging_profiles import RateUnit
from controller.core.composite import Cap, CompositePeriod, CompositeSchedule, cap_schedule

START = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
D = Decimal


def schedule(*periods: tuple[float, int], unit: RateUnit = RateUnit.A) -> CompositeSchedule:
    return CompositeSchedule(
        START, 3600, unit, tuple(CompositePeriod(s, D(v), 3) for s, v in periods)
    )


def limits(s: CompositeSchedule) -> list[tuple[float, Decimal]]:
    return [(p.start_s, p.limit) for p in s.periods]


def test_a_local_limit_until_its_timeout_then_the_fallback() -> None:
    capped = cap_schedule(schedule((0, 16)), [Cap(0, 600, D(10)), Cap(600, None, D(6))])
    assert limits(capped) == [(0, D(10)), (600, D(6))]


def test_a_cap_above_the_schedule_changes_nothing_and_periods_merge() -> None:
    original = schedule((0, 8), (900, 12))
    capped = cap_schedule(original, [Cap(0, None, D(32))])
    assert capped == original
    assert limits(cap_schedule(original, [Cap(0, None, D(8))])) == [(0, D(8))]


def test_a_watt_schedule_is_capped_by_the_power_of_the_current_on_its_phases() -> None:
    capped = cap_schedule(schedule((0, 11000), unit=RateUnit.W), [Cap(0, None, D(10))])
    assert limits(capped) == [(0, D(10) * 230 * 3)]


def test_caps_ending_before_the_start_or_empty_are_ignored() -> None:
    original = schedule((0, 16))
    assert cap_schedule(original, [Cap(0, 0, D(6))]) == original
    assert cap_schedule(original, []) == original


@given(
    periods=st.lists(st.tuples(st.integers(0, 3599), st.integers(0, 40)), min_size=1, max_size=6),
    caps=st.lists(
        st.tuples(
            st.integers(0, 3600), st.one_of(st.none(), st.integers(1, 4000)), st.integers(0, 40)
        ),
        max_size=4,
    ),
    probe_s=st.integers(0, 3599),
)
def test_at_every_instant_the_capped_limit_is_the_lowest_in_force(
    periods: list[tuple[int, int]], caps: list[tuple[int, int | None, int]], probe_s: int
) -> None:
    """K08.FR.04: never above any merged schedule; and exactly the minimum of them."""
    starts = sorted({s for s, _ in periods} | {0})
    values = dict(periods)
    merged: list[tuple[float, int]] = []
    for s in starts:  # as composite_schedule answers it: adjacent equal periods merged
        if not merged or merged[-1][1] != values.get(s, 16):
            merged.append((s, values.get(s, 16)))
    original = schedule(*merged)
    cap_list = [Cap(s, None if e is None else s + e, D(v)) for s, e, v in caps]
    capped = cap_schedule(original, cap_list)

    def at(s: CompositeSchedule, t: float) -> Decimal:
        return [p for p in s.periods if p.start_s <= t][-1].limit

    expected = at(original, probe_s)
    for cap in cap_list:
        if cap.start_s <= probe_s and (cap.end_s is None or probe_s < cap.end_s):
            expected = min(expected, cap.limit_a)
    assert at(capped, probe_s) == expected
    assert capped.periods[0].start_s == 0
    assert all(a.limit != b.limit for a, b in zip(capped.periods, capped.periods[1:], strict=False))
