"""Injectable time: the system clock in production, a manual clock that tests advance."""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from controller.core.timestamps import iso_utc

LOG = logging.getLogger(__name__)


class Clock:
    """Wall and monotonic time plus sleeping, so schedules can run on a test clock."""

    def monotonic_s(self) -> float:
        return time.monotonic()

    def utc_now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(0.0, delay_s))


class ManualClock(Clock):
    """A clock that only moves when a test calls ``advance``; sleepers wake in order."""

    def __init__(self, start: datetime | None = None) -> None:
        self._mono_s = 1000.0
        self._wall = start or datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic_s(self) -> float:
        return self._mono_s

    def utc_now(self) -> datetime:
        return self._wall

    async def sleep(self, delay_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono_s + max(0.0, delay_s), next(self._seq), fut))
        await fut

    def step_wall(self, to: datetime) -> None:
        """Set the wall clock, as NTP or an operator steps a system clock; monotonic time
        does not move."""
        self._wall = to

    async def advance(self, delta_s: float, step_s: float = 1.0) -> None:
        """Move time forward in steps, letting woken tasks run between steps."""
        target = self._mono_s + delta_s
        while self._mono_s < target:
            step = min(step_s, target - self._mono_s)
            self._mono_s += step
            self._wall += timedelta(seconds=step)
            while self._sleepers and self._sleepers[0][0] <= self._mono_s:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            # Several loop iterations so chains of awaits settle before the next step.
            for _ in range(5):
                await asyncio.sleep(0)


# ---------------------------------------------------------------------------- clock trust
#
# A Raspberry Pi has no battery-backed real-time clock: after a power cut without network it
# boots at 1970-01-01 (or at whatever fake-hwclock saved). ``TrustedClock`` keeps the
# charger's timestamps sane until NTP or the CSMS (BootNotification.conf / Heartbeat.conf
# currentTime, OCPP 1.6 sections 4.2 and 4.6, "RECOMMENDED to synchronize its internal
# clock") confirms the time.

#: No timestamp the charger produces is ever earlier than this (this software did not exist
#: before it, so a wall clock below it is certainly wrong).
BUILD_FLOOR_UTC = datetime(2026, 1, 1, tzinfo=UTC)

#: CSMS offsets up to this size are ignored (the CSMS time has round-trip jitter; applying it
#: would make timestamps jump back and forth). Also the tolerance for detecting a step of
#: the system clock (NTP sync, ``date -s``).
CSMS_TOLERANCE_S = 2.0

#: How often the last good time is saved while running. It only bounds unconfirmed time
#: from below after a power cut (and what is stamped on it moves once the time is
#: confirmed), so an hour's lag costs little; every 5 minutes cost 12 SD-card commits an hour.
KEEPER_INTERVAL_S = 3600.0

#: How often (monotonic seconds) ``utc_now`` re-asks the kernel whether NTP is synchronised.
NTP_RECHECK_S = 60.0

# adjtimex(2) / ntp_adjtime(3)
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class TimeStore(Protocol):
    """Where the last known good UTC time survives a restart (the app uses the settings
    table; tests use a dict). Keeps this module free of SQLite."""

    def load_last_good(self) -> datetime | None: ...

    def save_last_good(self, moment: datetime) -> None: ...


class MemoryTimeStore:
    """A ``TimeStore`` in memory (tests, or a charger without persistent storage)."""

    def __init__(self, moment: datetime | None = None) -> None:
        self.moment = moment
        self.saves = 0

    def load_last_good(self) -> datetime | None:
        return self.moment

    def save_last_good(self, moment: datetime) -> None:
        self.moment = moment
        self.saves += 1


