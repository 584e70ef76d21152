"""Operations commands: `evsed sessions`, `queue` and `config show`, read straight from the
database (read-only) and the configuration, plus the text of `evsed status`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from controller.config import Config, ConfigError, DeviceConfig, load
from controller.core.records import TxRecord, shown_tx_id
from controller.storage.migrations import SCHEMA_VERSION, SchemaError, current_version
from controller.storage.sessions import (
    session_duration_s,
    session_energy_wh,
    sessions_between,
    sessions_csv,
)
from controller.storage.store import TX_SELECT, tx_record

DEFAULT_CONFIG = "/etc/evsed/evsed.toml"
DEFAULT_TABLE_LIMIT = 20
MASK = "********"
# Any configuration key whose name contains one of these is a credential: never printed.
_SECRET_NAME = re.compile(r"password|token|secret|key", re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
T = TypeVar("T")


class OpsError(Exception):
    """A problem the operator can fix (missing file, permissions); printed as one line."""


# ---------------------------------------------------------------------------- read-only database


def open_readonly(path: str) -> sqlite3.Connection:
    """Open the database without ever writing to it, whether or not the daemon runs.

    With the daemon running (or after a crash) the -wal file holds the newest commits and a
    read-only connection reads it through the -shm index (SQLite 3.22+ manages with a
    read-only -shm too). Without a -wal file the database was closed cleanly and everything is
    in the main file: ``immutable=1`` reads it without creating -wal/-shm files, which a user
    who may not write the directory could not create (``attempt to write a readonly
    database``) and root would leave behind.
    """
    try:
        os.stat(path)
    except FileNotFoundError:
        raise OpsError(
            f"no database at {path} (station.storage); has `evsed run` used this configuration?"
        ) from None
    except PermissionError:
        raise OpsError(_denied(path)) from None
    if not os.access(path, os.R_OK):
        raise OpsError(_denied(path))
    uri = "file:" + quote(os.path.abspath(path))
    attempts = [f"{uri}?mode=ro", f"{uri}?mode=ro&immutable=1"]
    if not os.path.exists(f"{path}-wal"):
        attempts.reverse()
    error: sqlite3.Error | None = None
    for candidate in attempts:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(candidate, uri=True)
            db.execute("PRAGMA query_only = 1")
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            error = exc
            if "not a database" in str(exc):
                raise OpsError(f"{path} is not an SQLite database ({exc})") from None
            continue
        db.row_factory = sqlite3.Row
        _check_version(db, path)
        return db
    if error is not None and any(w in str(error) for w in ("readonly", "unable to open")):
        raise OpsError(f"{_denied(path)} ({error})")
    raise OpsError(f"cannot read {path} ({error})")


def _denied(path: str) -> str:
    return (
        f"cannot read {path}: permission denied; run with sudo, or join the evsed group"
        " (sudo usermod -aG evsed $USER, then log in again)"
    )


def _check_version(db: sqlite3.Connection, path: str) -> None:
    try:
        version = current_version(db)
    except (SchemaError, sqlite3.Error) as exc:
        db.close()
        raise OpsError(f"{path}: cannot read the schema version ({exc})") from None
    if version == 0:
        db.close()
        raise OpsError(f"{path} holds no evsed data (no schema)")
    if version < SCHEMA_VERSION:
        db.close()
        raise OpsError(
            f"{path} has schema version {version}; this evsed reads {SCHEMA_VERSION}. The"
            " daemon upgrades it when it starts: restart it (systemctl restart evsed)"
        )
    if version > SCHEMA_VERSION:
        db.close()
        raise OpsError(
            f"{path} has schema version {version}, newer than this evsed knows"
            f" ({SCHEMA_VERSION}); use the evsed that wrote it"
        )


def _storage_path(config_path: str, db: str | None) -> str:
    if db:
        return db
    try:
        return load(config_path).storage_path
    except ConfigError as exc:
        raise OpsError(f"{config_path}: {exc}") from None


def read_sessions(db: sqlite3.Connection) -> list[TxRecord]:
    """Every transaction, oldest first."""
    db.row_factory = sqlite3.Row
    return [tx_record(row) for row in db.execute(TX_SELECT + " ORDER BY t.tx_key")]


def read_queue(db: sqlite3.Connection, now_s: float) -> list[dict[str, Any]]:
    """Transaction messages waiting in the outbox, oldest first."""
    rows = db.execute(
        "SELECT o.seq, o.backend, o.tx_key, o.action, o.payload, o.attempts, o.created_at,"
        " b.csms_tx_id FROM outbox AS o LEFT JOIN tx_backend AS b"
        " ON b.tx_key = o.tx_key AND b.backend = o.backend ORDER BY o.seq"
    ).fetchall()
    out = []
    for r in rows:
        try:
            payload: Any = json.loads(r["payload"])
        except (TypeError, ValueError):
            payload = None
        created_s = float(r["created_at"])
        out.append(
            {
                "seq": int(r["seq"]),
                "action": str(r["action"]),
                "transaction_key": r["tx_key"],
                # None until the CSMS answered the StartTransaction (offline start).
                "transaction_id": shown_tx_id(r["csms_tx_id"]),
                "backend": str(r["backend"]),
                "attempts": int(r["attempts"]),
                "created_at": datetime.fromtimestamp(created_s, UTC).isoformat(timespec="seconds"),
                "age_s": round(max(0.0, now_s - created_s), 1),
                "payload": payload,
            }
        )
    return out


# ---------------------------------------------------------------------------- formatting


def _printable(text: object, width: int | None = None) -> str:
    """Card and network data for a terminal: control characters shown as '?'."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return out if width is None else out[:width]


