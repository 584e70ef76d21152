"""Development OCPP central system (CSMS), 1.6J and 2.0.1, for `evsed dev-csms`, `evsed demo`
and tests."""

from __future__ import annotations

import asyncio
import hmac
import http
import json
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ocpp.exceptions import SecurityError as OcppSecurityError
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.datatypes import IdTokenInfoType
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from controller.csms.upgrade import basic_credentials, station_id_from_path

logger = logging.getLogger(__name__)

OCPP16_SUBPROTOCOL = Subprotocol("ocpp1.6")
OCPP201_SUBPROTOCOL = Subprotocol("ocpp2.0.1")
# The versions the dev CSMS speaks, by name and subprotocol.
SUBPROTOCOLS: dict[str, Subprotocol] = {"1.6": OCPP16_SUBPROTOCOL, "2.0.1": OCPP201_SUBPROTOCOL}
CALL = 2
CALLRESULT = 3
CALLERROR = 4
_BOOT_STATUSES = ("Accepted", "Pending", "Rejected")


# --------------------------------------------------------------------------- records


@dataclass
class Frame:
    """A frame received from a station (CALL, or CALLRESULT/CALLERROR to a CSMS call)."""

    station_id: str
    action: str
    payload: dict[str, Any]
    unique_id: str
    received_at: float  # time.monotonic() when the frame came off the socket
    message_type: int = CALL
    raw: str = ""
    error_code: str | None = None  # CALLERROR only
    black_holed: bool = False  # CALL that the CSMS deliberately never answered


@dataclass
class SentFrame:
    """A frame the CSMS sent to a station (CALLRESULT/CALLERROR answer, or a CSMS CALL)."""

    station_id: str
    action: str  # for answers: the action of the CALL being answered ("" if unknown)
    payload: dict[str, Any]
    unique_id: str
    sent_at: float  # time.monotonic()
    message_type: int = CALLRESULT
    raw: str = ""
    error_code: str | None = None


@dataclass(frozen=True)
class StationConnected:
    station_id: str
    subprotocol: str | None
    remote: str


@dataclass(frozen=True)
class StationDisconnected:
    station_id: str
    code: int | None
    reason: str


@dataclass(frozen=True)
class FrameReceived:
    station_id: str
    text: str
    message: Any  # parsed JSON (None if the text was not valid JSON)
    action: str  # CALL action, or the action of the CALL a result answers ("" if unknown)


@dataclass(frozen=True)
class FrameSent:
    station_id: str
    text: str
    message: Any
    action: str


CsmsEvent = StationConnected | StationDisconnected | FrameReceived | FrameSent


# --------------------------------------------------------------------------- formatting


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _format_frame(arrow: str, message: Any, action: str, text: str) -> str:
    if not isinstance(message, list) or len(message) < 2:
        return f"{arrow}  (raw) {text}"
    kind = message[0]
    if kind == CALL and len(message) >= 4:
        return f"{arrow}  {message[2]} {_compact(message[3])}"
    if kind == CALLRESULT and len(message) >= 3:
        return f"{arrow}  {action or '?'}.conf {_compact(message[2])}"
    if kind == CALLERROR and len(message) >= 3:
        desc = message[3] if len(message) >= 4 else ""
        details = message[4] if len(message) >= 5 else {}
        line = f"{arrow}  {action or '?'} CALLERROR {message[2]}"
        if desc:
            line += f" {desc!r}"
        if details:
            line += f" {_compact(details)}"
        return line
    return f"{arrow}  (raw) {text}"


def format_event(event: CsmsEvent, *, with_station: bool = False, max_len_chars: int = 240) -> str:
    """One-line human-readable rendering of a CSMS event, e.g.
    "→ CSMS  StartTransaction {connectorId: 1, idTag: 04A1B2C3, meterStart: 0}"."""
    if isinstance(event, StationConnected):
        line = f"⇄ {event.station_id} connected from {event.remote} ({event.subprotocol})"
    elif isinstance(event, StationDisconnected):
        line = f"✕ {event.station_id} disconnected (code {event.code}"
        line += f", {event.reason})" if event.reason else ")"
    elif isinstance(event, FrameReceived):
        line = _format_frame("→ CSMS", event.message, event.action, event.text)
    else:
        line = _format_frame("← CSMS", event.message, event.action, event.text)
    if with_station and isinstance(event, FrameReceived | FrameSent):
        line = f"[{event.station_id}] {line}"
    if len(line) > max_len_chars:
        line = line[: max_len_chars - 1] + "…"
    return line


# --------------------------------------------------------------------------- helpers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _LinkClosedError(ConnectionError):
    """Raised by _StationLink.recv() once the WebSocket is gone."""


# --------------------------------------------------------------------------- per-connection link


