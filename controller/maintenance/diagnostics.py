"""Diagnostics and security-log archives: what goes in (never a secret) and how big it gets."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.core.timestamps import iso_utc, parse_iso
from controller.runtime.clock import Clock
from controller.security.log import SecurityLog
from controller.storage.store import Store

LOG = logging.getLogger(__name__)

MASK = "***"
_MIN_SECRET_LEN = 4
# A settings row or config key named like this holds a credential: its value never leaves.
_SECRET_NAME = re.compile(
    r"password|passwd|token|secret|authorizationkey|private|credential", re.IGNORECASE
)
# Belt and braces over every member's text, after each source masked its own secrets.
_PEM_PRIVATE = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL
)
_URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@\"']*:)[^\s/@\"']+@")
# The most log bytes read from the journal before the size limit is applied.
_JOURNAL_READ_FACTOR = 8
_MAX_SESSIONS = 1000
JOURNAL_TIMEOUT_S = 30.0


class LogKind(enum.Enum):
    """What the CSMS asked for: the diagnostics (logs, state) or the security log."""

    DIAGNOSTICS = "diagnostics"
    SECURITY = "securitylog"


class BadWindow(ValueError):
    """The oldest requested moment lies after the latest."""


# (since, until) -> (where the lines came from, the lines oldest first)
LogLines = Callable[[datetime | None, datetime | None], Awaitable[tuple[str, list[str]]]]


@dataclass
class DiagnosticsSources:
    """Everything an archive is made of, given by the composition root (this module knows
    neither the config format nor the logging setup)."""

    station_id: str
    clock: Clock
    max_bytes: int
    log_lines: LogLines
    store: Store | None = None
    security_log: SecurityLog | None = None
    config: Callable[[], dict[str, Any]] = dict  # the effective config, secrets masked
    state: Callable[[], dict[str, Any]] = dict  # version, connectors, CSMS link
    backends: Sequence[str] = ("csms",)
    # Known secret values (CSMS password, AuthorizationKey, API token, ...): asked at each
    # build, removed from every member wherever they appear.
    secrets: Callable[[], Iterable[str | None]] = tuple
    mask: Callable[[str], str] | None = None  # the logging's pattern masking, if any


@dataclass(frozen=True)
class Archive:
    filename: str
    data: bytes
    log_source: str = ""
    log_lines: int = 0
    dropped_lines: int = 0  # oldest log lines left out to stay within max_bytes


@dataclass
class _Members:
    files: dict[str, Any] = field(default_factory=dict)  # name -> JSON value
    log_name: str = ""
    log_lines: list[str] = field(default_factory=list)


def file_name(station_id: str, kind: LogKind, now: datetime) -> str:
    """``<station>-<kind>-<UTC time>.tar.gz``: only characters safe in a URL and on FTP."""
    station = re.sub(r"[^A-Za-z0-9._-]", "_", station_id)[:64] or "evsed"
    return f"{station}-{kind.value}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar.gz"


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise BadWindow(f"the oldest time {iso_utc(since)} is after the latest {iso_utc(until)}")


class Scrubber:
    """Removes secrets from text: known values (also JSON-escaped), PEM private keys, URL
    passwords, then the logging's own patterns."""

    def __init__(self, known: Iterable[str | None], mask: Callable[[str], str] | None) -> None:
        values: set[str] = set()
        for value in known:
            if value and len(value) >= _MIN_SECRET_LEN:
                values.add(value)
                values.add(json.dumps(value)[1:-1])
        self._values = sorted(values, key=len, reverse=True)  # longest first
        self._mask = mask

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        text = _PEM_PRIVATE.sub("-----PRIVATE KEY REMOVED-----", text)
        text = _URL_CREDENTIALS.sub(r"\1" + MASK + "@", text)
        if self._mask is not None:
            text = self._mask(text)
        return text


async def build_archive(
    sources: DiagnosticsSources,
    kind: LogKind,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    filename: str | None = None,
) -> Archive:
    """The archive for [since, until] (either end open), at most ``max_bytes``: the oldest
    log lines are left out first. Raises BadWindow for since > until. ``filename``: the
    name already promised to the CSMS (default: ``file_name`` now)."""
    check_window(since, until)
    now = sources.clock.utc_now()
    name = filename or file_name(sources.station_id, kind, now)
    scrub = Scrubber(sources.secrets(), sources.mask)
    members = _Members()
    manifest: dict[str, Any] = {
        "station": sources.station_id,
        "kind": kind.value,
        "created": iso_utc(now),
        "window": {
            "oldest": iso_utc(since) if since else None,
            "latest": iso_utc(until) if until else None,
        },
    }
    if kind is LogKind.SECURITY:
        entries = list(sources.security_log.entries(since, until)) if sources.security_log else []
        members.log_name = "security-log.jsonl"
        members.log_lines = [json.dumps(e, separators=(",", ":")) for e in entries]
        manifest["log_source"] = "security log"
    else:
        try:
            source, lines = await sources.log_lines(since, until)
        except Exception as exc:  # the archive still carries the state without the logs
            LOG.warning("diagnostics: logs unavailable: %s", exc)
            source, lines = f"unavailable ({type(exc).__name__})", []
        members.log_name = "log.txt"
        members.log_lines = lines
        manifest["log_source"] = source
        # Collected here (the store is the event loop's); serialised in the packing thread.
        summary = _database_summary(sources, since, until)
        if sources.store is not None and sources.store.path != ":memory:":
            summary.update(await asyncio.to_thread(_read_only_summary, sources.store.path))
        members.files["database.json"] = summary
        members.files["config.json"] = sources.config()
        members.files["state.json"] = sources.state()
    return await asyncio.to_thread(_pack, name, members, manifest, scrub, sources.max_bytes)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def _pack(
    name: str, members: _Members, manifest: dict[str, Any], scrub: Scrubber, max_bytes: int
) -> Archive:
    """tar.gz of the members; while too big, drop the oldest half of the log lines."""
    files = {k: scrub(_json(v)) for k, v in members.files.items()}
    lines = [scrub(line) for line in members.log_lines]
    keep = len(lines)
    while True:
        dropped = len(lines) - keep
        kept = lines[dropped:]
        manifest["log_lines"] = len(kept)
        manifest["log_lines_dropped"] = dropped
        if dropped:
            manifest["note"] = (
                f"the oldest {dropped} log lines were left out to stay within "
                f"{max_bytes // 1024} kB"
            )
        data = _tar(
            {
                "manifest.json": _json(manifest),
                **files,
                members.log_name: "".join(line + "\n" for line in kept),
            },
            manifest["created"],
        )
        if len(data) <= max_bytes or keep == 0:
            break
        keep //= 2
    return Archive(name, data, str(manifest.get("log_source", "")), len(kept), dropped)


