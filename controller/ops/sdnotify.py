"""systemd's sd_notify protocol without libsystemd: READY, STATUS, WATCHDOG, STOPPING.

The protocol (sd_notify(3)): one datagram of newline-separated ``KEY=VALUE`` lines sent to the
AF_UNIX socket named in ``$NOTIFY_SOCKET`` – a file system path, or an abstract socket when
the name starts with ``@``. Without ``$NOTIFY_SOCKET`` (not started by systemd, or not
``Type=notify``) every call is a no-op. Sending never raises into the caller and never blocks
the event loop: a failure is logged once and reported as ``False``.

The watchdog (``WatchdogSec=`` in the unit) is pinged from a coroutine on the main event loop
(``run_watchdog``), so a blocked loop stops the pings and systemd restarts the service; the
caller's ``health`` check can withhold pings too (the app stops pinging when the station's
tick loop makes no progress).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from controller.runtime.clock import sleep_or_event

LOG = logging.getLogger(__name__)

# Test-only: with this variable set to a number of seconds, SIGUSR1 makes the event loop run
# time.sleep(seconds) – a stuck event loop, for tests of the watchdog (see install_stall_hook).
STALL_HOOK_ENV: Final = "EVSED_TEST_STALL_LOOP_S"
STALL_BEGIN_STATUS: Final = "test: event loop blocked"
STALL_END_STATUS: Final = "test: event loop unblocked"
# A STATUS= line is free text for `systemctl status`; bound it like systemd's own tools do.
MAX_STATUS_CHARS: Final = 200


def _socket_address(name: str) -> str | bytes | None:
    """The sockaddr for a ``$NOTIFY_SOCKET`` value; None for forms this module does not speak."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()  # abstract namespace: leading NUL byte
    if name.startswith("/"):
        return name
    return None  # e.g. "vsock:..." (systemd >= 253, VMs only)


