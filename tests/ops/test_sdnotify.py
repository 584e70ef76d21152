"""sd_notify without libsystemd: real AF_UNIX datagram sockets as $NOTIFY_SOCKET, real
`evsed run` processes, and a real stuck event loop (the test hook EVSED_TEST_STALL_LOOP_S).

The listener below stands in for systemd: it records each datagram with the kernel's receive
time (SO_TIMESTAMPNS) and the sender's pid (SO_PASSCRED, what NotifyAccess=main checks).
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call
from ocpp.v16.enums import ResetType

from controller.app import CONTACTORS_OPEN_STATUS, App
from controller.config import parse
from controller.dev.devcsms import DevCsms
from controller.ops.sdnotify import (
    STALL_BEGIN_STATUS,
    STALL_END_STATUS,
    STALL_HOOK_ENV,
    Notifier,
    run_status,
    run_watchdog,
    watchdog_timeout_s,
)
from controller.runtime.clock import ManualClock
from hal.base import MeterReading
from hal.modbus import load_model
from tests.conftest import STATION_ID, Harness, charger_config
from tests.modbus_sim import SimLine, SimSlave
from tests.procs import REPO, Evsed, free_port, write_config

# --------------------------------------------------------------------------- listener

# Linux asm-generic/socket.h; Python's socket module does not name it. Ancillary data of
# this type carries the receive time as a struct timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_LONG = array.array("l").itemsize


@dataclass(frozen=True)
class Datagram:
    received_s: float  # kernel receive time (CLOCK_REALTIME)
    pid: int  # sender, from SCM_CREDENTIALS
    text: str

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.split("\n"))

    @property
    def is_ping(self) -> bool:
        return self.text == "WATCHDOG=1"


class NotifyListener:
    """The service manager's end of $NOTIFY_SOCKET (abstract name unless ``path``)."""

    def __init__(self, path: str | None = None) -> None:
        self.address = path or f"@evsed-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = path if path else "\0" + self.address[1:]
        self.sock.bind(bind_to)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.1)
        self.messages: list[Datagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        anc = socket.CMSG_SPACE(struct.calcsize("3i")) + socket.CMSG_SPACE(2 * _LONG)
        while not self._stop.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, anc)
            except TimeoutError:
                continue
            except OSError:
                return
            received_s, pid = time.time(), -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
                elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = array.array("l", payload[: 2 * _LONG])
                    received_s = sec + nsec / 1e9
            with self._lock:
                self.messages.append(Datagram(received_s, pid, data.decode()))

    def snapshot(self) -> list[Datagram]:
        with self._lock:
            return list(self.messages)

    async def wait_for(
        self,
        predicate: Callable[[Datagram], bool],
        *,
        after: int = 0,
        timeout_s: float = 20.0,
        proc: subprocess.Popen[bytes] | None = None,
        log: Callable[[], str] = lambda: "",
    ) -> int:
        """Index of the first datagram from ``after`` on that matches."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, m in enumerate(self.snapshot()[after:], start=after):
                if predicate(m):
                    return i
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"evsed exited with {proc.returncode}\n{log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such datagram; got {self.snapshot()}\n{log()}")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    ls = NotifyListener()
    yield ls
    ls.close()


def status_is(text: str) -> Callable[[Datagram], bool]:
    return lambda m: m.fields.get("STATUS", "").startswith(text)


# --------------------------------------------------------------------------- Notifier


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert watchdog_timeout_s({}) is None


def test_path_socket_receives_ready_status_and_stopping() -> None:
    # A short directory: sockaddr_un holds 108 bytes, pytest's tmp_path may be longer.
    with tempfile.TemporaryDirectory(prefix="sdn", dir="/tmp") as directory:
        path = os.path.join(directory, "notify")
        ls = NotifyListener(path)
        try:
            notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
            assert notifier.ready("charging 0/1,\nREADY=1 smuggled")
            assert notifier.status("x" * 500)
            assert notifier.stopping("bye")
            assert notifier.mainpid(4242)
            notifier.close()
            deadline = time.monotonic() + 5
            while len(ls.snapshot()) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            ls.close()
    ready, status, stopping, mainpid = ls.snapshot()
    # A newline in a status cannot start a second field.
    assert ready.text == f"READY=1\nMAINPID={os.getpid()}\nSTATUS=charging 0/1, READY=1 smuggled"
    assert ready.pid == os.getpid()
    assert status.text == "STATUS=" + "x" * 200
    assert stopping.fields == {"STOPPING": "1", "STATUS": "bye"}
    assert mainpid.text == "MAINPID=4242"


def test_abstract_socket_and_reloading(listener: NotifyListener) -> None:
    notifier = Notifier(listener.address)
    assert listener.address.startswith("@")
    assert notifier.reloading("restarting after Hard reset")
    deadline = time.monotonic() + 5
    while not listener.snapshot() and time.monotonic() < deadline:
        time.sleep(0.01)
    fields = listener.snapshot()[0].fields
    assert fields["RELOADING"] == "1"
    assert int(fields["MONOTONIC_USEC"]) > 0
    assert fields["STATUS"] == "restarting after Hard reset"


def test_send_errors_never_raise_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier("/nonexistent/notify.sock")
    with caplog.at_level(logging.WARNING, logger="controller.ops.sdnotify"):
        assert notifier.watchdog() is False
        assert notifier.ready() is False
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    assert not Notifier("relative/path").enabled


def test_a_full_receive_queue_never_blocks_the_sender() -> None:
    # Nobody reads this socket: after a few datagrams the kernel queue is full. A blocking
    # sendto would hang here (and in evsed: the event loop); the notifier gives up instead.
    name = f"@evsed-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind("\0" + name[1:])
        notifier = Notifier(name)
        results = [notifier.watchdog() for _ in range(2000)]
        notifier.close()
    assert results[0] is True
    assert results[-1] is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_timeout_from_the_environment(env: dict[str, str], expected: Any) -> None:
    assert watchdog_timeout_s(env) == expected


async def test_watchdog_pings_every_interval_only_while_healthy(
    listener: NotifyListener,
) -> None:
    """The ping loop on a scripted sleep: the interval it waits, and withheld pings."""
    notifier = Notifier(listener.address)
    problems = iter([None, None, "tick loop stuck", "tick loop stuck", None])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    with pytest.raises(asyncio.CancelledError):
        await run_watchdog(notifier, 0.25, lambda: next(problems), sleep=sleep)
    assert slept == [0.25] * 5
    assert notifier.sent == 3  # pings 1, 2 and 5; none while the tick loop was stuck


async def test_status_is_sent_on_change_and_a_failing_describe_is_logged_once(
    listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(listener.address)
    script: list[str | Exception] = [
        "charging 0/1, CSMS accepted",
        "charging 0/1, CSMS accepted",
        RuntimeError("database is locked"),
        RuntimeError("database is locked"),
        "charging 1/1, CSMS accepted",
    ]
    steps = iter(script)

    def describe() -> str:
        step = next(steps)
        if isinstance(step, Exception):
            raise step
        return step

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == len(script):
            raise asyncio.CancelledError

    with caplog.at_level(logging.ERROR, logger="controller.ops.sdnotify"):
        with pytest.raises(asyncio.CancelledError):
            await run_status(notifier, describe, 2.0, sleep=sleep)
    assert slept == [2.0] * len(script)
    await listener.wait_for(status_is("charging 1/1"))
    assert [m.text for m in listener.snapshot()] == [
        "STATUS=charging 0/1, CSMS accepted",
        "STATUS=charging 1/1, CSMS accepted",
    ]
    assert caplog.text.count("building the systemd status failed") == 1


# --------------------------------------------------------------------------- in process


async def modbus_tcp_charger(
    tmp_path: Path, *, timeout_s: float, retries: int
) -> tuple[SimSlave, SimLine, dict[str, Any]]:
    """A simulated SDM630 on Modbus TCP (loopback) and a charger config that reads it."""
    meter = SimSlave(1)
    meter.fill_meter(
        load_model("eastron_sdm630"),
        MeterReading(1000.0, 0.0, (230.0,) * 3, (0.0,) * 3, 50.0, 0.0),
    )
    line = SimLine([meter], tcp=True)
    port = await line.start_tcp()
    data = charger_config(tmp_path, None)
    data["connectors"][0]["meter"] = {
        "driver": "modbus",
        "model": "eastron_sdm630",
        "host": "127.0.0.1",
        "tcp_port": port,
        "timeout_s": timeout_s,
        "retries": retries,
    }
    return meter, line, data


async def test_app_withholds_pings_while_the_station_tick_loop_is_stuck(
    tmp_path: Path, listener: NotifyListener, caplog: pytest.LogCaptureFixture
) -> None:
    """A meter that stops answering holds a tick for its whole (long) Modbus timeout; the
    station clock moves on meanwhile: the app stops pinging until the tick finishes."""
    meter, line, data = await modbus_tcp_charger(tmp_path, timeout_s=5.0, retries=0)
    clock = ManualClock()
    app = App(parse(data), clock=clock, notifier=Notifier(listener.address), watchdog_s=0.1)
    try:
        await app.start()
        pings = await listener.wait_for(lambda m: m.is_ping)
        meter.muted = True
        await clock.advance(1.0)  # one tick starts and waits for the silent meter
        await clock.advance(120.0, step_s=120.0)  # ... while the station's time runs on
        await asyncio.sleep(0.3)
        assert app.health_problem() == "the station tick loop made no progress for 121 s"
        stuck_from = len(listener.snapshot())
        await asyncio.sleep(0.5)  # five ping intervals
        assert not any(m.is_ping for m in listener.snapshot()[stuck_from:])
        assert "not pinging the systemd watchdog: the station tick loop" in caplog.text
        # The read times out (5 s), the tick finishes, the pings come back.
        meter.muted = False
        await listener.wait_for(lambda m: m.is_ping, after=stuck_from, timeout_s=10)
        assert app.health_problem() is None
        assert pings < stuck_from
    finally:
        await app.stop(reason=None)
        await line.stop()
    stops = [m.fields for m in listener.snapshot() if "STOPPING" in m.fields]
    assert stops == [{"STOPPING": "1", "STATUS": "stopping: opening contactors"}]


async def test_a_meter_read_within_its_configured_timeout_is_not_a_stuck_tick(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """timeout_s = 30 and retries = 2 are valid meter settings: a silent meter then holds a
    tick for up to 90 s before the read gives up, and the station marks the meter failed.
    That is the station working as configured, not a hang: the pings go on (a watchdog
    restart would end every session on every connector, again after each restart). A tick
    silent far beyond what the configured reads can take still counts as stuck."""
    meter, line, data = await modbus_tcp_charger(tmp_path, timeout_s=30.0, retries=2)
    clock = ManualClock()
    app = App(parse(data), clock=clock, notifier=Notifier(listener.address), watchdog_s=0.1)
    try:
        await app.start()
        await listener.wait_for(lambda m: m.is_ping)
        meter.muted = True
        await clock.advance(1.0)  # one tick starts and waits for the silent meter
        await clock.advance(80.0, step_s=80.0)  # still within its first request's 90 s
        await asyncio.sleep(0.2)
        assert app.health_problem() is None
        waiting_from = len(listener.snapshot())
        await listener.wait_for(lambda m: m.is_ping, after=waiting_from, timeout_s=5)
        await clock.advance(3600.0, step_s=3600.0)  # no configured read takes an hour
        assert app.health_problem() == "the station tick loop made no progress for 3681 s"
    finally:
        await app.stop(reason=None)
        await line.stop()


async def test_a_start_failing_after_the_station_started_opens_the_contactors(
    tmp_path: Path, listener: NotifyListener, csms: DevCsms
) -> None:
    """With resume_transactions the station closes the contactor of a resumed session while
    it starts. A later start step that fails (here the API port is taken) must not leave the
    coil on with no process watching it: the contactor is open again when the error comes out
    of start(), and systemd never got READY=1."""
    data = charger_config(tmp_path, csms.url)
    data["station"]["resume_transactions"] = True
    data["connectors"][0]["meter"]["state_file"] = str(tmp_path / "meter.json")
    first = App(parse(data), clock=ManualClock(), boot_id="boot-1")
    await first.start()
    h = Harness(first, ManualClock(), csms)
    await csms.wait_connected(STATION_ID, timeout_s=5)
    await h.settle(lambda: first.port is not None and first.port.connection_state() == "accepted")
    h.plug()
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await first.stop(reason=None)  # a crash: the session stays open for the next start

    commands: list[bool] = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data["api"]["port"] = busy.getsockname()[1]
        second = App(
            parse(data), clock=ManualClock(), boot_id="boot-1", notifier=Notifier(listener.address)
        )
        build = second._build_devices

        def build_plugged() -> Any:
            hardware, reader = build()
            for hw in hardware:
                hw.vehicle.plug()  # the car never left
                set_closed = hw.contactor.set_closed

                def record(closed: bool, set_closed: Any = set_closed) -> None:
                    commands.append(closed)
                    set_closed(closed)

                hw.contactor.set_closed = record
            return hardware, reader

        second._build_devices = build_plugged  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await second.start()
    assert second.station is not None
    c = second.station.connectors[1]
    assert True in commands  # the resumed session did close it during the start
    assert not c.hw.contactor.closed
    assert second.store is None  # stopped: the database is closed, the session stays open
    assert not any("READY" in m.fields for m in listener.snapshot())


# --------------------------------------------------------------------------- real process


class NotifiedEvsed(Evsed):
    """`evsed run` with the systemd environment variables (and the test hook) set."""

    def __init__(
        self,
        config: Path,
        api_port: int,
        log_dir: Path,
        env: dict[str, str],
        command: tuple[str, ...] = (sys.executable, "-m", "controller.cli"),
    ) -> None:
        super().__init__(config, api_port, log_dir)
        self.env = {**os.environ, **env}
        self.command = command  # what starts `evsed` (the console script, as systemd does)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        log = open(self.log_dir / f"evsed-run{self.runs}.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [*self.command, "run", "-c", str(self.config)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.all_procs.append(self.proc)

    def log_text(self) -> str:
        return (self.log_dir / f"evsed-run{self.runs}.log").read_text(errors="replace")


@pytest.fixture
async def evsed_procs() -> AsyncIterator[list[Evsed]]:
    procs: list[Evsed] = []
    yield procs
    for ev in procs:
        ev.cleanup()


async def test_real_process_ready_after_contactors_then_pings_that_stop_on_a_blocked_loop(
    tmp_path: Path, listener: NotifyListener, evsed_procs: list[Evsed]
) -> None:
    api_port = free_port()
    ev = NotifiedEvsed(
        write_config(tmp_path, station_id="CP-NOTIFY", csms_url=None, api_port=api_port),
        api_port,
        tmp_path,
        {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000", STALL_HOOK_ENV: "1.5"},
    )
    evsed_procs.append(ev)
    ev.start()
    assert ev.proc is not None

    # READY=1 only after the contactors were commanded and read open, before any ping.
    ready = await listener.wait_for(lambda m: "READY" in m.fields, proc=ev.proc, log=ev.log_tail)
    msgs = listener.snapshot()
    before = [m.text for m in msgs[:ready]]
    assert f"STATUS={CONTACTORS_OPEN_STATUS}" in before
    assert not any(m.is_ping for m in msgs[:ready])
    assert msgs[ready].fields == {
        "READY": "1",
        "MAINPID": str(ev.pid),
        "STATUS": "charging 0/1, standalone",
    }
    assert {m.pid for m in msgs[: ready + 1]} == {ev.pid}  # NotifyAccess=main holds
    st = await ev.status()  # the local API is already up at READY=1
    assert st["connectors"][0]["contactor_closed"] is False

    # WATCHDOG_USEC=400000: a ping every 0.2 s, never faster (kernel receive times).
    first = await listener.wait_for(lambda m: m.is_ping, after=ready)
    await listener.wait_for(lambda m: sum(x.is_ping for x in listener.snapshot()) >= 6, after=first)
    pings = [m for m in listener.snapshot() if m.is_ping][:6]
    gaps = [b.received_s - a.received_s for a, b in zip(pings, pings[1:], strict=False)]
    assert min(gaps) >= 0.2 * 0.9, gaps
    assert "systemd watchdog 0.4 s: pinging every 0.2 s" in ev.log_text()

    # A blocked event loop sends nothing between the hook's two markers; pings resume after.
    os.kill(ev.pid, signal.SIGUSR1)
    begin = await listener.wait_for(status_is(STALL_BEGIN_STATUS), proc=ev.proc)
    end = await listener.wait_for(status_is(STALL_END_STATUS), after=begin, proc=ev.proc)
    msgs = listener.snapshot()
    assert msgs[end].received_s - msgs[begin].received_s >= 1.5 * 0.9
    assert [m for m in msgs[begin:end] if m.is_ping] == []
    await listener.wait_for(lambda m: m.is_ping, after=end, proc=ev.proc)
    await asyncio.sleep(0.1)
    assert "event loop was blocked for about" in ev.log_text()

    # SIGTERM: STOPPING=1 and a clean exit.
    stopping_from = len(listener.snapshot())
    os.kill(ev.pid, signal.SIGTERM)
    await listener.wait_for(lambda m: "STOPPING" in m.fields, after=stopping_from)
    assert await asyncio.to_thread(ev.proc.wait, 20) == 0


async def test_watchdog_kill_of_a_stuck_loop_ends_the_transaction_with_reboot(
    tmp_path: Path, listener: NotifyListener, evsed_procs: list[Evsed]
) -> None:
    """An OCPP Reset first (RELOADING=1, READY=1 again, same pid). Then what systemd does
    with WatchdogSec=1: the loop hangs mid-transaction, the pings stop,
    SIGABRT (WatchdogSignal), ExecStopPost=evsed safe-off, Restart=always. The next start
    stops the transaction with reason Reboot (OCPP 1.6 7.36: "watchdog kicked in")."""
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(tmp_path, station_id="CP-WD", csms_url=csms.url, api_port=api_port)
        env = {
            "NOTIFY_SOCKET": listener.address,
            "WATCHDOG_USEC": "1000000",
            STALL_HOOK_ENV: "120",
            "PYTHONFAULTHANDLER": "1",  # as in evsed.service
        }
        ev = NotifiedEvsed(cfg, api_port, tmp_path, env)
        evsed_procs.append(ev)
        ev.start()
        ready = await listener.wait_for(
            lambda m: "READY" in m.fields, proc=ev.proc, log=ev.log_tail
        )
        await csms.wait_connected("CP-WD", timeout_s=15)
        await ev.wait_status(lambda s: s["csms"]["state"] == "accepted", what="accepted")

        # OCPP Reset: evsed re-executes itself in the same process; systemd sees RELOADING=1
        # and then READY=1 again from the same main pid (not STOPPING=1, which would make it
        # kill the new program after TimeoutStopSec).
        assert (await csms.call("CP-WD", call.Reset(type=ResetType.hard))).status == "Accepted"
        reloading = await listener.wait_for(
            lambda m: "RELOADING" in m.fields, after=ready, proc=ev.proc
        )
        again = await listener.wait_for(
            lambda m: "READY" in m.fields, after=reloading, proc=ev.proc, log=ev.log_tail
        )
        msgs = listener.snapshot()
        assert msgs[reloading].fields["STATUS"] == "restarting after Hard reset"
        assert msgs[again].fields["MAINPID"] == str(ev.pid)
        assert not any("STOPPING" in m.fields for m in msgs)
        await csms.wait_connected("CP-WD", timeout_s=15)
        await ev.wait_status(lambda s: s["csms"]["state"] == "accepted", what="accepted")

        await ev.post("/api/sim/plug", {"connector": 1})
        await ev.post("/api/sim/card", {"uid": "04A1B2C3"})
        st = await ev.wait_status(
            lambda s: (
                s["connectors"][0]["transaction_id"] is not None
                and s["connectors"][0]["contactor_closed"]
            ),
            what="charging",
        )
        tx_id = st["connectors"][0]["transaction_id"]
        await listener.wait_for(status_is("charging 1/1, CSMS accepted"), proc=ev.proc)

        os.kill(ev.pid, signal.SIGUSR1)
        begin = await listener.wait_for(status_is(STALL_BEGIN_STATUS), proc=ev.proc)
        # The service manager's side: no ping for WatchdogSec -> WatchdogSignal.
        last_ping_s = max(m.received_s for m in listener.snapshot()[:begin] if m.is_ping)
        await asyncio.sleep(max(0.0, last_ping_s + 1.0 - time.time()))
        assert not any(m.is_ping for m in listener.snapshot()[begin:])
        assert ev.proc is not None
        os.kill(ev.pid, signal.SIGABRT)
        assert await asyncio.to_thread(ev.proc.wait, 20) == -signal.SIGABRT
        crash_log = ev.log_text()
        assert "Fatal Python error: Aborted" in crash_log
        assert "sdnotify.py" in crash_log and "in stall" in crash_log  # where it hung

        # ExecStopPost=evsed safe-off
        off = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "controller.cli", "safe-off", "-c", str(cfg)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert off.returncode == 0, off.stderr
        assert "connector 1 contactor (sim): open" in off.stdout

        # Restart=always
        restart_from = len(listener.snapshot())
        ev.start()
        await listener.wait_for(
            lambda m: "READY" in m.fields, after=restart_from, proc=ev.proc, log=ev.log_tail
        )
        stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
        assert stop.payload["transactionId"] == tx_id
        assert stop.payload["reason"] == "Reboot"
        await ev.wait_status(lambda s: s["csms"]["queued_messages"] == 0, what="drained")
        assert len(csms.frames("CP-WD", "StopTransaction")) == 1
        st = await ev.status()
        assert st["connectors"][0]["transaction_key"] is None


def proc_name(pid: int) -> tuple[str, list[str]]:
    """What ps and top show: the kernel's comm and the command line."""
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    return comm, Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


