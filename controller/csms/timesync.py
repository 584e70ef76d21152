"""The CSMS's time and ours: currentTime from boot and heartbeat answers confirms the clock,
and no timestamp before the clock's build floor ever leaves the charger."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from controller.core.timestamps import clamp_iso, iso_utc
from controller.runtime.clock import Clock

LOG = logging.getLogger(__name__)


class TimeSync:
    """Used by every protocol version: 1.6 BootNotification.conf / Heartbeat.conf and 2.0.1
    BootNotificationResponse / HeartbeatResponse carry ``currentTime``, "RECOMMENDED to be
    used by the Charge Point to synchronize its internal clock" (1.6 4.2, 4.6)."""

    def __init__(
        self,
        clock: Clock,
        on_corrected: Callable[[float], None] = lambda s: None,
        *,
        sets_clock: bool = True,
    ):
        self._clock = clock
        # False for a backend other than the primary (issue 15): the charger keeps one time
        # source; the others' times are only compared (``server_time_offset_s``).
        self._sets_clock = sets_clock
        # A later correction of an already trusted clock: things stamped on the old timeline
        # and still waiting (the adapter's statuses) move by this many seconds. (The first
        # confirmation calls the clock's trust listeners instead.)
        self._on_corrected = on_corrected
        self._warned_untrusted = False
        self.server_time_offset_s: float | None = None

    def note_server_time(self, text: Any) -> None:
        if not isinstance(text, str):
            return
        try:
            server = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return
        if server.tzinfo is None:
            return
        self.server_time_offset_s = (server - self._clock.utc_now()).total_seconds()
        confirm = getattr(self._clock, "confirm_from_csms", None)  # a TrustedClock
        if confirm is None or not self._sets_clock:
            return
        was_trusted = bool(getattr(self._clock, "trusted", True))
        applied_s = float(confirm(server))
        if was_trusted:
            self._on_corrected(applied_s)

    def guard(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Never send a timestamp before the clock's build floor (a Pi without RTC boots at
        1970; messages queued by older versions may carry such times), and warn when the
        timestamps come from a clock that is not confirmed yet."""
        floor = getattr(self._clock, "build_floor", None)
        if floor is None:
            return payload
        if getattr(self._clock, "trusted", True):
            self._warned_untrusted = False
        elif not self._warned_untrusted:
            self._warned_untrusted = True
            LOG.warning(
                "sending %s with untrusted time (not confirmed by NTP or the CSMS yet)", action
            )

        def fix(value: Any) -> Any:
            if isinstance(value, dict):
                return {
                    k: clamp_iso(v, floor) if k == "timestamp" and isinstance(v, str) else fix(v)
                    for k, v in value.items()
                }
            if isinstance(value, list):
                return [fix(v) for v in value]
            return value

        fixed: dict[str, Any] = fix(payload)
        if fixed != payload:
            LOG.warning("%s: timestamp(s) before %s raised to it", action, iso_utc(floor))
        return fixed
