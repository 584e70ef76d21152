"""Heartbeat: a call after every interval without other traffic, for any OCPP version."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controller.csms.rpc import CallTimeout
from controller.runtime.clock import Clock, sleep_or_event

LOG = logging.getLogger(__name__)

# With the interval at 0 (no heartbeats) the loop looks again this often.
DISABLED_RECHECK_S = 60


class Heartbeat:
    """Sends ``Heartbeat`` once ``interval_s()`` passed since the last frame in either
    direction (any message shows the CSMS the link is alive, 1.6 4.6); the answer's
    ``currentTime`` goes to ``on_time``."""

    def __init__(
        self,
        *,
        clock: Clock,
        interval_s: Callable[[], int],
        call: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
        on_time: Callable[[Any], None],
    ) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._call = call
        self._on_time = on_time
        self.last_activity_s = clock.monotonic_s()
        self._changed = asyncio.Event()

    def interval_changed(self) -> None:
        """The interval was set anew (by the CSMS): the next Heartbeat is due by it at once,
        not after the wait the old interval began."""
        self._changed.set()

    def activity(self) -> None:
        """A frame went in or out."""
        self.last_activity_s = self._clock.monotonic_s()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            interval_s = self._interval_s()
            if interval_s <= 0:
                await sleep_or_event(self._clock.sleep(DISABLED_RECHECK_S), self._changed)
                continue
            idle_s = self._clock.monotonic_s() - self.last_activity_s
            if idle_s < interval_s:
                await sleep_or_event(self._clock.sleep(interval_s - idle_s), self._changed)
                continue
            try:
                result = await self._call("Heartbeat", {})
                self._on_time(result.get("currentTime"))
            except CallTimeout:
                LOG.warning("Heartbeat not answered")
                self.activity()
