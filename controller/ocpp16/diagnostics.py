"""GetDiagnostics (1.6 5.9) and GetLog (whitepaper N01): archives uploaded in the background,
their status notifications, and the (Extended)TriggerMessage for those statuses."""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import parse_iso
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.maintenance.diagnostics import (
    BadWindow,
    DiagnosticsSources,
    LogKind,
    check_window,
    file_name,
)
from controller.maintenance.lazy_transfers import upload_file
from controller.maintenance.log_uploads import (
    HeldNotifications,
    LogUpload,
    Uploader,
    upload_archive,
)
from controller.maintenance.transfers import UploadResult
from controller.maintenance.urls import BadLocation, parse_location
from controller.ocpp16.routes import route, trigger

if TYPE_CHECKING:
    from controller.ocpp16.client import Ocpp16Client

LOG = logging.getLogger(__name__)

# When the CSMS leaves them out (1.6 6.25, whitepaper 5.9: "left to the Charge Point"): two
# retries a minute apart. Larger values from the CSMS are capped: an upload must end some day.
DEFAULT_RETRIES = 2
DEFAULT_RETRY_INTERVAL_S = 60
MAX_RETRIES = 10
MAX_RETRY_INTERVAL_S = 3600

# 1.6 7.24 DiagnosticsStatus has one failure; the whitepaper's 6.19 UploadLogStatusEnumType
# tells them apart (N01.FR.10: "as precise as possible").
_DIAGNOSTICS_FINAL = {UploadResult.UPLOADED: "Uploaded"}
_LOG_FINAL = {
    UploadResult.UPLOADED: "Uploaded",
    UploadResult.FAILED: "UploadFailure",
    UploadResult.PERMISSION_DENIED: "PermissionDenied",
    UploadResult.BAD_MESSAGE: "BadMessage",
    UploadResult.NOT_SUPPORTED: "NotSupportedOperation",
}

# One requested upload: GetDiagnostics (``request_id`` None) or GetLog.
Job = LogUpload