class Notifier:
    """Sends sd_notify datagrams to ``address`` (a ``$NOTIFY_SOCKET`` value); None = no-op."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sockaddr = _socket_address(address) if address else None
        self._sock: socket.socket | None = None
        self._failed_logged = False
        self.sent = 0  # datagrams delivered (diagnostics, tests)
        if address and self._sockaddr is None:
            LOG.warning("NOTIFY_SOCKET=%r is not a path or @abstract name; not notifying", address)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sockaddr is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; True if it was delivered."""
        if self._sockaddr is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue must not stall the event loop: fail instead of waiting.
                self._sock.setblocking(False)
            self._sock.sendto(message, self._sockaddr)
        except OSError as exc:
            if not self._failed_logged:
                self._failed_logged = True
                LOG.warning("sd_notify to %s failed: %s (logged once)", self.address, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up finished: ``READY=1`` (with ``MAINPID``, and ``STATUS`` if given)."""
        lines = ["READY=1", f"MAINPID={os.getpid()}"]
        if status is not None:
            lines.append(_status_line(status))
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send(_status_line(text))

    def watchdog(self) -> bool:
        """Keep-alive ping for ``WatchdogSec=``."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """The service is shutting down (``STOPPING=1``)."""
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append(_status_line(status))
        return self.send(*lines)

    def reloading(self, status: str | None = None) -> bool:
        """The service restarts in place (exec); it sends ``READY=1`` again when back.

        Not STOPPING=1: systemd would then wait for the process to exit and kill the
        re-executed one after TimeoutStopSec.
        """
        lines = ["RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}"]
        if status is not None:
            lines.append(_status_line(status))
        return self.send(*lines)

    def mainpid(self, pid: int) -> bool:
        return self.send(f"MAINPID={pid}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    # A newline would start another KEY=VALUE line (e.g. a READY=1 smuggled in a status).
    flat = " ".join(str(text).split())
    return "STATUS=" + flat[:MAX_STATUS_CHARS]


def watchdog_timeout_s(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """``WatchdogSec=`` in seconds from ``$WATCHDOG_USEC``, if it applies to this process.

    Like sd_watchdog_enabled(3): None when ``$WATCHDOG_USEC`` is unset or not a positive
    integer, or when ``$WATCHDOG_PID`` is set and names another process (the variables were
    inherited by a child). Ping at half this interval (``run_watchdog``).
    """
    env = os.environ if environ is None else environ
    text = env.get("WATCHDOG_USEC")
    if not text:
        return None
    try:
        usec = int(text)
    except ValueError:
        LOG.warning("ignoring WATCHDOG_USEC=%r: not a whole number", text)
        return None
    if usec <= 0:
        LOG.warning("ignoring WATCHDOG_USEC=%r: not positive", text)
        return None
    pid_text = env.get("WATCHDOG_PID")
    if pid_text:
        try:
            watched = int(pid_text)
        except ValueError:
            LOG.warning("ignoring the watchdog: WATCHDOG_PID=%r is not a pid", pid_text)
            return None
        if watched != (os.getpid() if pid is None else pid):
            return None
    return usec / 1_000_000


HealthCheck = Callable[[], str | None]


async def run_watchdog(
    notifier: Notifier,
    interval_s: float,
    health: HealthCheck,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic_s: Callable[[], float] = time.monotonic,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` while ``health()`` returns None.

    Runs as a task on the main event loop: while the loop is blocked this coroutine cannot
    run, so the pings stop and systemd's ``WatchdogSec=`` fires. ``health()`` names a
    problem (e.g. the station tick loop is stuck) to withhold the ping as well.
    """
    withheld: str | None = None
    while True:
        problem = health()
        if problem is None:
            notifier.watchdog()
            if withheld is not None:
                LOG.warning("pinging the watchdog again (was: %s)", withheld)
                withheld = None
        elif problem != withheld:
            LOG.error("not pinging the systemd watchdog: %s", problem)
            withheld = problem
        before_s = monotonic_s()
        await sleep(interval_s)
        late_s = monotonic_s() - before_s - interval_s
        if late_s > interval_s:
            # The loop was blocked for most of a ping interval: a restart is close.
            LOG.warning("event loop was blocked for about %.1f s", late_s)


async def run_status(
    notifier: Notifier,
    describe: Callable[[], str],
    interval_s: float,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    changed: asyncio.Event | None = None,
) -> None:
    """Send ``STATUS=describe()`` whenever the text changes: looking every ``interval_s``,
    and at once when ``changed`` is set (then ``interval_s`` only catches what nobody
    signals, such as a queue length, and the loop stays asleep while nothing happens)."""
    last: str | None = None
    failing = False
    while True:
        try:
            text = describe()
            failing = False
        except Exception:  # a status line must never take the service down
            if not failing:  # once per run of failures, not every interval
                LOG.exception("building the systemd status failed")
            failing = True
            text = last or ""
        if text != last:
            notifier.status(text)
            last = text
        if changed is None:
            await sleep(interval_s)
            continue
        changed.clear()
        await sleep_or_event(sleep(interval_s), changed)


def install_stall_hook(
    loop: asyncio.AbstractEventLoop,
    notifier: Notifier,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Test-only: ``$EVSED_TEST_STALL_LOOP_S`` makes SIGUSR1 block the event loop that long.

    The callback runs *on* the loop and calls ``time.sleep``, exactly what a blocking call
    in a coroutine does; it sends ``STATUS=test: event loop blocked`` before and
    ``STATUS=test: event loop unblocked`` after, so a test reading the notify socket can tell
    which pings (none, if the watchdog is on the loop) fell into the blocked window. Returns
    whether the hook was installed. Never set the variable in production.
    """
    env = os.environ if environ is None else environ
    text = env.get(STALL_HOOK_ENV)
    if not text:
        return False
    try:
        stall_s = float(text)
    except ValueError:
        LOG.warning("ignoring %s=%r: not a number", STALL_HOOK_ENV, text)
        return False

    def stall() -> None:
        LOG.warning("%s: blocking the event loop for %.1f s", STALL_HOOK_ENV, stall_s)
        notifier.status(f"{STALL_BEGIN_STATUS} for {stall_s:g} s")
        time.sleep(stall_s)  # on the loop: blocking it is the point of this hook
        notifier.status(STALL_END_STATUS)

    loop.add_signal_handler(signal.SIGUSR1, stall)
    LOG.warning("test hook %s is set: SIGUSR1 blocks the event loop", STALL_HOOK_ENV)
    return True