def _tar(files: dict[str, str], created: str) -> bytes:
    import tarfile  # only when an archive is built (start time)

    mtime = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for member, text in files.items():
            raw = text.encode("utf-8")
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            info.mtime = int(mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


# ------------------------------------------------------------------ database summary


def _in_window(at: str | None, since: datetime | None, until: datetime | None) -> bool | None:
    moment = None if at is None else parse_iso(at)
    if moment is None:
        return None
    return (since is None or moment >= since) and (until is None or moment <= until)


def _database_summary(
    sources: DiagnosticsSources, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    store = sources.store
    if store is None:
        return {"store": None}
    summary: dict[str, Any] = {
        "path": store.path,
        "storage": {
            "degraded": store.degraded,
            "reason": store.degraded_reason or None,
            "messages_only_in_memory": store.memory_messages(),
        },
        "queued_messages": {b: store.outbox_count(b) for b in sources.backends},
    }
    sessions = []
    for tx in reversed(store.transactions(limit=_MAX_SESSIONS)):
        started = _in_window(tx.started_at, since, until)
        stopped = _in_window(tx.stopped_at, since, until)
        if started or stopped or (tx.open and until is None):
            sessions.append(
                {
                    "tx_key": tx.tx_key,
                    "connector": tx.connector_id,
                    "id_tag": tx.id_tag,
                    "started_at": tx.started_at,
                    "stopped_at": tx.stopped_at,
                    "stop_reason": tx.stop_reason,
                    "energy_wh": (
                        tx.meter_stop_wh if tx.meter_stop_wh is not None else tx.last_meter_wh
                    )
                    - tx.meter_start_wh,
                    "csms_tx_ids": dict(tx.csms_tx_ids),
                }
            )
    summary["sessions_in_window"] = sessions
    return summary


def _read_only_summary(path: str) -> dict[str, Any]:
    """What only SQL tells: schema version, the queue by action, the settings (secrets
    masked), file and disk sizes; on its own read-only connection."""
    out: dict[str, Any] = {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        return {"read_error": str(exc)}
    try:
        out["schema_version"] = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        out["queued_by_action"] = [
            {"backend": b, "action": a, "count": n}
            for b, a, n in db.execute(
                "SELECT backend, action, COUNT(*) FROM outbox GROUP BY backend, action"
            )
        ]
        out["settings"] = {
            key: (MASK if _SECRET_NAME.search(key) and value else value)
            for key, value in db.execute("SELECT key, value FROM settings ORDER BY key")
        }
    except sqlite3.Error as exc:
        out["read_error"] = str(exc)
    finally:
        db.close()
    try:
        out["file_bytes"] = os.path.getsize(path)
        out["disk_free_bytes"] = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        pass
    return out


# ------------------------------------------------------------------ the journal


async def journal_lines(
    unit: str,
    since: datetime | None,
    until: datetime | None,
    *,
    max_bytes: int,
    journalctl: str = "journalctl",
) -> list[str] | None:
    """The unit's journal entries in [since, until] (short-iso, UTC), newest last; None
    when journalctl is missing, fails or shows nothing (no permission to read the system
    journal prints a hint and no entries)."""
    argv = [journalctl, "--unit", unit, "--output", "short-iso-precise", "--no-pager", "--utc"]
    argv += ["--quiet"]
    if since is not None:
        argv += ["--since", since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]
    if until is not None:
        argv += ["--until", until.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]
    limit = max_bytes * _JOURNAL_READ_FACTOR
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "SYSTEMD_COLORS": "0", "TZ": "UTC"},
        )
    except OSError as exc:
        LOG.info("journal not readable (%s): using the in-memory log", exc.strerror)
        return None
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size = 0
    cut = False
    try:
        async with asyncio.timeout(JOURNAL_TIMEOUT_S):
            while chunk := await proc.stdout.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:  # keep the newest: drop the oldest chunks
                    size -= len(chunks.pop(0))
                    cut = True
            code = await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        code = 0  # what was read so far is still useful
    text = b"".join(chunks).decode("utf-8", "replace")
    lines = text.splitlines()
    if cut:
        lines = lines[1:]  # the first line may be cut
    if code != 0 or not lines:
        LOG.info("journalctl gave no entries (exit %s): using the in-memory log", code)
        return None
    return lines