def format_age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _utc(text: str | None) -> str:
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _printable(text, 19)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def sessions_table(records: Sequence[TxRecord]) -> list[str]:
    lines = [
        f"{'KEY':>5} {'TX-ID':>7} {'CONN':>4}  {'ID TAG':<20}  {'STARTED (UTC)':<19}"
        f"  {'DURATION':>8} {'kWh':>9}  END"
    ]
    for t in records:
        duration_s = session_duration_s(t)
        duration = ""
        if duration_s is not None:
            duration = f"{int(duration_s) // 3600}:{int(duration_s) % 3600 // 60:02d}"
        end = _printable(t.stop_reason or "stopped", 16) if not t.open else "open"
        lines.append(
            f"{t.tx_key:>5} {_dash(t.shown_tx_id()):>7} {t.connector_id:>4}  "
            f"{_printable(t.id_tag, 20):<20}  {_utc(t.started_at):<19}  {duration:>8} "
            f"{session_energy_wh(t) / 1000:>9.3f}  {end}"
        )
    return lines


def queue_table(messages: Sequence[dict[str, Any]]) -> list[str]:
    lines = [f"{'SEQ':>6}  {'ACTION':<17} {'TX':>5} {'TX-ID':>7} {'ATTEMPTS':>8}  AGE"]
    for m in messages:
        lines.append(
            f"{m['seq']:>6}  {_printable(m['action'], 17):<17} {_dash(m['transaction_key']):>5}"
            f" {_dash(m['transaction_id']):>7} {m['attempts']:>8}  {format_age(m['age_s'])}"
        )
    return lines


# ---------------------------------------------------------------------------- configuration

# Config attributes -> (TOML table, key). Nested dataclasses (csms, standalone) keep their
# field names, which are the TOML keys. A new Config field `<table>_<key>` for an existing
# table lands in that table; anything else in [unmapped] (a test keeps that empty).
_CONFIG_KEYS: dict[str, tuple[str, str]] = {
    "station_id": ("station", "id"),
    "storage_path": ("station", "storage"),
    "log_level": ("logging", "level"),
    "ocpp_overrides": ("ocpp", ""),
}
_STATION_FIELDS = (
    "vendor",
    "model",
    "serial_number",
    "firmware_version",
    "tick_interval_s",
    "resume_transactions",
)
_TABLES = (
    "station",
    "csms",
    "standalone",
    "api",
    "logging",
    "site",
    "security",
    "maintenance",
    "reader",
    "ocpp",
    "connectors",
)


def _place(name: str) -> tuple[str, str]:
    if name in _CONFIG_KEYS:
        return _CONFIG_KEYS[name]
    if name in _STATION_FIELDS:
        return "station", name
    table, _, key = name.partition("_")
    if key and table in _TABLES:
        return table, key
    return "unmapped", name


def _device(dev: DeviceConfig) -> dict[str, Any]:
    return {"driver": dev.driver, **dev.settings}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _backend_table(backend: Any) -> dict[str, Any]:
    table = _plain(backend)
    # One key in the TOML: a version, or the list in order of preference.
    versions = table.pop("ocpp_versions")
    table["ocpp_version"] = versions if len(versions) > 1 else versions[0]
    return table


