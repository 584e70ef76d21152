"""Logging: journald's native protocol on a real AF_UNIX datagram socket, secrets, fallback."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.dev.devcsms import DevCsms
from controller.ops.logsetup import (
    JournalHandler,
    SecretFilter,
    encode_entry,
    resolve_level,
    setup_logging,
    stderr_is_journal,
)
from tests.procs import REPO, Evsed, free_port, write_config

LOG = logging.getLogger("tests.journal")


# --------------------------------------------------------------------------- a journald


def parse_entry(data: bytes) -> list[tuple[str, bytes]]:
    """The native protocol, decoded independently of the encoder (systemd.io's description):
    ``NAME=value\\n``, or ``NAME\\n`` + little-endian u64 length + value + ``\\n``."""
    fields: list[tuple[str, bytes]] = []
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        eq = data.find(b"=", i, nl)
        if eq != -1:
            fields.append((data[i:eq].decode("ascii"), data[eq + 1 : nl]))
            i = nl + 1
            continue
        (size,) = struct.unpack_from("<Q", data, nl + 1)
        start = nl + 9
        assert data[start + size : start + size + 1] == b"\n", "binary field not terminated"
        fields.append((data[i:nl].decode("ascii"), data[start : start + size]))
        i = start + size + 1
    return fields


class Entry:
    def __init__(self, raw: bytes, via_memfd: bool) -> None:
        self.raw = raw
        self.via_memfd = via_memfd
        self.fields = parse_entry(raw)

    def __getitem__(self, name: str) -> str:
        values = [v for k, v in self.fields if k == name]
        assert len(values) == 1, f"{name}: {values}"
        return values[0].decode("utf-8")

    def get(self, name: str) -> str | None:
        values = [v.decode("utf-8") for k, v in self.fields if k == name]
        return values[0] if values else None


class FakeJournal:
    """An AF_UNIX datagram socket that receives like journald: one entry per datagram, or
    an empty datagram carrying one memfd."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(5)

    def receive(self) -> Entry:
        data, fds, _flags, _addr = socket.recv_fds(self.sock, 64 * 1024 * 1024, 4)
        if not fds:
            return Entry(data, via_memfd=False)
        assert data == b"" and len(fds) == 1, "payload and fd together are not allowed"
        fd = fds[0]
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            full = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            assert seals & full == full, "the memfd must be fully sealed"
            size = os.fstat(fd).st_size
            return Entry(os.pread(fd, size, 0), via_memfd=True)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="evsed-j") as d:
        yield d


@pytest.fixture
def journal(sock_dir: str) -> Iterator[FakeJournal]:
    j = FakeJournal(os.path.join(sock_dir, "socket"))
    yield j
    j.close()