class Diagnostics16:
    """A client's archive sources and the one upload it runs at a time (a new request
    replaces a running one: N01.FR.11 for GetLog, the same rule for GetDiagnostics)."""

    def __init__(
        self,
        sources: DiagnosticsSources | None,
        *,
        upload: Uploader = upload_file,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sources = sources
        self.upload = upload
        self.ssl_context = ssl_context
        self.job: Job | None = None
        self.finished: list[tuple[Job, str]] = []  # (job, final status): the last few, for tests
        # Status notifications in order, each waiting for the CSMS (built with the client).
        self.notifications: HeldNotifications | None = None

    @property
    def pending(self) -> list[tuple[str, dict[str, Any], float]]:
        """The status notifications not delivered yet."""
        return [] if self.notifications is None else list(self.notifications.pending)

    async def cancel_running(self) -> Job | None:
        """Stop the running upload (if any) and wait until it stopped; returns it."""
        job = self.job
        if job is None or job.task is None or job.task.done():
            return None
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
        LOG.info("upload of %s canceled by a new request", job.filename)
        return job


_STATE: weakref.WeakKeyDictionary[Ocpp16Client, Diagnostics16] = weakref.WeakKeyDictionary()


def attach(
    client: Ocpp16Client,
    sources: DiagnosticsSources | None,
    *,
    upload: Uploader = upload_file,
    ssl_context: ssl.SSLContext | None = None,
) -> Diagnostics16:
    """Give ``client`` what its archives are made of (the composition root does this)."""
    state = Diagnostics16(sources, upload=upload, ssl_context=ssl_context)
    _STATE[client] = state
    return state


def state_of(client: Ocpp16Client) -> Diagnostics16:
    state = _STATE.get(client)
    if state is None:
        # The composition root leaves a factory (this module is loaded on the first
        # request); without one (unit tests) no diagnostics are available.
        factory = client.diagnostics_sources
        state = _STATE[client] = Diagnostics16(None if factory is None else factory())
    return state


# ------------------------------------------------------------------ requests


def _bounded(value: Any, default: int, high: int) -> int:
    if not isinstance(value, int):
        return default
    return max(0, min(high, value))


def _window(a: str | None, b: str | None) -> tuple[datetime | None, datetime | None]:
    """The request's time window; BadWindow when a time is unreadable or reversed."""
    since = None if a is None else parse_iso(a)
    until = None if b is None else parse_iso(b)
    if (a is not None and since is None) or (b is not None and until is None):
        raise BadWindow("a time of the window is not a dateTime")
    check_window(since, until)
    return since, until


@route("GetDiagnostics")
async def on_get_diagnostics(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """5.9: the file name that will be uploaded, or no file name when there is nothing to
    upload. A location evsed cannot upload to, or startTime after stopTime, gets no file
    name and one DiagnosticsStatusNotification UploadFailed, so the CSMS is not left waiting."""
    state = state_of(client)
    if state.sources is None:
        return {}
    try:
        location = parse_location(p["location"])
        since, until = _window(p.get("startTime"), p.get("stopTime"))
    except (BadLocation, BadWindow) as exc:
        LOG.warning("GetDiagnostics refused: %s", exc, extra={"action": "GetDiagnostics"})
        _send_status(client, "DiagnosticsStatusNotification", {"status": "UploadFailed"})
        return {}
    await state.cancel_running()
    job = Job(
        LogKind.DIAGNOSTICS,
        None,
        location,
        file_name(state.sources.station_id, LogKind.DIAGNOSTICS, client.clock.utc_now()),
        since,
        until,
        _bounded(p.get("retries"), DEFAULT_RETRIES, MAX_RETRIES),
        _bounded(p.get("retryInterval"), DEFAULT_RETRY_INTERVAL_S, MAX_RETRY_INTERVAL_S),
    )
    _start(client, state, job)
    return {"fileName": job.filename}


@route("GetLog")
async def on_get_log(client: Ocpp16Client, p: dict[str, Any]) -> dict[str, Any]:
    """N01.FR.01: Accepted and the file name; AcceptedCanceled when it replaced a running
    upload (N01.FR.11); Rejected for a location evsed cannot upload to, a reversed window,
    or a security log this charger does not keep."""
    state = state_of(client)
    kind = LogKind.SECURITY if p["logType"] == "SecurityLog" else LogKind.DIAGNOSTICS
    sources = state.sources
    if sources is None or (kind is LogKind.SECURITY and sources.security_log is None):
        return {"status": "Rejected"}
    log = p["log"]
    try:
        location = parse_location(log["remoteLocation"])
        since, until = _window(log.get("oldestTimestamp"), log.get("latestTimestamp"))
    except (BadLocation, BadWindow) as exc:
        LOG.warning("GetLog %s rejected: %s", p["requestId"], exc, extra={"action": "GetLog"})
        return {"status": "Rejected"}
    canceled = await state.cancel_running()
    job = Job(
        kind,
        int(p["requestId"]),
        location,
        file_name(sources.station_id, kind, client.clock.utc_now()),
        since,
        until,
        _bounded(p.get("retries"), DEFAULT_RETRIES, MAX_RETRIES),
        _bounded(p.get("retryInterval"), DEFAULT_RETRY_INTERVAL_S, MAX_RETRY_INTERVAL_S),
    )
    _start(client, state, job)
    return {"status": "AcceptedCanceled" if canceled else "Accepted", "filename": job.filename}


def _start(client: Ocpp16Client, state: Diagnostics16, job: Job) -> None:
    state.job = job
    job.task = client._tasks.spawn(_run(client, state, job), name=f"upload-{job.kind.value}")


# ------------------------------------------------------------------ the upload


def _status_message(job: Job, status: str) -> tuple[str, dict[str, Any]]:
    if job.request_id is None:
        return "DiagnosticsStatusNotification", {"status": status}
    # N01.FR.07: every notification of this upload carries the GetLog's requestId.
    return "LogStatusNotification", {"status": status, "requestId": job.request_id}


async def _run(client: Ocpp16Client, state: Diagnostics16, job: Job) -> None:
    assert state.sources is not None
    try:
        outcome = await upload_archive(
            state.sources,
            job,
            clock=client.clock,
            upload=state.upload,
            ssl_context=state.ssl_context,
            # 6.17 / N01.FR.08: Uploading when the upload starts.
            on_uploading=lambda: _send_status(client, *_status_message(job, "Uploading")),
        )
        if job.request_id is None:
            final = _DIAGNOSTICS_FINAL.get(outcome.result, "UploadFailed")
        else:
            final = _LOG_FINAL[outcome.result]  # N01.FR.09 / N01.FR.10
        state.finished = [*state.finished[-9:], (job, final)]
        _send_status(client, *_status_message(job, final))
    finally:
        if state.job is job:
            state.job = None


def _send_status(client: Ocpp16Client, action: str, payload: dict[str, Any]) -> None:
    """Queue a status notification; one task sends them in order, after the CALLRESULT
    that caused them, each as soon as the CSMS connection is up (log_uploads.py)."""
    state = state_of(client)
    if state.notifications is None:
        state.notifications = HeldNotifications(
            clock=client.clock,
            connected=lambda: client.connection_state() == "accepted",
            call=client._call,
            spawn=lambda coro: client._tasks.spawn(coro, name="upload-status"),
            transient=(CallTimeout, ConnectionLost),
            refused=(CallError,),
        )
    state.notifications.send(action, payload)


# ------------------------------------------------------------------ triggers


@trigger("DiagnosticsStatusNotification")
def trigger_diagnostics_status(
    client: Ocpp16Client, connector_id: int | None, extended: bool
) -> str:
    """5.17 / 6.17: Uploading while a GetDiagnostics upload runs, else Idle (Idle only
    ever as the answer to a trigger)."""
    job = state_of(client).job
    running = job is not None and job.request_id is None
    _send_status(
        client, "DiagnosticsStatusNotification", {"status": "Uploading" if running else "Idle"}
    )
    return "Accepted"


@trigger("LogStatusNotification")
def trigger_log_status(client: Ocpp16Client, connector_id: int | None, extended: bool) -> str:
    """ExtendedTriggerMessage (whitepaper 5.5): Uploading with the requestId while a GetLog
    upload runs, else Idle without a requestId (N01.FR.12, 6.19 Idle)."""
    job = state_of(client).job
    if job is not None and job.request_id is not None:
        payload: dict[str, Any] = {"status": "Uploading", "requestId": job.request_id}
    else:
        payload = {"status": "Idle"}
    _send_status(client, "LogStatusNotification", payload)
    return "Accepted"
