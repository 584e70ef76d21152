"""One place that starts background tasks, keeps references and logs their failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

LOG = logging.getLogger(__name__)


class TaskGroup:
    """Like asyncio.TaskGroup but long-lived: failures are logged (and optionally fatal)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed: asyncio.Future[BaseException] | None = None

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str, critical: bool = False
    ) -> asyncio.Task[Any]:
        """Start ``coro``; a critical task's failure is reported through ``failed``."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, critical))
        return task

    def _done(self, task: asyncio.Task[Any], critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        LOG.error("task %s failed", task.get_name(), exc_info=exc)
        if critical:
            failed = self._failed_future()
            if not failed.done():
                failed.set_result(exc)

    def _failed_future(self) -> asyncio.Future[BaseException]:
        if self.failed is None:
            self.failed = asyncio.get_running_loop().create_future()
        return self.failed

    async def failure(self) -> BaseException:
        """Wait until a critical task fails (no polling); its exception."""
        return await asyncio.shield(self._failed_future())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def __len__(self) -> int:
        return len(self._tasks)
