"""A firmware update from request to installed: schedule, download, verify, wait, install."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from controller.core.connector import Phase
from controller.core.control import StationControl
from controller.core.security import SecurityEventKind
from controller.maintenance import FIRMWARE_JOB_KEY
from controller.maintenance.installer import Installer, InstallOutcome, TrialState
from controller.maintenance.lazy_transfers import download
from controller.maintenance.transfers import Downloaded, DownloadError
from controller.maintenance.urls import BadLocation, parse_location
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup
from controller.security.log import SecurityLog
from controller.security.material import FirmwareTrust

LOG = logging.getLogger(__name__)

JOB_KEY = FIRMWARE_JOB_KEY  # the update in progress (JSON), so it survives a restart
STATE_KEY = "firmware.state"  # the last state and its request id, for a triggered status
MAX_FIRMWARE_BYTES = 512 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 60.0
IDLE_POLL_S = 5.0  # how often a waiting install looks whether the transactions ended


class FirmwareState(enum.Enum):
    """Where an update is, in neutral words (the 1.6 adapter spells them its way)."""

    IDLE = "idle"
    DOWNLOAD_SCHEDULED = "download scheduled"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    DOWNLOAD_FAILED = "download failed"
    SIGNATURE_VERIFIED = "signature verified"
    INVALID_SIGNATURE = "invalid signature"
    INSTALL_SCHEDULED = "install scheduled"  # a future install time, or waiting for idle
    INSTALLING = "installing"
    INSTALL_REBOOTING = "install rebooting"
    INSTALLED = "installed"
    INSTALLATION_FAILED = "installation failed"
    INSTALL_VERIFICATION_FAILED = "install verification failed"


TERMINAL = frozenset(
    {
        FirmwareState.IDLE,
        FirmwareState.DOWNLOAD_FAILED,
        FirmwareState.INVALID_SIGNATURE,
        FirmwareState.INSTALLED,
        FirmwareState.INSTALLATION_FAILED,
        FirmwareState.INSTALL_VERIFICATION_FAILED,
    }
)


class SubmitResult(enum.Enum):
    ACCEPTED = "accepted"
    ACCEPTED_CANCELED = "accepted, the update in progress was canceled"
    REJECTED = "rejected"  # an install runs and cannot be canceled
    INVALID_CERTIFICATE = "invalid certificate"


@dataclass(frozen=True)
class FirmwareJob:
    """One update request. ``signed``: the whitepaper's signed update (signature and
    signing certificate set, statuses carry ``request_id``)."""

    location: str
    retrieve_at: datetime
    retries: int = 0
    retry_interval_s: int = 0
    install_at: datetime | None = None
    signature: str | None = None
    signing_certificate: str | None = None
    request_id: int | None = None

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["retrieve_at"] = self.retrieve_at.isoformat()
        data["install_at"] = None if self.install_at is None else self.install_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FirmwareJob:
        install_at = data.get("install_at")
        return cls(
            location=str(data["location"]),
            retrieve_at=datetime.fromisoformat(data["retrieve_at"]),
            retries=int(data.get("retries", 0)),
            retry_interval_s=int(data.get("retry_interval_s", 0)),
            install_at=None if install_at is None else datetime.fromisoformat(install_at),
            signature=data.get("signature"),
            signing_certificate=data.get("signing_certificate"),
            request_id=data.get("request_id"),
        )


class SettingsRows(Protocol):
    """The store's settings rows (controller.storage.store.Store implements it)."""

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> None: ...


Listener = Callable[[FirmwareState, "FirmwareJob | None"], None]
Fetch = Callable[..., Awaitable[Downloaded]]


