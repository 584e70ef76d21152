"""A requested log upload in neutral words: the archive built, uploaded with retries, and
status notifications held until the CSMS connection can take them."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.maintenance.diagnostics import DiagnosticsSources, LogKind, build_archive
from controller.maintenance.transfers import UploadOutcome, UploadResult
from controller.maintenance.urls import Location
from controller.runtime.clock import Clock

LOG = logging.getLogger(__name__)

Uploader = Callable[..., Awaitable[UploadOutcome]]

# A status notification waits this long (on the injected clock) for the CSMS connection: an
# Uploaded after a short outage still arrives; one older than this is dropped (the CSMS can
# ask with a trigger).
STATUS_HOLD_S = 600.0
OFFLINE_POLL_S = 1.0


@dataclass
class LogUpload:
    """One requested upload (``request_id``: the CSMS's id of it, None for 1.6
    GetDiagnostics)."""

    kind: LogKind
    request_id: int | None
    location: Location
    filename: str
    since: datetime | None
    until: datetime | None
    retries: int
    retry_interval_s: float
    task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


async def upload_archive(
    sources: DiagnosticsSources,
    job: LogUpload,
    *,
    clock: Clock,
    upload: Uploader,
    ssl_context: ssl.SSLContext | None,
    on_uploading: Callable[[], None],
) -> UploadOutcome:
    """Build the archive and upload it, 1 + ``retries`` attempts ``retry_interval_s`` apart
    (errata 3.50: "retries" are retries), each after the first resuming. ``on_uploading``
    is called once the upload starts (never when the archive could not be built)."""
    try:
        archive = await build_archive(
            sources, job.kind, job.since, job.until, filename=job.filename
        )
    except Exception as exc:
        LOG.exception("building %s failed", job.filename)
        return UploadOutcome(UploadResult.FAILED, f"archive not built: {exc}")
    LOG.info(
        "uploading %s (%d bytes, %d log lines from %s) to %s",
        job.filename,
        len(archive.data),
        archive.log_lines,
        archive.log_source,
        job.location.redacted(),
    )
    on_uploading()
    outcome = UploadOutcome(UploadResult.FAILED, "not tried")
    for attempt in range(1 + job.retries):
        if attempt:
            await clock.sleep(job.retry_interval_s)
        outcome = await upload(
            job.location,
            archive.data,
            job.filename,
            ssl_context=ssl_context,
            resume=attempt > 0,
        )
        LOG.info(
            "upload of %s, attempt %d/%d: %s (%s)",
            job.filename,
            attempt + 1,
            1 + job.retries,
            outcome.result.value,
            outcome.detail,
        )
        if outcome.result.final:
            break
    return outcome


class HeldNotifications:
    """Status notifications sent in order by one task, after the CALLRESULT that caused
    them, each as soon as the CSMS connection is up (within STATUS_HOLD_S); a CALLERROR
    drops the one refused, a lost connection or timeout keeps it for the next try."""

    def __init__(
        self,
        *,
        clock: Clock,
        connected: Callable[[], bool],
        call: Callable[[str, dict[str, Any]], Awaitable[Any]],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
        transient: tuple[type[BaseException], ...],
        refused: tuple[type[BaseException], ...],
    ) -> None:
        self.clock = clock
        self.connected = connected
        self.call = call
        self.spawn = spawn
        self.transient = transient
        self.refused = refused
        self.pending: deque[tuple[str, dict[str, Any], float]] = deque()
        self._sending = False

    def send(self, action: str, payload: dict[str, Any]) -> None:
        self.pending.append((action, payload, self.clock.monotonic_s() + STATUS_HOLD_S))
        if not self._sending:
            self._sending = True
            self.spawn(self._run())

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the CALLRESULT of the request go out first
            while self.pending:
                action, payload, deadline_s = self.pending[0]
                if self.clock.monotonic_s() >= deadline_s:
                    LOG.warning("%s %s dropped: no CSMS connection", action, payload["status"])
                    self.pending.popleft()
                    continue
                if not self.connected():
                    await self.clock.sleep(OFFLINE_POLL_S)
                    continue
                try:
                    await self.call(action, payload)
                except self.transient as exc:
                    LOG.info("%s %s not delivered (%s); again", action, payload["status"], exc)
                    await self.clock.sleep(OFFLINE_POLL_S)
                    continue
                except self.refused as exc:
                    LOG.warning("%s %s refused by the CSMS: %s", action, payload["status"], exc)
                self.pending.popleft()
        finally:
            self._sending = False
