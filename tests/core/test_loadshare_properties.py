"""Properties of the site load sharing (controller/core/loadshare.py): the per-line sum never
exceeds the site limit, nobody gets 0.1..5.9 A, nobody gets more than its own limit, the
waiting ones could not be admitted, and the shares are max-min fair."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.core.loadshare import (
    ALL_LINES,
    MIN_SHARE_A,
    STEP_A,
    Demand,
    allocate,
    draw_cap,
)

D = Decimal
amps = st.decimals(min_value=0, max_value=80, places=1, allow_nan=False, allow_infinity=False)
site_amps = st.decimals(min_value=6, max_value=200, places=1, allow_nan=False, allow_infinity=False)
lines = st.sampled_from([ALL_LINES, frozenset({1}), frozenset({2}), frozenset({3})])


@st.composite
def problems(draw: st.DrawFn, one_line: bool = False) -> tuple[dict[int, D], list[Demand]]:
    if one_line:
        value = draw(site_amps)
        site = {1: value, 2: value, 3: value}
    else:
        site = {ln: draw(site_amps) for ln in (1, 2, 3)}
    n = draw(st.integers(min_value=0, max_value=8))
    demands = [
        Demand(cid, draw(amps), ALL_LINES if one_line else draw(lines)) for cid in range(1, n + 1)
    ]
    return site, draw(st.permutations(demands))


def _on(line: int, demands: list[Demand]) -> list[Demand]:
    return [d for d in demands if line in d.lines]


@settings(max_examples=400)
@given(problems())
def test_site_limit_never_exceeded_and_no_unusable_share(
    problem: tuple[dict[int, D], list[Demand]],
) -> None:
    site, demands = problem
    shares = allocate(site, demands)
    assert set(shares) == {d.connector_id for d in demands}
    for line, limit in site.items():
        assert sum(shares[d.connector_id] for d in _on(line, demands)) <= limit
    for d in demands:
        share = shares[d.connector_id]
        assert share == 0 or share >= MIN_SHARE_A  # never 0.1 .. 5.9 A
        assert share <= d.limit_a  # never above its own limit
        if d.limit_a < MIN_SHARE_A:
            assert share == 0


@settings(max_examples=400)
@given(problems())
def test_a_waiting_connector_could_not_be_admitted_after_those_before_it(
    problem: tuple[dict[int, D], list[Demand]],
) -> None:
    site, demands = problem
    shares = allocate(site, demands)
    for i, d in enumerate(demands):
        if shares[d.connector_id] > 0 or d.limit_a < MIN_SHARE_A:
            continue
        before = [e for e in demands[:i] if shares[e.connector_id] > 0]
        assert any(MIN_SHARE_A * (len(_on(line, before)) + 1) > site[line] for line in d.lines), (
            "a connector waits although it fit at 6 A after the ones before it"
        )


@settings(max_examples=400)
@given(problems())
def test_max_min_fair(problem: tuple[dict[int, D], list[Demand]]) -> None:
    """An admitted connector below its own limit uses a full line (less than 0.1 A per user
    left) on which nobody got more than it (up to the 0.1 A rounding)."""
    site, demands = problem
    shares = allocate(site, demands)
    for d in demands:
        share = shares[d.connector_id]
        if share == 0 or share >= d.limit_a:
            continue
        bottleneck = False
        for line in d.lines:
            users = [e for e in _on(line, demands) if shares[e.connector_id] > 0]
            left = site[line] - sum(shares[e.connector_id] for e in users)
            full = left < STEP_A * len(users)
            if full and all(shares[e.connector_id] < share + STEP_A for e in users):
                bottleneck = True
        assert bottleneck, (d, shares)


@settings(max_examples=300)
@given(problems(one_line=True))
def test_one_line_equal_shares(problem: tuple[dict[int, D], list[Demand]]) -> None:
    """On a single (or symmetric three-phase) supply with three-phase connectors, every
    admitted connector below its own limit gets the same share, and the ones at their own
    limit are not above it."""
    site, demands = problem
    shares = allocate(site, demands)
    below = {shares[d.connector_id] for d in demands if 0 < shares[d.connector_id] < d.limit_a}
    assert len(below) <= 1
    if below:
        (common,) = below
        for d in demands:
            if shares[d.connector_id] == d.limit_a and d.limit_a >= MIN_SHARE_A:
                assert d.limit_a < common + STEP_A
    # Admission in a single line is a prefix: nobody after a waiting one charges.
    admitted = [shares[d.connector_id] > 0 for d in demands if d.limit_a >= MIN_SHARE_A]
    assert admitted == sorted(admitted, reverse=True)


def test_examples() -> None:
    site = {1: D(32), 2: D(32), 3: D(32)}
    three = [Demand(1, D(32)), Demand(2, D(32))]
    assert allocate(site, three) == {1: D(16), 2: D(16)}
    # One limited by its own 10 A: the other gets the rest (water-filling).
    assert allocate(site, [Demand(1, D(10)), Demand(2, D(32))]) == {1: D(10), 2: D(22)}
    # 32 A for six: five can have 6 A, the sixth (last to start) waits.
    six = allocate(site, [Demand(i, D(16)) for i in range(1, 7)])
    assert [six[i] for i in range(1, 7)] == [D("6.4")] * 5 + [D(0)]
    # Own limit below 6 A: nothing, and its part goes to the others.
    assert allocate(site, [Demand(1, D(5)), Demand(2, D(32))]) == {1: D(0), 2: D(32)}
    # Per line: L1 is full at 8 A each for connectors 1 and 3; connector 2 alone on L2
    # takes what is left there.
    split = allocate(
        {1: D(16), 2: D(32), 3: D(32)},
        [Demand(1, D(32), frozenset({1})), Demand(2, D(32), frozenset({2})), Demand(3, D(32))],
    )
    assert split == {1: D(8), 2: D(24), 3: D(8)}
    # A later single-phase connector fits where an earlier three-phase one did not.
    later = allocate(
        {1: D(12), 2: D(12), 3: D(6)},
        [Demand(1, D(32)), Demand(2, D(32)), Demand(3, D(32), frozenset({2}))],
    )
    assert later == {1: D(6), 2: D(0), 3: D(6)}
    # Rounded down to 0.1 A: never over the limit.
    assert allocate(site, [Demand(i, D(32)) for i in (1, 2, 3)]) == {1: D("10.6")} | {
        2: D("10.6"),
        3: D("10.6"),
    }


def test_draw_cap() -> None:
    # Draws clearly less than offered: its draw plus 2 A.
    assert draw_cap(D(16), D("9.4"), None) == D("11.4")
    # Never below the pilot minimum.
    assert draw_cap(D(16), D(0), None) == D(6)
    # Within the headroom: no cap.
    assert draw_cap(D(16), D("15.5"), None) is None
    # A capped EV that comes close to its cap is uncapped; one that stays below keeps it.
    assert draw_cap(D("11.4"), D("10.8"), D("11.4")) is None
    assert draw_cap(D("11.4"), D("9.4"), D("11.4")) == D("11.4")