class FirmwareUpdater:
    """Runs at most one update. Every state change is persisted and told to the listeners
    (the adapter sends it). The charger keeps charging through all of it: an install waits
    until no transaction runs, and meanwhile the connectors not in use are made unavailable
    (and made available again afterwards, also after a failure)."""

    def __init__(
        self,
        *,
        store: SettingsRows,
        clock: Clock,
        station: StationControl,
        installer: Installer,
        firmware_dir: Path,
        restart: Callable[[], None],
        trust: FirmwareTrust | None = None,
        security_log: SecurityLog | None = None,
        max_bytes: int = MAX_FIRMWARE_BYTES,
        timeout_s: float = DOWNLOAD_TIMEOUT_S,
        tls_context: ssl.SSLContext | None = None,
        idle_poll_s: float = IDLE_POLL_S,
        fetch: Fetch | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.station = station
        self.installer = installer
        self.firmware_dir = Path(firmware_dir)
        self.restart = restart
        self.trust = trust
        self.security_log = security_log
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.tls_context = tls_context
        self.idle_poll_s = idle_poll_s
        self.fetch = fetch if fetch is not None else download
        self.state = FirmwareState.IDLE
        self.job: FirmwareJob | None = None
        self._blocked: list[int] = []  # connectors this update made unavailable
        # Whether new sessions may start on free connectors while an install waits for the
        # transactions to end (2.0.1 ChargingStation.AllowNewSessionsPendingFirmwareUpdate,
        # L02.FR.04; the adapter sets it, read at each check). False: they are made
        # unavailable meanwhile (L01.FR.07, 1.6).
        self.allow_new_sessions: Callable[[], bool] = lambda: False
        self._listeners: list[Listener] = []
        self._tasks = TaskGroup("firmware")
        self._run: asyncio.Task[None] | None = None
        self._load_state()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def clear_listeners(self) -> None:
        """Forget every listener (the adapter of another OCPP version takes over)."""
        self._listeners.clear()
        self.allow_new_sessions = lambda: False

    # ------------------------------------------------------------------ requests

    def check_certificate(self, signing_pem: str) -> str | None:
        """Why the signing certificate is not acceptable (L01.FR.23), None when it is."""
        from controller.maintenance import signature as sig  # cryptography: only when used

        roots = self.trust.manufacturer_roots_pem() if self.trust is not None else ""
        try:
            sig.check_signing_certificate(signing_pem, roots, self.clock.utc_now())
        except sig.CertificateInvalid as exc:
            return str(exc)
        return None

    @property
    def busy(self) -> bool:
        return self._run is not None and not self._run.done()

    async def submit(self, job: FirmwareJob) -> SubmitResult:
        """Start ``job``. A signed job's certificate is checked first (L01.FR.23/24, with the
        InvalidFirmwareSigningCertificate event, L01.FR.02). An update in progress is
        canceled (L01.FR.26) unless it is installing (L01.FR.27: Rejected)."""
        if job.signed:
            reason = self.check_certificate(job.signing_certificate or "")
            if reason is not None:
                LOG.warning("firmware signing certificate refused: %s", reason)
                self._event(SecurityEventKind.INVALID_FIRMWARE_SIGNING_CERTIFICATE, reason)
                return SubmitResult.INVALID_CERTIFICATE
        try:
            parse_location(job.location)
        except BadLocation as exc:
            LOG.warning("firmware location refused: %s", exc)
            # Not an error the CSMS gets as a CALLERROR: the download fails (DownloadFailed).
        canceled = False
        if self.busy:
            if self.state in (FirmwareState.INSTALLING, FirmwareState.INSTALL_REBOOTING):
                LOG.warning("firmware update refused: an install is running")
                return SubmitResult.REJECTED
            await self._cancel()
            canceled = True
        self.job = job
        self._save_job(job)
        self._run = self._tasks.spawn(self._update(job), name="update")
        return SubmitResult.ACCEPTED_CANCELED if canceled else SubmitResult.ACCEPTED

    async def _cancel(self) -> None:
        task = self._run
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._restore_connectors()
        LOG.warning("firmware update in progress canceled by a new request")

    # ------------------------------------------------------------------ start / boot

    def start(self) -> None:
        """After a restart: carry on with the persisted update (call once the adapter
        listens, so the resulting statuses are reported)."""
        raw = self.store.get_setting(JOB_KEY)
        if not raw:
            return
        try:
            record = json.loads(raw)
            job = FirmwareJob.from_json(record["job"])
            state = FirmwareState(record["state"])
            self._blocked = [int(c) for c in record.get("blocked", [])]
        except (ValueError, KeyError, TypeError) as exc:
            LOG.error("unreadable firmware update record dropped: %s", exc)
            self.store.delete_setting(JOB_KEY)
            return
        self.job = job
        self._restore_connectors()  # a new start: nobody waits for them any more
        if state is FirmwareState.INSTALL_REBOOTING:
            self._after_switch()
        elif state is FirmwareState.INSTALLING:
            self._finish(FirmwareState.INSTALLATION_FAILED, "interrupted by a restart")
        elif state in TERMINAL:
            self.store.delete_setting(JOB_KEY)
        else:
            LOG.info("resuming the firmware update (%s before the restart)", state.value)
            self._run = self._tasks.spawn(self._update(job), name="update")

    def _after_switch(self) -> None:
        trial = self.installer.trial_state()
        if trial is TrialState.CONFIRMED:
            self._installed()
        elif trial is TrialState.ROLLED_BACK:
            self.installer.forget_result()
            self._finish(FirmwareState.INSTALLATION_FAILED, "the new version was rolled back")
        elif trial is TrialState.RUNNING:
            self.state = FirmwareState.INSTALL_REBOOTING
            left_s = self.installer.trial_seconds_left() or 0.0
            LOG.warning("running a new version on trial: ready within %.0f s or rollback", left_s)
            self._run = self._tasks.spawn(self._trial_guard(left_s), name="trial-guard")
        else:
            # PENDING: this is not the new version (started without the launcher); NONE: the
            # record of the switch is gone. Either way the update did not take.
            self.installer.rollback("the service did not start the new version")
            self.installer.forget_result()
            self._finish(FirmwareState.INSTALLATION_FAILED, "the new version did not start")

    async def _trial_guard(self, left_s: float) -> None:
        await self.clock.sleep(max(0.0, left_s))
        if self.state is FirmwareState.INSTALL_REBOOTING:
            LOG.error("the new version was not ready in time: rolling back")
            if self.installer.rollback("not ready before its deadline"):
                self.restart()

    def boot_accepted(self) -> None:
        """The CSMS accepted this version's boot: a version on trial is confirmed."""
        if self.state is not FirmwareState.INSTALL_REBOOTING:
            return
        if self.installer.trial_state() is TrialState.RUNNING and self.installer.confirm():
            if self._run is not None:
                self._run.cancel()
            self._installed()

    def _installed(self) -> None:
        self.installer.forget_result()
        self._event(SecurityEventKind.FIRMWARE_UPDATED, self._describe())
        self._finish(FirmwareState.INSTALLED, "")

    async def close(self) -> None:
        await self._tasks.cancel_all()

    # ------------------------------------------------------------------ the update

    async def _update(self, job: FirmwareJob) -> None:
        try:
            await self._update_inner(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOG.exception("firmware update failed")
            self._restore_connectors()
            self._finish(FirmwareState.INSTALLATION_FAILED, f"internal error: {exc}")

    async def _update_inner(self, job: FirmwareJob) -> None:
        # L01: the retrieve time is when the download may start (errata 3.63: "allowed").
        delay_s = (job.retrieve_at - self.clock.utc_now()).total_seconds()
        if delay_s > 0:
            self._set(FirmwareState.DOWNLOAD_SCHEDULED)
            await self.clock.sleep(delay_s)
        file = await self._download(job)
        if file is None:
            self._finish(FirmwareState.DOWNLOAD_FAILED, "")
            return
        if job.signed:
            if not await self._verify(job, file):
                file.unlink(missing_ok=True)
                return
        if job.install_at is not None:
            wait_s = (job.install_at - self.clock.utc_now()).total_seconds()
            if wait_s > 0:  # L01.FR.16
                self._set(FirmwareState.INSTALL_SCHEDULED)
                await self.clock.sleep(wait_s)
        await self._wait_idle()
        self._set(FirmwareState.INSTALLING)
        result = await self.installer.install(file)
        file.unlink(missing_ok=True)
        self._restore_connectors()
        if result.outcome is InstallOutcome.INSTALLED:
            self._installed()
        elif result.outcome is InstallOutcome.RESTART:
            # L01.FR.15: InstallRebooting before the restart; Installed comes from the new
            # version once the CSMS accepted its boot.
            self._set(FirmwareState.INSTALL_REBOOTING)
            await self.clock.sleep(0.5)  # let the status go out before the restart
            self.restart()
        else:
            LOG.error("firmware installation failed: %s", result.detail)
            self._finish(FirmwareState.INSTALLATION_FAILED, result.detail)

    async def _download(self, job: FirmwareJob) -> Path | None:
        dest = self.firmware_dir / _local_name(job)
        attempts = 1 + max(0, job.retries)
        for attempt in range(1, attempts + 1):
            self._set(FirmwareState.DOWNLOADING)
            try:
                got = await self.fetch(
                    job.location,
                    dest,
                    max_bytes=self.max_bytes,
                    timeout_s=self.timeout_s,
                    tls_context=self.tls_context,
                )
            except DownloadError as exc:
                LOG.warning("firmware download %d/%d failed: %s", attempt, attempts, exc)
                if attempt < attempts:
                    await self.clock.sleep(max(0, job.retry_interval_s))
                continue
            self._set(FirmwareState.DOWNLOADED)
            return got.path
        return None

    async def _verify(self, job: FirmwareJob, file: Path) -> bool:
        """L01.FR.04/12: the signature over the whole file, with the signing certificate
        (checked again: it may have expired since the request)."""
        from controller.maintenance import signature as sig

        roots = self.trust.manufacturer_roots_pem() if self.trust is not None else ""
        try:
            cert = sig.check_signing_certificate(
                job.signing_certificate or "", roots, self.clock.utc_now()
            )
            ok = await asyncio.to_thread(sig.verify_file_signature, file, job.signature or "", cert)
        except sig.CertificateInvalid as exc:
            LOG.warning("firmware signing certificate no longer valid: %s", exc)
            self._event(SecurityEventKind.INVALID_FIRMWARE_SIGNING_CERTIFICATE, str(exc))
            ok = False
        if not ok:
            self._event(SecurityEventKind.INVALID_FIRMWARE_SIGNATURE, self._describe())
            self._finish(FirmwareState.INVALID_SIGNATURE, "")  # L01.FR.03
            return False
        self._set(FirmwareState.SIGNATURE_VERIFIED)
        return True

    async def _wait_idle(self) -> None:
        """L01.FR.06/07: wait until no transaction runs; meanwhile every connector not in
        use (and each one whose transaction ends) is made unavailable."""
        while True:
            running = self.station.running_transactions()
            allowed = self._allows_new_sessions()
            if allowed:
                self._restore_connectors()  # allowed meanwhile: free again
            for cid in [] if allowed else self.station.connector_ids():
                if cid in running or cid in self._blocked:
                    continue
                if self.station.view(cid).phase is Phase.UNAVAILABLE:
                    continue  # unavailable already (operator): not ours to restore
                self.station.change_availability(cid, False)
                self._blocked.append(cid)
                self._save_job(self.job)
            if not running:
                return
            if self.state is not FirmwareState.INSTALL_SCHEDULED:
                LOG.info("firmware install waits for %d transaction(s) to end", len(running))
                self._set(FirmwareState.INSTALL_SCHEDULED)
            await self.clock.sleep(self.idle_poll_s)

    def _allows_new_sessions(self) -> bool:
        try:
            return bool(self.allow_new_sessions())
        except Exception:
            LOG.exception("AllowNewSessionsPendingFirmwareUpdate could not be read")
            return False

    def _restore_connectors(self) -> None:
        for cid in self._blocked:
            try:
                self.station.change_availability(cid, True)
            except Exception:
                LOG.exception("connector %d: availability not restored", cid)
        if self._blocked:
            self._blocked = []
            if self.job is not None and self.store.get_setting(JOB_KEY):
                self._save_job(self.job)

    # ------------------------------------------------------------------ state

    def _set(self, state: FirmwareState) -> None:
        if state is self.state and state is not FirmwareState.DOWNLOADING:
            return
        self.state = state
        LOG.info("firmware update: %s", state.value)
        if self.job is not None:
            self._save_job(self.job)
        self._save_state()
        self._tell(state)

    def _finish(self, state: FirmwareState, detail: str) -> None:
        if detail:
            LOG.warning("firmware update ended: %s (%s)", state.value, detail)
        self.state = state
        self.store.delete_setting(JOB_KEY)
        self._save_state()
        self._tell(state)

    def _tell(self, state: FirmwareState) -> None:
        for listener in list(self._listeners):
            try:
                listener(state, self.job)
            except Exception:
                LOG.exception("firmware status listener failed")

    def _save_job(self, job: FirmwareJob | None) -> None:
        if job is None:
            return
        record = {"job": job.to_json(), "state": self.state.value, "blocked": self._blocked}
        self.store.set_setting(JOB_KEY, json.dumps(record))

    def _save_state(self) -> None:
        request_id = self.job.request_id if self.job is not None else None
        self.store.set_setting(
            STATE_KEY, json.dumps({"state": self.state.value, "request_id": request_id})
        )

    def _load_state(self) -> None:
        raw = self.store.get_setting(STATE_KEY)
        if not raw:
            return
        try:
            data = json.loads(raw)
            self.state = FirmwareState(data["state"])
            if data.get("request_id") is not None:
                # Only the id matters for a triggered status before start() loads the job.
                self.job = replace(
                    FirmwareJob("", datetime.fromtimestamp(0)), request_id=data["request_id"]
                )
        except (ValueError, KeyError, TypeError):
            LOG.warning("unreadable %s ignored", STATE_KEY)

    def _describe(self) -> str:
        if self.job is None:
            return ""
        try:
            where = parse_location(self.job.location).redacted()
        except BadLocation:
            where = "(bad location)"
        rid = "" if self.job.request_id is None else f"request {self.job.request_id}: "
        return f"{rid}{where}"[:255]

    def _event(self, kind: SecurityEventKind, info: str) -> None:
        if self.security_log is not None:
            self.security_log.record(kind, info or None)


def _local_name(job: FirmwareJob) -> str:
    """The downloaded file's name: the location's last path segment made safe (nothing of
    it reaches a command line but as this one argument)."""
    try:
        tail = parse_location(job.location).ftp_path.rsplit("/", 1)[-1]
    except BadLocation:
        tail = ""
    tail = re.sub(r"[^A-Za-z0-9._+-]", "_", tail).lstrip(".-")[:100] or "firmware.bin"
    return tail
