"""Charging profiles as the store keeps them: the version-neutral profile as JSON, exact
(limits as decimal strings, times as ISO 8601 with their offset)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from controller.core.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def profile_to_json(profile: ChargingProfile) -> str:
    schedule = profile.schedule
    body: dict[str, Any] = {
        "id": profile.profile_id,
        "stack_level": profile.stack_level,
        "purpose": profile.purpose.value,
        "kind": profile.kind.value,
        "connector_id": profile.connector_id,
        "recurrency": None if profile.recurrency is None else profile.recurrency.value,
        "valid_from": _time(profile.valid_from),
        "valid_to": _time(profile.valid_to),
        "tx_key": profile.tx_key,
        "schedule": {
            "unit": schedule.unit.value,
            "duration_s": schedule.duration_s,
            "start": _time(schedule.start),
            "min_rate": None if schedule.min_rate is None else str(schedule.min_rate),
            "id": schedule.schedule_id,
            "periods": [
                [p.start_s, str(p.limit), p.phases, p.phase_to_use] for p in schedule.periods
            ],
        },
    }
    return json.dumps(body, separators=(",", ":"))


def profile_from_json(text: str) -> ChargingProfile:
    """The profile ``profile_to_json`` wrote; ValueError/KeyError/TypeError if damaged."""
    body = json.loads(text)
    schedule = body["schedule"]
    return ChargingProfile(
        profile_id=int(body["id"]),
        stack_level=int(body["stack_level"]),
        purpose=ProfilePurpose(body["purpose"]),
        kind=ProfileKind(body["kind"]),
        connector_id=int(body["connector_id"]),
        recurrency=None if body["recurrency"] is None else Recurrency(body["recurrency"]),
        valid_from=_parse_time(body["valid_from"]),
        valid_to=_parse_time(body["valid_to"]),
        tx_key=body["tx_key"],
        schedule=ChargingSchedule(
            unit=RateUnit(schedule["unit"]),
            duration_s=schedule["duration_s"],
            start=_parse_time(schedule["start"]),
            min_rate=None if schedule["min_rate"] is None else Decimal(schedule["min_rate"]),
            schedule_id=schedule.get("id"),  # absent in rows written before 2.0.1
            periods=tuple(
                SchedulePeriod(int(start_s), Decimal(limit), phases, phase_to_use)
                for start_s, limit, phases, phase_to_use in schedule["periods"]
            ),
        ),
    )
