"""Benchmark (issue 12): the pure composite schedule (controller/core/composite.py), in µs.

Two stations, each with 20 installed profiles of 48 periods (30-minute steps over a day):

* one connector: 2 station maxima (Absolute and Recurring Weekly), 2 external constraints,
  8 TX defaults on connector 0 and 1 (Absolute, Recurring Daily, Relative; stack levels
  0..3, some with validFrom/validTo), 8 TX profiles of the running transaction (stacked,
  half in W); ``composite_schedule`` for connector 1 over 24 h (a GetCompositeSchedule),
  ``limit_at`` (what the runtime applies) and ``next_change_s`` (the timer it arms);
* eight connectors: 2 station maxima, 2 TX defaults on connector 0 and one TX default and
  one TX profile on each connector (20 in all); one round computes the 24 h composite of
  connectors 0..8 (the station and each connector), i.e. what a status page or a load
  manager asks for all connectors at once.

Each figure is the wall time of one call (one round for the 8 connectors), median and p99
over the rounds, after a warm-up. Figures only; exit code 0 unless the benchmark fails.

Usage (from the repository root)::

    .venv/bin/python bench/composite_schedule.py             # 300 rounds
    .venv/bin/python bench/composite_schedule.py --quick     # 30 rounds
    .venv/bin/python bench/composite_schedule.py -n 1000
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from benchlib import add_repo_root_to_sys_path, format_stats, run_main

add_repo_root_to_sys_path()

from controller.core.charging_profiles import (  # noqa: E402
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)
from controller.core.composite import composite_schedule, limit_at, next_change_s  # noqa: E402
from controller.core.loadshare import Demand, allocate  # noqa: E402

NOW = datetime(2026, 3, 4, 13, 7, 30, tzinfo=UTC)
DAY = 86_400
PERIODS = 48
TX_KEY = 1


def _schedule(seed: int, unit: RateUnit, kind: ProfileKind) -> ChargingSchedule:
    """48 half-hour periods with limits that differ from step to step."""
    scale = Decimal(230 * 3) if unit is RateUnit.W else Decimal(1)
    periods = tuple(
        SchedulePeriod(i * 1800, (Decimal(6 + (seed * 7 + i * 5) % 27) + Decimal("0.2")) * scale)
        for i in range(PERIODS)
    )
    start = None if kind is ProfileKind.RELATIVE else NOW - timedelta(hours=seed % 11)
    return ChargingSchedule(unit, periods, DAY, start)


def _profile(
    profile_id: int,
    purpose: ProfilePurpose,
    kind: ProfileKind,
    *,
    stack_level: int,
    connector_id: int,
    unit: RateUnit = RateUnit.A,
    recurrency: Recurrency | None = None,
    bounded: bool = False,
) -> ChargingProfile:
    return ChargingProfile(
        profile_id=profile_id,
        stack_level=stack_level,
        purpose=purpose,
        kind=kind,
        schedule=_schedule(profile_id, unit, kind),
        connector_id=connector_id,
        recurrency=recurrency,
        valid_from=NOW - timedelta(hours=2) if bounded else None,
        valid_to=NOW + timedelta(hours=9) if bounded else None,
        tx_key=TX_KEY if purpose is ProfilePurpose.TX else None,
    )


def one_connector_station() -> list[ChargingProfile]:
    P, K = ProfilePurpose, ProfileKind
    out = [
        _profile(1, P.STATION_MAX, K.ABSOLUTE, stack_level=0, connector_id=0),
        _profile(
            2,
            P.STATION_MAX,
            K.RECURRING,
            stack_level=1,
            connector_id=0,
            recurrency=Recurrency.WEEKLY,
        ),
        _profile(3, P.EXTERNAL_CONSTRAINTS, K.ABSOLUTE, stack_level=0, connector_id=0),
        _profile(
            4, P.EXTERNAL_CONSTRAINTS, K.ABSOLUTE, stack_level=1, connector_id=1, bounded=True
        ),
    ]
    kinds = [K.ABSOLUTE, K.RECURRING, K.RELATIVE, K.ABSOLUTE]
    for n in range(8):
        kind = kinds[n % 4]
        out.append(
            _profile(
                5 + n,
                P.TX_DEFAULT,
                kind,
                stack_level=n // 2,
                connector_id=n % 2,
                recurrency=Recurrency.DAILY if kind is K.RECURRING else None,
                bounded=n % 3 == 0,
            )
        )
    for n in range(8):
        out.append(
            _profile(
                13 + n,
                P.TX,
                K.RELATIVE if n % 2 else K.ABSOLUTE,
                stack_level=n,
                connector_id=1,
                unit=RateUnit.W if n % 2 else RateUnit.A,
                bounded=n % 4 == 1,
            )
        )
    return out


def eight_connector_station() -> list[ChargingProfile]:
    P, K = ProfilePurpose, ProfileKind
    out = [
        _profile(1, P.STATION_MAX, K.ABSOLUTE, stack_level=0, connector_id=0),
        _profile(
            2,
            P.STATION_MAX,
            K.RECURRING,
            stack_level=1,
            connector_id=0,
            recurrency=Recurrency.DAILY,
        ),
        _profile(3, P.TX_DEFAULT, K.ABSOLUTE, stack_level=0, connector_id=0),
        _profile(4, P.TX_DEFAULT, K.RELATIVE, stack_level=1, connector_id=0, bounded=True),
    ]
    for c in range(1, 9):
        out.append(_profile(3 + 2 * c, P.TX_DEFAULT, K.ABSOLUTE, stack_level=2, connector_id=c))
        tx = _profile(4 + 2 * c, P.TX, K.RELATIVE, stack_level=0, connector_id=c, unit=RateUnit.W)
        out.append(replace(tx, tx_key=c))
    return out


def timed_us(fn: Callable[[], object], rounds: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        values.append((time.perf_counter_ns() - t0) / 1000)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Composite schedule computation time (µs).")
    parser.add_argument("--quick", action="store_true", help="30 rounds")
    parser.add_argument("-n", type=int, default=None, help="rounds (default 300)")
    args = parser.parse_args(argv)
    rounds = args.n or (30 if args.quick else 300)

    one = one_connector_station()
    eight = eight_connector_station()
    kw = {"hardware_limit_a": 32, "phases": 3, "voltage_v": 230}
    tx_kw = {**kw, "tx_key": TX_KEY, "tx_start": NOW - timedelta(minutes=40)}
    probe = composite_schedule(one, 1, NOW, DAY, **tx_kw)  # type: ignore[arg-type]

    def eight_round() -> None:
        composite_schedule(eight, 0, NOW, DAY, **kw)  # type: ignore[arg-type]
        for c in range(1, 9):
            composite_schedule(
                eight,
                c,
                NOW,
                DAY,
                tx_key=c,
                tx_start=NOW - timedelta(minutes=5 * c),
                **kw,  # type: ignore[arg-type]
            )

    site_a = {line: Decimal(63) for line in (1, 2, 3)}

    def site_round() -> None:
        """What the runtime computes at a boundary with a site limit: each connector's
        own limit from its schedule, then the fair shares of the site current."""
        demands = [
            Demand(
                c,
                limit_at(
                    eight, c, NOW, tx_key=c, tx_start=NOW - timedelta(minutes=5 * c), **kw
                ).limit_a,  # type: ignore[arg-type]
            )
            for c in range(1, 9)
        ]
        allocate(site_a, demands)

    figures = [
        (
            "1 connector, 20 profiles: composite_schedule 24 h, A",
            lambda: composite_schedule(one, 1, NOW, DAY, **tx_kw),  # type: ignore[arg-type]
        ),
        (
            "1 connector, 20 profiles: composite_schedule 24 h, W",
            lambda: composite_schedule(one, 1, NOW, DAY, unit=RateUnit.W, **tx_kw),  # type: ignore[arg-type]
        ),
        (
            "1 connector, 20 profiles: limit_at",
            lambda: limit_at(one, 1, NOW, **tx_kw),  # type: ignore[arg-type]
        ),
        (
            "1 connector, 20 profiles: next_change_s (8 d horizon)",
            lambda: next_change_s(one, 1, NOW, **tx_kw),  # type: ignore[arg-type]
        ),
        ("8 connectors, 20 profiles: composite 24 h of 0..8", eight_round),
        ("8 connectors under a site limit: limits now (limit_at + share)", site_round),
    ]
    print(
        f"composite schedule: {len(one)} profiles x {PERIODS} periods, {rounds} rounds, "
        f"Python {platform.python_version()} ({platform.machine()})"
    )
    print(f"(the 1-connector composite has {len(probe.periods)} periods)")
    for name, fn in figures:
        print(f"{name:<56} {format_stats(timed_us(fn, rounds), digits=0, width=7, unit='µs')}")
    return 0


if __name__ == "__main__":
    run_main(main, "composite_schedule")
