"""OCPP-style timestamps (ISO 8601, milliseconds, UTC): formatting, clamping, shifting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def iso_utc(moment: datetime) -> str:
    """OCPP timestamp with milliseconds and an explicit UTC offset."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def parse_iso(text: str) -> datetime | None:
    """An ISO 8601 timestamp ("Z" allowed; no offset read as UTC), None if unparseable."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def clamp_iso(text: str, floor: datetime) -> str:
    """An OCPP timestamp, raised to ``floor`` if it is earlier (or unparseable)."""
    moment = parse_iso(text)
    if moment is None:
        return iso_utc(floor)
    return text if moment >= floor else iso_utc(floor)


def shift_iso(text: str, shift_s: float) -> str:
    """An OCPP timestamp moved by ``shift_s`` seconds (unparseable text is kept)."""
    moment = parse_iso(text)
    if moment is None:
        return text
    return iso_utc(moment + timedelta(seconds=shift_s))


def shift_timestamps(value: Any, shift_s: float) -> Any:
    """A payload with every ``timestamp`` field (at any depth) moved by ``shift_s``."""
    if isinstance(value, dict):
        return {
            k: shift_iso(v, shift_s)
            if k == "timestamp" and isinstance(v, str)
            else shift_timestamps(v, shift_s)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [shift_timestamps(v, shift_s) for v in value]
    return value
