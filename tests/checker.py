"""Reusable consistency checker: what the CSMS received vs. what the station recorded and what
the (simulated) hardware did. Every check returns violations as strings; [] means consistent.

Rules (OCPP 1.6 sections 3.7, 4.8, 4.10, 7.36; OCPP-J 4.1.4):

* every CALL message id is unique (also across restarts of the charge point);
* every CALL payload validates against the official 1.6 request schema (this also covers
  "StopTransaction reasons are valid": ``reason`` is an enum there);
* every transaction started (an answered StartTransaction) has exactly one answered
  StopTransaction; a StartTransaction is sent again only if the earlier attempt was never
  answered (same payload = same local transaction), likewise a StopTransaction;
* no StopTransaction or transaction MeterValues for a transactionId the CSMS never issued;
* per transaction: meterStart <= every MeterValues energy register (non-decreasing in sample
  order) <= meterStop;
* with the station's transactions (GET /api/transactions rows or the SQLite table): the
  transaction the CSMS knows matches the record (meterStart/meterStop/reason);
* with the simulated meter register (start and end value) and the charging power: the
  energy the CSMS billed, transaction by transaction, accounts for the register delta; only
  the tail after the last persisted sample of a transaction that a SIGKILL ended may go
  unbilled: at most one sample interval (plus one tick) of power per transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocpp.messages import MessageType, get_validator

CALLRESULT = 3
TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
STOP_REASONS = frozenset(
    get_validator(MessageType.Call, "StopTransaction", "1.6").schema["properties"]["reason"]["enum"]
)
ENERGY = "Energy.Active.Import.Register"


@dataclass
class Tx:
    """One transaction as the CSMS saw it."""

    tx_id: int
    start: Any
    meter_values: list[Any] = field(default_factory=list)
    stops: list[Any] = field(default_factory=list)
    aliases: list[int] = field(default_factory=list)  # ids of excused StartTransaction resends

    @property
    def meter_start(self) -> int:
        return int(self.start.payload["meterStart"])

    @property
    def meter_stop(self) -> int | None:
        return int(self.stops[0].payload["meterStop"]) if self.stops else None

    @property
    def reason(self) -> str:
        return str(self.stops[0].payload.get("reason", "Local")) if self.stops else ""


@dataclass
class Report:
    violations: list[str]
    transactions: dict[int, Tx]
    excused: list[str] = field(default_factory=list)

    @property
    def stop_reasons(self) -> Counter[str]:
        return Counter(t.reason for t in self.transactions.values() if t.stops)


# ----------------------------------------------------------------------------- helpers


def energy_registers(meter_values: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """(timestamp, Wh) of every Energy.Active.Import.Register sampled value."""
    out: list[tuple[str, float]] = []
    for mv in meter_values:
        for sv in mv.get("sampledValue", []):
            if sv.get("measurand", ENERGY) != ENERGY:
                continue
            if sv.get("phase"):
                continue
            try:
                wh = float(sv["value"])
            except (KeyError, ValueError):
                continue
            if sv.get("unit") == "kWh":
                wh *= 1000.0
            out.append((str(mv.get("timestamp", "")), wh))
    return out


def _payload_key(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True)


def load_transactions(db_path: str | Path) -> list[dict[str, Any]]:
    """The station's transactions table, as GET /api/transactions field names."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        # Schema 3: each backend's id of a transaction is in tx_backend (text; 1.6 ids are
        # integers written as text).
        rows = db.execute(
            "SELECT t.*, b.csms_tx_id FROM transactions AS t LEFT JOIN tx_backend AS b"
            " ON b.tx_key = t.tx_key AND b.backend = 'csms' ORDER BY t.tx_key"
        ).fetchall()
    finally:
        db.close()
    return [
        {
            "transaction_key": r["tx_key"],
            "transaction_id": None if r["csms_tx_id"] is None else int(r["csms_tx_id"]),
            "connector": r["connector_id"],
            "id_tag": r["id_tag"],
            "started_at": r["started_at"],
            "stopped_at": r["stopped_at"],
            "stop_reason": r["stop_reason"],
            "meter_start_wh": r["meter_start_wh"],
            "meter_stop_wh": r["meter_stop_wh"],
        }
        for r in rows
    ]


# ----------------------------------------------------------------------------- the checker


def check(
    received: Iterable[Any],
    sent_results: Iterable[Any],
    *,
    station_id: str | None = None,
    transactions: Sequence[Mapping[str, Any]] | None = None,
    register_start_wh: float | None = None,
    register_end_wh: float | None = None,
    power_w: float | None = None,
    sample_interval_s: float = 1.0,
    tick_interval_s: float = 0.0,
    expect_all_stopped: bool = True,
    crash_times: Sequence[float] | None = None,
    crash_window_s: float = 0.05,
) -> Report:
    """Check the CALLs a DevCsms received (``csms.received``) against its answers
    (``csms.sent_results``), the station's transactions and the simulated meter."""
    v: list[str] = []
    calls = [f for f in received if station_id is None or f.station_id == station_id]
    answers = {
        r.unique_id: r.payload
        for r in sent_results
        if r.message_type == CALLRESULT and (station_id is None or r.station_id == station_id)
    }

    # Message ids: unique across the whole recording (uuid4 per CALL, also after restarts).
    dupes = [uid for uid, n in Counter(f.unique_id for f in calls).items() if n > 1]
    if dupes:
        v.append(f"message ids used more than once: {dupes[:5]}")

    # Schema validity of everything the station sent (covers StopTransaction.reason).
    for f in calls:
        try:
            validator = get_validator(MessageType.Call, f.action, "1.6")
        except (OSError, ValueError):
            v.append(f"CALL with unknown action {f.action!r}")
            continue
        error = next(iter(validator.iter_errors(f.payload)), None)
        if error is not None:
            v.append(f"{f.action} {f.unique_id} violates the schema: {error.message}")

    # Resends: a second attempt with the same payload only if the first was never answered.
    # With ``crash_times`` (time.monotonic() of each SIGKILL or lost connection, the DevCsms
    # clock): an attempt answered at most ``crash_window_s`` before one may be resent
    # (at-least-once: the answer was in flight, never delivered, or not yet committed when
    # the process died). Those are excused and listed in ``Report.excused``.
    excused: list[str] = []
    excused_uids: set[str] = set()
    sent_at = {
        r.unique_id: r.sent_at
        for r in sent_results
        if r.message_type == CALLRESULT and (station_id is None or r.station_id == station_id)
    }

    def crashed_after(uid: str) -> float | None:
        at = sent_at.get(uid)
        if at is None or crash_times is None:
            return None
        gaps = [c - at for c in crash_times if 0.0 <= c - at <= crash_window_s]
        return min(gaps) if gaps else None

    for action in ("StartTransaction", "StopTransaction"):
        attempts: dict[str, list[Any]] = defaultdict(list)
        for f in calls:
            if f.action == action:
                attempts[_payload_key(f.payload)].append(f)
        for same in attempts.values():
            for i, f in enumerate(same[:-1]):
                if f.unique_id not in answers:
                    continue
                gap = crashed_after(f.unique_id)
                if gap is not None:
                    excused.append(
                        f"{action} answered {gap * 1000:.1f} ms before a crash/link loss, resent"
                    )
                    # The resend is the same message; if a crash or a lost link cut that
                    # resend off unanswered too, the one after it is (up to the next answer).
                    for later_attempt in same[i + 1 :]:
                        excused_uids.add(later_attempt.unique_id)
                        if later_attempt.unique_id in answers:
                            break
                    continue
                later = [g.unique_id for g in same[i + 1 :]]
                v.append(
                    f"{action} {f.unique_id} was answered but sent again as {later}: {f.payload}"
                )

    # Transactions as the CSMS knows them; an excused StartTransaction resend is the same
    # transaction under a second transactionId (a CSMS deduplicates it by its payload).
    txs: dict[int, Tx] = {}
    by_payload: dict[str, Tx] = {}
    for f in calls:
        if f.action == "StartTransaction" and f.unique_id in answers:
            tx_id = int(answers[f.unique_id]["transactionId"])
            if tx_id in txs:
                v.append(f"transactionId {tx_id} issued twice")
                continue
            first = by_payload.get(_payload_key(f.payload))
            if first is not None and f.unique_id in excused_uids:
                first.aliases.append(tx_id)
                txs[tx_id] = first
                continue
            txs[tx_id] = by_payload[_payload_key(f.payload)] = Tx(tx_id, f)
    for f in calls:
        if f.action == "StopTransaction":
            tx_id = f.payload.get("transactionId")
            if tx_id not in txs:
                v.append(f"StopTransaction for unknown transaction {tx_id}: {f.payload}")
            elif f.unique_id in answers and f.unique_id not in excused_uids:
                txs[tx_id].stops.append(f)
        elif f.action == "MeterValues" and "transactionId" in f.payload:
            tx_id = f.payload["transactionId"]
            if tx_id not in txs:
                v.append(f"MeterValues for unknown transaction {tx_id}: {f.payload}")
            elif f.unique_id in answers:
                txs[tx_id].meter_values.append(f)

    unique = {id(t): t for t in txs.values()}
    txs = {t.tx_id: t for t in unique.values()}
    for tx_id, t in sorted(txs.items()):
        if len(t.stops) > 1:
            v.append(f"transaction {tx_id}: {len(t.stops)} StopTransactions")
        if not t.stops:
            if expect_all_stopped:
                v.append(f"transaction {tx_id}: no StopTransaction")
            continue
        stop = t.stops[0].payload
        if stop.get("reason", "Local") not in STOP_REASONS:
            v.append(f"transaction {tx_id}: invalid reason {stop.get('reason')!r}")
        start_wh, stop_wh = t.meter_start, int(stop["meterStop"])
        if stop_wh < start_wh:
            v.append(f"transaction {tx_id}: meterStop {stop_wh} < meterStart {start_wh}")
        readings: list[tuple[str, float]] = []
        for mv in t.meter_values:
            readings.extend(energy_registers(mv.payload.get("meterValue", [])))
        readings.extend(energy_registers(stop.get("transactionData", [])))
        readings.sort(key=lambda r: r[0])
        previous = float(start_wh)
        for at, wh in readings:
            # Payload values are rounded/formatted: allow 1 Wh of rounding.
            if wh < previous - 1.0:
                v.append(f"transaction {tx_id}: register {wh} at {at} < earlier {previous}")
            if wh > stop_wh + 1.0:
                v.append(f"transaction {tx_id}: register {wh} at {at} > meterStop {stop_wh}")
            previous = max(previous, wh)

    if transactions is not None:
        v.extend(_check_records(txs, transactions, expect_all_stopped))

    if register_start_wh is not None and register_end_wh is not None and power_w is not None:
        v.extend(
            _check_energy(
                txs,
                register_start_wh,
                register_end_wh,
                power_w * (sample_interval_s + tick_interval_s) / 3600.0 + 1.0,
            )
        )
    return Report(v, txs, excused)


def _check_records(
    txs: Mapping[int, Tx], records: Sequence[Mapping[str, Any]], expect_all_stopped: bool
) -> list[str]:
    v: list[str] = []
    known = {i for t in txs.values() for i in (t.tx_id, *t.aliases)}
    by_id = {r["transaction_id"]: r for r in records if r.get("transaction_id") is not None}
    for r in records:
        if expect_all_stopped and r.get("stopped_at") is None:
            v.append(f"station transaction {r['transaction_key']} is still open")
        tx_id = r.get("transaction_id")
        if tx_id is not None and tx_id not in known:
            v.append(f"station transaction {r['transaction_key']}: id {tx_id} unknown to CSMS")
    for tx_id, t in txs.items():
        rec = next((by_id[i] for i in (t.tx_id, *t.aliases) if i in by_id), None)
        if rec is None:
            v.append(f"transaction {tx_id}: no station record with that transactionId")
            continue
        if rec["meter_start_wh"] != t.meter_start:
            v.append(f"transaction {tx_id}: meterStart {t.meter_start} != record {rec}")
        if t.stops and rec.get("stopped_at") is not None:
            if rec["meter_stop_wh"] != t.meter_stop:
                v.append(f"transaction {tx_id}: meterStop {t.meter_stop} != record {rec}")
            if rec["stop_reason"] != t.reason:
                v.append(f"transaction {tx_id}: reason {t.reason} != record {rec}")
    return v


def _check_energy(
    txs: Mapping[int, Tx], register_start_wh: float, register_end_wh: float, tolerance_wh: float
) -> list[str]:
    """Walk the register: between transactions it may only advance by the unbilled tail of
    a killed transaction (<= tolerance); it never runs backwards."""
    v: list[str] = []
    done = sorted((t for t in txs.values() if t.stops), key=lambda t: (t.meter_start, t.tx_id))
    position = float(register_start_wh)
    billed = 0.0
    for t in done:
        assert t.meter_stop is not None
        gap = t.meter_start - position
        if gap < -1.0:
            v.append(
                f"transaction {t.tx_id}: meterStart {t.meter_start} < {position:.1f} Wh already"
                " billed/registered before (the register ran backwards or energy was billed twice)"
            )
        elif gap > tolerance_wh:
            v.append(
                f"transaction {t.tx_id}: {gap:.1f} Wh flowed before it and were never billed"
                f" (allowed {tolerance_wh:.1f} Wh)"
            )
        billed += t.meter_stop - t.meter_start
        position = max(position, float(t.meter_stop))
    tail = register_end_wh - position
    if tail < -1.0:
        v.append(f"meter register {register_end_wh:.1f} Wh < last meterStop {position:.1f} Wh")
    elif tail > tolerance_wh:
        v.append(f"{tail:.1f} Wh registered after the last transaction were never billed")
    unbilled = (register_end_wh - register_start_wh) - billed
    if unbilled > tolerance_wh * max(1, len(done)):
        v.append(f"{unbilled:.1f} Wh of the register delta never billed in total")
    return v


def check_csms(csms: Any, station_id: str, **kwargs: Any) -> Report:
    """``check`` on a DevCsms' own records."""
    return check(csms.received, csms.sent_results, station_id=station_id, **kwargs)
