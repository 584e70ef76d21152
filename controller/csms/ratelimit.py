"""A token bucket for the CALLs one backend may send (a runaway backend flooding a charger
that serves several, issue 15): each refusal answered, logged once per burst."""

from __future__ import annotations

import logging
from collections.abc import Callable

LOG = logging.getLogger(__name__)

# Generous for any CSMS that waits for each answer (OCPP-J: one CALL in flight), small
# enough that a loop gone wild cannot take the event loop from the other backends.
DEFAULT_RATE_PER_S = 10.0
DEFAULT_BURST = 50
# A burst of refusals is reported once, then at most once per this many seconds.
LOG_EVERY_S = 60.0


class CallRate:
    """``allow()`` True while the backend stays within ``rate_per_s`` CALLs per second with
    bursts up to ``burst``; ``now_s`` is a monotonic clock in seconds."""

    def __init__(
        self,
        name: str,
        now_s: Callable[[], float],
        *,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int = DEFAULT_BURST,
    ) -> None:
        self.name = name
        self._now_s = now_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at_s = now_s()
        self._logged_at_s: float | None = None
        self._unlogged = 0
        self.refused = 0  # in total, for the status and tests

    def allow(self, action: str) -> bool:
        now_s = self._now_s()
        elapsed_s = max(0.0, now_s - self._at_s)
        self._at_s = now_s
        self._tokens = min(float(self.burst), self._tokens + elapsed_s * self.rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        if self._logged_at_s is None or now_s - self._logged_at_s >= LOG_EVERY_S:
            LOG.warning(
                "backend %s sends more than %g CALLs/s (burst %d): refusing %s%s",
                self.name,
                self.rate_per_s,
                self.burst,
                action[:40],
                f" (and {self._unlogged} more since the last report)" if self._unlogged else "",
            )
            self._logged_at_s = now_s
            self._unlogged = 0
        else:
            self._unlogged += 1
        return False