class _StationLink:
    """Wraps the WebSocket the ChargePoint reads/writes: records raw frames, reads eagerly
    (so concurrent CALLs are seen when they arrive) and routes responses."""

    def __init__(self, csms: DevCsms, station_id: str, ws: ServerConnection) -> None:
        self.csms = csms
        self.station_id = station_id
        self.ws = ws
        self.closed = False
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._cp_call_ids: set[str] = set()  # CALLs sent by ChargePoint.call()
        self._call_actions: dict[str, str] = {}  # unique id -> action, CSMS->CP CALLs
        self._station_call_actions: dict[str, str] = {}  # unique id -> action, CP->CSMS CALLs
        self._raw_waiters: dict[str, asyncio.Future[list[Any]]] = {}
        self._open_station_calls: list[str] = []

    # --- the interface ocpp.ChargePoint uses
    async def recv(self) -> str:
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)
            raise _LinkClosedError(f"{self.station_id}: connection closed")
        return item

    async def send(self, message: str) -> None:
        await self.send_text(message, from_charge_point=True)

    # --- used by DevCsms
    async def send_text(
        self,
        text: str,
        *,
        from_charge_point: bool = False,
        raw_waiter: asyncio.Future[list[Any]] | None = None,
    ) -> None:
        now = time.monotonic()
        message: Any
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        action = ""
        if isinstance(message, list) and len(message) >= 2 and isinstance(message[1], str):
            kind, uid = message[0], message[1]
            if kind == CALL and len(message) >= 4:
                action = str(message[2])
                self._call_actions[uid] = action
                if raw_waiter is not None:
                    self._raw_waiters[uid] = raw_waiter
                elif from_charge_point:
                    self._cp_call_ids.add(uid)
                self.csms.sent_calls.append(self._sent_frame(message, action, now, text))
            elif kind in (CALLRESULT, CALLERROR):
                action = self._station_call_actions.pop(uid, "")
                if uid in self._open_station_calls:
                    self._open_station_calls.remove(uid)
                self.csms.sent_results.append(self._sent_frame(message, action, now, text))
        self.csms._emit(FrameSent(self.station_id, text, message, action))
        await self.ws.send(text)

    def _sent_frame(self, message: list[Any], action: str, now: float, text: str) -> SentFrame:
        kind = message[0]
        payload: Any
        error_code: str | None = None
        if kind == CALL:
            payload = message[3]
        elif kind == CALLRESULT:
            payload = message[2] if len(message) >= 3 else {}
        else:
            error_code = str(message[2]) if len(message) >= 3 else None
            payload = message[4] if len(message) >= 5 else {}
        return SentFrame(
            station_id=self.station_id,
            action=action,
            payload=payload if isinstance(payload, dict) else {"_": payload},
            unique_id=message[1],
            sent_at=now,
            message_type=kind,
            raw=text,
            error_code=error_code,
        )

    @property
    def outstanding_calls(self) -> int:
        return len(self._open_station_calls)

    async def pump(self) -> None:
        """Read frames off the socket as soon as they arrive; never blocks on handlers."""
        try:
            async for data in self.ws:
                if isinstance(data, bytes):
                    logger.warning(
                        "%s: ignoring binary frame (%d bytes)", self.station_id, len(data)
                    )
                    continue
                await self._on_text(data)
        except ConnectionClosed:
            pass
        finally:
            self.close_link()

    def close_link(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(None)
        self._open_station_calls.clear()
        for fut in self._raw_waiters.values():
            if not fut.done():
                fut.set_exception(_LinkClosedError(f"{self.station_id}: connection closed"))
        self._raw_waiters.clear()

    async def _on_text(self, text: str) -> None:
        now = time.monotonic()
        message: Any
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        csms = self.csms
        if not (isinstance(message, list) and len(message) >= 2 and isinstance(message[1], str)):
            csms._emit(FrameReceived(self.station_id, text, message, ""))
            # No recoverable unique id: nothing can be answered (OCPP-J 4.2.3), just log it.
            logger.warning("%s: ignoring malformed frame %.200r", self.station_id, text)
            return
        kind, uid = message[0], message[1]
        if kind == CALL and len(message) >= 4:
            action = str(message[2])
            payload = message[3] if isinstance(message[3], dict) else {"_": message[3]}
            black = csms.black_hole
            frame = Frame(
                station_id=self.station_id,
                action=action,
                payload=payload,
                unique_id=uid,
                received_at=now,
                message_type=CALL,
                raw=text,
                black_holed=black,
            )
            csms._record_received(frame)
            csms._emit(FrameReceived(self.station_id, text, message, action))
            if black:
                logger.info("%s: black-holing %s %s", self.station_id, action, uid)
                return
            self._station_call_actions[uid] = action
            self._open_station_calls.append(uid)
            csms.max_outstanding_calls = max(
                csms.max_outstanding_calls, len(self._open_station_calls)
            )
            code = csms._injected_error(action)
            if code is not None:
                error = [CALLERROR, uid, code, "Injected by DevCsms", {}]
                await self.send_text(json.dumps(error, separators=(",", ":")))
                return
            self._inbox.put_nowait(text)
            return
        if kind in (CALLRESULT, CALLERROR):
            action = self._call_actions.pop(uid, "")
            frame = Frame(
                station_id=self.station_id,
                action=action,
                payload=_response_payload(message),
                unique_id=uid,
                received_at=now,
                message_type=kind,
                raw=text,
                error_code=str(message[2]) if kind == CALLERROR and len(message) >= 3 else None,
            )
            csms.received_responses.append(frame)
            csms._emit(FrameReceived(self.station_id, text, message, action))
            if uid in self._cp_call_ids:
                self._cp_call_ids.discard(uid)
                self._inbox.put_nowait(text)
            elif uid in self._raw_waiters:
                fut = self._raw_waiters.pop(uid)
                if not fut.done():
                    fut.set_result(message)
            else:
                csms._unmatched_queue(self.station_id).put_nowait(message)
            return
        csms._emit(FrameReceived(self.station_id, text, message, ""))
        logger.warning("%s: ignoring frame with bad message type %.200r", self.station_id, text)


def _response_payload(message: list[Any]) -> dict[str, Any]:
    if message[0] == CALLRESULT:
        payload = message[2] if len(message) >= 3 else {}
    else:
        payload = message[4] if len(message) >= 5 else {}
    return payload if isinstance(payload, dict) else {"_": payload}


# --------------------------------------------------------------------------- OCPP handlers


class StationSession(ChargePoint):
    """Server-side view of one connected charge point: answers every CP->CSMS 1.6 action."""

    def __init__(
        self,
        station_id: str,
        link: _StationLink,
        csms: DevCsms,
        *,
        response_timeout_s: float,
        ocpp_logger: logging.Logger,
    ) -> None:
        super().__init__(station_id, link, response_timeout=response_timeout_s, logger=ocpp_logger)
        self.link = link
        self.csms = csms

    @on(Action.boot_notification)
    def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        status = self.csms.boot_status
        interval_s = (
            self.csms.heartbeat_interval_s
            if status == "Accepted"
            else self.csms.boot_retry_interval_s
        )
        return call_result.BootNotification(
            current_time=_now_iso(), interval=int(interval_s), status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now_iso())

    @on(Action.status_notification)
    def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info=self.csms.id_tag_info(id_tag))

    @on(Action.start_transaction)
    def on_start_transaction(self, id_tag: str, **_: Any) -> call_result.StartTransaction:
        return call_result.StartTransaction(
            transaction_id=self.csms._next_transaction_id(),
            id_tag_info=self.csms.id_tag_info(id_tag),
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, id_tag: str | None = None, **_: Any
    ) -> call_result.StopTransaction:
        info = self.csms.id_tag_info(id_tag) if id_tag is not None else None
        return call_result.StopTransaction(id_tag_info=info)

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on(Action.data_transfer)
    def on_data_transfer(self, **_: Any) -> call_result.DataTransfer:
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status_notification(
        self, **_: Any
    ) -> call_result.DiagnosticsStatusNotification:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    def on_firmware_status_notification(self, **_: Any) -> call_result.FirmwareStatusNotification:
        return call_result.FirmwareStatusNotification()

    # Security whitepaper extension (CP->CSMS) for completeness.
    @on(Action.security_event_notification)
    def on_security_event_notification(self, **_: Any) -> call_result.SecurityEventNotification:
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification)
    def on_log_status_notification(self, **_: Any) -> call_result.LogStatusNotification:
        return call_result.LogStatusNotification()

    @on(Action.signed_firmware_status_notification)
    def on_signed_firmware_status_notification(
        self, **_: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.sign_certificate)
    def on_sign_certificate(self, **_: Any) -> call_result.SignCertificate:
        # A02/A03.FR.11/12: Accepted when a CA to sign with is set, else Rejected.
        status = "Accepted" if self.csms.csr_signer is not None else "Rejected"
        return call_result.SignCertificate(status=status)

    @after(Action.sign_certificate)
    def after_sign_certificate(self, csr: str, **_: Any) -> None:
        signer = self.csms.csr_signer
        if signer is not None:
            task = asyncio.get_running_loop().create_task(self._send_signed(signer, csr))
            self.csms._background.add(task)
            task.add_done_callback(self.csms._background.discard)

    async def _send_signed(self, signer: Callable[[str], str | None], csr: str) -> None:
        """The CA's answer to the CSR as CertificateSigned (what a CSMS does once its CA
        signed); the charger's status is kept in ``certificate_signed_statuses``."""
        try:
            chain = signer(csr)
        except ValueError as exc:
            logger.warning("CSR not signed: %s", exc)
            return
        if chain is None:
            return
        try:
            result = await self.call(
                call.CertificateSigned(certificate_chain=chain), suppress=False
            )
        except Exception as exc:  # the dev CSMS reports, it does not crash
            logger.warning("CertificateSigned failed: %s", exc)
            self.csms.certificate_signed_statuses.append(f"error: {exc}")
            return
        self.csms.certificate_signed_statuses.append(result.status)


