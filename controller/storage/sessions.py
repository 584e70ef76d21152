"""Charging sessions as rows for people: the JSON of GET /api/transactions, the CSV export and
the energy per day."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from controller.core.records import TxRecord

CSV_COLUMNS = (
    "started_at",
    "stopped_at",
    "connector",
    "id_tag",
    "energy_kwh",
    "duration_min",
    "meter_start_wh",
    "meter_stop_wh",
    "stop_reason",
    "transaction_id",
)


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def start_date(t: TxRecord) -> date | None:
    """The UTC calendar day a session started (None if its start time is unreadable)."""
    moment = _parse(t.started_at)
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).date()


def sessions_between(
    records: Iterable[TxRecord], first: date | None, last: date | None
) -> list[TxRecord]:
    """Sessions that started on ``first`` .. ``last`` (UTC dates, both included), oldest
    first; one whose start time cannot be read is kept only when no range is asked for."""
    out = []
    for t in records:
        if first is not None or last is not None:
            day = start_date(t)
            if day is None or (first is not None and day < first):
                continue
            if last is not None and day > last:
                continue
        out.append(t)
    return sorted(out, key=lambda t: t.tx_key)


def session_energy_wh(t: TxRecord) -> int:
    """Energy of the session so far: to the stop reading, or the last persisted one if open."""
    end_wh = t.meter_stop_wh if t.meter_stop_wh is not None else t.last_meter_wh
    return end_wh - t.meter_start_wh


def session_duration_s(t: TxRecord) -> float | None:
    """Start to stop (or to the last persisted reading while open); None if unparseable."""
    start = _parse(t.started_at)
    end = _parse(t.stopped_at if t.stopped_at is not None else t.last_meter_at)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def session_row(t: TxRecord) -> dict[str, Any]:
    """One session as the JSON object of the local API."""
    duration_s = session_duration_s(t)
    return {
        "transaction_key": t.tx_key,
        "transaction_id": t.shown_tx_id(),
        "connector": t.connector_id,
        "id_tag": t.id_tag,
        "started_at": t.started_at,
        "stopped_at": t.stopped_at,
        "stop_reason": t.stop_reason,
        "meter_start_wh": t.meter_start_wh,
        "meter_stop_wh": t.meter_stop_wh,
        "energy_wh": session_energy_wh(t),
        "duration_s": None if duration_s is None else round(duration_s),
    }


def sessions_csv(records: Iterable[TxRecord]) -> str:
    """Sessions as CSV (one header line, oldest first as given), for splitting the power bill.

    idTags are data from cards and the network: a value starting with = + - @ would be run as
    a formula by spreadsheet programs, so it is prefixed with an apostrophe (OWASP CSV
    injection advice).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for t in records:
        duration_s = session_duration_s(t)
        writer.writerow(
            [
                t.started_at,
                t.stopped_at or "",
                t.connector_id,
                _cell(t.id_tag),
                f"{session_energy_wh(t) / 1000:.3f}",
                "" if duration_s is None else f"{duration_s / 60:.1f}",
                t.meter_start_wh,
                "" if t.meter_stop_wh is None else t.meter_stop_wh,
                t.stop_reason or "",
                t.csms_tx_id() or "",
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def daily_energy(records: Iterable[TxRecord], today: date, days: int = 30) -> list[dict[str, Any]]:
    """Energy per UTC day for the ``days`` days up to ``today``, oldest first, every day
    present (0 without sessions): each session counts on the day it started, with its
    energy so far if still open (the status page's bar chart)."""
    first = today - timedelta(days=days - 1)
    energy = {first + timedelta(days=i): [0, 0] for i in range(days)}
    for t in records:
        day = start_date(t)
        if day is None or day not in energy:
            continue
        energy[day][0] += max(0, session_energy_wh(t))
        energy[day][1] += 1
    return [
        {"date": day.isoformat(), "energy_wh": wh, "sessions": n}
        for day, (wh, n) in sorted(energy.items())
    ]
