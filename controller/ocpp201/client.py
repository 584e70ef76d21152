"""OCPP 2.0.1 charging station client: the connection, the boot, the heartbeat, statuses,
the outbox pump and the CsmsPort the station talks to; every CSMS request goes through the
declared routes of controller/ocpp201/routes.py to one feature module each.

The connection offers every configured version and uses security profiles 1-3 (security.py
on controller/csms/secprofile.py). BootNotification Accepted / Pending / Rejected (B01-B03),
Heartbeat with the CSMS time (G02), StatusNotification per EVSE and connector (G01, B01.FR.05,
B04), TransactionEvent through the journal (transactions.py), SecurityEventNotification
(A04), Authorize and the offline rules (authorization.py). A recognised 2.0.1 action without
a route is answered NotSupported (part 4 4.3), an unknown one NotImplemented, and while
Rejected every request SecurityError (B03.FR.08). What is done and what is not: README
"OCPP 2.0.1: what is done".
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection

from controller.core import connector as sm
from controller.core.control import StationControl
from controller.core.ownership import Command, Ownership
from controller.core.port import AuthDecision, Sample
from controller.core.security import SecurityEventKind
from controller.core.timestamps import iso_utc
from controller.csms.adapter import AdapterBase
from controller.csms.connection import (
    ConnectionOptions,
    CsmsConnection,
    backoff_s,
    basic_auth_header,
    station_url,
)
from controller.csms.heartbeat import Heartbeat
from controller.csms.outbox import OutboxPump, OutboxRules
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost, RpcConnection
from controller.csms.secprofile import ConnectionSecurity, SecuritySettings
from controller.csms.security_events import SecurityEventQueue
from controller.csms.timesync import TimeSync
from controller.csms.versions import VersionChoice
from controller.ocpp201 import chargelimits
from controller.ocpp201 import commands as commands201
from controller.ocpp201 import reservations as reservations201
from controller.ocpp201 import rpc as rpc201
from controller.ocpp201 import status as status201
from controller.ocpp201.authorization import Authorization, reader_token
from controller.ocpp201.availability import Availability
from controller.ocpp201.backoff import RetryBackOff
from controller.ocpp201.certificates import CertSigning
from controller.ocpp201.dm import ComponentKey, DeviceModel, InvalidValue, VariableKey
from controller.ocpp201.monitoring import Monitoring
from controller.ocpp201.network import NetworkProfiles
from controller.ocpp201.reset import Resets
from controller.ocpp201.routes import ROUTES
from controller.ocpp201.security import DeviceModelSecurity
from controller.ocpp201.transactions import TxMessages201, meter_value
from controller.runtime.clock import Clock, sleep_or_event
from controller.runtime.tasks import TaskGroup
from controller.security.certtypes import CertStoreHandle
from controller.security.log import SecurityLog
from controller.security.material import TlsMaterial
from controller.storage.journal import TxJournal
from controller.storage.store import QueuedMessage, Store
from controller.storage.writes import EventKind
from hal.base import FaultKind

LOG = logging.getLogger(__name__)

SUBPROTOCOL = rpc201.SUBPROTOCOL
# The outbox rows of this adapter (the 1.6 adapter's stay apart, for when it returns).
BACKEND = "ocpp2.0.1"
# Store settings: the heartbeat interval of the last accepted boot, and why the station
# restarts (written before a reset or firmware restart, read by the next boot, B01.FR.09).
HEARTBEAT_KEY = "ocpp201.heartbeat_interval_s"
BOOT_REASON_KEY = "csms.boot_reason"
BOOT_REASONS = frozenset(
    {
        "ApplicationReset",
        "FirmwareUpdate",
        "LocalReset",
        "PowerUp",
        "RemoteReset",
        "ScheduledReset",
        "Triggered",
        "Unknown",
        "Watchdog",
    }
)
# Why the App restarts (App._on_reset's kind) as a BootReasonEnumType.
_RESET_BOOT_REASONS = {
    "Hard": "RemoteReset",
    "Soft": "RemoteReset",
    "Scheduled": "ScheduledReset",  # an OnIdle reset that waited for transactions
    "Firmware": "FirmwareUpdate",
}
DEFAULT_HEARTBEAT_S = 300


def boot_reason_of(reset_kind: str) -> str:
    return _RESET_BOOT_REASONS.get(reset_kind, "Unknown")


# B02.FR.07 / B03.FR.05: the CSMS said interval 0 while not accepting: our own wait.
OWN_BOOT_RETRY_S = 60
# B04: offline for longer than this, every connector's status is sent again; shorter,
# only those that changed (the OfflineThreshold variable of the device model, later).
OFFLINE_THRESHOLD_S = 60.0
# What a message needs the message transport to give up after (TransactionEvent, later).
MESSAGE_ATTEMPTS = 3
MESSAGE_RETRY_INTERVAL_S = 60
# CSMS requests this slice answers itself; every other 2.0.1 action is NotSupported.
IMPLEMENTED_ACTIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Identity:
    """BootNotificationRequest.chargingStation and the station's part of the URL."""

    station_id: str
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None


