"""Defences against a misbehaving peer (a charger or a backend, in the charger and in
`evsed proxy`): a token bucket per backend and a log that reports a burst of bad input or
refusals once, not once per frame."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class TokenBucket:
    """``burst`` calls at once, refilled at ``per_s``; ``allow()`` takes one or says no."""

    def __init__(
        self, burst: int, per_s: float, now_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.per_s = per_s
        self._now_s = now_s
        self._tokens = float(burst)
        self._at = now_s()
        self.refused = 0

    def allow(self) -> bool:
        now = self._now_s()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.refused += 1
        return False


class BurstLog:
    """Logs the first incident of a burst; later ones are counted until ``quiet_s`` pass
    without one, and the next incident's line says how many were not logged."""

    def __init__(
        self,
        logger: logging.Logger,
        subject: str,
        quiet_s: float = 10.0,
        now_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._subject = subject
        self._quiet_s = quiet_s
        self._now_s = now_s
        self._last = float("-inf")
        self._suppressed = 0
        self.total = 0

    def __call__(self, what: str) -> None:
        self.total += 1
        now = self._now_s()
        quiet = now - self._last > self._quiet_s
        self._last = now
        if not quiet:
            self._suppressed += 1
            return
        more = f" (and {self._suppressed} more in the last burst)" if self._suppressed else ""
        self._suppressed = 0
        self._log.warning("%s: %s%s", self._subject, what, more)