def kernel_ntp_synchronized() -> bool | None:
    """Whether the kernel says the system clock is NTP-synchronised (Linux ``ntp_adjtime``
    with modes = 0, a read-only query needing no privileges). None when unknown.

    Synchronised = the call does not return TIME_ERROR and STA_UNSYNC is clear in ``status``
    (systemd-timesyncd, chrony and ntpd all clear STA_UNSYNC once they have set the clock;
    this is what ``timedatectl``'s NTPSynchronized reports).
    """
    if sys.platform != "linux":
        return None
    try:
        # The C library is already loaded: dlopen(NULL) finds its symbols without
        # find_library's `ldconfig -p` child process (a start-up cost on a small board).
        libc = ctypes.CDLL(None, use_errno=True)
        func = getattr(libc, "ntp_adjtime", None) or libc.adjtimex
    except (OSError, AttributeError):
        return None

    class _Timex(ctypes.Structure):
        # Only the leading fields are read; the padding covers the rest of struct timex on
        # every ABI (it is about 208 bytes on 64-bit Linux).
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("_rest", ctypes.c_byte * 512),
        ]

    tx = _Timex()
    func.argtypes = [ctypes.POINTER(_Timex)]
    func.restype = ctypes.c_int
    state = func(ctypes.byref(tx))
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class TrustedClock(Clock):
    """A base clock plus a correction, with a trust state and a floor.

    * ``utc_now()`` = base wall time + ``correction_s``; never earlier than the floor.
    * The floor is max(``BUILD_FLOOR_UTC``, last persisted good time). If the base wall clock
      is below the floor at start (a Pi that booted at 1970), time continues from the floor,
      advancing with the base clock, and stays untrusted.
    * Trusted when the kernel reports NTP synchronisation (source "ntp") or after
      ``confirm_from_csms`` (source "csms"). Offsets up to ``CSMS_TOLERANCE_S`` are not
      applied. While NTP-synchronised the system clock wins over the CSMS (only logged).
    * A step of the base wall clock (NTP setting the clock after we started) is absorbed
      into the correction, so timestamps stay continuous, and NTP is re-checked at once.
    * The last good time is saved on confirmation and by ``persist()`` (the app calls it
      periodically and at shutdown): only while trusted, or while running on the floor
      (then it is a proven lower bound of the real time).

    * When trust is gained (NTP or the CSMS), the trust listeners get the shift in seconds
      between the untrusted timeline and the confirmed one, so timestamps already stamped
      in this process (queued transaction messages, waiting statuses) can be moved onto the
      real timeline (``add_trust_listener``).

    Limitation: messages stamped while untrusted in an earlier process (the charger
    restarted before the time was confirmed) keep their timestamps: the offset of that
    timeline is unknown. They are never before ``BUILD_FLOOR_UTC`` (the client clamps to
    it) and the client logs a warning when it sends with untrusted time. The correction
    itself is not persisted (it is relative to a system clock that may be reset or
    synchronised by the next boot); only the last good time is.
    """

    def __init__(
        self,
        base: Clock | None = None,
        *,
        time_store: TimeStore | None = None,
        ntp_synchronized: Callable[[], bool | None] | None = kernel_ntp_synchronized,
        floor: datetime = BUILD_FLOOR_UTC,
    ) -> None:
        self.base = base or Clock()
        self._ntp_check = ntp_synchronized
        self._build_floor = floor
        self.floor = floor
        self.correction_s = 0.0
        self.trust_source = "none"
        self._time_store: TimeStore | None = None
        self._skew: float | None = None  # base wall - base monotonic, to detect steps
        self._ntp_checked_s: float | None = None
        self._warned_floor = False
        self._floored = False  # running on the floor (base wall clock was behind it)
        self._trust_listeners: list[Callable[[float], None]] = []
        self._time_set_listeners: list[Callable[[float, str], None]] = []
        self._check_ntp()
        self.attach_store(time_store)

    # ------------------------------------------------------------------ Clock

    def monotonic_s(self) -> float:
        return self.base.monotonic_s()

    async def sleep(self, delay_s: float) -> None:
        await self.base.sleep(delay_s)

    def utc_now(self) -> datetime:
        wall = self.base.utc_now()
        mono = self.base.monotonic_s()
        skew = wall.timestamp() - mono
        if self._skew is not None and abs(skew - self._skew) > CSMS_TOLERANCE_S:
            step = skew - self._skew
            LOG.warning("system clock stepped by %+.1f s; keeping timestamps continuous", step)
            self.correction_s -= step
            self._ntp_checked_s = None  # NTP probably just synchronised: look now
        self._skew = skew
        if self._ntp_checked_s is None or mono - self._ntp_checked_s >= NTP_RECHECK_S:
            self._check_ntp()
        now = wall + timedelta(seconds=self.correction_s)
        # History (the persisted good time) bounds only unconfirmed time; once NTP or the
        # CSMS confirmed it, only the build floor applies.
        floor = self.floor if self.trust_source == "none" else self._build_floor
        if now < floor:
            # Below the floor: continue from the floor (1970 after a power cut).
            self.correction_s = (floor - wall).total_seconds()
            self._floored = self.trust_source == "none"
            if not self._warned_floor:
                LOG.warning(
                    "system clock %s is before %s: time is untrusted until NTP or the CSMS "
                    "confirms it",
                    iso_utc(wall),
                    iso_utc(floor),
                )
                self._warned_floor = True
            now = floor
        return now

    # ------------------------------------------------------------------ trust

    @property
    def build_floor(self) -> datetime:
        """No message may carry a timestamp before this (the client clamps to it)."""
        return self._build_floor

    @property
    def trusted(self) -> bool:
        return self.trust_source != "none"

    @property
    def on_floor(self) -> bool:
        """Running on the floor: the base clock was behind it (the offset is a guess)."""
        return self._floored and self.trust_source == "none"

    def attach_store(self, time_store: TimeStore | None) -> None:
        """Use ``time_store`` for the last good time (raises the floor of unconfirmed time
        to it)."""
        self._time_store = time_store
        if time_store is None:
            return
        try:
            last = time_store.load_last_good()
        except Exception:
            LOG.exception("cannot read the last good time")
            last = None
        if last is not None and last.tzinfo is not None and last > self.floor:
            self.floor = last
            LOG.info("time floor: last known good time %s", iso_utc(last))

    def _check_ntp(self) -> None:
        self._ntp_checked_s = self.base.monotonic_s()
        if self._ntp_check is None or self.trust_source == "ntp":
            return
        try:
            synced = self._ntp_check()
        except Exception:
            LOG.exception("NTP synchronisation check failed")
            synced = None
        if not synced or self.base.utc_now() < self._build_floor:
            return
        LOG.info("system clock is NTP-synchronised: time trusted")
        was_untrusted = self.trust_source == "none"
        shift_s = -self.correction_s  # untrusted timeline -> NTP time
        self.correction_s = 0.0
        self._floored = False
        self.trust_source = "ntp"
        self._save(self.base.utc_now())
        if was_untrusted:
            self._trust_gained(shift_s)
            if abs(shift_s) > CSMS_TOLERANCE_S:
                self._time_set(shift_s, "NTP")

    def confirm_from_csms(self, server_time: datetime) -> float:
        """The CSMS's currentTime (BootNotification.conf / Heartbeat.conf). Returns the
        offset applied in seconds (0.0 when within tolerance or not applied)."""
        if server_time.tzinfo is None:
            return 0.0
        if server_time < self._build_floor:
            LOG.warning(
                "CSMS time %s is before %s: ignored",
                iso_utc(server_time),
                iso_utc(self._build_floor),
            )
            return 0.0
        offset = (server_time - self.utc_now()).total_seconds()
        if self.trust_source == "ntp":
            if abs(offset) > CSMS_TOLERANCE_S:
                LOG.warning("CSMS time differs from the NTP time by %+.1f s; keeping NTP", offset)
            return 0.0
        applied = 0.0
        if abs(offset) > CSMS_TOLERANCE_S:
            self.correction_s += offset
            applied = offset
            LOG.warning("clock corrected by %+.1f s from the CSMS currentTime", offset)
        was_untrusted = self.trust_source == "none"
        if self.trust_source != "csms":
            LOG.info("time confirmed by the CSMS")
        self.trust_source = "csms"
        self._floored = False
        if was_untrusted or applied:
            # Not on every Heartbeat.conf: the keeper saves periodically (SD-card wear).
            self._save(self.utc_now())
        if was_untrusted:
            self._trust_gained(applied)
        if applied:
            self._time_set(applied, "CSMS currentTime")
        return applied

    def add_time_set_listener(self, listener: Callable[[float, str], None]) -> None:
        """``listener(shift_s, source)`` whenever the charger's time moves by more than the
        tolerance (security event SettingSystemTime): a CSMS correction, or NTP taking over
        from an unconfirmed clock."""
        self._time_set_listeners.append(listener)

    def _time_set(self, shift_s: float, source: str) -> None:
        for listener in list(self._time_set_listeners):
            try:
                listener(shift_s, source)
            except Exception:
                LOG.exception("clock time-set listener failed")

    def add_trust_listener(self, listener: Callable[[float], None]) -> None:
        """``listener(shift_s)`` once, when the time is first confirmed: timestamps taken
        before it move by ``shift_s`` seconds onto the confirmed timeline (0.0 = none).
        Called synchronously from within ``utc_now``/``confirm_from_csms``."""
        self._trust_listeners.append(listener)

    def _trust_gained(self, shift_s: float) -> None:
        for listener in list(self._trust_listeners):
            try:
                listener(shift_s)
            except Exception:
                LOG.exception("clock trust listener failed")

    def persist(self) -> None:
        """Save the current time as the last good time if it is known to be good (trusted)
        or a proven lower bound (running on the floor)."""
        if self.trusted or self.on_floor:
            self._save(self.utc_now())

    def _save(self, moment: datetime) -> None:
        if self._time_store is None:
            return
        try:
            self._time_store.save_last_good(moment)
        except Exception:
            LOG.exception("cannot save the last good time")

    async def keeper(self, interval_s: float = KEEPER_INTERVAL_S) -> None:
        """Run forever: save the last good time every ``interval_s`` seconds."""
        while True:
            await self.sleep(interval_s)
            self.persist()


async def sleep_or_event(sleep: Awaitable[None], event: asyncio.Event) -> None:
    """Wait until ``sleep`` (a clock's ``sleep(delay_s)``) ends or ``event`` is set, whichever
    comes first: a loop that sleeps until its next deadline and wakes early on news."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(sleep)]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
