"""OCPP 1.6J charge point client: connection supervision, boot, outbox pump and CSMS requests."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection

from controller.core import connector as sm
from controller.core.charging_profiles import (
    ChargingProfile,
    ProfileRules,
    RateUnit,
    install_profile,
    validate_profile,
    validate_remote_start_profile,
)
from controller.core.control import Reservation, StationControl
from controller.core.ownership import Command, Ownership
from controller.core.port import AuthDecision, Sample
from controller.core.records import DEFAULT_BACKEND
from controller.core.security import SecurityEventKind
from controller.core.timestamps import iso_utc, parse_iso
from controller.csms.adapter import AdapterBase
from controller.csms.connection import (
    ConnectionOptions,
    CsmsConnection,
    backoff_s,
)
from controller.csms.heartbeat import Heartbeat
from controller.csms.outbox import OutboxPump, OutboxRules
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost, RpcConnection
from controller.csms.secprofile import ConnectionSecurity, SecuritySettings
from controller.csms.security_events import SecurityEventQueue
from controller.csms.timesync import TimeSync
from controller.csms.versions import VersionChoice
from controller.ocpp16 import commands as commands16
from controller.ocpp16 import messages as build
from controller.ocpp16 import rpc as rpc16
from controller.ocpp16 import smartcharging as sc16
from controller.ocpp16 import status as status16
from controller.ocpp16.auth import LocalAuth
from controller.ocpp16.routes import handler, route, supported_actions, trigger_for
from controller.ocpp16.rpc import PROPERTY_CONSTRAINT_VIOLATION, TYPE_CONSTRAINT_VIOLATION
from controller.ocpp16.security_events import TYPE_16
from controller.ocpp16.settings import Settings
from controller.ocpp16.txmessages import TxMessages16
from controller.runtime.clock import Clock, sleep_or_event
from controller.runtime.tasks import TaskGroup
from controller.security.certtypes import CertStoreHandle
from controller.security.log import SecurityLog

if TYPE_CHECKING:
    from controller.security.certstore import CertStore
from controller.security.material import TlsMaterial
from controller.storage.journal import TxJournal
from controller.storage.store import QueuedMessage, Store
from hal.base import FaultKind

LOG = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"

# CSMS requests are declared routes: a handler per action, registered by @_route on the
# client's methods and by the feature modules (routes.py); SUPPORTED_ACTIONS, after the
# class, is what was registered.
_route = route


# Connector 0 while the database cannot be written (disk full): errorCode OtherError.

STORAGE_VENDOR_ERROR = "StorageFull"
STORAGE_INFO = "database not writable; data kept in memory"


@dataclass(frozen=True)
class PendingStatus:
    """A status waiting to be reported: ``at`` is when it began (the StatusNotification
    timestamp), ``since_s`` the same moment on the monotonic clock. ``force`` = report
    without waiting for MinimumStatusDuration and even if unchanged (after (re)connecting,
    TriggerMessage, ChangeAvailability of connector 0)."""

    status: str
    error_code: str
    at: str
    since_s: float
    force: bool = False


@dataclass(frozen=True)
class StationIdentity:
    """What BootNotification reports and how the CSMS URL is formed."""

    station_id: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None


class Ocpp16Client(AdapterBase):
    """Implements ``CsmsPort`` over OCPP 1.6J and keeps the connection up."""

    def __init__(
        self,
        *,
        identity: StationIdentity,
        options: ConnectionOptions,
        station: StationControl,
        store: Store,
        settings: Settings,
        clock: Clock,
        rng: random.Random | None = None,
        on_frame: Callable[[str, str], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
        backend: str = DEFAULT_BACKEND,
        security_log: SecurityLog | None = None,
        certstore: CertStoreHandle | None = None,
        tls_material: TlsMaterial | None = None,
        versions: VersionChoice | None = None,
        journal: TxJournal | None = None,
        primary: bool = True,
        name: str = "csms",
        ownership: Ownership | None = None,
        security_settings: SecuritySettings | None = None,
    ) -> None:
        self.identity = identity
        # Several backends (issue 15, controller/csms/hub.py): the shared journal, whether
        # this is the primary, its name and what it may command.
        self.primary = primary
        self.name = name
        self.ownership = ownership
        self._certstore = certstore  # certificates16 routes; None: no certificate handling
        self.options = options
        self.station = station
        self.store = store
        self.settings = settings
        self.clock = clock
        self._rng = rng or random.Random()
        self._on_frame_cb = on_frame
        self._on_reset = on_reset
        self._rpc: RpcConnection | None = None
        self._conn_state = "offline"
        if primary:
            station.set_csms_online(False)
        self._accepted_once = False  # BootNotification only once per process (OCPP-J 5.4)
        self._tx_ids: dict[int, int] = {}  # tx_key -> transactionId, for the outbox
        self.backend = backend
        self._status_wakeup = asyncio.Event()
        self._pending_status: dict[int, PendingStatus] = {}
        # (status, errorCode) last reported per connector in this connection.
        self._reported_status: dict[int, tuple[str, str]] = {}
        self.last_message_s: float | None = None  # monotonic time of the last frame in or out
        self._tasks = TaskGroup("ocpp16")
        # Security profile, TLS and Basic credentials of each attempt (whitepaper A00/A01/A05).
        self.security = ConnectionSecurity(
            station_id=identity.station_id,
            options=options,
            # A backend besides the primary keeps the security its configuration gives.
            settings=settings if security_settings is None else security_settings,
            store=store,
            clock=clock,
            material=tls_material,
            security_log=security_log,
        )
        self.security.request_reconnect = self._reconnect_soon
        self._link = CsmsConnection(
            url=self.security.url(),
            url_of=self.security.url,
            subprotocol=SUBPROTOCOL,
            options=options,
            clock=clock,
            session=self._session,
            headers=self._headers,
            ping_interval_s=lambda: settings.get_int("WebSocketPingInterval"),
            ssl_context=self.security.ssl_context,
            on_state=self._on_link,
            on_failure=self.security.attempt_failed,
            rng=self._rng,
            versions=versions,  # every configured version offered (csms/versions.py)
        )
        self.messages = TxMessages16(settings, backend)
        if journal is None:  # alone (tests of the client): its own journal
            journal = TxJournal(store, [self.messages], boot_id=station.boot_id, clock=clock)
        self.journal = journal
        self.auth = LocalAuth(store, settings, clock.utc_now)
        self.time = TimeSync(clock, on_corrected=self._shift_pending_statuses, sets_clock=primary)
        # The primary's boot sets the HeartbeatInterval key; another backend's interval is
        # its own (from its BootNotification answer, 0: the key's).
        self._own_heartbeat_s = 0
        self.heartbeat = Heartbeat(
            clock=clock,
            interval_s=lambda: self._own_heartbeat_s or settings.get_int("HeartbeatInterval"),
            call=lambda action, payload: self._call(action, payload),
            on_time=self.time.note_server_time,
        )
        self.security_events = SecurityEventQueue(
            self.journal, backend, self._wake_pump, TYPE_16.__getitem__
        )
        self.pump = OutboxPump(
            store=store,
            backend=backend,
            clock=clock,
            call=self._send_queued,
            rules=OutboxRules(
                prepare=self._prepare_tx_message,
                confirmed=self._tx_message_confirmed,
                max_attempts=lambda: settings.get_int("TransactionMessageAttempts"),
                retry_interval_s=lambda: settings.get_int("TransactionMessageRetryInterval"),
                forget_ids=self._tx_ids.clear,
                refused_for_good=self.security_events.refused_for_good,
            ),
        )
        self.security_log = security_log
        # Feature modules: firmware16.attach sets ``firmware``; ``on_accepted`` hooks run
        # each time the CSMS connection is accepted (after the boot), before the pumps.
        self.firmware: Any = None
        self.firmware_factory: Callable[[], Any] | None = None  # builds ``firmware`` on use
        # What GetDiagnostics / GetLog archives are made of: built on the first request
        # (controller/ocpp16/diagnostics.py; None: no diagnostics available).
        self.diagnostics_sources: Callable[[], Any] | None = None
        self.on_accepted: list[Callable[[], None]] = []
        # Each state of the WebSocket link ("connecting", "connected", "offline"): the App
        # starts its local API once the first attempt is over (after the boot, issue 16).
        self.on_link_state: list[Callable[[str], None]] = []
        if security_log is not None:
            security_log.add_listener(self.security_events)
        settings.on_change(self._on_setting)
        store.add_listener(self._on_storage)
        add_trust_listener = getattr(clock, "add_trust_listener", None)
        if add_trust_listener is not None:  # after the journal's: it rewrites the outbox
            add_trust_listener(self._on_time_confirmed)

    def _command_of(self, action: str, payload: dict[str, Any]) -> Command:
        return commands16.command_of(action, payload)

    def _wake_pump(self) -> None:
        self.pump.wake()

    def _on_setting(self, name: str, value: str) -> None:
        if name == "MinimumStatusDuration":
            self._status_wakeup.set()  # re-evaluate what is due
        elif name == "HeartbeatInterval":
            self.heartbeat.interval_changed()  # due by the new interval, not the old wait

    def _on_time_confirmed(self, shift_s: float) -> None:
        """The journal moved queued timestamps: the pump must not send its stale copies.
        Statuses still waiting here were stamped on the same clock: they move too."""
        self.pump.reload()
        self._shift_pending_statuses(shift_s)

    def _shift_pending_statuses(self, shift_s: float) -> None:
        if not shift_s:
            return
        shift = timedelta(seconds=shift_s)
        for cid, p in list(self._pending_status.items()):
            try:
                at = datetime.fromisoformat(p.at.replace("Z", "+00:00")) + shift
            except ValueError:
                continue
            self._pending_status[cid] = replace(p, at=iso_utc(at))

    def _cp_error(self) -> str:
        """errorCode of connector 0 (the charge point): OtherError while the database
        cannot be written (vendorErrorCode StorageFull, see _status_pump)."""
        return "OtherError" if self.store.degraded else "NoError"

    def _on_storage(self, degraded: bool) -> None:
        """The database turned unwritable or writable again: report it on connector 0."""
        status = "Available" if self.station.station_operative else "Unavailable"
        self._force_status(0, status, "OtherError" if degraded else "NoError")
        self._status_wakeup.set()
        self.pump.reload()  # memory and database views of the outbox changed

    # ------------------------------------------------------------------ BackendAdapter

    @property
    def renderer(self) -> TxMessages16:
        return self.messages

    def journaled(self) -> None:
        self.pump.wake()

    def transaction_stopped(self) -> None:
        self.pump.wake()

    def samples_outside(self, connector_id: int, samples: list[Sample]) -> None:
        payload = self.messages.meter_values(connector_id, samples)
        if payload is not None and self._state == "accepted":
            self._tasks.spawn(self._send_best_effort("MeterValues", payload), name="mv")

    def note_session_event(self, connector_id: int, event: sm.SessionEvent) -> None:
        """OCPP 1.6 has no message for session events: its StartTransaction, StopTransaction
        and StatusNotification come from the journal and the statuses."""

    def status_changed(
        self, connector_id: int, phase: sm.Phase, condition: FaultKind | None, at: str
    ) -> None:
        status, error_code = status16.status_of(phase, condition)
        # Only the latest status per connector is kept while offline (sent on reconnect).
        # A repeat of the waiting status keeps its start (the stability window runs on).
        pending = self._pending_status.get(connector_id)
        if pending is not None and (pending.status, pending.error_code) == (status, error_code):
            return
        self._pending_status[connector_id] = PendingStatus(
            status, error_code, at, self.clock.monotonic_s()
        )
        self._status_wakeup.set()

    def _force_status(self, connector_id: int, status: str, error_code: str) -> None:
        """Report the current status now (keeping the start time if it is already queued)."""
        pending = self._pending_status.get(connector_id)
        if pending is not None and (pending.status, pending.error_code) == (status, error_code):
            at, since_s = pending.at, pending.since_s
        else:
            at, since_s = self._now(), self.clock.monotonic_s()
        self._pending_status[connector_id] = PendingStatus(
            status, error_code, at, since_s, force=True
        )

    async def authorize(self, id_tag: str) -> AuthDecision:
        """Local Authorization List, Authorization Cache or CSMS (3.5; rules in auth.decide)."""
        verdict = self.auth.decide(id_tag, online=self._state == "accepted")
        if verdict.ask:
            try:
                result = await self._call("Authorize", {"idTag": id_tag})
            except (CallError, CallTimeout, ConnectionLost) as exc:
                LOG.warning("Authorize for %s failed (%s); deciding offline", id_tag, exc)
                verdict = self.auth.decide(id_tag, online=False)
            else:
                info = result["idTagInfo"]
                self._remember(id_tag, info)
                ok = info["status"] == "Accepted"
                return AuthDecision(ok, info["status"], info.get("parentIdTag"), "csms")
        return AuthDecision(verdict.accepted, verdict.status, verdict.parent_id_tag, verdict.source)

    def queued_messages(self) -> int:
        # Confirmed MeterValues waiting for their batched delete are not queued any more.
        return max(0, self.store.outbox_count(self.backend) - self.pump.pending_deletes())

    # ------------------------------------------------------------------ auth cache

    def _remember(self, id_tag: str, info: dict[str, Any]) -> None:
        if not self.primary:
            return  # the cache holds the primary's answers: it authorizes
        self.auth.remember(id_tag, info)
        self._check_list_conflict(id_tag, info)

    def _check_list_conflict(self, id_tag: str, info: dict[str, Any]) -> None:
        """3.5.2: a CSMS answer that contradicts the Local Authorization List is reported
        with a StatusNotification on connector 0, errorCode LocalListConflict."""
        if not self.settings.get_bool("LocalAuthListEnabled"):
            return
        entry = self.store.local_list_get(id_tag)
        if entry is None or entry[0] == info["status"]:
            return
        LOG.warning("idTag %s: local list says %s, CSMS says %s", id_tag, entry[0], info["status"])
        status = "Available" if self.station.station_operative else "Unavailable"
        payload = {
            "connectorId": 0,
            "errorCode": "LocalListConflict",
            "status": status,
            "timestamp": self._now(),
            "info": f"{id_tag}: list {entry[0]}, CSMS {info['status']}"[:50],
        }
        if self._state == "accepted":
            self._tasks.spawn(
                self._send_best_effort("StatusNotification", payload), name="list-conflict"
            )

    # ------------------------------------------------------------------ connection

    @property
    def tx_message_timeouts(self) -> int:
        """Transaction messages the CSMS did not answer in time (each one is resent)."""
        return self.pump.timeouts

    def _headers(self) -> dict[str, str]:
        # A CSMS-set AuthorizationKey (ChangeConfiguration) wins over the configured
        # password; read per attempt (secprofile.py).
        return self.security.headers()

    def _reconnect_soon(self, reason: str) -> None:
        """After ChangeConfiguration(SecurityProfile/AuthorizationKey) Accepted: close
        normally and reconnect with the new settings (A01, A05.FR.06/07)."""

        async def later() -> None:
            await asyncio.sleep(0.05)  # let ChangeConfiguration.conf go out first
            await self._link.reconnect(reason)

        self._tasks.spawn(later(), name="security-reconnect")

    def _on_link(self, state: str) -> None:
        if state == "connected":
            self.security.connected()
        elif state == "connecting":
            self._state = "connecting"
        elif state == "offline":
            self._state = "offline"
            self._rpc = None
        for listener in list(self.on_link_state):
            listener(state)

    @property
    def certstore(self) -> CertStore | None:
        """The certificate store (opened on first use); None: no certificate handling."""
        return None if self._certstore is None else self._certstore.get()

    @property
    def certstore_opened(self) -> CertStore | None:
        """The certificate store if something opened it, without opening it."""
        return None if self._certstore is None else self._certstore.opened

    async def run(self) -> None:
        """Stay connected until close() (the connection keeps itself up with back-off)."""
        if self._certstore is not None:
            self._certstore.when_opened(self._start_renewal)
        await self._link.run()

    def _start_renewal(self, store: CertStore) -> None:
        from controller.ocpp16 import certificates as certificates16  # a feature module

        self._tasks.spawn(certificates16.renewal_loop(self), name="cert-renewal")

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """Run ``coro`` in the client's task group (feature modules' background work)."""
        self._tasks.spawn(coro, name=name)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL now (not queued); raises ConnectionLost, CallError or CallTimeout."""
        return await self._call(action, payload)

    async def _session(self, ws: ClientConnection) -> None:
        rpc = RpcConnection(
            ws,
            self._handle,
            dialect=rpc16.DIALECT,
            response_timeout_s=self.options.response_timeout_s,
            supported_actions=SUPPORTED_ACTIONS,
            on_frame=self._observe,
            on_invalid=self._incident(SecurityEventKind.INVALID_MESSAGES),
            on_replay=self._incident(SecurityEventKind.ATTEMPTED_REPLAY_ATTACKS),
            gate=self._gate,
            admit=self.call_admission(),
        )
        await self._run_session(rpc, self._bring_up(), "ocpp16")

    async def _bring_up(self) -> None:
        try:
            await self._bring_up_inner()
        except ConnectionLost:
            LOG.info("connection lost during session")

    async def _bring_up_inner(self) -> None:
        if not self._accepted_once:
            await self._boot()
        self._state = "accepted"
        for hook in list(self.on_accepted):
            try:
                hook()
            except Exception:
                LOG.exception("connection accepted hook failed")
        # After (re)connecting: the current status of every connector, not the history
        # (4.9 and errata 3.22), at once: not held back by MinimumStatusDuration.
        self._reported_status.clear()
        self._force_status(
            0, "Available" if self.station.station_operative else "Unavailable", self._cp_error()
        )
        for cid in self.station.connector_ids():
            pending = self._pending_status.get(cid)
            if pending is not None:
                self._pending_status[cid] = PendingStatus(
                    pending.status, pending.error_code, pending.at, pending.since_s, force=True
                )
            else:
                view = self.station.view(cid)
                self._force_status(cid, *status16.status_of(view.phase, view.condition))
        self._status_wakeup.set()
        self.pump.wake()
        await asyncio.gather(self._status_pump(), self.pump.run(), self.heartbeat.run())

    async def _boot(self) -> None:
        """BootNotification until Accepted (4.2); Pending/Rejected wait for ``interval``."""
        payload: dict[str, Any] = {
            "chargePointVendor": self.identity.vendor,
            "chargePointModel": self.identity.model,
        }
        if self.identity.serial_number:
            payload["chargePointSerialNumber"] = self.identity.serial_number
        if self.identity.firmware_version:
            payload["firmwareVersion"] = self.identity.firmware_version
        while True:
            self._state = "booting"
            try:
                result = await self._call("BootNotification", payload)
            except (CallError, CallTimeout) as exc:
                LOG.warning(
                    "BootNotification failed: %s", exc, extra={"action": "BootNotification"}
                )
                await self.clock.sleep(backoff_s(2, 1.0, 30.0, self._rng))
                continue
            self.time.note_server_time(result.get("currentTime"))
            interval_s = int(result.get("interval", 0))
            status = result["status"]
            LOG.info(
                "BootNotification: %s (interval %d s)",
                status,
                interval_s,
                extra={"action": "BootNotification"},
            )
            if status == "Accepted":
                if interval_s > 0 and self.primary:
                    self.settings.set_internal("HeartbeatInterval", str(interval_s))
                elif interval_s > 0:
                    self._own_heartbeat_s = interval_s
                    self.heartbeat.interval_changed()
                self._accepted_once = True
                return
            self._state = status.lower()  # "pending" / "rejected"
            if self._rpc is not None:
                self._rpc.silent = status == "Rejected"
            try:
                await self.clock.sleep(interval_s if interval_s > 0 else 30)
            finally:
                if self._rpc is not None:
                    self._rpc.silent = False

    async def _call(
        self, action: str, payload: dict[str, Any], *, prevalidated: bool = False
    ) -> dict[str, Any]:
        rpc = self._rpc
        if rpc is None:
            raise ConnectionLost("not connected")
        LOG.debug("CALL %s", action, extra={"action": action})
        return await rpc.call(action, payload, prevalidated=prevalidated)

    async def _triggered_heartbeat(self) -> None:
        """TriggerMessage(Heartbeat): its currentTime confirms the clock like any other."""
        try:
            result = await self._call("Heartbeat", {})
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.info("Heartbeat not delivered: %s", exc, extra={"action": "Heartbeat"})
            return
        self.time.note_server_time(result.get("currentTime"))

    async def _send_best_effort(self, action: str, payload: dict[str, Any]) -> None:
        try:
            await self._call(action, self.time.guard(action, payload))
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.info("%s not delivered: %s", action, exc, extra={"action": action})

    # ------------------------------------------------------------------ pumps

    def _now(self) -> str:
        return iso_utc(self.clock.utc_now())

    def _next_status(self) -> tuple[int | None, float | None]:
        """The connector whose status is due now (oldest first), else the seconds until the
        next one becomes due (None: nothing waiting).

        MinimumStatusDuration (4.9, 9.1.20; errata 3.19 "SHALL send ... taking into account
        some minimum status duration"): a status is reported once it has been stable that
        long, with the timestamp of when it began; one that was replaced sooner is not
        reported, nor is a return to the status last reported. Faulted is reported at once:
        omitting short statuses is a MAY, and a fault is what the CSMS must learn quickly.
        """
        min_s = max(0, self.settings.get_int("MinimumStatusDuration"))
        now_s = self.clock.monotonic_s()
        due: list[tuple[float, int]] = []
        wait_s: float | None = None
        for connector_id, p in list(self._pending_status.items()):
            if not p.force and self._reported_status.get(connector_id) == (
                p.status,
                p.error_code,
            ):
                del self._pending_status[connector_id]  # back to what the CSMS knows
                continue
            if p.force or p.status == "Faulted" or now_s - p.since_s >= min_s:
                due.append((p.since_s, connector_id))
            else:
                left = p.since_s + min_s - now_s
                wait_s = left if wait_s is None else min(wait_s, left)
        if due:
            return min(due)[1], None
        return None, wait_s

    async def _status_pump(self) -> None:
        while True:
            self._status_wakeup.clear()
            connector_id, wait_s = self._next_status()
            if connector_id is None:
                if wait_s is None:
                    await self._status_wakeup.wait()
                else:
                    await self._wait_status_or(wait_s)
                continue
            p = self._pending_status[connector_id]
            payload = {
                "connectorId": connector_id,
                "errorCode": p.error_code,
                "status": p.status,
                "timestamp": p.at,
            }
            if connector_id == 0 and p.error_code == "OtherError":
                payload["vendorErrorCode"] = STORAGE_VENDOR_ERROR
                payload["info"] = STORAGE_INFO
            try:
                await self._call(
                    "StatusNotification", self.time.guard("StatusNotification", payload)
                )
            except CallTimeout:
                continue
            except CallError as exc:
                LOG.warning("StatusNotification refused: %s", exc)
            self._reported_status[connector_id] = (p.status, p.error_code)
            # Only drop it if no newer status arrived meanwhile.
            if self._pending_status.get(connector_id) == p:
                del self._pending_status[connector_id]

    async def _wait_status_or(self, delay_s: float) -> None:
        """Until a status changes or ``delay_s`` passed on the (injected) clock."""
        await sleep_or_event(self.clock.sleep(delay_s), self._status_wakeup)

    # ------------------------------------------------------------------ outbox (1.6 rules)

    def _prepare_tx_message(self, msg: QueuedMessage) -> dict[str, Any]:
        """The queued payload with the transactionId learned since it was queued
        (looked up once per transaction; errata 3.18: -1 when none was ever received)."""
        payload = dict(msg.payload)
        if msg.action in ("MeterValues", "StopTransaction") and msg.tx_key is not None:
            tx_id = self._tx_ids.get(msg.tx_key)
            if tx_id is None:
                tx = self.store.get_transaction(msg.tx_key)
                known = tx.csms_tx_id(self.backend) if tx is not None else None
                tx_id = -1 if known is None else int(known)
                self._tx_ids[msg.tx_key] = tx_id
            payload["transactionId"] = tx_id
        return self.time.guard(msg.action, payload)

    async def _send_queued(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Journal.checked() validated the payload when it was queued.
        return await self._call(action, payload, prevalidated=True)

    def _tx_message_confirmed(self, msg: QueuedMessage, result: dict[str, Any]) -> bool:
        """What a confirmation teaches: the transactionId of a start (stored in the same
        commit that removes the StartTransaction), the idTagInfo for the cache."""
        if msg.action == "StartTransaction" and msg.tx_key is not None:
            tx_id = int(result["transactionId"])
            self.store.map_csms_tx_id(msg.tx_key, self.backend, str(tx_id), delivered_seq=msg.seq)
            self._tx_ids[msg.tx_key] = tx_id
            # Links evsed's transaction number to the CSMS's in the journal, and is the
            # confirmed delivery (`journalctl EVSED_ACTION=StartTransaction`).
            ids = {"tx_key": msg.tx_key, "transaction_id": tx_id}
            LOG.info(
                "transaction %d: CSMS transactionId %d (StartTransaction delivered)",
                msg.tx_key,
                tx_id,
                extra={
                    "action": "StartTransaction",
                    "connector": msg.payload.get("connectorId"),
                    **ids,
                },
            )
            status = result["idTagInfo"]["status"]
            self._remember(str(msg.payload["idTag"]), result["idTagInfo"])
            if status != "Accepted":
                LOG.warning(
                    "StartTransaction %d: idTag %s",
                    tx_id,
                    status,
                    extra={"action": "StartTransaction", **ids},
                )
                if self.primary:  # another backend's answer does not stop a session
                    self.station.deauthorize(msg.tx_key)
            return True
        if msg.action == "StopTransaction":
            # Start and Stop delivery at INFO: two lines per transaction. Not MeterValues:
            # one per sample interval and connector, thousands when a backlog is replayed,
            # all written to the SD card by journald.
            stop_id = self._tx_ids.get(msg.tx_key) if msg.tx_key is not None else None
            LOG.info(
                "transaction %s: StopTransaction delivered (CSMS transactionId %s, reason %s)",
                msg.tx_key,
                stop_id,
                msg.payload.get("reason", "Local"),
                extra={
                    "action": "StopTransaction",
                    "tx_key": msg.tx_key,
                    "transaction_id": stop_id,
                },
            )
            tag = msg.payload.get("idTag")
            if "idTagInfo" in result and tag:
                self._remember(str(tag), result["idTagInfo"])
        return False

    # ------------------------------------------------------------------ CSMS requests

    async def _handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        LOG.debug("CALL %s from the CSMS", action, extra={"action": action})
        # RpcConnection answers NotImplemented / NotSupported before a handler is looked up.
        return await handler(action)(self, payload)

    def _connector_id(self, payload: dict[str, Any], *, allow_zero: bool) -> int:
        cid = payload["connectorId"]
        low = 0 if allow_zero else 1
        if not low <= cid <= len(self.station.connector_ids()):
            raise CallError(PROPERTY_CONSTRAINT_VIOLATION, f"unknown connectorId {cid}")
        return int(cid)

    @_route("ChangeAvailability")
    async def _on_ChangeAvailability(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        cid = self._connector_id(p, allow_zero=True)
        status = self.station.change_availability(cid, p["type"] == "Operative").value
        if cid == 0:
            self._force_status(
                0, "Available" if p["type"] == "Operative" else "Unavailable", self._cp_error()
            )
            self._status_wakeup.set()
        return {"status": status}

    @_route("ChangeConfiguration")
    async def _on_ChangeConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"status": self.settings.change(p["key"], p["value"])}

    @_route("GetConfiguration")
    async def _on_GetConfiguration(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        wanted = p.get("key")
        max_keys = self.settings.get_int("GetConfigurationMaxKeys")
        if wanted is not None and len(wanted) > max_keys:
            raise CallError("OccurenceConstraintViolation", f"at most {max_keys} keys per request")
        names = wanted if wanted else [k.name for k in self.settings.keys() if not k.write_only]
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for name in names:
            key = self.settings.key(name)
            if key is None:
                unknown.append(name)
                continue
            entry: dict[str, Any] = {"key": name, "readonly": key.readonly}
            if not key.write_only:  # AuthorizationKey is never read back
                entry["value"] = self.settings.get(name)
            known.append(entry)
        result: dict[str, Any] = {}
        if known:
            result["configurationKey"] = known
        if unknown:
            result["unknownKey"] = unknown
        return result

    @_route("ClearCache")
    async def _on_ClearCache(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"status": self.auth.clear_cache()}  # the cache only, not the local list

    @_route("GetLocalListVersion")
    async def _on_GetLocalListVersion(  # noqa: N802
        self, p: dict[str, Any]
    ) -> dict[str, Any]:
        return {"listVersion": self.auth.list_version()}

    @_route("SendLocalList")
    async def _on_SendLocalList(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"status": self.auth.send_local_list(p)}

    @_route("DataTransfer")
    async def _on_DataTransfer(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"status": "UnknownVendorId"}

    # --- Reservation profile (5.13 ReserveNow, 5.1 CancelReservation). The rules (who may
    # use it, expiry, what connector 0 keeps) are the core's: controller/core/reservations.py.

    @_route("ReserveNow")
    async def _on_ReserveNow(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        cid = self._connector_id(p, allow_zero=True)
        expiry = parse_iso(p["expiryDate"])
        if expiry is None:
            raise CallError(TYPE_CONSTRAINT_VIOLATION, "expiryDate is not a dateTime")
        reservation = Reservation(
            reservation_id=int(p["reservationId"]),
            connector_id=cid,
            id_tag=p["idTag"],
            expiry=expiry,
            parent_id_tag=p.get("parentIdTag"),
        )
        result = self.station.reserve(
            reservation,
            any_connector_supported=self.settings.get_bool("ReserveConnectorZeroSupported"),
        )
        return {"status": result.value}

    @_route("CancelReservation")
    async def _on_CancelReservation(  # noqa: N802
        self, p: dict[str, Any]
    ) -> dict[str, Any]:
        return {"status": self.station.cancel_reservation(int(p["reservationId"])).value}

    @_route("RemoteStartTransaction")
    async def _on_RemoteStartTransaction(  # noqa: N802
        self, p: dict[str, Any]
    ) -> dict[str, Any]:
        requested = p.get("connectorId")
        if requested is not None:
            self._connector_id(p, allow_zero=False)
        cid = self.station.remote_start(requested, p["idTag"])
        if cid is None:
            return {"status": "Rejected"}
        tx_profile = None
        if "chargingProfile" in p:
            tx_profile = self._remote_start_profile(p["chargingProfile"], cid)
            if tx_profile is None:
                return {"status": "Rejected"}
        self._tasks.spawn(self._remote_start(cid, p["idTag"], tx_profile), name="remote-start")
        return {"status": "Accepted"}

    def _remote_start_profile(
        self, raw: dict[str, Any], connector_id: int
    ) -> ChargingProfile | None:
        """5.11: the chargingProfile of a remote start is a TxProfile for the transaction it
        starts; checked now as if that transaction ran (None: answer Rejected)."""
        if raw["chargingProfilePurpose"] != "TxProfile":
            LOG.warning("RemoteStartTransaction rejected: its chargingProfile is not a TxProfile")
            return None
        try:
            profile = sc16.parse_profile(raw, connector_id)
        except sc16.BadProfile as exc:
            LOG.warning("RemoteStartTransaction rejected: %s", exc)
            return None
        reason = validate_remote_start_profile(profile, self._profile_rules())
        if reason is not None:
            LOG.warning("RemoteStartTransaction rejected: chargingProfile %s", reason)
            return None
        return profile

    async def _remote_start(
        self, connector_id: int, id_tag: str, tx_profile: ChargingProfile | None = None
    ) -> None:
        if self.settings.get_bool("AuthorizeRemoteTxRequests"):
            decision = await self.authorize(id_tag)
            if not decision.accepted:
                LOG.info("remote start for %s not authorized", id_tag)
                return
        self.station.begin_remote(connector_id, id_tag, tx_profile)

    # ------------------------------------------------------------------ smart charging

    def _profile_rules(self) -> ProfileRules:
        return sc16.rules(self.settings, len(self.station.connector_ids()))

    def _tx_key_of(self, transaction_id: int) -> int | None:
        """The running transaction the CSMS knows as ``transaction_id``."""
        for tx_key in self.station.running_transactions().values():
            tx = self.store.get_transaction(tx_key)
            if tx is not None and tx.csms_tx_id(self.backend) == str(transaction_id):
                return tx_key
        return None

    @_route("SetChargingProfile")
    async def _on_SetChargingProfile(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        # Errata 3.39: an unknown connectorId is a PropertyConstraintViolation CALLERROR.
        cid = self._connector_id(p, allow_zero=True)
        raw = p["csChargingProfiles"]
        running = self.station.running_transactions()
        tx_key: int | None = None
        if raw["chargingProfilePurpose"] == "TxProfile":
            # 7.8: transactionId MAY name the transaction; without it, the one running on
            # the connector. A transactionId of no running transaction binds to nothing
            # that runs: Rejected (3.13.1).
            if "transactionId" in raw:
                tx_key = self._tx_key_of(int(raw["transactionId"])) or -1
            else:
                tx_key = running.get(cid)
        try:
            profile = sc16.parse_profile(raw, cid, tx_key)
        except sc16.BadProfile as exc:
            LOG.warning("SetChargingProfile rejected: %s", exc)
            return {"status": "Rejected"}
        reason = validate_profile(profile, self._profile_rules(), running_tx=running)
        if reason is None:
            after = install_profile(self.station.installed_profiles(self.profile_book), profile)
            limit = self.settings.get_int("MaxChargingProfilesInstalled")
            if len(after) > limit:
                reason = f"more than MaxChargingProfilesInstalled ({limit}) profiles"
        if reason is not None:
            LOG.warning("SetChargingProfile %d rejected: %s", profile.profile_id, reason)
            return {"status": "Rejected"}
        self.station.install_profile(profile, backend=self.profile_book)
        return {"status": "Accepted"}

    @_route("ClearChargingProfile")
    async def _on_ClearChargingProfile(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if "id" in p:
            # Errata 3.26: "If id is specified, then all other fields are ignored."
            cleared = self.station.clear_profiles(
                profile_id=int(p["id"]), backend=self.profile_book
            )
        else:
            purpose = p.get("chargingProfilePurpose")
            cleared = self.station.clear_profiles(
                backend=self.profile_book,
                connector_id=p.get("connectorId"),
                purpose=None if purpose is None else sc16.PURPOSES[purpose],
                stack_level=p.get("stackLevel"),
            )
        return {"status": "Accepted" if cleared else "Unknown"}

    @_route("GetCompositeSchedule")
    async def _on_GetCompositeSchedule(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        cid = p["connectorId"]
        if not 0 <= cid <= len(self.station.connector_ids()):
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit")
        schedule = self.station.composite_schedule(
            cid, int(p["duration"]), None if unit is None else RateUnit(unit)
        )
        return sc16.composite_payload(schedule, cid)

    @_route("RemoteStopTransaction")
    async def _on_RemoteStopTransaction(  # noqa: N802
        self, p: dict[str, Any]
    ) -> dict[str, Any]:
        tx_id = p["transactionId"]
        for cid in self.station.connector_ids():
            tx_key = self.station.view(cid).tx_key
            if tx_key is None:
                continue
            tx = self.store.get_transaction(tx_key)
            if tx is not None and tx.csms_tx_id(self.backend) == str(tx_id):
                self.station.stop_transaction(tx_key, sm.StopCause.REMOTE)
                return {"status": "Accepted"}
        return {"status": "Rejected"}

    @_route("Reset")
    async def _on_Reset(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        kind = p["type"]
        self._tasks.spawn(self._reset(kind), name="reset")
        return {"status": "Accepted"}

    async def _reset(self, kind: str) -> None:
        await asyncio.sleep(0.05)  # let Reset.conf go out first
        reason = sm.StopCause.HARD_RESET if kind == "Hard" else sm.StopCause.SOFT_RESET
        await self.station.stop_all(reason)
        # Give the StopTransactions a few seconds to reach the CSMS; they stay queued anyway.
        for _ in range(50):
            if self.queued_messages() == 0 or self._state != "accepted":
                break
            await asyncio.sleep(0.1)
        LOG.warning("%s reset requested by the CSMS", kind)
        if self.security_log is not None:
            self.security_log.record(SecurityEventKind.RESET_OR_REBOOT, f"{kind} reset by the CSMS")
        if self._on_reset is not None:
            self._on_reset(kind)

    @_route("UnlockConnector")
    async def _on_UnlockConnector(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        cid = p["connectorId"]
        if not 1 <= cid <= len(self.station.connector_ids()):
            return {"status": "NotSupported"}  # errata 3.87: a normal reply, not a CALLERROR
        return {"status": (await self.station.unlock(cid)).value}

    @_route("TriggerMessage")
    async def _on_TriggerMessage(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        cid = p.get("connectorId")
        if cid is not None and not 0 <= cid <= len(self.station.connector_ids()):
            return {"status": "Rejected"}
        return {"status": self.trigger_message(p["requestedMessage"], cid, extended=False)}

    def trigger_message(self, requested: str, cid: int | None, *, extended: bool) -> str:
        """Send ``requested`` now for TriggerMessage (``extended`` False) or the whitepaper's
        ExtendedTriggerMessage (True, controller/ocpp16/certificates.py); returns the
        answer's status. ``cid`` was range-checked by the caller."""
        if requested == "StatusNotification":
            targets = [cid] if cid is not None else [0, *self.station.connector_ids()]
            for target in targets:
                if target == 0:
                    status = "Available" if self.station.station_operative else "Unavailable"
                    self._force_status(0, status, self._cp_error())
                else:
                    view = self.station.view(target)
                    self._force_status(target, *status16.status_of(view.phase, view.condition))
            if self._state == "pending":
                # Triggered messages may be sent while Pending (4.2); the pump waits for Accepted.
                for target in targets:
                    pending = self._pending_status.pop(target)
                    status_payload = {
                        "connectorId": target,
                        "errorCode": pending.error_code,
                        "status": pending.status,
                        "timestamp": pending.at,
                    }
                    self._tasks.spawn(
                        self._send_best_effort("StatusNotification", status_payload),
                        name="trigger",
                    )
            self._status_wakeup.set()
        elif requested == "Heartbeat":
            self._tasks.spawn(self._triggered_heartbeat(), name="trigger")
        elif requested == "BootNotification":
            if self._accepted_once:
                return "Rejected"  # errata 3.35: not after it was Accepted
            self._tasks.spawn(self._boot(), name="trigger")
        elif requested == "MeterValues":
            now = self._now()
            for view in map(self.station.view, self.station.connector_ids()):
                # Nothing is sent for a silent meter: a sample is a measurement.
                live = view.live_reading
                if (cid in (None, 0) or view.connector_id == cid) and live is not None:
                    sample = Sample(
                        live, now, "Trigger", view.offered_current_a, view.offered_power_w
                    )
                    values = build.meter_value(
                        sample, self.settings.get_csl("MeterValuesSampledData")
                    )
                    if values:
                        payload: dict[str, Any] = {
                            "connectorId": view.connector_id,
                            "meterValue": [values],
                        }
                        if view.tx_key is not None:
                            tx = self.store.get_transaction(view.tx_key)
                            known = None if tx is None else tx.csms_tx_id(self.backend)
                            if known is not None:
                                payload["transactionId"] = int(known)
                        self._tasks.spawn(
                            self._send_best_effort("MeterValues", payload), name="trigger"
                        )
        elif (send := trigger_for(requested)) is not None:
            return send(self, cid, extended)
        else:
            return "NotImplemented"
        return "Accepted"

    async def close(self, reason: str = "charge point stopping") -> None:
        """Close the CSMS connection normally (1000), then stop the background tasks and
        stop listening to the station's security log and store: after a hand-over to
        another OCPP version, their events go to that version's adapter, not to this
        adapter's queue."""
        await super().close(reason)
        if self.security_log is not None:
            self.security_log.remove_listener(self.security_events)
        self.store.remove_listener(self._on_storage)


# CSMS-initiated actions of the Core profile (OCPP 1.6 section 5) plus TriggerMessage, the
# Local Auth List Management profile (GetLocalListVersion, SendLocalList) and the
# Reservation profile (ReserveNow, CancelReservation).
SUPPORTED_ACTIONS = supported_actions()
