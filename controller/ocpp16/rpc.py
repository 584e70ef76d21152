"""OCPP-J 1.6 RPC framing: one CALL in flight, schema validation, spec-exact CALLERROR codes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, Protocol

from jsonschema import Draft4Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError
from ocpp.messages import MessageType, get_validator
from ocpp.v16.enums import Action

LOG = logging.getLogger(__name__)

OCPP_VERSION = "1.6"

# OCPP-J 1.6 section 4.2.3, Table 7. The errata sheet (5.1, 5.2) keeps the original
# misspellings on the wire: "FormationViolation" and "OccurenceConstraintViolation".
# The ocpp library sends the 2.0.1 names, so we do not use its CallError codes.
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"

_KNOWN_ACTIONS = {a.value for a in Action}
# The message id of an unreadable frame (OCPP-J 2.0.1 4.2.3, applied to 1.6 as well).
UNKNOWN_MESSAGE_ID = "-1"
_MAX_MESSAGE_ID_LEN = 36
_ID_RE = re.compile(r'^\s*\[\s*\d+\s*,\s*"([^"\\]{1,36})"')


class CallError(Exception):
    """Raised by a handler to answer with a CALLERROR; or received from the peer."""

    def __init__(self, code: str, description: str = "", details: dict[str, Any] | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


class CallTimeout(Exception):
    """No CALLRESULT/CALLERROR arrived in time."""


class ConnectionLost(Exception):
    """The WebSocket closed while a CALL was outstanding."""


class Transport(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...


Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
FrameObserver = Callable[[str, str], None]


def schema_error_code(err: SchemaError) -> str:
    """Map a JSON-schema failure to the OCPP-J 1.6 error code that describes it."""
    if err.validator == "required":
        return PROTOCOL_ERROR  # "Payload for Action is incomplete"
    if err.validator in ("type", "maxLength", "format"):
        return TYPE_CONSTRAINT_VIOLATION
    if err.validator == "additionalProperties":
        return FORMATION_VIOLATION
    return PROPERTY_CONSTRAINT_VIOLATION  # enum, minimum, maximum, ...


def _exact_multiple_of(
    validator: Any, divisor: Any, instance: Any, schema: Any
) -> Iterator[SchemaError]:
    """``multipleOf`` on the decimal numbers as written, not on binary floats: the schemas
    say ``multipleOf: 0.1`` for limits and rates, and 10.2 / 0.1 is not an integer in
    floating point, so the stock check refused valid calls (issue 9 item 3). ``repr`` gives
    the shortest decimal that reads back as the same float, i.e. what the peer wrote."""
    if not validator.is_type(instance, "number"):
        return
    if Decimal(repr(instance)) % Decimal(repr(divisor)) != 0:
        yield SchemaError(f"{instance!r} is not a multiple of {divisor!r}")


_ExactDraft4Validator = validators.extend(Draft4Validator, {"multipleOf": _exact_multiple_of})
_validators: dict[tuple[int, str], Any] = {}


def _validator(message_type: int, action: str) -> Any:
    """The official schema of ``action`` with the exact ``multipleOf`` check (cached)."""
    key = (message_type, action)
    found = _validators.get(key)
    if found is None:
        schema = get_validator(message_type, action, OCPP_VERSION).schema
        found = _validators[key] = _ExactDraft4Validator(schema)
    return found


def validate(message_type: int, action: str, payload: Any) -> None:
    """Raise CallError when ``payload`` violates the official OCPP 1.6 JSON schema."""
    if not isinstance(payload, dict):
        raise CallError(FORMATION_VIOLATION, "payload must be a JSON object")
    validator = _validator(message_type, action)
    try:
        validator.validate(payload)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "payload"
        raise CallError(schema_error_code(err), f"{where}: {err.message}"[:200]) from None


class RpcConnection:
    """Frames OCPP-J over one WebSocket; inbound CALLs go to ``handler`` one at a time."""

    def __init__(
        self,
        transport: Transport,
        handler: Handler,
        *,
        response_timeout_s: float = 30.0,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        supported_actions: frozenset[str] = frozenset(),
        on_frame: FrameObserver | None = None,
    ) -> None:
        self._transport = transport
        self._handler = handler
        self._supported = supported_actions
        self._timeout_s = response_timeout_s
        self._new_id = id_factory
        self._on_frame = on_frame
        self._call_lock = asyncio.Lock()
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._inbound: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.calls_sent = 0
        # While a boot is Rejected the charge point must not answer the CSMS (OCPP 1.6 4.2).
        self.silent = False

    async def call(
        self, action: str, payload: dict[str, Any], *, prevalidated: bool = False
    ) -> dict[str, Any]:
        """Send one CALL and return the validated CALLRESULT payload.

        ``prevalidated``: the payload was checked against the schema when it was journaled
        (outbox replay), so the send path skips that second check; answers are always checked.
        """
        if not prevalidated:
            validate(MessageType.Call, action, payload)  # our own bug if this fails
        async with self._call_lock:
            if self._closed.is_set():
                raise ConnectionLost("connection closed")
            message_id = self._new_id()
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, action, fut)
            try:
                await self._send([MessageType.Call, message_id, action, payload])
                self.calls_sent += 1
                # run() fails the pending future with ConnectionLost when the socket closes,
                # so one timeout around the future is all the waiting a call needs.
                try:
                    async with asyncio.timeout(self._timeout_s):
                        return await fut
                except TimeoutError:
                    if self._closed.is_set():
                        raise ConnectionLost(f"connection closed waiting for {action}") from None
                    raise CallTimeout(f"no answer to {action} within {self._timeout_s} s") from None
            finally:
                self._pending = None
                if fut.done() and not fut.cancelled():
                    fut.exception()  # mark retrieved: run() may have failed it on close

    async def run(self) -> None:
        """Read frames until the transport closes; returns (or raises) when it does."""
        worker = asyncio.create_task(self._serve_inbound())
        try:
            while True:
                raw = await self._transport.recv()
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                if self._on_frame:
                    self._on_frame("in", text)
                await self._route(text)
        finally:
            self._closed.set()
            worker.cancel()
            if self._pending and not self._pending[2].done():
                self._pending[2].set_exception(ConnectionLost("connection closed"))

    async def _route(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            match = _ID_RE.match(text)
            message_id = match.group(1) if match else UNKNOWN_MESSAGE_ID
            await self._send_error(message_id, FORMATION_VIOLATION, "frame is not valid JSON")
            return
        if not isinstance(frame, list) or not frame or not isinstance(frame[0], int):
            await self._send_error(
                UNKNOWN_MESSAGE_ID, FORMATION_VIOLATION, "frame is not an OCPP-J array"
            )
            return
        message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
        kind = frame[0]
        if kind == MessageType.Call:
            if message_id is None or len(frame) != 4 or not isinstance(frame[2], str):
                await self._send_error(
                    message_id or UNKNOWN_MESSAGE_ID, FORMATION_VIOLATION, "malformed CALL"
                )
                return
            if len(message_id) > _MAX_MESSAGE_ID_LEN:
                await self._send_error(message_id, FORMATION_VIOLATION, "message id too long")
                return
            self._inbound.put_nowait(frame)
        elif kind in (MessageType.CallResult, MessageType.CallError):
            self._resolve(frame)
        else:
            await self._send_error(
                message_id or UNKNOWN_MESSAGE_ID, FORMATION_VIOLATION, "unknown MessageTypeId"
            )

    def _resolve(self, frame: list[Any]) -> None:
        pending = self._pending
        if pending is None or len(frame) < 2 or frame[1] != pending[0]:
            LOG.warning("ignoring response to unknown message id: %.200s", frame)
            return
        _, action, fut = pending
        if fut.done():
            return
        if frame[0] == MessageType.CallResult:
            payload = frame[2] if len(frame) == 3 else None
            try:
                validate(MessageType.CallResult, action, payload)
            except CallError as exc:
                # A malformed answer is not a confirmation: the message stays queued.
                fut.set_exception(CallError(exc.code, f"invalid {action} response: {exc}"))
                return
            assert isinstance(payload, dict)
            fut.set_result(payload)
        else:
            code = str(frame[2]) if len(frame) > 2 else GENERIC_ERROR
            desc = str(frame[3]) if len(frame) > 3 else ""
            details = frame[4] if len(frame) > 4 and isinstance(frame[4], dict) else {}
            fut.set_exception(CallError(code, desc, details))

    async def _serve_inbound(self) -> None:
        while True:
            _, message_id, action, payload = await self._inbound.get()
            if self.silent:
                LOG.info("ignoring %s while BootNotification is Rejected", action)
                continue
            try:
                result = await self._dispatch(action, payload)
            except CallError as exc:
                await self._send_error(message_id, exc.code, exc.description, exc.details)
                continue
            except Exception:
                LOG.exception("handler for %s failed", action)
                await self._send_error(message_id, INTERNAL_ERROR, f"{action} handler failed")
                continue
            try:
                await self._send([MessageType.CallResult, message_id, result])
            except Exception:  # connection gone: run() notices and returns
                LOG.debug("could not send result for %s", action, exc_info=True)

    async def _dispatch(self, action: str, payload: Any) -> dict[str, Any]:
        if action not in _KNOWN_ACTIONS:
            raise CallError(NOT_IMPLEMENTED, f"{action!r} is not an OCPP 1.6 action")
        if action not in self._supported:
            raise CallError(NOT_SUPPORTED, f"{action} is not supported by this charge point")
        validate(MessageType.Call, action, payload)
        result = await self._handler(action, payload)
        try:
            validate(MessageType.CallResult, action, result)
        except CallError as exc:
            LOG.error("our %s response violates the schema: %s", action, exc)
            raise CallError(INTERNAL_ERROR, "response failed validation") from None
        return result

    async def _send_error(
        self,
        message_id: str,
        code: str,
        description: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        try:
            await self._send([MessageType.CallError, message_id, code, description, details or {}])
        except Exception:
            LOG.debug("could not send CALLERROR", exc_info=True)

    async def _send(self, frame: list[Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        if self._on_frame:
            self._on_frame("out", text)
        await self._transport.send(text)
