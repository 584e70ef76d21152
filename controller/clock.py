"""Injectable time: the system clock in production, a manual clock that tests advance."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta


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


def iso_utc(moment: datetime) -> str:
    """OCPP timestamp with milliseconds and an explicit UTC offset."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
