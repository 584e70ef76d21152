"""Installed charging profiles in the store (controller/storage/profiles.py and Store):
exact round trips (decimal limits, aware times), per-backend ids, one commit per change,
and a full disk: kept in memory and in the spill file, read back, replayed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)
from controller.core.records import StoreError
from controller.storage.profiles import profile_from_json, profile_to_json
from controller.storage.store import Store

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _profile(profile_id: int = 1, limit: str = "10.2", **kw: Any) -> ChargingProfile:
    return ChargingProfile(
        profile_id=profile_id,
        stack_level=kw.pop("stack_level", 1),
        purpose=kw.pop("purpose", ProfilePurpose.TX_DEFAULT),
        kind=kw.pop("kind", ProfileKind.ABSOLUTE),
        schedule=ChargingSchedule(
            unit=RateUnit.A,
            periods=(SchedulePeriod(0, Decimal(limit), 3), SchedulePeriod(900, Decimal("6"))),
            duration_s=3600,
            start=T0,
            min_rate=Decimal("6.5"),
        ),
        **kw,
    )


_times = st.none() | st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


@given(
    limit=st.decimals(min_value=0, max_value=100_000, places=1),
    phases=st.none() | st.integers(1, 3),
    valid_from=_times,
    valid_to=_times,
    tx_key=st.none() | st.integers(1, 10**9),
    kind=st.sampled_from(ProfileKind),
    recurrency=st.none() | st.sampled_from(Recurrency),
    unit=st.sampled_from(RateUnit),
)
def test_json_round_trip_is_exact(
    limit: Decimal,
    phases: int | None,
    valid_from: datetime | None,
    valid_to: datetime | None,
    tx_key: int | None,
    kind: ProfileKind,
    recurrency: Recurrency | None,
    unit: RateUnit,
) -> None:
    profile = ChargingProfile(
        profile_id=7,
        stack_level=3,
        purpose=ProfilePurpose.TX,
        kind=kind,
        schedule=ChargingSchedule(unit, (SchedulePeriod(0, limit, phases),), None, valid_from),
        connector_id=2,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        tx_key=tx_key,
    )
    assert profile_from_json(profile_to_json(profile)) == profile


def test_times_keep_their_offset() -> None:
    cet = timezone(timedelta(hours=1))
    profile = _profile(valid_from=datetime(2026, 12, 1, 9, 0, tzinfo=cet))
    back = profile_from_json(profile_to_json(profile))
    assert back.valid_from == profile.valid_from and back.valid_from.utcoffset() == timedelta(
        hours=1
    )
    assert back.schedule.periods[0].limit == Decimal("10.2")  # not 10.199999...


def test_save_replace_drop_per_backend(tmp_path: Path) -> None:
    store = Store(tmp_path / "evsed.db")
    store.save_profiles("csms", [_profile(1), _profile(2, "16")])
    store.save_profiles("energy", [_profile(1, "8")])  # the same id, another backend
    store.save_profiles("csms", [_profile(2, "12")], drop=[1])  # one commit
    assert [(p.profile_id, str(p.schedule.periods[0].limit)) for p in store.profiles()] == [
        (2, "12")
    ]
    assert [str(p.schedule.periods[0].limit) for p in store.profiles("energy")] == ["8"]
    store.close()
    again = Store(tmp_path / "evsed.db")
    assert [p.profile_id for p in again.profiles()] == [2]
    again.close()


def test_a_damaged_row_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "evsed.db")
    store.save_profiles("csms", [_profile(1), _profile(2)])
    store._db.execute("UPDATE charging_profiles SET body = '{broken' WHERE profile_id = 1")
    assert [p.profile_id for p in store.profiles()] == [2]
    assert "charging profile 1 unreadable" in caplog.text
    store.close()


def test_full_disk_keeps_profiles_in_memory_and_spill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SetChargingProfile answered Accepted on a full disk is not lost: the write is kept
    in memory (read back at once), in the spill file (read back by the next process on a
    still full disk) and written when the disk has room."""
    run = tmp_path / "run"
    store = Store(tmp_path / "evsed.db", spill_dir=run)
    store.save_profiles("csms", [_profile(1)])
    original = Store._tx
    full = {"on": True}

    def tx(self: Store) -> Any:
        if full["on"]:
            raise StoreError("database or disk is full")
        return original(self)

    monkeypatch.setattr(Store, "_tx", tx)
    store.save_profiles("csms", [_profile(3, "7")], drop=[1])
    assert store.degraded
    assert [p.profile_id for p in store.profiles()] == [3]
    store._spill.close()  # type: ignore[union-attr]  # the process dies here
    again = Store(tmp_path / "evsed.db", spill_dir=run)  # still full
    assert again.degraded and [p.profile_id for p in again.profiles()] == [3]
    full["on"] = False
    assert again.flush()
    rows = again._db.execute("SELECT profile_id FROM charging_profiles").fetchall()
    assert [r[0] for r in rows] == [3]
    again.close()