def _trivial_results_201() -> dict[str, Callable[[], Any]]:
    """2.0.1 station messages whose schema-valid answer needs no decision: the minimal one."""
    return {
        "ClearedChargingLimit": result201.ClearedChargingLimit,
        "DataTransfer": lambda: result201.DataTransfer(status="UnknownVendorId"),
        "FirmwareStatusNotification": result201.FirmwareStatusNotification,
        "GetCertificateStatus": lambda: result201.GetCertificateStatus(status="Failed"),
        "LogStatusNotification": result201.LogStatusNotification,
        "MeterValues": result201.MeterValues,
        "NotifyChargingLimit": result201.NotifyChargingLimit,
        "NotifyCustomerInformation": result201.NotifyCustomerInformation,
        "NotifyDisplayMessages": result201.NotifyDisplayMessages,
        "NotifyEVChargingNeeds": lambda: result201.NotifyEVChargingNeeds(status="Rejected"),
        "NotifyEVChargingSchedule": lambda: result201.NotifyEVChargingSchedule(status="Rejected"),
        "NotifyEvent": result201.NotifyEvent,
        "NotifyMonitoringReport": result201.NotifyMonitoringReport,
        "NotifyReport": result201.NotifyReport,
        "PublishFirmwareStatusNotification": result201.PublishFirmwareStatusNotification,
        "ReportChargingProfiles": result201.ReportChargingProfiles,
        "ReservationStatusUpdate": result201.ReservationStatusUpdate,
        "SecurityEventNotification": result201.SecurityEventNotification,
    }