async def test_reset_re_executes_the_evsed_script_so_the_process_is_still_called_evsed(
    tmp_path: Path, listener: NotifyListener, evsed_procs: list[Evsed]
) -> None:
    """systemd starts the console script; after an OCPP Reset the same pid runs it again
    (not `python3 -m controller.cli`), so ps and journald's _COMM still say evsed."""
    script = str(Path(sys.executable).parent / "evsed")
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(tmp_path, station_id="CP-EXEC", csms_url=csms.url, api_port=api_port)
        ev = NotifiedEvsed(
            cfg, api_port, tmp_path, {"NOTIFY_SOCKET": listener.address}, command=(script,)
        )
        evsed_procs.append(ev)
        ev.start()
        ready = await listener.wait_for(
            lambda m: "READY" in m.fields, proc=ev.proc, log=ev.log_tail
        )
        started = proc_name(ev.pid)
        assert started[0] == "evsed"
        await csms.wait_connected("CP-EXEC", timeout_s=15)
        assert (await csms.call("CP-EXEC", call.Reset(type=ResetType.soft))).status == "Accepted"
        reloading = await listener.wait_for(
            lambda m: "RELOADING" in m.fields, after=ready, proc=ev.proc
        )
        await listener.wait_for(
            lambda m: "READY" in m.fields, after=reloading, proc=ev.proc, log=ev.log_tail
        )
        assert proc_name(ev.pid) == started
        assert started[1][-4:] == [script, "run", "-c", str(cfg)]


def test_reexec_command_falls_back_to_the_module_without_an_executable_script(
    tmp_path: Path,
) -> None:
    from controller.cli import reexec_command

    script = Path(sys.executable).parent / "evsed"
    args = ["run", "-c", "/etc/evsed/evsed.toml"]
    assert reexec_command([str(script), *args], "/py") == (str(script), [str(script), *args])
    module = str(REPO / "controller" / "cli.py")  # `python -m controller.cli`
    assert reexec_command([module, *args], "/py") == ("/py", ["/py", "-m", "controller.cli", *args])
    plain = tmp_path / "evsed"
    plain.write_text("not executable")
    assert reexec_command([str(plain), *args], "/py")[0] == "/py"