def effective_config(config: Config) -> dict[str, Any]:
    """The configuration as TOML tables (defaults filled in), secrets masked."""
    out: dict[str, Any] = {t: {} for t in _TABLES}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in ("csms", "standalone", "security", "maintenance"):
            out[f.name] = None if value is None else _plain(value)
            if f.name == "csms" and value is not None:
                out["csms"] = _backend_table(value)
        elif f.name == "backends":
            if value and out.get("csms") is not None:  # [[csms]]: the primary first
                out["csms"] = [out["csms"], *(_backend_table(b) for b in value)]
        elif f.name == "ownership":
            continue  # derived from the [[csms]] roles and allow lists
        elif f.name == "reader":
            out["reader"] = None if value is None else _device(value)
        elif f.name == "connectors":
            out["connectors"] = [
                {"max_current_a": c.max_current_a, **{r: _device(d) for r, d in c.devices.items()}}
                for c in value
            ]
        elif f.name == "ocpp_overrides":
            out["ocpp"] = {**out.get("ocpp", {}), **_plain(value)}
        elif f.name == "device_model_values":  # [ocpp.<Component>] tables (2.0.1)
            out["ocpp"] = {**out.get("ocpp", {}), **_plain(value)}
        elif f.name == "site":
            limits = value.max_current_a
            out["site"] = {
                "max_current_a": None if limits is None else [float(v) for v in limits.values()],
                "fallback_current_a": float(value.fallback_current_a),
            }
        else:
            table, key = _place(f.name)
            out.setdefault(table, {})[key] = _plain(value)
    return {k: v for k, v in _mask(out).items() if v is not None}


def _mask(value: Any, name: str = "") -> Any:
    if name and _SECRET_NAME.search(name) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, name) for v in value]
    return value


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON escapes are valid TOML basic-string escapes; DEL must be escaped in TOML too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + items + " }" if items else "{}"
    return json.dumps(str(value))


def _toml_table(header: str, table: dict[str, Any]) -> list[str]:
    lines = [header]
    subtables = []
    for key, value in table.items():
        if value is None:
            lines.append(f"# {key}: not set")
        elif isinstance(value, dict) and value:
            subtables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    name = header.strip("[]")
    for key, value in subtables:
        lines.append("")
        lines.extend(_toml_table(f"[{name}.{_toml_key(key)}]", value))
    return lines


