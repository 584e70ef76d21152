"""Weld and failed-to-close supervision of a contactor with an auxiliary (mirror) contact.

Pure decision logic with the time passed in, for any driver that can drive a coil and read a
feedback contact (GPIO today, a relay board on a bus tomorrow). The driver owns threads,
locks and pins; it tells the supervisor what the runtime asked for and what the coil and
the feedback do, and the supervisor says whether the coil may be driven and what is wrong.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class FeedbackFault(enum.Enum):
    # The feedback says closed while the coil is off: the coil is never driven again until
    # the feedback has read open for the delay.
    WELDED = "welded"
    # The coil is on but the feedback says open (or it dropped out): the coil is switched
    # off, and retried only after the runtime commanded open and the retry delay passed.
    FAILED_TO_CLOSE = "failed to close"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one evaluation: switch the coil off now, and look again after."""

    force_off: bool
    recheck_s: float


# While coil and feedback agree and nothing is wrong, nothing is pending: a feedback edge
# wakes the driver at once, and this re-read is only the safety net for an edge that was
# missed (quiet when idle: one wake-up a second instead of ten).
STEADY_RECHECK_S = 1.0


class FeedbackSupervisor:
    """A coil/feedback disagreement lasting ``delay_s`` is a fault (PowerSwitchFailure).

    A close refused during a fault is not replayed when it clears: the runtime commands
    again when its model leaves the fault. Not thread-safe: the driver calls it under its
    own lock.
    """

    def __init__(
        self,
        now_s: float,
        *,
        delay_s: float = 0.3,
        retry_delay_s: float = 30.0,
        recheck_s: float = 0.1,
    ) -> None:
        self._delay_s = delay_s
        self._retry_delay_s = retry_delay_s
        self._recheck_s = recheck_s
        self._commanded = False  # what the runtime asked for
        self._disagree_since_s: float | None = None
        self._agree_since_s: float | None = now_s
        self._opened_since_s = now_s  # when the runtime last commanded open
        self.fault: FeedbackFault | None = None

    @property
    def may_drive(self) -> bool:
        return self.fault is None

    def command(self, closed: bool, now_s: float) -> None:
        """The runtime asked for ``closed``."""
        if self._commanded and not closed:
            self._opened_since_s = now_s
        self._commanded = closed

    def coil_switched(self) -> None:
        """The coil output changed: the disagreement delay starts afresh."""
        self._disagree_since_s = None

    def evaluate(self, driven: bool, feedback_closed: bool, now_s: float) -> Verdict:
        """Compare the coil with the feedback at ``now_s``; update ``fault``."""
        delay_s = self._delay_s
        if feedback_closed != driven:
            self._agree_since_s = None
            if self._disagree_since_s is None:
                self._disagree_since_s = now_s
            remaining_s = self._disagree_since_s + delay_s - now_s
            if remaining_s > 0:
                return Verdict(False, min(self._recheck_s, remaining_s))
            if feedback_closed:
                if self.fault is not FeedbackFault.WELDED:
                    log.error("contactor feedback says closed while the coil is off: welded")
                self.fault = FeedbackFault.WELDED
                return Verdict(False, self._recheck_s)
            if self.fault is not FeedbackFault.FAILED_TO_CLOSE:
                log.error("contactor feedback stays open while the coil is on")
            self.fault = FeedbackFault.FAILED_TO_CLOSE
            # Never keep a coil on that does not do its job.
            return Verdict(True, self._recheck_s)
        self._disagree_since_s = None
        if self._agree_since_s is None:
            self._agree_since_s = now_s
        if self.fault is None:
            return Verdict(False, max(self._recheck_s, STEADY_RECHECK_S))
        clear_at_s = self._agree_since_s + delay_s
        if self.fault is FeedbackFault.FAILED_TO_CLOSE:
            if self._commanded:
                # Wait for the runtime to acknowledge the fault by commanding open.
                return Verdict(False, self._recheck_s)
            clear_at_s = max(clear_at_s, self._opened_since_s + self._retry_delay_s)
        if now_s < clear_at_s:
            return Verdict(False, min(self._recheck_s, clear_at_s - now_s))
        log.warning("contactor feedback agrees again (was: %s)", self.fault.value)
        self.fault = None
        return Verdict(False, self._recheck_s)
