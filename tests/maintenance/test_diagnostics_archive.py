"""controller/maintenance/diagnostics.py: what an archive holds for a time window, its size
limit, the journal as a source (a fake `journalctl` executable on disk) and that no secret
ever gets in (each secret planted where it could leak, then searched in the extracted bytes)."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.core.security import SecurityEventKind
from controller.maintenance.diagnostics import (
    BadWindow,
    DiagnosticsSources,
    LogKind,
    build_archive,
    journal_lines,
)
from controller.ops.logsetup import RingHandler, SecretFilter
from controller.runtime.clock import ManualClock
from controller.security.log import SecurityLog
from controller.storage.store import open_store

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDsecretkeybody\n"
    "-----END PRIVATE KEY-----"
)


def extract(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
        return out


class Rig:
    """A real store and security log, a ring handler fed through a real logger."""

    def __init__(self, tmp_path: Path, *, max_bytes: int = 1 << 20) -> None:
        self.clock = ManualClock(T0)
        self.store = open_store(tmp_path / "evsed.db")
        self.security_log = SecurityLog(tmp_path / "security" / "security.log", clock=self.clock)
        self.ring = RingHandler()
        self.ring.now = self.clock.utc_now
        self.log = logging.getLogger(f"test.diag.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.log.addHandler(self.ring)
        self.secrets: list[str | None] = []

        async def log_lines(since: datetime | None, until: datetime | None) -> Any:
            return "ring", self.ring.lines(since, until)

        self.sources = DiagnosticsSources(
            station_id="CP/1 test",
            clock=self.clock,
            max_bytes=max_bytes,
            log_lines=log_lines,
            store=self.store,
            security_log=self.security_log,
            config=lambda: {"csms": {"url": "ws://csms.example/ocpp", "password": "********"}},
            state=lambda: {"version": "test", "connectors": [{"id": 1, "phase": "Idle"}]},
            secrets=lambda: self.secrets,
            mask=SecretFilter().mask,
        )

    def at(self, offset: timedelta) -> None:
        self.clock.step_wall(T0 + offset)


async def test_diagnostics_window_and_members(tmp_path: Path) -> None:
    """6.25 startTime/stopTime: only log lines and sessions of the window; the database
    summary, the masked config, version and connectors' state are there."""
    rig = Rig(tmp_path)
    rig.log.warning("line before the window")
    rig.at(timedelta(hours=1))
    rig.log.warning("line inside the window")
    rig.at(timedelta(hours=2))
    rig.log.warning("line after the window")
    archive = await build_archive(
        rig.sources,
        LogKind.DIAGNOSTICS,
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=90),
    )
    assert archive.filename == "CP_1_test-diagnostics-20260101T140000Z.tar.gz"
    files = extract(archive.data)
    assert set(files) == {"manifest.json", "log.txt", "database.json", "config.json", "state.json"}
    log = files["log.txt"].decode()
    assert "inside the window" in log
    assert "before the window" not in log and "after the window" not in log
    manifest = json.loads(files["manifest.json"])
    assert manifest["window"] == {
        "oldest": "2026-01-01T12:30:00.000+00:00",
        "latest": "2026-01-01T13:30:00.000+00:00",
    }
    assert manifest["log_lines"] == 1 and manifest["log_lines_dropped"] == 0
    db = json.loads(files["database.json"])
    assert db["schema_version"] >= 1
    assert db["queued_messages"] == {"csms": 0}
    assert db["storage"]["degraded"] is False
    assert json.loads(files["state.json"])["connectors"][0]["phase"] == "Idle"


async def test_security_log_archive_holds_the_window_of_the_security_log(tmp_path: Path) -> None:
    """N01.FR.03: GetLog SecurityLog uploads the security log (only that)."""
    rig = Rig(tmp_path)
    rig.security_log.record(SecurityEventKind.STARTUP_OF_THE_DEVICE)
    rig.at(timedelta(hours=1))
    rig.security_log.record(SecurityEventKind.RESET_OR_REBOOT, "Soft reset by the CSMS")
    archive = await build_archive(rig.sources, LogKind.SECURITY, T0 + timedelta(minutes=1))
    files = extract(archive.data)
    assert set(files) == {"manifest.json", "security-log.jsonl"}
    entries = [json.loads(line) for line in files["security-log.jsonl"].splitlines()]
    assert [e["kind"] for e in entries] == ["ResetOrReboot"]
    assert entries[0]["tech_info"] == "Soft reset by the CSMS"


async def test_reversed_window_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    with pytest.raises(BadWindow):
        await build_archive(rig.sources, LogKind.DIAGNOSTICS, T0, T0 - timedelta(seconds=1))


async def test_archive_stays_within_max_bytes_newest_lines_kept(tmp_path: Path) -> None:
    """[maintenance] diagnostics_max_kb: the oldest lines are left out, the manifest says so."""
    rig = Rig(tmp_path, max_bytes=16 * 1024)
    for i in range(1500):
        rig.log.warning("line %04d %s", i, os.urandom(24).hex())  # incompressible
    archive = await build_archive(rig.sources, LogKind.DIAGNOSTICS)
    assert len(archive.data) <= 16 * 1024
    files = extract(archive.data)
    manifest = json.loads(files["manifest.json"])
    assert manifest["log_lines_dropped"] > 0 and "left out" in manifest["note"]
    assert "line 1499 " in files["log.txt"].decode()
    assert "line 0000 " not in files["log.txt"].decode()


async def test_no_secret_ever_goes_into_an_archive(tmp_path: Path) -> None:
    """Each secret planted where it could leak (log lines, the settings table, the security
    log), then searched in every extracted byte of both archive kinds."""
    rig = Rig(tmp_path)
    password, auth_key, token = "csms-PASS-w0rd!", "AK-0123456789abcdef", "api-TOKEN-zyxwvuts"
    url_password = "URLpw-4242"
    rig.secrets = [password, auth_key, token]
    rig.store.set_setting("cfg.AuthorizationKey", auth_key)
    rig.store.set_setting("cfg.SomeToken", "looks-like-a-token")
    rig.log.warning("connecting with password %s", password)
    rig.log.warning("AuthorizationKey is now %s", auth_key)
    rig.log.warning('{"key": "AuthorizationKey", "value": "%s"}', auth_key)
    rig.log.warning("Authorization: Bearer %s", token)
    rig.log.warning("bare token %s in a sentence", token)
    rig.log.warning("key file:\n%s", PRIVATE_KEY)
    rig.log.warning("uploading to ftp://diag:%s@ftp.example:21/in", url_password)
    rig.security_log.record(SecurityEventKind.INVALID_MESSAGES, f"carried {auth_key}")
    secrets = [password, auth_key, token, url_password, "secretkeybody", "looks-like-a-token"]
    for kind in LogKind:
        archive = await build_archive(rig.sources, kind)
        blob = b"".join(extract(archive.data).values())
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret} leaked into the {kind.value} archive"
    # ... while what is not secret is still there to read.
    archive = await build_archive(rig.sources, LogKind.DIAGNOSTICS)
    log = extract(archive.data)["log.txt"].decode()
    assert "uploading to ftp://diag:***@ftp.example:21/in" in log
    assert "PRIVATE KEY REMOVED" in log


def _fake_journalctl(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bin" / "journalctl"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_journal_entries_of_the_unit_in_the_window(tmp_path: Path) -> None:
    """Under systemd the unit's journal is the log source: journalctl is asked for the unit
    and the window in UTC."""
    fake = _fake_journalctl(
        tmp_path,
        "printf '2026-01-01T12:00:01+0000 host evsed[1]: one\\n"
        "2026-01-01T12:00:02+0000 host evsed[1]: two\\n'",
    )
    lines = await journal_lines(
        "evsed.service",
        T0,
        T0 + timedelta(hours=1),
        max_bytes=4096,
        journalctl=str(fake),
    )
    assert lines is not None and [line.rsplit(" ", 1)[1] for line in lines] == ["one", "two"]
    argv = (tmp_path / "argv").read_text()
    assert "--unit evsed.service" in argv
    assert "--since 2026-01-01 12:00:00 UTC --until 2026-01-01 13:00:00 UTC" in argv


async def test_journal_unreadable_or_missing_gives_none(tmp_path: Path) -> None:
    """No permission to read the system journal (journalctl prints only a hint), a failing
    or a missing journalctl: None, so the caller uses the in-memory ring."""
    empty = _fake_journalctl(tmp_path, "echo 'Hint: You are currently not seeing messages' >&2")
    assert (
        await journal_lines("evsed.service", None, None, max_bytes=4096, journalctl=str(empty))
        is None
    )
    failing = _fake_journalctl(tmp_path, "echo x; exit 1")
    assert (
        await journal_lines("evsed.service", None, None, max_bytes=4096, journalctl=str(failing))
        is None
    )
    missing = str(tmp_path / "nowhere" / "journalctl")
    assert (
        await journal_lines("evsed.service", None, None, max_bytes=4096, journalctl=missing) is None
    )