def config_toml(data: dict[str, Any], source: str) -> str:
    lines = [f"# effective configuration of {source} (defaults filled in, secrets masked)"]
    for table in _TABLES:
        if table not in data:
            continue
        value = data[table]
        lines.append("")
        if table == "connectors":
            for index, connector in enumerate(value, start=1):
                if index > 1:
                    lines.append("")
                lines.extend(_toml_table("[[connectors]]", connector))
            continue
        if table == "ocpp":
            lines.append("# initial OCPP key values (the others have their defaults);")
            lines.append("# values the CSMS set are kept in the database and win")
        lines.extend(_toml_table(f"[{table}]", value))
    if data.get("unmapped"):
        lines.append("")
        lines.extend(_toml_table("[unmapped]", data["unmapped"]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- status


def format_security(security: dict[str, Any]) -> str:
    """One line: profile, the charger certificate, the firmware update, the latest event."""
    parts = [f"profile {security.get('profile')}"]
    cert = security.get("certificate")
    if isinstance(cert, dict):
        parts.append(
            f"certificate {_printable(str(cert.get('subject')), 48)} until {cert.get('not_after')}"
        )
    firmware = security.get("firmware")
    if firmware is not None:
        parts.append(f"firmware {_printable(str(firmware), 32)}")
    event = security.get("last_event")
    if isinstance(event, dict):
        parts.append(
            f"last security event {_printable(str(event.get('kind')), 48)} at {event.get('at')}"
        )
    return ", ".join(parts)


def format_status(data: dict[str, Any]) -> list[str]:
    """The human-readable `evsed status` from GET /api/status."""
    csms = data.get("csms", {})
    first = (
        f"station {data.get('station_id')}: CSMS {csms.get('state')}, "
        f"{csms.get('queued_messages')} message(s) queued"
    )
    if csms.get("last_message_age_s") is not None:
        first += f", last CSMS message {format_age(float(csms['last_message_age_s']))} ago"
    lines = [first]
    backends = data.get("backends")
    if isinstance(backends, list) and len(backends) > 1:
        for b in backends:
            if not isinstance(b, dict):
                continue
            age = b.get("last_message_s_ago")
            lines.append(
                f"  backend {_printable(str(b.get('name')), 32)} ({b.get('role')}, OCPP"
                f" {b.get('ocpp_version')}): {b.get('state')}, {b.get('queued_messages')}"
                " queued" + ("" if age is None else f", last message {format_age(float(age))} ago")
            )
    clock = data.get("clock")
    if isinstance(clock, dict):
        if clock.get("trusted", True):
            source = clock.get("trust_source")
            lines.append(f"  clock: {clock.get('utc')} (trusted, source {source})")
        else:
            lines.append(
                f"  clock: {clock.get('utc')} NOT TRUSTED (source {clock.get('trust_source')}):"
                " waiting for NTP or the CSMS; timestamps may be wrong"
            )
    storage = csms.get("storage")
    if storage == "degraded":
        lines.append(
            "  storage: DEGRADED: the database cannot be written (disk full?); transaction"
            " data is kept in memory and lost on a crash"
        )
    elif storage is not None:
        lines.append(f"  storage: {storage}")
    security = data.get("security")
    if isinstance(security, dict):
        lines.append("  security: " + format_security(security))
    if data.get("simulated"):
        lines.append("  hardware: simulated drivers (not a real charger)")
    for c in data.get("connectors", []):
        tx = c["transaction_id"] if c["transaction_id"] is not None else c["transaction_key"]
        lines.append(
            f"  connector {c['connector']}: {c['status']:<13} vehicle {c['vehicle_state']} "
            f"contactor {'closed' if c['contactor_closed'] else 'open':<6} "
            f"{_watts(c['power_w']):>10}  register {_watt_hours(c['energy_wh'])}"
            + (
                f"  tx {tx} ({_printable(c['id_tag'])}, {c['session_energy_wh']} Wh)"
                if c["transaction_key"] is not None
                else ""
            )
        )
    return lines


def database_summary(path: str, now_s: float) -> dict[str, Any]:
    """What the database says while the daemon cannot be asked: open transactions, queue."""
    db = open_readonly(path)
    try:
        open_tx = [t for t in read_sessions(db) if t.open]
        queue = read_queue(db, now_s)
        version = current_version(db)
    except sqlite3.Error as exc:
        raise OpsError(f"cannot read {path} ({exc})") from None
    finally:
        db.close()
    return {
        "database": path,
        "schema_version": version,
        "open_transactions": [
            {
                "transaction_key": t.tx_key,
                "transaction_id": t.shown_tx_id(),
                "connector": t.connector_id,
                "id_tag": t.id_tag,
                "started_at": t.started_at,
                "energy_wh": session_energy_wh(t),
                "last_meter_at": t.last_meter_at,
            }
            for t in open_tx
        ],
        "queued_messages": len(queue),
        "oldest_queued_age_s": queue[0]["age_s"] if queue else None,
    }


def format_database_summary(summary: dict[str, Any]) -> list[str]:
    lines = [f"daemon not reachable; from the database {summary['database']}:"]
    open_tx = summary["open_transactions"]
    lines.append(f"  open transactions: {len(open_tx)}")
    for t in open_tx:
        tx = t["transaction_id"] if t["transaction_id"] is not None else t["transaction_key"]
        lines.append(
            f"    connector {t['connector']}: tx {tx} ({_printable(t['id_tag'])}) since"
            f" {_utc(t['started_at'])} UTC, {t['energy_wh']} Wh until {_utc(t['last_meter_at'])}"
        )
    queued = summary["queued_messages"]
    oldest = summary["oldest_queued_age_s"]
    lines.append(
        f"  queued messages: {queued}"
        + (f" (oldest {format_age(oldest)} old)" if oldest is not None else "")
    )
    return lines


def offline_status(args: argparse.Namespace) -> bool:
    """`evsed status` without a daemon: print what the database says (to stdout). Returns
    False when there is no configuration or database to read either."""
    config_path = getattr(args, "config", None) or (
        DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None
    )
    if config_path is None:
        return False
    try:
        summary = database_summary(_storage_path(config_path, None), time.time())
    except OpsError as exc:
        print(f"daemon not reachable, and no database summary: {exc}", file=sys.stderr)
        return False
    if getattr(args, "json", False):
        print(json.dumps({"daemon": "unreachable", **summary}, indent=2))
    else:
        print("\n".join(format_database_summary(summary)))
    return True


# ---------------------------------------------------------------------------- commands


def _date_arg(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: use a date like 2026-01-31")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a calendar date") from None


def _read(args: argparse.Namespace, reader: Callable[[sqlite3.Connection], T]) -> T:
    path = _storage_path(args.config, args.db)
    db = open_readonly(path)
    try:
        return reader(db)
    except sqlite3.Error as exc:  # e.g. a table damaged, or changed by hand
        raise OpsError(f"cannot read {path} ({exc})") from None
    finally:
        db.close()


def _fail(exc: OpsError) -> int:
    print(f"evsed: {exc}", file=sys.stderr)
    return 1


def cmd_sessions(args: argparse.Namespace) -> int:
    if args.date_from and args.date_to and args.date_from > args.date_to:
        print("evsed: --from must not be after --to", file=sys.stderr)
        return 2
    try:
        records = _read(args, read_sessions)
    except OpsError as exc:
        return _fail(exc)
    selected = sessions_between(records, args.date_from, args.date_to)
    limit = args.limit if args.limit is not None else (0 if args.csv else DEFAULT_TABLE_LIMIT)
    shown = selected[-limit:] if limit > 0 else selected
    if args.csv:
        sys.stdout.write(sessions_csv(shown))
        return 0
    if not shown:
        print("no sessions" + (" in that date range" if len(records) else ""))
        return 0
    print("\n".join(sessions_table(shown)))
    open_count = sum(1 for t in shown if t.open)
    total_kwh = sum(session_energy_wh(t) for t in shown) / 1000
    footer = f"{len(shown)} session(s), {total_kwh:.3f} kWh"
    if open_count:
        footer += f", {open_count} still open"
    if len(shown) < len(selected):
        footer += f" (the latest {len(shown)} of {len(selected)}; --limit 0 shows all)"
    print(footer)
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    try:
        messages = _read(args, lambda db: read_queue(db, time.time()))
    except OpsError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages:
        print("queue empty: no transaction messages waiting for the CSMS")
        return 0
    print("\n".join(queue_table(messages)))
    oldest = format_age(messages[0]["age_s"])
    print(f"{len(messages)} message(s) waiting for the CSMS, oldest {oldest} old")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 2
    data = effective_config(config)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(config_toml(data, args.config))
    return 0


def add_subcommands(sub: Any) -> None:
    """Wire `sessions`, `queue` and `config show` into the `evsed` parser."""
    db_help = "read this database file instead of station.storage of the config"
    p = sub.add_parser(
        "sessions",
        help="list charging sessions from the database (read-only)",
        description="Charging sessions, oldest first, read directly from the database "
        "(read-only; works whether or not the daemon runs).",
    )
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("--db", metavar="FILE", help=db_help)
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"only the latest N sessions (default {DEFAULT_TABLE_LIMIT}, all with --csv; 0: all)",
    )
    p.add_argument("--csv", action="store_true", help="CSV for a spreadsheet (as the web export)")
    p.add_argument(
        "--from", dest="date_from", type=_date_arg, metavar="DATE", help="started on/after (UTC)"
    )
    p.add_argument(
        "--to", dest="date_to", type=_date_arg, metavar="DATE", help="started on/before (UTC)"
    )
    p.set_defaults(fn=cmd_sessions)

    p = sub.add_parser(
        "queue",
        help="transaction messages waiting for the CSMS (read-only)",
        description="The outbox: transaction messages stored until the CSMS confirms them.",
    )
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    p.add_argument("--db", metavar="FILE", help=db_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_queue)

    p = sub.add_parser("config", help="show the effective configuration")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    sp = csub.add_parser(
        "show",
        help="the configuration after defaults, secrets masked",
        description="The configuration with every default filled in. Keys whose name "
        "contains password, token, secret or key are masked.",
    )
    sp.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_config_show)


def _watts(power_w: float | None) -> str:
    """Power for the status line; "–" while the meter does not answer (never a made-up 0)."""
    return "– W" if power_w is None else f"{power_w:.0f} W"


def _watt_hours(energy_wh: float | None) -> str:
    """The register for the status line; "–" before the meter's first reading."""
    return "– Wh" if energy_wh is None else f"{energy_wh:.0f} Wh"
