"""The security log: every security event on disk, bounded and SD-card friendly, with listeners."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from controller.core.security import CRITICAL as _CRITICAL
from controller.core.security import SecurityEvent, SecurityEventKind
from controller.core.timestamps import iso_utc
from controller.runtime.clock import Clock

LOG = logging.getLogger(__name__)

#: Non-critical events of one kind within this window are folded into one record (a CSMS
#: flooding invalid frames must not wear out the SD card or flood the CSMS with events).
BURST_S = 60.0
DEFAULT_MAX_BYTES = 256 * 1024
TECH_INFO_MAX = 255  # SecurityEventNotification techInfo: CiString255Type
# Expected in normal operation: logged at INFO, the others at WARNING.
_ROUTINE = frozenset(
    {
        SecurityEventKind.STARTUP_OF_THE_DEVICE,
        SecurityEventKind.RESET_OR_REBOOT,
        SecurityEventKind.FIRMWARE_UPDATED,
    }
)


@dataclass
class _Burst:
    until_s: float
    folded: int = 0


Listener = Callable[[SecurityEvent], None]


class SecurityLog:
    """Records security events (A04.FR.04, N01.FR.05) in a rolling JSON-lines file pair:
    ``security.log`` is appended to until it holds half of ``max_bytes``, then it becomes
    ``security.log.1`` (replacing the older one). So the log never takes more than
    ``max_bytes`` and always keeps at least the newest half. Lines are flushed, not fsynced:
    what must not be lost is the CSMS notification, which listeners queue durably.

    ``record`` never raises: a full disk must not turn a security event into a crash (the
    event still reaches the listeners).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        clock: Clock,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = None if path is None else Path(path)
        self._clock = clock
        self._max_bytes = max(4096, max_bytes)
        self._listeners: list[Listener] = []
        self._bursts: dict[SecurityEventKind, _Burst] = {}
        self.last_event: SecurityEvent | None = None  # for the status page
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                LOG.error("security log directory %s: %s", self.path.parent, exc.strerror)

    def add_listener(self, listener: Listener) -> None:
        """``listener(event)`` for each recorded event (after it was written)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop telling ``listener`` (an adapter handed over to another OCPP version)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def record(
        self, kind: SecurityEventKind, tech_info: str | None = None, *, fold: bool = True
    ) -> SecurityEvent | None:
        """Log a security event and tell the listeners; returns the event, or None when it
        was folded into a burst of the same kind (counted in the next record). ``fold=False``:
        a deliberate change that must each be on record (A01.FR.11), never folded."""
        now_s = self._clock.monotonic_s()
        folded = 0
        if kind not in _CRITICAL and fold:
            burst = self._bursts.get(kind)
            if burst is not None and now_s < burst.until_s:
                burst.folded += 1
                return None
            folded = burst.folded if burst is not None else 0
            self._bursts[kind] = _Burst(now_s + BURST_S)
        if tech_info is not None:
            tech_info = tech_info[:TECH_INFO_MAX]
        event = SecurityEvent(kind, iso_utc(self._clock.utc_now()), tech_info, folded)
        self._write(event)
        self.last_event = event
        LOG.log(
            logging.INFO if kind in _ROUTINE else logging.WARNING,
            "security event %s%s%s",
            kind.value,
            f": {tech_info}" if tech_info else "",
            f" (and {folded} more before)" if folded else "",
        )
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                LOG.exception("security event listener failed for %s", kind.value)
        return event

    def _write(self, event: SecurityEvent) -> None:
        if self.path is None:
            return
        line = json.dumps(
            {
                "at": event.at,
                "kind": event.kind.value,
                "critical": event.critical,
                "tech_info": event.tech_info,
                "repeated": event.repeated,
            },
            separators=(",", ":"),
        )
        try:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size + len(line) + 1 > self._max_bytes // 2:
                os.replace(self.path, self._older)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            LOG.error("security log not written (%s): %s", exc.strerror, event.kind.value)

    @property
    def _older(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + ".1")

    def entries(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[dict[str, object]]:
        """The logged events, oldest first, optionally within [since, until]."""
        if self.path is None:
            return
        for file in (self._older, self.path):
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                LOG.error("security log %s unreadable: %s", file, exc.strerror)
                continue
            for line in lines:
                try:
                    entry = json.loads(line)
                    at = datetime.fromisoformat(str(entry["at"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a power loss
                if (since is None or at >= since) and (until is None or at <= until):
                    yield entry

    def clear(self) -> None:
        """Empty the log, then record that it was cleared (a critical event)."""
        if self.path is not None:
            for file in (self._older, self.path):
                try:
                    file.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    LOG.error("security log %s not cleared: %s", file, exc.strerror)
        self._bursts.clear()
        self.record(SecurityEventKind.SECURITY_LOG_WAS_CLEARED)