# What a station may send before its boot was accepted because the CSMS asked for it
# (B02.FR.02 / B02.FR.09: the pages of a GetBaseReport or GetReport).
_SENT_WHEN_ASKED_201 = frozenset({"NotifyReport"})


class StationSession201(ChargePoint201):
    """Server-side view of one charging station speaking OCPP 2.0.1: BootNotification,
    Heartbeat, StatusNotification and Authorize answered by the CSMS's settings, other
    station messages with their minimal valid answer; requests are schema-checked by the
    ocpp library. Until a boot is Accepted, any other CALL gets SecurityError (B02.FR.09,
    B03.FR.07): a station that sends one is caught in the records (``sent_results``)."""

    def __init__(
        self,
        station_id: str,
        link: _StationLink,
        csms: DevCsms,
        *,
        response_timeout_s: float,
        ocpp_logger: logging.Logger,
    ) -> None:
        super().__init__(station_id, link, response_timeout=response_timeout_s, logger=ocpp_logger)
        self.link = link
        self.csms = csms
        # A station booted once stays accepted over reconnects: 2.0.1 boots once per
        # power-up, not per connection (B01.FR.03 sends no new BootNotification).
        self.accepted = station_id in csms.accepted_201
        for action, make in _trivial_results_201().items():
            self.route_map[action] = {
                "_on_action": self._trivial(action, make),
                "_skip_schema_validation": False,
            }

    def _trivial(self, action: str, make: Callable[[], Any]) -> Callable[..., Any]:
        def answer(**_: Any) -> Any:
            if action not in _SENT_WHEN_ASKED_201:
                self._check_accepted(action)
            return make()

        return answer

    def _check_accepted(self, action: str) -> None:
        if not self.accepted:
            raise OcppSecurityError(description=f"{action} before the boot was accepted")

    @on("BootNotification")
    def on_boot_notification(self, **_: Any) -> result201.BootNotification:
        status = self.csms.boot_status
        self.accepted = self.accepted or status == "Accepted"
        if self.accepted:
            self.csms.accepted_201.add(self.id)
        else:
            self.csms.accepted_201.discard(self.id)
        interval_s = (
            self.csms.heartbeat_interval_s
            if status == "Accepted"
            else self.csms.boot_retry_interval_s
        )
        return result201.BootNotification(
            current_time=_now_iso(), interval=int(interval_s), status=status
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> result201.Heartbeat:
        self._check_accepted("Heartbeat")
        return result201.Heartbeat(current_time=_now_iso())

    @on("StatusNotification")
    def on_status_notification(self, **_: Any) -> result201.StatusNotification:
        self._check_accepted("StatusNotification")
        return result201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> result201.Authorize:
        self._check_accepted("Authorize")
        return result201.Authorize(id_token_info=self.csms.id_token_info_201(id_token))

    @on("SignCertificate")
    def on_sign_certificate(self, **_: Any) -> result201.SignCertificate:
        """A02/A03.FR.11/12: Accepted when a CA to sign with is set (``csr_signer``)."""
        self._check_accepted("SignCertificate")
        status = "Accepted" if self.csms.csr_signer is not None else "Rejected"
        return result201.SignCertificate(status=status)

    @after("SignCertificate")
    def after_sign_certificate(self, csr: str, **_: Any) -> None:
        signer = self.csms.csr_signer
        if signer is None or not self.accepted:
            return
        task = asyncio.get_running_loop().create_task(self._send_signed(signer, csr))
        self.csms._background.add(task)
        task.add_done_callback(self.csms._background.discard)

    async def _send_signed(self, signer: Callable[[str], str | None], csr: str) -> None:
        """CertificateSigned with the CA's answer (2.0.1); the station's status is kept in
        ``certificate_signed_statuses``."""
        try:
            chain = signer(csr)
        except ValueError as exc:
            logger.warning("CSR not signed: %s", exc)
            return
        if chain is None:
            return
        payload = {"certificateChain": chain, "certificateType": "ChargingStationCertificate"}
        try:
            frame = await self.csms.call_raw(self.id, "CertificateSigned", payload)
        except Exception as exc:  # the dev CSMS reports, it does not crash
            self.csms.certificate_signed_statuses.append(f"error: {exc}")
            return
        status = frame[2].get("status") if frame[0] == 3 else f"error: {frame[2]}"
        self.csms.certificate_signed_statuses.append(str(status))

    @on("TransactionEvent")
    def on_transaction_event(
        self, id_token: dict[str, Any] | None = None, **_: Any
    ) -> result201.TransactionEvent:
        """With an idToken, its authorization as Authorize gives it (E01.FR.12, E05)."""
        self._check_accepted("TransactionEvent")
        if id_token is None:
            return result201.TransactionEvent()
        return result201.TransactionEvent(id_token_info=self.csms.id_token_info_201(id_token))


class CsrSigner:
    """The dev CSMS's CA (A02.FR.04 says a separate CA server; a test needs only one key):
    signs a CSR's subject and key with ``ca_cert_pem``/``ca_key_pem`` and returns the leaf
    followed by ``chain_pem`` (the sub-CAs up to, not including, the root). ``now`` gives
    the notBefore (minus an hour); a test passes its charger's clock."""

    def __init__(
        self,
        ca_cert_pem: str | bytes,
        ca_key_pem: str | bytes,
        *,
        chain_pem: str = "",
        validity_days: float = 365.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        def as_bytes(value: str | bytes) -> bytes:
            return value.encode() if isinstance(value, str) else value

        self.ca_cert = x509.load_pem_x509_certificate(as_bytes(ca_cert_pem))
        self.ca_key = serialization.load_pem_private_key(as_bytes(ca_key_pem), password=None)
        self.chain_pem = chain_pem
        self.validity_days = validity_days
        self.now = now or (lambda: datetime.now(UTC))
        self.signed: list[x509.Certificate] = []

    def __call__(self, csr_pem: str) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid")
        start = self.now() - timedelta(hours=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=self.validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        self.signed.append(cert)
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii") + self.chain_pem


# --------------------------------------------------------------------------- the CSMS


class DevCsms:
    """Development OCPP 1.6J and 2.0.1 central system with recording and fault injection."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        passwords: dict[str, str] | None = None,
        boot_status: str = "Accepted",
        heartbeat_interval_s: int = 300,
        boot_retry_interval_s: int = 5,
        accept_id_tags: set[str] | None = None,
        invalid_id_tags: set[str] | None = None,
        on_event: Callable[[CsmsEvent], None] | None = None,
        ocpp_logger: str = "ocpp",
        response_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        ocpp_versions: tuple[str, ...] | None = None,
        first_transaction_id: int = 1,
    ) -> None:
        if boot_status not in _BOOT_STATUSES:
            raise ValueError(f"boot_status must be one of {_BOOT_STATUSES}, got {boot_status!r}")
        self.host = host
        self._requested_port = port
        self.passwords = passwords
        self.boot_status = boot_status
        self.heartbeat_interval_s = heartbeat_interval_s
        self.boot_retry_interval_s = boot_retry_interval_s
        self.accept_id_tags = accept_id_tags
        self.invalid_id_tags: set[str] = set(invalid_id_tags or ())
        self.on_event = on_event
        self.response_timeout_s = response_timeout_s
        self._ocpp_logger = logging.getLogger(ocpp_logger)
        # wss:// (security profiles 2 and 3; a client certificate is required when the
        # context verifies clients, see server_ssl_context).
        self.ssl_context = ssl_context
        # The OCPP versions accepted, in this CSMS's order of preference; None: both, the
        # station's preference (the first subprotocol it offers that the CSMS speaks).
        unknown = [v for v in ocpp_versions or () if v not in SUBPROTOCOLS]
        if unknown or ocpp_versions == ():
            raise ValueError(f"ocpp_versions must name {', '.join(SUBPROTOCOLS)}")
        self.ocpp_versions = ocpp_versions
        self.auth_refusals: list[str] = []  # station ids refused with HTTP 401

        # Fault injection.
        self.refuse_connections = False
        self.black_hole = False
        self.error_actions: dict[str, str] = {}
        self.error_actions_once: dict[str, str] = {}
        # 2.0.1 stations whose last BootNotification was Accepted (StationSession201).
        self.accepted_201: set[str] = set()
        # 2.0.1: idToken -> the IdTokenInfo (wire names: status, groupIdToken,
        # cacheExpiryDateTime, ...) Authorize and TransactionEvent answer for it; a token not
        # here gets the status id_tag_info gives.
        self.id_token_infos: dict[str, dict[str, Any]] = {}

        # Records.
        self.received: list[Frame] = []  # CALLs from stations, as on the wire
        self.received_responses: list[Frame] = []  # CALLRESULT/CALLERROR to CSMS CALLs
        self.sent_results: list[SentFrame] = []  # CSMS answers to station CALLs
        self.sent_calls: list[SentFrame] = []  # CALLs the CSMS sent
        self.max_outstanding_calls = 0
        # Certificates (security whitepaper A02/A03): the CA that signs CSRs (None: the
        # answer to SignCertificate is Rejected), and the charger's CertificateSigned answers.
        self.csr_signer: Callable[[str], str | None] | None = None
        self.certificate_signed_statuses: list[str] = []
        self._background: set[asyncio.Task[None]] = set()

        self._server: Server | None = None
        self._port: int | None = None
        self._sessions: dict[str, StationSession] = {}
        self._unmatched: dict[str, asyncio.Queue[list[Any]]] = {}
        self._waiters: list[tuple[Callable[[Frame], bool], asyncio.Future[Frame]]] = []
        self._conn_changed: asyncio.Condition | None = None
        # Several CSMSs in one test (issue 15) hand out distinguishable transaction ids.
        self._last_transaction_id = first_transaction_id - 1

    # --- lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DevCsms not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/ocpp"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._conn_changed = asyncio.Condition()
        self._server = await serve(
            self._handle_connection,
            self.host,
            self._requested_port,
            subprotocols=list(SUBPROTOCOLS.values()),
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            logger=logging.getLogger(__name__ + ".ws"),
            ping_interval=None,
            ssl=self.ssl_context,
        )
        sockets = list(self._server.sockets)
        self._port = int(sockets[0].getsockname()[1]) if sockets else self._requested_port
        logger.info("dev CSMS listening on %s", self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()
        logger.info("dev CSMS stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- handshake and connection handling
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.refuse_connections:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Refusing connections\n")
        station_id = station_id_from_path(request.path)
        if not station_id:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "No station id in path\n")
        if self.passwords is None:
            return None
        expected = self.passwords.get(station_id)
        if expected is None:
            logger.info("refusing unknown station %s", station_id)
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Unknown station\n")
        creds = basic_credentials(request.headers.get("Authorization", ""))
        if (
            creds is None
            or creds[0] != station_id
            or not hmac.compare_digest(creds[1].encode(), expected.encode())
        ):
            logger.info("refusing station %s: bad or missing credentials", station_id)
            self.auth_refusals.append(station_id)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Invalid credentials\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="evsed dev CSMS"'
            return response
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """The version to speak (RFC 6455 4.2.2); None: none of ours was offered, the
        upgrade is answered without a subprotocol and the connection closed at once (as
        some CSMSs do), so a station sees a CSMS that accepts none of its versions. No
        subprotocol offered at all: HTTP 400."""
        if not offered:
            raise NegotiationError("missing subprotocol")
        if self.ocpp_versions is None:
            ours = set(SUBPROTOCOLS.values())
            return next((p for p in offered if p in ours), None)
        return next(
            (SUBPROTOCOLS[v] for v in self.ocpp_versions if SUBPROTOCOLS[v] in offered), None
        )

    async def _handle_connection(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        station_id = station_id_from_path(ws.request.path)
        if ws.subprotocol not in SUBPROTOCOLS.values():
            logger.warning("%s: no common OCPP version: closing", station_id)
            await ws.close(1002, "no supported OCPP subprotocol offered")
            return
        old = self._sessions.get(station_id)
        if old is not None:
            logger.info("%s: new connection replaces the old one", station_id)
            await old.link.ws.close(1000, "replaced by new connection")
        link = _StationLink(self, station_id, ws)
        kind = StationSession201 if ws.subprotocol == OCPP201_SUBPROTOCOL else StationSession
        session = kind(
            station_id,
            link,
            self,
            response_timeout_s=self.response_timeout_s,
            ocpp_logger=self._ocpp_logger,
        )
        self._sessions[station_id] = session
        remote = ws.remote_address
        remote_s = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
        logger.info("%s connected from %s", station_id, remote_s)
        self._emit(StationConnected(station_id, ws.subprotocol, remote_s))
        await self._notify_conn_changed()
        pump_task = asyncio.create_task(link.pump(), name=f"devcsms-pump-{station_id}")
        cp_task = asyncio.create_task(session.start(), name=f"devcsms-cp-{station_id}")
        try:
            await asyncio.wait({pump_task, cp_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump_task, cp_task):
                task.cancel()
            results = await asyncio.gather(pump_task, cp_task, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError | ConnectionClosed | _LinkClosedError
                ):
                    logger.error("%s: session failed: %r", station_id, result)
            link.close_link()
            await ws.close()
            if self._sessions.get(station_id) is session:
                del self._sessions[station_id]
            code = ws.close_code
            reason = ws.close_reason or ""
            logger.info("%s disconnected (code %s)", station_id, code)
            self._emit(StationDisconnected(station_id, code, reason))
            await self._notify_conn_changed()

    async def _notify_conn_changed(self) -> None:
        cond = self._conn_changed
        if cond is None:
            return
        async with cond:
            cond.notify_all()

    # --- business logic helpers (used by StationSession)
    def id_tag_info(self, id_tag: str) -> IdTagInfo:
        """Accepted unless the tag is listed invalid or not in a given accept list."""
        if id_tag in self.invalid_id_tags or (
            self.accept_id_tags is not None and id_tag not in self.accept_id_tags
        ):
            return IdTagInfo(status="Invalid")
        return IdTagInfo(status="Accepted")

    def id_token_info_201(self, id_token: dict[str, Any]) -> IdTokenInfoType | dict[str, Any]:
        """The IdTokenInfo a 2.0.1 Authorize / TransactionEvent answers for ``id_token``."""
        token = str(id_token.get("id_token", ""))
        info = self.id_token_infos.get(token)
        if info is not None:
            return dict(info)
        return IdTokenInfoType(status=str(self.id_tag_info(token).status))

    def _next_transaction_id(self) -> int:
        self._last_transaction_id += 1
        return self._last_transaction_id

    def _injected_error(self, action: str) -> str | None:
        code = self.error_actions_once.pop(action, None)
        if code is None:
            code = self.error_actions.get(action)
        return code

    def _record_received(self, frame: Frame) -> None:
        self.received.append(frame)
        remaining = []
        for predicate, fut in self._waiters:
            if fut.done():
                continue
            try:
                matched = predicate(frame)
            except Exception as exc:  # a broken predicate fails its own waiter only
                fut.set_exception(exc)
                continue
            if matched:
                fut.set_result(frame)
            else:
                remaining.append((predicate, fut))
        self._waiters = remaining

    def _emit(self, event: CsmsEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("on_event callback failed")

    def _unmatched_queue(self, station_id: str) -> asyncio.Queue[list[Any]]:
        queue = self._unmatched.get(station_id)
        if queue is None:
            queue = self._unmatched[station_id] = asyncio.Queue()
        return queue

    def _session(self, station_id: str) -> StationSession:
        session = self._sessions.get(station_id)
        if session is None or session.link.closed:
            raise ConnectionError(f"station {station_id!r} is not connected")
        return session

    # --- public query API
    def connected(self, station_id: str) -> bool:
        session = self._sessions.get(station_id)
        return session is not None and not session.link.closed

    @property
    def station_ids(self) -> list[str]:
        return [sid for sid in self._sessions if self.connected(sid)]

    def outstanding_calls(self, station_id: str) -> int:
        """CALLs from the station the CSMS has not answered yet (black-holed ones excluded)."""
        session = self._sessions.get(station_id)
        return session.link.outstanding_calls if session is not None else 0

    def frames(self, station_id: str | None = None, action: str | None = None) -> list[Frame]:
        """Received CALLs filtered by station and/or action."""
        return [
            f
            for f in self.received
            if (station_id is None or f.station_id == station_id)
            and (action is None or f.action == action)
        ]

    def clear_records(self) -> None:
        self.received.clear()
        self.received_responses.clear()
        self.sent_results.clear()
        self.sent_calls.clear()
        self.max_outstanding_calls = 0

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout_s: float = 10) -> Frame:
        """First received CALL (already recorded or future) for which predicate is true."""
        for frame in self.received:
            if predicate(frame):
                return frame
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_connected(self, station_id: str, timeout_s: float = 10) -> None:
        await self._wait_conn_state(lambda: self.connected(station_id), timeout_s)

    async def wait_disconnected(self, station_id: str, timeout_s: float = 10) -> None:
        await self._wait_conn_state(lambda: station_id not in self._sessions, timeout_s)

    async def _wait_conn_state(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        if predicate():
            return
        cond = self._conn_changed
        if cond is None:
            raise RuntimeError("DevCsms not started")

        async def _wait() -> None:
            async with cond:
                await cond.wait_for(predicate)

        await asyncio.wait_for(_wait(), timeout_s)

    # --- CSMS -> CP
    async def call(self, station_id: str, payload: Any, timeout_s: float = 10) -> Any:
        """Send an `ocpp.v16.call.X` and return the `call_result.X`; a CALLERROR raises the
        matching `ocpp.exceptions.OCPPError`, no answer raises TimeoutError."""
        session = self._session(station_id)
        return await asyncio.wait_for(session.call(payload, suppress=False), timeout_s)

    async def call_raw(
        self, station_id: str, action: str, payload: Any, timeout_s: float = 10
    ) -> list[Any]:
        """Send [2, id, action, payload] without validation; return the parsed response frame."""
        link = self._session(station_id).link
        uid = str(uuid.uuid4())
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        text = json.dumps([CALL, uid, action, payload], separators=(",", ":"))
        try:
            await link.send_text(text, raw_waiter=fut)
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            link._raw_waiters.pop(uid, None)

    # --- certificates (security whitepaper M03-M05, A02, ExtendedTriggerMessage)
    async def _result_of(self, station_id: str, action: str, payload: dict[str, Any]) -> Any:
        frame = await self.call_raw(station_id, action, payload)
        if frame[0] != CALLRESULT:
            raise RuntimeError(f"{action}: {frame}")
        return frame[2]

    async def certificate_signed(self, station_id: str, chain_pem: str) -> str:
        """CertificateSigned.req with ``chain_pem``; the charger's status."""
        payload = {"certificateChain": chain_pem}
        return str((await self._result_of(station_id, "CertificateSigned", payload))["status"])

    async def install_certificate(self, station_id: str, certificate_type: str, pem: str) -> str:
        """InstallCertificate.req (CentralSystemRootCertificate/ManufacturerRootCertificate)."""
        payload = {"certificateType": certificate_type, "certificate": pem}
        return str((await self._result_of(station_id, "InstallCertificate", payload))["status"])

    async def installed_certificate_ids(
        self, station_id: str, certificate_type: str
    ) -> dict[str, Any]:
        """GetInstalledCertificateIds.conf as a dict (status, certificateHashData)."""
        payload = {"certificateType": certificate_type}
        return dict(await self._result_of(station_id, "GetInstalledCertificateIds", payload))

    async def delete_certificate(self, station_id: str, hash_data: dict[str, str]) -> str:
        payload = {"certificateHashData": hash_data}
        return str((await self._result_of(station_id, "DeleteCertificate", payload))["status"])

    async def extended_trigger(
        self, station_id: str, requested: str, connector_id: int | None = None
    ) -> str:
        payload: dict[str, Any] = {"requestedMessage": requested}
        if connector_id is not None:
            payload["connectorId"] = connector_id
        result = await self._result_of(station_id, "ExtendedTriggerMessage", payload)
        return str(result["status"])

    async def send_text(self, station_id: str, text: str) -> None:
        """Send an arbitrary text frame (may be invalid JSON / invalid OCPP)."""
        await self._session(station_id).link.send_text(text)

    async def next_raw_response(self, station_id: str, timeout_s: float = 10) -> list[Any]:
        """Next CALLRESULT/CALLERROR from the station not claimed by call()/call_raw()."""
        return await asyncio.wait_for(self._unmatched_queue(station_id).get(), timeout_s)

    # --- fault injection
    async def disconnect(
        self, station_id: str, *, code: int = 1000, reason: str = "", abort: bool = False
    ) -> None:
        """Close the station's WebSocket (abort=True drops TCP without a close handshake)."""
        session = self._sessions.get(station_id)
        if session is None:
            return
        ws = session.link.ws
        if abort:
            ws.transport.abort()
        else:
            await ws.close(code, reason)
        await self.wait_disconnected(station_id)


def server_ssl_context(
    cert_path: str, key_path: str, client_ca_path: str | None = None
) -> ssl.SSLContext:
    """A TLS server context for the dev CSMS: its certificate chain and key, TLS 1.2 or
    newer; with ``client_ca_path`` a client certificate issued by that CA is required
    (security profile 3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    if client_ca_path is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca_path)
    return ctx


async def run_dev_csms(
    host: str,
    port: int,
    *,
    boot_status: str = "Accepted",
    passwords: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ocpp_versions: tuple[str, ...] | None = None,
) -> None:
    """Serve forever, printing one line per event; returns cleanly on cancellation."""

    def _print(event: CsmsEvent) -> None:
        print(format_event(event, with_station=True), flush=True)

    csms = DevCsms(
        host=host,
        port=port,
        boot_status=boot_status,
        passwords=passwords,
        on_event=_print,
        ssl_context=ssl_context,
        ocpp_versions=ocpp_versions,
    )
    try:
        async with csms:
            print(f"evsed dev CSMS listening on {csms.url}/<station_id>", flush=True)
            versions = ", ".join(ocpp_versions) if ocpp_versions else "1.6, 2.0.1"
            print(f"  OCPP {versions}", flush=True)
            if passwords is not None:
                print(f"  Basic auth required for: {', '.join(sorted(passwords))}", flush=True)
            await asyncio.Event().wait()
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("evsed dev CSMS stopped", flush=True)
        raise