@pytest.fixture
def handler(journal: FakeJournal) -> Iterator[JournalHandler]:
    h = JournalHandler(journal.path)
    h.connect()
    LOG.addHandler(h)
    LOG.setLevel(logging.DEBUG)
    LOG.propagate = False
    yield h
    LOG.removeHandler(h)
    LOG.propagate = True
    h.close()


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """setup_logging() changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


# --------------------------------------------------------------------------- protocol


def test_record_fields(journal: FakeJournal, handler: JournalHandler) -> None:
    line = sys._getframe().f_lineno + 1
    LOG.info("connector %d: transaction %d started", 1, 5, extra={"connector": 1, "tx_key": 5})
    entry = journal.receive()
    assert not entry.via_memfd
    assert entry["MESSAGE"] == "connector 1: transaction 5 started"
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "evsed"
    assert entry["LOGGER"] == "tests.journal"
    assert entry["CODE_FILE"] == __file__
    assert entry["CODE_LINE"] == str(line)
    assert entry["CODE_FUNC"] == "test_record_fields"
    assert entry["EVSED_CONNECTOR"] == "1"
    assert entry["EVSED_TX_KEY"] == "5"
    assert entry.get("EVSED_TRANSACTION_ID") is None
    assert b"MESSAGE=connector 1: transaction 5 started\n" in entry.raw  # the readable form

    LOG.warning(
        "StartTransaction %d: idTag %s",
        77,
        "Blocked",
        extra={"action": "StartTransaction", "transaction_id": 77, "connector": 2},
    )
    entry = journal.receive()
    assert (entry["EVSED_ACTION"], entry["EVSED_TRANSACTION_ID"]) == ("StartTransaction", "77")
    assert entry["EVSED_CONNECTOR"] == "2"
    assert not any(name.startswith("_") for name, _ in entry.fields)  # trusted fields


def test_priorities(journal: FakeJournal, handler: JournalHandler) -> None:
    expected = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
    for method in expected:
        getattr(LOG, method)("level %s", method)
    got = {}
    for _ in expected:
        entry = journal.receive()
        got[entry["MESSAGE"].removeprefix("level ")] = entry["PRIORITY"]
    assert got == expected


def test_multi_line_message_uses_the_binary_form(
    journal: FakeJournal, handler: JournalHandler
) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        LOG.exception("handler for %s failed", "RemoteStartTransaction")
    entry = journal.receive()
    message = entry["MESSAGE"]
    assert message.startswith("handler for RemoteStartTransaction failed\nTraceback")
    assert message.endswith('raise ValueError("boom")\nValueError: boom')
    size = struct.pack("<Q", len(message.encode()))
    assert b"MESSAGE\n" + size + message.encode() + b"\n" in entry.raw
    assert entry["PRIORITY"] == "3"


def test_encoder_matches_the_protocol_example() -> None:
    raw = encode_entry([("PRIORITY", "3"), ("BINARY_BLOB", b"xx\nx"), ("MESSAGE", "hi")])
    assert raw == b"PRIORITY=3\nBINARY_BLOB\n\x04\x00\x00\x00\x00\x00\x00\x00xx\nx\nMESSAGE=hi\n"
    with pytest.raises(ValueError):
        encode_entry([("_PID", "1")])  # trusted fields are journald's to set
    with pytest.raises(ValueError):
        encode_entry([("lower", "x")])


def test_large_entry_travels_in_a_sealed_memfd(
    journal: FakeJournal, handler: JournalHandler
) -> None:
    assert handler._sock is not None
    sndbuf = handler._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    big = "x" * (2 * sndbuf) + "\nend"  # more than any datagram this socket may send
    LOG.info("payload %s", big, extra={"action": "DataTransfer"})
    entry = journal.receive()
    assert entry.via_memfd
    assert entry["MESSAGE"] == "payload " + big
    assert entry["EVSED_ACTION"] == "DataTransfer"
    LOG.info("small again")
    assert not journal.receive().via_memfd


# --------------------------------------------------------------------------- secrets

PASSWORD = "s3cret-csms-pw"
TOKEN = "api-token-0123456789abcdef"


def test_mask_patterns() -> None:
    f = SecretFilter()
    f.add_secret(PASSWORD)
    f.add_secret("ab")  # too short to mask safely: ignored
    cases = {
        "connected to wss://CP-1:hunter22@csms.example.com/ocpp/CP-1": (
            "connected to wss://CP-1:***@csms.example.com/ocpp/CP-1"
        ),
        "headers {'Authorization': 'Basic Q1AtMTpodW50ZXIyMg=='}": (
            "headers {'Authorization': 'Basic ***'}"
        ),
        "Authorization: Bearer abcdefghijklmnop": "Authorization: Bearer ***",
        "sent Basic Q1AtMTpodW50ZXIyMg== to": "sent Basic *** to",
        'password = "CHANGE-ME"': 'password = "***"',
        '{"password": "x1", "token": "y2"}': '{"password": "***", "token": "***"}',
        "GET /api/status?token=abc123&x=1": "GET /api/status?token=***&x=1",
        '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"0123456789abcdef"}]': (
            '[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"***"}]'
        ),
        '{"value": "0123456789abcdef", "key": "AuthorizationKey"}': (
            '{"value": "***", "key": "AuthorizationKey"}'
        ),
        f"login failed for {PASSWORD}!": "login failed for ***!",
    }
    for text, masked in cases.items():
        assert f.mask(text) == masked, text
    # Ordinary messages stay as they are.
    for text in (
        "HTTP Basic authentication required for: CP-1",
        "connector 1: transaction 5 started for 04A1B2C3",
        "ws://127.0.0.1:9000/ocpp/CP-1",
        "card ab rejected",
        "Authorization list version 3",
    ):
        assert f.mask(text) == text


def test_secrets_never_reach_the_journal(journal: FakeJournal, root_logger: logging.Logger) -> None:
    secrets = setup_logging("DEBUG", "journal", journal_socket=journal.path)
    secrets.add_secret(PASSWORD)
    runtime_key: dict[str, str | None] = {"value": None}
    secrets.add_source(lambda: runtime_key["value"])
    log = logging.getLogger("controller.test")
    log.info("connected to %s", f"ws://CP-1:{PASSWORD}@127.0.0.1:9000/ocpp")
    log.warning("headers %s", {"Authorization": f"Bearer {TOKEN}"})
    runtime_key["value"] = "K" * 20
    log.info("AuthorizationKey is now %s", "K" * 20)
    try:
        raise ConnectionError(f"rejected password {PASSWORD}")
    except ConnectionError:
        log.exception("CSMS session ended with an error")
    entries = [journal.receive() for _ in range(4)]
    for entry in entries:
        for secret in (PASSWORD, TOKEN, "K" * 20):
            assert secret.encode() not in entry.raw
    assert entries[0]["MESSAGE"] == "connected to ws://CP-1:***@127.0.0.1:9000/ocpp"
    assert entries[1]["MESSAGE"] == "headers {'Authorization': 'Bearer ***'}"
    assert entries[2]["MESSAGE"] == "AuthorizationKey is now ***"
    assert "ConnectionError: rejected password ***" in entries[3]["MESSAGE"]


# --------------------------------------------------------------------------- fallback


def test_no_journal_socket_falls_back_to_stderr(sock_dir: str, root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    missing = os.path.join(sock_dir, "nothing-here")
    secrets = setup_logging("INFO", "journal", journal_socket=missing, stream=stream)
    secrets.add_secret(PASSWORD)
    logging.getLogger("controller.runtime.station").info("password is %s", PASSWORD)
    lines = stream.getvalue().splitlines()
    assert f"journal socket {missing} unavailable" in lines[0]
    assert " WARNING evsed: " in lines[0]
    assert lines[1].endswith(" INFO controller.runtime.station: password is ***")
    assert not os.path.exists(missing)  # nothing created in its place


def test_journal_going_away_falls_back_per_record(
    journal: FakeJournal, root_logger: logging.Logger
) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "journal", journal_socket=journal.path, stream=stream)
    log = logging.getLogger("controller.app")
    log.info("one")
    assert journal.receive()["MESSAGE"] == "one"
    journal.close()  # journald stopped
    log.warning("two")
    assert stream.getvalue().splitlines()[-1].endswith(" WARNING controller.app: two")
    restarted = FakeJournal(journal.path)  # journald back: the next record reconnects
    try:
        log.info("three")
        assert restarted.receive()["MESSAGE"] == "three"
        assert "three" not in stream.getvalue()
    finally:
        restarted.close()


def test_stderr_target_and_auto_without_journal(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("WARNING", "auto", stream=stream, environ={})
    log = logging.getLogger("controller.x")
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in stream.getvalue()
    assert stream.getvalue().endswith(" WARNING controller.x: shown\n")
    # A second setup replaces the first handler instead of doubling every line.
    setup_logging("INFO", "stderr", stream=stream, environ={})
    log.info("once")
    assert stream.getvalue().count("once") == 1
    with pytest.raises(ValueError):
        setup_logging("INFO", "syslog")


def test_journal_stream_detection(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as f:
        st = os.fstat(f.fileno())
        same = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(same, f.fileno())
        # Redirected inside the service: another inode, so stay on that fd.
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not stderr_is_journal({}, f.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, f.fileno())


def test_level_override_from_the_environment(root_logger: logging.Logger) -> None:
    assert resolve_level("INFO", {}) == "INFO"
    assert resolve_level("info", {"EVSED_LOG_LEVEL": "debug"}) == "DEBUG"
    assert resolve_level("WARNING", {"EVSED_LOG_LEVEL": "loud"}) == "WARNING"
    stream = io.StringIO()
    setup_logging("INFO", "stderr", stream=stream, environ={"EVSED_LOG_LEVEL": "loud"})
    assert "ignoring EVSED_LOG_LEVEL='loud'" in stream.getvalue()
    assert root_logger.level == logging.INFO


# --------------------------------------------------------------------------- end to end

STATION = "CP-LOG"
CARD = "04A1B2C3"
URL_PASSWORD = "url-pw-0123456789"


def start_under_systemd(cfg: Path, api_port: int, tmp_path: Path, socket_path: str) -> Evsed:
    """`evsed run` with stdout/stderr on a file that $JOURNAL_STREAM names, as systemd does
    with StandardError=journal (the journal socket itself is EVSED_JOURNAL_SOCKET)."""
    ev = Evsed(cfg, api_port, tmp_path)
    ev.runs = 1
    with open(tmp_path / "evsed-run1.log", "wb") as out:
        st = os.fstat(out.fileno())
        env = {
            **os.environ,
            "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
            "EVSED_JOURNAL_SOCKET": socket_path,
        }
        env.pop("EVSED_LOG_LEVEL", None)
        ev.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run", "-c", str(cfg)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    ev.all_procs.append(ev.proc)
    return ev


async def test_evsed_run_under_systemd_logs_to_the_journal(
    tmp_path: Path, journal: FakeJournal
) -> None:
    """A real `evsed run` whose stderr is "the journal stream" ($JOURNAL_STREAM): records
    arrive as native datagrams with the structured fields, the credentials in the CSMS URL
    never appear anywhere, and no log file is written."""
    entries: list[Entry] = []
    stop = threading.Event()

    def drain() -> None:  # keep the socket's queue empty, as journald does
        journal.sock.settimeout(0.1)
        while not stop.is_set():
            try:
                entries.append(journal.receive())
            except TimeoutError:
                continue
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    async with DevCsms(
        host="127.0.0.1", port=0, heartbeat_interval_s=3600, passwords={STATION: URL_PASSWORD}
    ) as csms:
        api_port = free_port()
        url = csms.url.replace("ws://", f"ws://{STATION}:{URL_PASSWORD}@")
        cfg = write_config(tmp_path, station_id=STATION, csms_url=url, api_port=api_port)
        before = set(os.listdir(tmp_path))
        ev = start_under_systemd(cfg, api_port, tmp_path, journal.path)
        out_path = tmp_path / "evsed-run1.log"
        try:
            await ev.wait_api()
            await csms.wait_connected(STATION, timeout_s=10)
            await ev.post("/api/sim/plug", {"connector": 1})
            assert (await ev.post("/api/sim/card", {"uid": CARD}))["delivered"]
            st = await ev.wait_status(
                lambda s: s["connectors"][0]["transaction_id"] is not None, what="transaction"
            )
            csms_tx_id = st["connectors"][0]["transaction_id"]
            proc = ev.proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGTERM)  # systemctl stop
            assert await asyncio.to_thread(proc.wait, 20) == 0
        finally:
            ev.cleanup()
    await asyncio.sleep(0.2)
    stop.set()
    reader.join(5)

    def find(prefix: str) -> Entry:
        found = [e for e in entries if e["MESSAGE"].startswith(prefix)]
        assert found, f"no {prefix!r} in {[e['MESSAGE'] for e in entries]}"
        return found[0]

    started = find("evsed started")
    assert f"ws://{STATION}:***@127.0.0.1" in started["MESSAGE"]
    assert find("connected to")["MESSAGE"].startswith(f"connected to ws://{STATION}:***@")
    boot = find("BootNotification: Accepted")
    assert boot["EVSED_ACTION"] == "BootNotification"
    tx = find(f"connector 1: transaction 1 started for {CARD}")
    assert (tx["EVSED_CONNECTOR"], tx["EVSED_TX_KEY"], tx["PRIORITY"]) == ("1", "1", "6")
    assert tx["CODE_FUNC"] == "_start_tx"
    assert tx["CODE_FILE"].endswith(os.path.join("controller", "runtime", "station.py"))
    assert all(e["SYSLOG_IDENTIFIER"] == "evsed" for e in entries)
    linked = find("transaction 1: CSMS transactionId")
    assert (linked["EVSED_TX_KEY"], linked["EVSED_TRANSACTION_ID"]) == ("1", str(csms_tx_id))
    stopped = find("connector 1: transaction 1 stopped")
    assert stopped["EVSED_TX_KEY"] == "1"
    # README: `journalctl -u evsed EVSED_ACTION=StopTransaction` at the default level (INFO)
    # finds each transaction message's confirmed delivery.
    delivered = {
        e["EVSED_ACTION"]: e
        for e in entries
        if e.get("EVSED_ACTION") in ("StartTransaction", "StopTransaction") and e["PRIORITY"] == "6"
    }
    assert delivered["StartTransaction"] is linked
    assert linked["EVSED_CONNECTOR"] == "1"
    stop_entry = delivered["StopTransaction"]
    assert stop_entry["MESSAGE"] == (
        f"transaction 1: StopTransaction delivered (CSMS transactionId {csms_tx_id}, reason Reboot)"
    )
    assert (stop_entry["EVSED_TX_KEY"], stop_entry["EVSED_TRANSACTION_ID"]) == (
        "1",
        str(csms_tx_id),
    )

    assert all(URL_PASSWORD.encode() not in e.raw for e in entries)
    output = out_path.read_text(errors="replace")
    assert URL_PASSWORD not in output
    assert "transaction 1 started" not in output  # the records went to the journal only
    created = set(os.listdir(tmp_path)) - before - {"evsed-run1.log"}
    assert not [n for n in created if n.endswith(".log") or "log" in n], created


def test_check_config_output_hides_url_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli import main

    monkeypatch.chdir(tmp_path)  # the example's sim meter state file is relative
    example = (REPO / "controller" / "examples" / "evsed.toml").read_text()
    text = example.replace("ws://127.0.0.1:9000/ocpp", f"ws://EVSED-001:{URL_PASSWORD}@h/ocpp")
    assert URL_PASSWORD in text
    (tmp_path / "evsed.toml").write_text(text)
    assert main(["check-config", str(tmp_path / "evsed.toml")]) == 0
    out = capsys.readouterr().out
    assert "CSMS ws://EVSED-001:***@h/ocpp" in out
    assert URL_PASSWORD not in out