class Ocpp201Client(AdapterBase):
    """Implements ``CsmsPort`` over OCPP 2.0.1 and keeps the connection up."""

    def __init__(
        self,
        *,
        identity: Identity,
        options: ConnectionOptions,
        station: StationControl,
        store: Store,
        clock: Clock,
        versions: VersionChoice | None = None,
        rng: random.Random | None = None,
        on_frame: Callable[[str, str], None] | None = None,
        security_log: SecurityLog | None = None,
        offline_threshold_s: float = OFFLINE_THRESHOLD_S,
        device_model: DeviceModel | None = None,
        tls_material: TlsMaterial | None = None,
        configured_profile: int = 1,
        on_reset: Callable[[str], None] | None = None,
        certstore: CertStoreHandle | None = None,
        journal: TxJournal | None = None,
        primary: bool = True,
        name: str = "csms",
        backend: str = BACKEND,
        ownership: Ownership | None = None,
        security_settings: SecuritySettings | None = None,
    ) -> None:
        self.identity = identity
        self.options = options
        self.station = station
        self.store = store
        self.clock = clock
        # Several backends (issue 15, controller/csms/hub.py): whether this is the primary,
        # its name, its outbox in the store and what it may command.
        self.primary = primary
        self.name = name
        self.backend = backend
        self.ownership = ownership
        # A backend besides the primary keeps the heartbeat interval of its own boot.
        self._own_heartbeat_s = 0
        self._rng = rng or random.Random()
        self._on_frame_cb = on_frame
        self.security_log = security_log
        self.offline_threshold_s = offline_threshold_s
        # GetVariables / SetVariables / reports (None: answered NotSupported).
        self.device_model = device_model
        if device_model is not None:
            self._follow_model(device_model)
        # App._on_reset: restart evsed (a station Reset); None: a station Reset is Rejected.
        self.on_reset = on_reset
        # ChangeAvailability's three tiers (G03/G04) and the resets under way (B11/B12).
        self.availability = Availability(station, store)
        self.resets = Resets(self)
        self._rpc: RpcConnection | None = None
        self._conn_state = "offline"
        if primary:
            station.set_csms_online(False)
        self._accepted_once = False  # one BootNotification per process (B01.FR.03)
        self._offline_since_s: float | None = None
        self._tasks = TaskGroup("ocpp201")
        # connector id -> (connectorStatus, since when): the latest status not reported yet.
        self._pending_status: dict[int, tuple[str, str]] = {}
        self._reported_status: dict[int, str] = {}
        self._status_wakeup = asyncio.Event()
        # TriggerMessage(BootNotification) while not accepted: boot now (B02.FR.04, F06).
        self._boot_now = asyncio.Event()
        self.last_message_s: float | None = None
        self.boot_statuses: list[str] = []  # what each BootNotificationResponse said
        # Security profiles 1-3 (A00): URL, TLS context and Basic credentials of each attempt
        # from SecurityCtrlr (controller/csms/secprofile.py, shared with 1.6); without a
        # device model (tests of the wire alone) plain Basic auth from the configuration.
        self.security: ConnectionSecurity | None = None
        # The certificate store (opened on first use) and the station certificate's CSRs
        # (A02/A03, M03-M05: controller/ocpp201/certificates.py).
        self.certstore = certstore
        self.cert_signing = CertSigning(self)
        # The network connection profiles (B09/B10): which slot's URL, timeout and security
        # profile the next attempt uses (controller/ocpp201/network.py).
        self.networks: NetworkProfiles | None = None
        # A backend besides the primary keeps the security its configuration gives and has
        # no network profiles (those are the primary's connection, B09/B10).
        own_networks = security_settings is None and device_model is not None
        if own_networks:
            assert device_model is not None
            security_settings = DeviceModelSecurity(device_model, configured_profile)
        if security_settings is not None:
            self.security = ConnectionSecurity(
                station_id=identity.station_id,
                options=options,
                settings=security_settings,
                store=store,
                clock=clock,
                material=tls_material,
                security_log=security_log,
            )
            on_failure: Callable[[BaseException], None] = self.security.attempt_failed
            if own_networks:
                assert device_model is not None
                self.security.request_reconnect = self._reconnect_soon
                self.networks = NetworkProfiles(
                    model=device_model,
                    store=store,
                    security=self.security,
                    base=options,
                    configured_profile=configured_profile,
                )
                self.networks.start()  # B10.FR.04
                self.options = self.networks.options
                on_failure = self._attempt_failed
            self._link = CsmsConnection(
                url=self.security.url(),
                url_of=self.security.url,
                subprotocol=SUBPROTOCOL,
                options=options,
                clock=clock,
                session=self._session,
                headers=self.security.headers,
                ssl_context=self.security.ssl_context,
                on_state=self._on_link,
                on_failure=on_failure,
                rng=self._rng,
                versions=versions,
                # Part 4 5.3: the primary's link follows OCPPCommCtrlr.RetryBackOff*; another
                # backend keeps its [[csms]] reconnect_min_s / reconnect_max_s.
                backoff=(
                    RetryBackOff(device_model, self._rng)
                    if own_networks and device_model is not None
                    else None
                ),
            )
        else:
            self._link = CsmsConnection(
                url=station_url(options.csms_url, identity.station_id),
                subprotocol=SUBPROTOCOL,
                options=options,
                clock=clock,
                session=self._session,
                headers=lambda: basic_auth_header(identity.station_id, options.password),
                on_state=self._on_link,
                rng=self._rng,
                versions=versions,
            )
        # TransactionEvent messages are journaled with each transaction event, in the same
        # commit (E01-E09); without a device model (tests of the wire alone) records only.
        self.transactions: TxMessages201 | None = None
        if device_model is not None:
            self.transactions = TxMessages201(
                device_model, station, online=lambda: self._state == "accepted", backend=backend
            )
        if journal is None:  # alone (tests of the client): its own journal
            renderers = () if self.transactions is None else (self.transactions,)
            journal = TxJournal(store, renderers, boot_id=station.boot_id, clock=clock)
        self.journal = journal
        self.time = TimeSync(clock, sets_clock=primary)
        self.heartbeat = Heartbeat(
            clock=clock,
            interval_s=self.heartbeat_interval_s,
            call=lambda action, payload: self._call(action, payload),
            on_time=self.time.note_server_time,
        )
        self.pump = OutboxPump(
            store=store,
            backend=backend,
            clock=clock,
            call=self._send_queued,
            rules=OutboxRules(
                prepare=self._prepare_queued,
                confirmed=self._tx_message_confirmed,
                max_attempts=lambda: self._comm_int("MessageAttempts", MESSAGE_ATTEMPTS),
                retry_interval_s=lambda: self._comm_int(
                    "MessageAttemptInterval", MESSAGE_RETRY_INTERVAL_S
                ),
                # A NotifyEvent the CSMS answered with a CALLERROR is not retried: it would
                # hold up the transaction messages behind it (N07: no retry rule).
                refused_for_good=lambda msg, exc: (
                    msg.kind is EventKind.NOTICE or self.security_events.refused_for_good(msg, exc)
                ),
            ),
        )
        self.on_link_state: list[Callable[[str], None]] = []
        # A04: every security event as a SecurityEventNotification, queued durably in order
        # with the transaction messages (2.0.1 spells the types as the core names them).
        self.security_events = SecurityEventQueue(
            self.journal, backend, self.pump.wake, lambda kind: kind.value
        )
        if security_log is not None:
            security_log.add_listener(self.security_events)
        reservations201.follow(self)  # ReservationStatusUpdate (H01.FR.16/17, H04.FR.01)
        chargelimits.follow(self)  # NotifyChargingLimit of the local API's limit (K12)
        # Authorize, the Authorization Cache and the offline rules (C01, C09-C16).
        self.auth = Authorization(self)
        # Called each time a session is up with the boot accepted (firmware.py resends its
        # unconfirmed status and confirms a version on trial).
        self.on_accepted: list[Callable[[], None]] = []
        # Firmware (L01/L02, firmware.py) and GetLog (N01, logs.py): the composition root
        # leaves factories, so their code loads on the first request or trigger.
        self.firmware: Any = None
        self.firmware_factory: Callable[[], Any] | None = None
        self.diagnostics_sources: Callable[[], Any] | None = None
        self.logs: Any = None
        # Variable monitors and NotifyEvent (N02-N08; None without a device model).
        self.monitoring: Monitoring | None = None
        if device_model is not None:
            self.monitoring = Monitoring(self, device_model)

    # ------------------------------------------------------------------ state

    def heartbeat_interval_s(self) -> int:
        """The interval of the last accepted boot (B01.FR.04, G02.FR.01)."""
        if self._own_heartbeat_s:
            return self._own_heartbeat_s
        text = self.store.get_setting(HEARTBEAT_KEY)
        try:
            return int(text) if text else DEFAULT_HEARTBEAT_S
        except ValueError:
            return DEFAULT_HEARTBEAT_S

    def boot_reason(self) -> str:
        reason = self.store.get_setting(BOOT_REASON_KEY)
        return reason if reason in BOOT_REASONS else "PowerUp"

    # ------------------------------------------------------------------ BackendAdapter

    @property
    def renderer(self) -> TxMessages201 | None:
        return self.transactions

    def journaled(self) -> None:
        self.pump.wake()

    def transaction_stopped(self) -> None:
        self.pump.wake()
        self.resets.transaction_ended()

    def samples_outside(self, connector_id: int, samples: list[Sample]) -> None:
        """J01/J02: clock-aligned samples outside a transaction as a MeterValuesRequest
        with AlignedDataCtrlr.Measurands, best effort (while accepted; not queued offline)."""
        if self._state != "accepted" or self.transactions is None:
            return
        measurands = self.transactions.aligned_measurands()
        values = [mv for sample in samples if (mv := meter_value(sample, measurands))]
        if values:
            evse_id, _ = status201.evse_of(connector_id)
            payload = {"evseId": evse_id, "meterValue": values}
            self._tasks.spawn(self._send_best_effort("MeterValues", payload), name="mv")

    async def _send_best_effort(self, action: str, payload: dict[str, Any]) -> None:
        try:
            await self._call(action, payload)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.info("%s not delivered (best effort): %s", action, exc)

    def status_changed(
        self, connector_id: int, phase: sm.Phase, condition: FaultKind | None, at: str
    ) -> None:
        try:
            plugged = self.station.view(connector_id).plugged
        except KeyError:
            plugged = phase is not sm.Phase.PREPARING
        status = status201.connector_status(phase, plugged)
        if self.monitoring is not None:
            self.monitoring.station_changed(connector_id, condition)
        if self._reported_status.get(connector_id) == status:
            self._pending_status.pop(connector_id, None)  # back to what the CSMS knows
            return
        pending = self._pending_status.get(connector_id)
        if pending is not None and pending[0] == status:
            return  # the same status keeps its start time
        self._pending_status[connector_id] = (status, at)
        self._status_wakeup.set()

    def note_session_event(self, connector_id: int, event: sm.SessionEvent) -> None:
        """Fed to the TransactionEvent renderer in order, before the hub journals it (within
        a running transaction it may be an Updated: charging state, deauthorization)."""
        if self.transactions is not None:
            self.transactions.note(connector_id, event)
            if event.kind is sm.SessionEventKind.EV_CONNECTED and self.primary:
                self.auth.ev_connected(connector_id)  # AuthCtrlr.Enabled false

    async def authorize(self, id_tag: str) -> AuthDecision:
        """A card at the reader (ISO14443): list, cache, CSMS or the offline rules (C01,
        C10-C16; controller/ocpp201/authorization.py)."""
        return await self.auth.authorize(reader_token(id_tag))

    def queued_messages(self) -> int:
        return max(0, self.store.outbox_count(self.backend) - self.pump.pending_deletes())

    # ------------------------------------------------------------------ connection

    def _reconnect_soon(self, reason: str) -> None:
        """After SetVariables(BasicAuthPassword) Accepted: close normally and reconnect with
        the new password (A01.FR.xx: the next connection uses it)."""

        async def later() -> None:
            await asyncio.sleep(0.05)  # let SetVariablesResponse go out first
            await self._link.reconnect(reason)

        self._tasks.spawn(later(), name="security-reconnect")

    def _attempt_failed(self, exc: BaseException) -> None:
        """The security's bookkeeping first (events, key, A05.FR.08), then the network
        profile's (B10.FR.03): the next attempt's slot and options."""
        if self.security is not None:
            self.security.attempt_failed(exc)
        if self.networks is not None:
            self.networks.attempt_failed()
            self.options = self.networks.options

    def _on_link(self, state: str) -> None:
        if state == "connected" and self.security is not None:
            self.security.connected()
        if state == "connected" and self.networks is not None:
            self.networks.connected()
        if state == "connecting":
            self._state = "connecting"
        elif state == "offline":
            if self._offline_since_s is None:
                self._offline_since_s = self.clock.monotonic_s()
            self._state = "offline"
            self._rpc = None
        for listener in list(self.on_link_state):
            listener(state)

    async def run(self) -> None:
        """Stay connected until close(), or until the CSMS picked another version."""
        self.availability.restore()  # connectors a reset held before the restart
        if self.monitoring is not None:
            self._tasks.spawn(self.monitoring.run(), name="monitoring")
        self._tasks.spawn(self.cert_signing.renewal_loop(), name="cert-renewal")  # A03
        await self._link.run()

    async def _session(self, ws: ClientConnection) -> None:
        rpc = RpcConnection(
            ws,
            self._handle,
            dialect=rpc201.DIALECT,
            response_timeout_s=self.options.response_timeout_s,
            # Every 2.0.1 action passes to the handler, after its schema check: one that is
            # not implemented yet is answered NotSupported there.
            supported_actions=rpc201.ACTIONS,
            on_frame=self._observe,
            on_invalid=self._incident(SecurityEventKind.INVALID_MESSAGES),
            on_replay=self._incident(SecurityEventKind.ATTEMPTED_REPLAY_ATTACKS),
            gate=self._gate,
            admit=self.call_admission(),
        )
        await self._run_session(rpc, self._bring_up(), "ocpp201")

    async def _bring_up(self) -> None:
        try:
            first = not self._accepted_once
            if first:
                await self._boot()
            self._state = "accepted"
            for listener in list(self.on_accepted):
                listener()
            self._queue_statuses(every=first or self._offline_long())
            self._offline_since_s = None
            self.pump.wake()
            await asyncio.gather(self._status_pump(), self.pump.run(), self.heartbeat.run())
        except ConnectionLost:
            LOG.info("connection lost during session")

    def report_statuses(self, connector_ids: list[int]) -> None:
        """Report these connectors' statuses again, also unchanged ones (G04.FR.05 after a
        ChangeAvailability: the CSMS learns where each connector stands)."""
        for cid in connector_ids:
            self._reported_status.pop(cid, None)
            if cid not in self._pending_status:
                view = self.station.view(cid)
                status = status201.connector_status(view.phase, view.plugged)
                self._pending_status[cid] = (status, self._now())
        self._status_wakeup.set()

    def reported_status(self, connector_id: int) -> str | None:
        """The connectorStatus the CSMS last confirmed for this connector (None: none yet,
        or one is still to be sent)."""
        if connector_id in self._pending_status:
            return None
        return self._reported_status.get(connector_id)

    def _offline_long(self) -> bool:
        since = self._offline_since_s
        return since is None or self.clock.monotonic_s() - since > self.offline_threshold_s

    def _queue_statuses(self, *, every: bool) -> None:
        """B01.FR.05 after the boot and B04.FR.01 after a long outage: every connector's
        status; B04.FR.02 after a short one: only those that changed meanwhile."""
        if every:
            self._reported_status.clear()
        for cid in self.station.connector_ids():
            view = self.station.view(cid)
            status = status201.connector_status(view.phase, view.plugged)
            if cid not in self._pending_status and self._reported_status.get(cid) != status:
                self._pending_status[cid] = (status, self._now())
        self._status_wakeup.set()

    async def _boot(self) -> None:
        """BootNotification until Accepted. Pending (B02): answer the CSMS, send nothing
        else, again after ``interval``. Rejected (B03): send nothing and answer every CSMS
        request with SecurityError until ``interval`` passed, then boot again."""
        station: dict[str, Any] = {
            "vendorName": self.identity.vendor,
            "model": self.identity.model,
        }
        if self.identity.serial_number:
            station["serialNumber"] = self.identity.serial_number
        if self.identity.firmware_version:
            station["firmwareVersion"] = self.identity.firmware_version
        payload = {"reason": self.boot_reason(), "chargingStation": station}
        while True:
            self._state = "booting"
            try:
                result = await self._call("BootNotification", payload)
            except (CallError, CallTimeout) as exc:
                LOG.warning("BootNotification failed: %s", exc)
                await self.clock.sleep(backoff_s(2, 1.0, 30.0, self._rng))
                continue
            self.time.note_server_time(result.get("currentTime"))  # B01.FR.06
            interval_s = int(result["interval"])
            status = str(result["status"])
            self.boot_statuses.append(status)
            LOG.info("BootNotification: %s (interval %d s)", status, interval_s)
            if status == "Accepted":
                if interval_s > 0 and not self.primary:
                    self._own_heartbeat_s = interval_s
                    self.heartbeat.interval_changed()
                elif interval_s > 0:  # B01.FR.04
                    self.store.set_setting(HEARTBEAT_KEY, str(interval_s))
                    self._note_interval(interval_s)
                if self.store.get_setting(BOOT_REASON_KEY):
                    self.store.delete_setting(BOOT_REASON_KEY)
                self._accepted_once = True
                return
            self._state = status.lower()  # "pending" / "rejected"
            rpc = self._rpc
            if rpc is not None and status == "Rejected":
                rpc.refuse_code = rpc201.SECURITY_ERROR  # B03.FR.08
            try:
                # B02.FR.04/08, B03.FR.02/06: not before the interval (unless triggered);
                # B02.FR.07, B03.FR.05.
                self._boot_now.clear()
                await sleep_or_event(
                    self.clock.sleep(interval_s if interval_s > 0 else OWN_BOOT_RETRY_S),
                    self._boot_now,
                )
            finally:
                if rpc is not None:
                    rpc.refuse_code = None

    async def _call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        rpc = self._rpc
        if rpc is None:
            raise ConnectionLost("not connected")
        return await rpc.call(action, payload)

    def _now(self) -> str:
        return iso_utc(self.clock.utc_now())

    async def _status_pump(self) -> None:
        """One StatusNotificationRequest per changed connector, oldest change first.

        The status in flight counts as reported while it is sent, so a change back to the
        status before it (Reserved, then Available at once) is queued, not dropped as
        "what the CSMS knows"; a status that did not get through is queued again."""
        while True:
            self._status_wakeup.clear()
            if not self._pending_status:
                await self._status_wakeup.wait()
                continue
            cid = next(iter(self._pending_status))
            status, at = self._pending_status.pop(cid)
            previous = self._reported_status.get(cid)
            self._reported_status[cid] = status
            evse_id, connector_id = status201.evse_of(cid)
            payload = {
                "timestamp": at,
                "connectorStatus": status,
                "evseId": evse_id,
                "connectorId": connector_id,
            }
            try:
                await self._call(
                    "StatusNotification", self.time.guard("StatusNotification", payload)
                )
            except CallError as exc:
                LOG.warning("StatusNotification refused: %s", exc)
            except CallTimeout:
                self._unsent_status(cid, status, at, previous)
            except ConnectionLost:
                self._unsent_status(cid, status, at, previous)
                raise

    def _unsent_status(self, cid: int, status: str, at: str, previous: str | None) -> None:
        """Put back a status that did not get through (unless a newer one waits)."""
        if previous is None:
            self._reported_status.pop(cid, None)
        else:
            self._reported_status[cid] = previous
        if cid not in self._pending_status:
            self._pending_status[cid] = (status, at)

    def _prepare_queued(self, msg: QueuedMessage) -> dict[str, Any]:
        return self.time.guard(msg.action, dict(msg.payload))

    def _tx_message_confirmed(self, msg: QueuedMessage, result: dict[str, Any]) -> bool:
        """A TransactionEventResponse whose idTokenInfo does not accept the transaction's
        idToken deauthorizes it (E05.FR.02/09/10, C15.FR.03/04: StopTxOnInvalidId and
        MaxEnergyOnInvalidId decide); the pump removes the message."""
        info = result.get("idTokenInfo")
        if msg.action == "TransactionEvent" and self.primary:
            self.auth.transaction_answered(msg.payload, result)  # C10.FR.05
        if (
            self.primary  # another backend's answer neither caches nor stops a session
            and msg.action == "TransactionEvent"
            and isinstance(info, dict)
            and msg.tx_key is not None
            and "idToken" in msg.payload
            and msg.payload.get("eventType") != "Ended"
            and self.auth.required()  # AuthCtrlr.Enabled false: nobody's token decides
        ):
            status = str(info.get("status"))
            running = self.station.running_transactions()
            evse = next((cid for cid, key in running.items() if key == msg.tx_key), None)
            if not self.auth.allowed_at(info, evse):  # Accepted, and at its EVSE (C01.FR.21)
                LOG.warning(
                    "transaction %d: the CSMS answered idToken %s (evseId %s); deauthorized",
                    msg.tx_key,
                    status,
                    info.get("evseId"),
                    extra={"action": "TransactionEvent", "tx_key": msg.tx_key},
                )
                self.station.deauthorize(msg.tx_key)
        if msg.action == "TransactionEvent" and msg.payload.get("eventType") in (
            "Started",
            "Ended",
        ):
            LOG.info(
                "transaction %s: TransactionEvent %s delivered (transactionId %s)",
                msg.tx_key,
                msg.payload["eventType"],
                msg.payload["transactionInfo"]["transactionId"],
                extra={"action": "TransactionEvent", "tx_key": msg.tx_key},
            )
        return False

    def _comm_int(self, name: str, default: int) -> int:
        """OCPPCommCtrlr.<name>[TransactionEvent] (E13.FR.01)."""
        model = self.device_model
        if model is None:
            return default
        try:
            return model.get_int("OCPPCommCtrlr", VariableKey(name, "TransactionEvent"))
        except (KeyError, ValueError):
            return default

    async def _send_queued(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._call(action, payload)

    # ------------------------------------------------------------------ CSMS requests

    async def _handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Reached after the schema check of ``payload``: the declared routes
        (controller/ocpp201/routes.py); any other action is answered NotSupported."""
        handler = ROUTES.get(action)
        if handler is not None:
            return await handler(self, payload)
        LOG.info("CSMS request %s: not supported yet", action)
        raise CallError(rpc201.NOT_SUPPORTED, f"{action} is not supported yet")

    def _note_interval(self, interval_s: int) -> None:
        """The boot's interval is OCPPCommCtrlr.HeartbeatInterval from now on (GetVariables
        reports what the charger uses)."""
        if self.device_model is None:
            return
        try:
            self.device_model.set_internal("OCPPCommCtrlr", "HeartbeatInterval", str(interval_s))
        except (KeyError, InvalidValue) as exc:
            LOG.warning("HeartbeatInterval %d not kept in the device model: %s", interval_s, exc)

    async def close(self, reason: str = "charging station stopping") -> None:
        """Close the connection, then stop listening to the security log: after a hand-over
        to another OCPP version its events go to that version's adapter."""
        await super().close(reason)
        if self.security_log is not None:
            self.security_log.remove_listener(self.security_events)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the client's task group (work that follows a request's answer)."""
        return self._tasks.spawn(coro, name=name)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL now (not queued); raises ConnectionLost, CallError or CallTimeout."""
        return await self._call(action, payload)

    # ------------------------------------------------------------------ triggered (F06)

    def trigger_boot(self) -> bool:
        """TriggerMessage(BootNotification): False once a boot was Accepted (F06.FR.17);
        else the BootNotification goes now instead of after the interval (B02.FR.04)."""
        if self._accepted_once:
            return False
        self._boot_now.set()
        return True

    async def send_heartbeat(self) -> None:
        """TriggerMessage(Heartbeat): its currentTime sets the clock like any other."""
        result = await self._call("Heartbeat", {})
        self.time.note_server_time(result.get("currentTime"))

    async def send_status(self, connector_id: int) -> None:
        """TriggerMessage(StatusNotification): the connector's status now, also while
        Pending (B02.FR.02); it counts as reported."""
        view = self.station.view(connector_id)
        status = status201.connector_status(view.phase, view.plugged)
        evse_id, evse_connector = status201.evse_of(connector_id)
        payload = {
            "timestamp": self._now(),
            "connectorStatus": status,
            "evseId": evse_id,
            "connectorId": evse_connector,
        }
        await self._call("StatusNotification", self.time.guard("StatusNotification", payload))
        self._reported_status[connector_id] = status
        pending = self._pending_status.get(connector_id)
        if pending is not None and pending[0] == status:
            del self._pending_status[connector_id]

    def _command_of(self, action: str, payload: dict[str, Any]) -> Command:
        return commands201.command_of(action, payload)

    def _follow_model(self, model: DeviceModel) -> None:
        """The heartbeat follows OCPPCommCtrlr.HeartbeatInterval set by the CSMS (B05)."""

        def changed(component: ComponentKey, variable: VariableKey, value: str) -> None:
            if component.name == "OCPPCommCtrlr" and variable.name == "HeartbeatInterval":
                self.store.set_setting(HEARTBEAT_KEY, value)
                self.heartbeat.interval_changed()

        model.on_change(changed)
