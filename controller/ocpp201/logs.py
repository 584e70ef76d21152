"""OCPP 2.0.1 GetLog (N01): the diagnostics or security log uploaded in the background and
its LogStatusNotifications, also when triggered (F06.FR.15)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import parse_iso
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.maintenance.urls import BadLocation, parse_location

if TYPE_CHECKING:
    # The archive and upload code loads with the first GetLog or trigger (logs_of), not
    # with the client: these modules are not imported at start.
    from controller.maintenance.diagnostics import DiagnosticsSources
    from controller.maintenance.log_uploads import LogUpload, Uploader
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

ACTION = "LogStatusNotification"
# When the CSMS leaves them out (N01: "left to the Charging Station"): two retries a minute
# apart. Larger values are capped: an upload must end some day.
DEFAULT_RETRIES = 2
DEFAULT_RETRY_INTERVAL_S = 60
MAX_RETRIES = 10
MAX_RETRY_INTERVAL_S = 3600

# UploadLogStatusEnumType by UploadResult value: the failures told apart (N01.FR.10: "as
# precise as possible").
FINAL: dict[str, str] = {
    "uploaded": "Uploaded",
    "failed": "UploadFailure",
    "permission_denied": "PermissionDenied",
    "bad_message": "BadMessage",
    "not_supported": "NotSupportedOperation",
}
# LogEnumType -> LogKind value.
LOG_TYPES = {"DiagnosticsLog": "diagnostics", "SecurityLog": "securitylog"}


class Logs201:
    """A client's archive sources and the one upload it runs at a time (a new request
    replaces a running one, N01.FR.12)."""

    def __init__(
        self,
        client: Ocpp201Client,
        sources: DiagnosticsSources | None,
        *,
        upload: Uploader | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        from controller.maintenance.lazy_transfers import upload_file
        from controller.maintenance.log_uploads import HeldNotifications

        self.client = client
        self.sources = sources
        self.upload: Uploader = upload or upload_file
        self.ssl_context = ssl_context
        self.job: LogUpload | None = None
        self.finished: list[tuple[LogUpload, str]] = []  # (job, final status): the last few
        self.notifications = HeldNotifications(
            clock=client.clock,
            connected=lambda: client.connection_state() == "accepted",
            call=client.call,
            spawn=lambda coro: client.spawn(coro, name="log-status"),
            transient=(CallTimeout, ConnectionLost),
            refused=(CallError,),
        )

    def send(self, status: str, request_id: int | None) -> None:
        payload: dict[str, Any] = {"status": status}
        if request_id is not None:
            payload["requestId"] = request_id  # N01.FR.07
        self.notifications.send(ACTION, payload)

    # ------------------------------------------------------------------ GetLog

    async def request(self, p: dict[str, Any]) -> dict[str, Any]:
        """N01.FR.01/05: Accepted with the file name, Rejected (with a reason code) when the
        log cannot be given: no archive sources, no security log kept, a location evsed
        cannot upload to, or a window whose oldest time is after its latest. A running
        upload is canceled first (N01.FR.12: AcceptedCanceled, N01.FR.20: its
        LogStatusNotification AcceptedCanceled)."""
        from controller.maintenance.diagnostics import BadWindow, LogKind, file_name
        from controller.maintenance.log_uploads import LogUpload

        kind = LogKind(LOG_TYPES[str(p["logType"])])
        request_id = int(p["requestId"])
        sources = self.sources
        if sources is None or (kind is LogKind.SECURITY and sources.security_log is None):
            return _rejected("NotEnabled", "this log is not kept")
        log = p["log"]
        try:
            location = parse_location(str(log["remoteLocation"]))
        except BadLocation as exc:
            LOG.warning("GetLog %d rejected: %s", request_id, exc, extra={"action": "GetLog"})
            return _rejected("InvalidURL", str(exc))
        try:
            since, until = _window(log.get("oldestTimestamp"), log.get("latestTimestamp"))
        except BadWindow as exc:
            LOG.warning("GetLog %d rejected: %s", request_id, exc, extra={"action": "GetLog"})
            return _rejected("InvalidValue", str(exc))
        canceled = await self.cancel_running()
        if canceled is not None:
            self.send("AcceptedCanceled", canceled.request_id)
        job = LogUpload(
            kind,
            request_id,
            location,
            file_name(sources.station_id, kind, self.client.clock.utc_now()),
            since,
            until,
            _bounded(p.get("retries"), DEFAULT_RETRIES, MAX_RETRIES),
            _bounded(p.get("retryInterval"), DEFAULT_RETRY_INTERVAL_S, MAX_RETRY_INTERVAL_S),
        )
        self.job = job
        job.task = self.client.spawn(self._run(job, sources), name="log-upload")
        status = "AcceptedCanceled" if canceled is not None else "Accepted"
        return {"status": status, "filename": job.filename}

    async def cancel_running(self) -> LogUpload | None:
        """Stop the running upload (if any) and wait until it stopped; returns it."""
        job = self.job
        if job is None or job.task is None or job.task.done():
            return None
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)
        LOG.info("upload of %s canceled by a new GetLog", job.filename)
        return job

    async def _run(self, job: LogUpload, sources: DiagnosticsSources) -> None:
        from controller.maintenance.log_uploads import upload_archive

        try:
            outcome = await upload_archive(
                sources,
                job,
                clock=self.client.clock,
                upload=self.upload,
                ssl_context=self.ssl_context,
                on_uploading=lambda: self.send("Uploading", job.request_id),  # N01.FR.08
            )
            final = FINAL[outcome.result.value]  # N01.FR.09 / N01.FR.10
            self.finished = [*self.finished[-9:], (job, final)]
            self.send(final, job.request_id)
        finally:
            if self.job is job:
                self.job = None

    # ------------------------------------------------------------------ TriggerMessage

    def triggered(self) -> None:
        """F06.FR.15 / N01.FR.13: Uploading with the GetLog's requestId while an upload
        runs, else Idle without a requestId."""
        job = self.job
        if job is not None and job.running:
            self.send("Uploading", job.request_id)
        else:
            self.send("Idle", None)


def _rejected(reason: str, info: str) -> dict[str, Any]:
    return {
        "status": "Rejected",
        "statusInfo": {"reasonCode": reason, "additionalInfo": info[:512]},
    }


def _bounded(value: Any, default: int, high: int) -> int:
    if not isinstance(value, int):
        return default
    return max(0, min(high, value))


def _window(a: Any, b: Any) -> tuple[datetime | None, datetime | None]:
    """oldestTimestamp / latestTimestamp; BadWindow when one is unreadable or reversed."""
    from controller.maintenance.diagnostics import BadWindow, check_window

    since = None if a is None else parse_iso(str(a))
    until = None if b is None else parse_iso(str(b))
    if (a is not None and since is None) or (b is not None and until is None):
        raise BadWindow("a time of the window is not a dateTime")
    check_window(since, until)
    return since, until


def logs_of(client: Ocpp201Client) -> Logs201:
    """The client's GetLog state, built on first use from the sources the composition root
    left (``client.diagnostics_sources``); without them every GetLog is Rejected."""
    logs = client.logs
    if not isinstance(logs, Logs201):
        factory: Callable[[], DiagnosticsSources] | None = client.diagnostics_sources
        logs = client.logs = Logs201(client, None if factory is None else factory())
    return logs


async def get_log(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """GetLogRequest (N01)."""
    return await logs_of(client).request(payload)


def trigger_log_status(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """TriggerMessage(LogStatusNotification): the real upload status (F06.FR.15)."""
    logs_of(client).triggered()
    return "Accepted"


ROUTES = {"GetLog": get_log}
