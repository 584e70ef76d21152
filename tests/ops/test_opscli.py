"""Operations commands (controller/ops/opscli.py) through the real `evsed` CLI: sessions, queue and
config show read a database written by the real Store (read-only, with and without a writer)
and a real config file; status shows clock, storage and CSMS, or the database when the daemon
is down."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli import main
from controller.config import load, parse
from controller.dev.devcsms import DevCsms
from controller.ops.opscli import MASK, effective_config
from controller.storage.migrations import SCHEMA_VERSION
from controller.storage.sessions import sessions_csv
from controller.storage.store import Store
from tests.conftest import CARD, STATION_ID
from tests.journal16 import confirm_start, enqueue, start_msgs, stop_msgs

ROOT = Path(__file__).resolve().parents[2]
EVSED = ROOT / ".venv" / "bin" / "evsed"
EXAMPLE_TEXT = (ROOT / "controller" / "examples" / "evsed.toml").read_text(encoding="utf-8")

PASSWORD = "csms-pass-Zq81"
API_TOKEN = "api-token-9f8e7d6c5b4a3210"
AUTH_KEY = "00112233445566778899AABB"  # OCPP AuthorizationKey (hex)

T0 = "2026-01-01T12:00:00.000+00:00"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def write_config(tmp_path: Path, db: Path, *, secrets: bool = True, port: int = 8080) -> Path:
    text = EXAMPLE_TEXT.replace('storage = "./evsed.db"', f'storage = "{db}"')
    text = text.replace("port = 8080", f"port = {port}")
    if secrets:
        text = text.replace(
            '# password = "secret-from-your-csms"', f'password = "{PASSWORD}"'
        ).replace("[api]", f'[api]\ntoken = "{API_TOKEN}"')
        text += f'AuthorizationKey = "{AUTH_KEY}"\n'
    path = tmp_path / "evsed.toml"
    path.write_text(text, encoding="utf-8")
    return path


def begin(store: Store, connector: int, id_tag: str, meter_wh: int, at: str) -> int:
    payload = {"connectorId": connector, "idTag": id_tag, "meterStart": meter_wh, "timestamp": at}
    return store.begin_transaction(
        connector_id=connector,
        id_tag=id_tag,
        meter_start_wh=meter_wh,
        started_at=at,
        reservation_id=None,
        messages=start_msgs(payload),
    )


def end(store: Store, tx_key: int, meter_wh: int, at: str, reason: str = "Local") -> None:
    payload = {"meterStop": meter_wh, "timestamp": at, "reason": reason}
    assert store.end_transaction(
        tx_key, meter_stop_wh=meter_wh, stopped_at=at, reason=reason, messages=stop_msgs(payload)
    )


def populate(store: Store) -> None:
    """Three sessions over three days: two confirmed by the CSMS and closed, one started
    offline and still open (no transactionId yet) with readings queued."""
    k1 = begin(store, 1, "04A1B2C3", 1000, "2026-01-01T12:00:00.000+00:00")
    start = store.outbox_head()
    assert start is not None
    confirm_start(store, start.seq, k1, 501)
    end(store, k1, 6500, "2026-01-01T13:30:00.000+00:00")
    stop = store.outbox_head()
    assert stop is not None
    store.outbox_delete(stop.seq)

    k2 = begin(store, 2, "=HYPERLINK(1)", 20000, "2026-01-02T23:50:00.000+00:00")
    head = store.outbox_head()
    assert head is not None
    confirm_start(store, head.seq, k2, 502)
    end(store, k2, 20750, "2026-01-03T00:35:00.000+00:00", reason="EVDisconnected")
    # Its StopTransaction stays queued: the CSMS went away; two attempts so far.
    store.outbox_mark_attempt(store.outbox_head().seq)  # type: ignore[union-attr]
    store.outbox_mark_attempt(store.outbox_head().seq)  # type: ignore[union-attr]

    k3 = begin(store, 1, "DEADBEEF", 6500, "2026-01-03T08:00:00.000+00:00")
    enqueue(
        store,
        k3,
        "MeterValues",
        {"connectorId": 1, "meterValue": []},
        energy_wh=8000,
        at="2026-01-03T08:45:00.000+00:00",
    )


def age_rows(db: Path, seconds_ago: dict[int, float]) -> None:
    """Backdate outbox rows (the Store stamps them with the wall clock)."""
    conn = sqlite3.connect(db)
    with conn:
        for seq, ago in seconds_ago.items():
            conn.execute("UPDATE outbox SET created_at = ? WHERE seq = ?", (time.time() - ago, seq))
    conn.close()


def fingerprint(db: Path) -> str:
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = Path(f"{db}{suffix}")
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "evsed.db"
    store = Store(path)
    populate(store)
    store.close()
    yield path


@pytest.fixture
def config(tmp_path: Path, db: Path) -> Path:
    return write_config(tmp_path, db)


# --------------------------------------------------------------------------- sessions

SESSIONS_HEADER = (
    "  KEY   TX-ID CONN  ID TAG                STARTED (UTC)        DURATION       kWh  END"
)
ROW_1 = "    1     501    1  04A1B2C3              2026-01-01 12:00:00      1:30     5.500  Local"
ROW_2 = (
    "    2     502    2  =HYPERLINK(1)         2026-01-02 23:50:00      0:45     0.750"
    "  EVDisconnected"
)
ROW_3 = "    3       -    1  DEADBEEF              2026-01-03 08:00:00      0:45     1.500  open"


def test_sessions_table(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sessions", "-c", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        SESSIONS_HEADER,
        ROW_1,
        ROW_2,
        ROW_3,
        "3 session(s), 7.750 kWh, 1 still open",
    ]


def test_sessions_limit_and_dates(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--limit", "1")
    assert code == 0
    assert out.splitlines()[1:] == [
        ROW_3,
        "1 session(s), 1.500 kWh, 1 still open (the latest 1 of 3; --limit 0 shows all)",
    ]
    # Dates are UTC start dates, both ends included: session 2 started on Jan 2.
    code, out, _ = run(
        capsys, "sessions", "-c", str(config), "--from", "2026-01-02", "--to", "2026-01-02"
    )
    assert out.splitlines()[1:] == [ROW_2, "1 session(s), 0.750 kWh"]
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--from", "2026-01-02")
    assert out.splitlines()[1:3] == [ROW_2, ROW_3]
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--to", "2026-01-01")
    assert out.splitlines()[1:] == [ROW_1, "1 session(s), 5.500 kWh"]
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--from", "2027-01-01")
    assert (code, out) == (0, "no sessions in that date range\n")
    code, _, err = run(
        capsys, "sessions", "-c", str(config), "--from", "2026-01-03", "--to", "2026-01-01"
    )
    assert code == 2 and "--from must not be after --to" in err
    with pytest.raises(SystemExit) as info:
        main(["sessions", "-c", str(config), "--from", "2026-02-30"])
    assert info.value.code == 2
    assert "not a calendar date" in capsys.readouterr().err


def test_sessions_csv_is_the_export_csv(
    config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--csv")
    assert code == 0
    store = Store(db)
    try:
        expected = sessions_csv(reversed(store.transactions(limit=100)))
    finally:
        store.close()
    assert out == expected
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["transaction_id"] for r in rows] == ["501", "502", ""]
    assert rows[1]["id_tag"] == "'=HYPERLINK(1)"  # formula-safe, as in the web export
    assert rows[1]["energy_kwh"] == "0.750" and rows[1]["stop_reason"] == "EVDisconnected"
    code, out, _ = run(capsys, "sessions", "-c", str(config), "--csv", "--from", "2026-01-03")
    assert len(list(csv.DictReader(io.StringIO(out)))) == 1


def test_sessions_read_while_a_writer_has_the_database_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon's Store keeps the database open; its latest commits are in the WAL only.
    The CLI sees them, and writes nothing (the writer carries on, no lock left behind)."""
    db = tmp_path / "live.db"
    store = Store(db)
    try:
        store._db.execute("PRAGMA wal_autocheckpoint = 0")  # keep every commit in the WAL
        populate(store)
        assert Path(f"{db}-wal").stat().st_size > 0
        before = fingerprint(db)
        code, out, _ = run(capsys, "sessions", "--db", str(db))
        assert code == 0 and out.splitlines()[1:4] == [ROW_1, ROW_2, ROW_3]
        assert fingerprint(db) == before
        end(store, 3, 9000, "2026-01-03T09:00:00.000+00:00")
        code, out, _ = run(capsys, "sessions", "--db", str(db), "--limit", "1")
        assert "1:00     2.500  Local" in out.splitlines()[1]
        code, out, _ = run(capsys, "queue", "--db", str(db))
        assert "4 message(s) waiting for the CSMS" in out
    finally:
        store.close()


def test_sessions_of_a_stopped_daemon_create_no_files(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No -wal: the database was closed cleanly; reading it leaves no -wal/-shm behind (they
    would belong to whoever ran the command)."""
    assert not Path(f"{db}-wal").exists()
    before = sorted(p.name for p in db.parent.iterdir())
    code, out, _ = run(capsys, "sessions", "--db", str(db))
    assert code == 0 and ROW_3 in out
    assert sorted(p.name for p in db.parent.iterdir()) == before


async def test_sessions_and_queue_of_a_running_charger(
    charger: Any, csms: DevCsms, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await charger(csms)
    h.plug()
    await h.settle(lambda: h.connector().state.phase.value == "Preparing")
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(120, step_s=10)
    path = h.app.config.storage_path
    code, out, _ = await asyncio.to_thread(run, capsys, "sessions", "--db", path)
    row = out.splitlines()[1].split()
    assert code == 0 and row[:4] == ["1", "1", "1", CARD] and row[-1] == "open"
    h.unplug()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: h.app.store.outbox_count() == 0)
    code, out, _ = await asyncio.to_thread(run, capsys, "sessions", "--db", path)
    assert out.splitlines()[1].split()[-1] == "EVDisconnected"
    code, out, _ = await asyncio.to_thread(run, capsys, "queue", "--db", path)
    assert out == "queue empty: no transaction messages waiting for the CSMS\n"


def test_missing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, tmp_path / "nowhere" / "evsed.db")
    for argv in (["sessions"], ["queue"], ["queue", "--json"]):
        code, out, err = run(capsys, *argv, "-c", str(config))
        assert (code, out) == (1, "")
        assert err == (
            f"evsed: no database at {tmp_path / 'nowhere' / 'evsed.db'} (station.storage);"
            " has `evsed run` used this configuration?\n"
        )
    assert not (tmp_path / "nowhere").exists()


def test_not_a_database_and_newer_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 512)
    code, _, err = run(capsys, "sessions", "--db", str(junk))
    assert code == 1 and "is not an SQLite database" in err
    newer = tmp_path / "newer.db"
    Store(newer).close()
    conn = sqlite3.connect(newer)
    with conn:
        conn.execute("INSERT INTO schema_version VALUES (?, '', 'future')", (SCHEMA_VERSION + 1,))
    conn.close()
    code, _, err = run(capsys, "queue", "--db", str(newer))
    assert code == 1
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this evsed knows" in err
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)")
    code, _, err = run(capsys, "sessions", "--db", str(empty))
    assert code == 1 and "holds no evsed data" in err
    damaged = tmp_path / "damaged.db"
    Store(damaged).close()
    conn = sqlite3.connect(damaged)
    conn.execute("DROP TABLE outbox")
    conn.close()
    code, out, err = run(capsys, "queue", "--db", str(damaged))
    assert (code, out) == (1, "")
    assert err == f"evsed: cannot read {damaged} (no such table: outbox)\n"


def test_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(EXAMPLE_TEXT.replace("[api]", "[api"), encoding="utf-8")
    code, _, err = run(capsys, "sessions", "-c", str(path))
    assert code == 1 and err.startswith(f"evsed: {path}: file: ") and err.count("\n") == 1
    code, _, err = run(capsys, "config", "show", "-c", str(path))
    assert code == 2 and err.startswith(f"{path}: error: file:")


# --------------------------------------------------------------------------- as another user


def _other_user_python() -> list[str] | None:
    """A Python that `nobody` can run with this checkout and its dependencies, or None."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return None
    site = next((p for p in sys.path if p.endswith("site-packages")), None)
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(python) or site is None:
            continue
        cmd = ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={ROOT}:{site}", python]
        probe = subprocess.run(
            [*cmd, "-c", "import sys, controller.ops.opscli; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            timeout=60,
        )
        if probe.returncode == 0:
            return cmd
    return None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can enter but not write (like /var/lib/evsed)."""
    path = Path(f"/tmp/evsed-opscli-{os.getpid()}-{time.monotonic_ns()}")
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_other_user_reads_running_and_stopped_database(shared_dir: Path) -> None:
    """As `nobody` (read access only, cannot create files next to the database): with the
    writer running (read-only -shm) and after it stopped (no -wal at all)."""
    cmd = _other_user_python()
    if cmd is None:
        pytest.skip("needs root, runuser and a system Python 3.11+ that can import evsed")
    db = shared_dir / "evsed.db"
    store = Store(db)
    try:
        # Every commit stays in the WAL: read through the (read-only) -shm or not at all.
        store._db.execute("PRAGMA wal_autocheckpoint = 0")
        populate(store)
        for p in shared_dir.iterdir():
            p.chmod(0o644)
        live = subprocess.run(
            [*cmd, "-m", "controller.cli", "sessions", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert live.returncode == 0, live.stderr
        assert live.stdout.splitlines()[1:4] == [ROW_1, ROW_2, ROW_3]
    finally:
        store.close()
    assert not Path(f"{db}-wal").exists()
    stopped = subprocess.run(
        [*cmd, "-m", "controller.cli", "queue", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert "3 message(s) waiting for the CSMS" in stopped.stdout
    db.chmod(0o600)
    denied = subprocess.run(
        [*cmd, "-m", "controller.cli", "sessions", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1
    assert denied.stderr == (
        f"evsed: cannot read {db}: permission denied; run with sudo, or join the evsed group"
        " (sudo usermod -aG evsed $USER, then log in again)\n"
    )


# --------------------------------------------------------------------------- queue


def test_queue_table_and_json(config: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    age_rows(db, {4: 2 * 86400 + 3 * 3600 + 600, 5: 3 * 3600 + 4 * 60 + 30, 6: 125})
    code, out, err = run(capsys, "queue", "-c", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "   SEQ  ACTION               TX   TX-ID ATTEMPTS  AGE",
        "     4  StopTransaction       2     502        2  2d 03h",
        "     5  StartTransaction      3       -        0  3h 04m",
        "     6  MeterValues           3       -        0  2m 05s",
        "3 message(s) waiting for the CSMS, oldest 2d 03h old",
    ]
    code, out, _ = run(capsys, "queue", "-c", str(config), "--json")
    messages = json.loads(out)
    assert [
        (m["seq"], m["action"], m["transaction_key"], m["transaction_id"]) for m in messages
    ] == [
        (4, "StopTransaction", 2, 502),
        (5, "StartTransaction", 3, None),
        (6, "MeterValues", 3, None),
    ]
    assert [m["attempts"] for m in messages] == [2, 0, 0]
    assert 125 <= messages[2]["age_s"] < 125 + 60
    assert messages[0]["payload"] == {
        "meterStop": 20750,
        "timestamp": "2026-01-03T00:35:00.000+00:00",
        "reason": "EVDisconnected",
    }
    assert messages[1]["payload"]["idTag"] == "DEADBEEF"


# --------------------------------------------------------------------------- config show


def test_config_show_masks_secrets(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = run(capsys, "config", "show", "-c", str(config))
    assert (code, err) == (0, "")
    code, js, _ = run(capsys, "config", "show", "-c", str(config), "--json")
    for out in (text, js):
        for secret in (PASSWORD, API_TOKEN, AUTH_KEY):
            assert secret not in out
    assert f'password = "{MASK}"' in text
    assert f'token = "{MASK}"' in text
    assert f'AuthorizationKey = "{MASK}"' in text
    data = json.loads(js)
    assert data["csms"]["password"] == MASK
    assert data["api"]["token"] == MASK
    assert data["ocpp"]["AuthorizationKey"] == MASK
    assert data["ocpp"]["HeartbeatInterval"] == 300
    # Defaults are filled in.
    assert data["csms"]["reconnect_max_s"] == 60.0
    assert data["station"]["tick_interval_s"] == 1.0
    assert data["connectors"][0]["max_current_a"] == 16.0
    assert data["connectors"][0]["vehicle"] == {"driver": "sim", "power_w": 11000, "phases": 3}
    assert "unmapped" not in data


def test_config_show_text_is_the_same_configuration(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without secrets the text output is TOML that loads to an equal configuration."""
    config = write_config(tmp_path, db, secrets=False)
    code, text, _ = run(capsys, "config", "show", "-c", str(config))
    assert code == 0
    assert text.startswith(f"# effective configuration of {config} (defaults filled in")
    assert "# serial_number: not set" in text
    assert parse(tomllib.loads(text)) == load(config)


def test_config_show_covers_every_config_field(config: Path) -> None:
    data = effective_config(load(config))
    assert set(data) == {
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
    }
    assert data["api"]["host"] == "127.0.0.1" and data["logging"]["level"] == "INFO"


# --------------------------------------------------------------------------- status


async def test_status_shows_clock_storage_and_csms(
    charger: Any, csms: DevCsms, capsys: pytest.CaptureFixture[str]
) -> None:
    h = await charger(csms)
    url = f"http://127.0.0.1:{h.app.api.port}"
    code, out, _ = await asyncio.to_thread(run, capsys, "status", "--api", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"station {STATION_ID}: CSMS accepted, 0 message(s) queued")
    clock = h.app.clock
    trust = "trusted" if getattr(clock, "trusted", True) else "NOT TRUSTED"
    assert lines[1].startswith("  clock: 20") and trust in lines[1]
    assert "  storage: ok" in lines
    assert "  hardware: simulated drivers (not a real charger)" in lines
    assert any(line.startswith("  connector 1: Available") for line in lines)


def test_status_degraded_storage_and_untrusted_clock_text() -> None:
    from controller.ops.opscli import format_status

    data = {
        "station_id": "CP-1",
        "connectors": [],
        "clock": {"utc": "1970-01-01T00:01:00.000+00:00", "trusted": False, "trust_source": "none"},
        "csms": {"state": "connecting", "queued_messages": 12, "storage": "degraded"},
    }
    lines = format_status(data)
    assert lines[0] == "station CP-1: CSMS connecting, 12 message(s) queued"
    assert lines[1].startswith("  clock: 1970-01-01T00:01:00.000+00:00 NOT TRUSTED (source none)")
    assert lines[2].startswith("  storage: DEGRADED")


def test_status_without_daemon_reads_the_database(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, db, port=_closed_port())
    age_rows(db, {4: 3 * 3600 + 60})
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["status", "-c", str(config)])
    assert str(info.value.code).startswith("evsed: cannot reach http://127.0.0.1:")
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"daemon not reachable; from the database {db}:",
        "  open transactions: 1",
        "    connector 1: tx 3 (DEADBEEF) since 2026-01-03 08:00:00 UTC, 1500 Wh until"
        " 2026-01-03 08:45:00",
        "  queued messages: 3 (oldest 3h 01m old)",
    ]
    with pytest.raises(SystemExit):
        main(["status", "-c", str(config), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["daemon"] == "unreachable"
    assert data["queued_messages"] == 3 and data["schema_version"] == SCHEMA_VERSION
    assert [t["transaction_key"] for t in data["open_transactions"]] == [3]


# --------------------------------------------------------------------------- real processes


def test_subprocess_evsed_commands(config: Path, db: Path) -> None:
    def evsed(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(EVSED), *argv], capture_output=True, text=True, timeout=60, cwd=config.parent
        )

    result = evsed("sessions", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:4] == [ROW_1, ROW_2, ROW_3]
    result = evsed("queue", "-c", str(config), "--json")
    assert [m["seq"] for m in json.loads(result.stdout)] == [4, 5, 6]
    result = evsed("config", "show", "-c", str(config))
    assert result.returncode == 0 and MASK in result.stdout
    for secret in (PASSWORD, API_TOKEN, AUTH_KEY):
        assert secret not in result.stdout + result.stderr
    result = evsed("sessions", "-c", str(config.parent / "missing.toml"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr
