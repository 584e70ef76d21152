"""OCPP-J framing for every protocol version: one CALL in flight, inbound CALLs one at a
time, CALLERRORs in the version's spelling (a ``Dialect``), answers checked by its schemas."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

LOG = logging.getLogger(__name__)

# OCPP-J MessageTypeId (the same in 1.6 and 2.0.1).
CALL = 2
CALLRESULT = 3
CALLERROR = 4

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


Validate = Callable[[int, str, Any], None]
# Told about frames that are not valid OCPP (security event InvalidMessages) and CALLs that
# reuse a message id of this connection (AttemptedReplayAttacks); the text says what was wrong
# and never carries the payload.
Incident = Callable[[str], None]
# A CALL that passed its schema check: None to handle it, or why it is refused.
Gate = Callable[[str, dict[str, Any]], str | None]

#: CALL message ids remembered per connection to recognise a replayed CALL.
REPLAY_WINDOW = 256


@dataclass(frozen=True)
class Dialect:
    """What differs between OCPP-J versions: the action set, the schemas and the error
    codes' spelling (1.6 keeps "FormationViolation" and "OccurenceConstraintViolation",
    errata 5.1 / 5.2; 2.0.1 writes "FormatViolation" and "OccurrenceConstraintViolation").

    ``validate(message_type, action, payload)`` raises ``CallError`` with the version's code
    for a payload that violates the action's schema.
    """

    version: str
    actions: frozenset[str]
    validate: Validate
    formation_violation: str
    not_implemented: str = "NotImplemented"
    not_supported: str = "NotSupported"
    protocol_error: str = "ProtocolError"
    internal_error: str = "InternalError"
    generic_error: str = "GenericError"
    # 2.0.1 part 4 4.3/4.4: a frame that is no valid RPC request (RpcFrameworkError) and an
    # unknown MessageTypeId (MessageTypeNotSupported); None: ``formation_violation`` (1.6).
    rpc_framework_error: str | None = None
    message_type_not_supported: str | None = None

    @property
    def not_rpc(self) -> str:
        return self.rpc_framework_error or self.formation_violation


class RpcConnection:
    """Frames OCPP-J over one WebSocket; inbound CALLs go to ``handler`` one at a time."""

    def __init__(
        self,
        transport: Transport,
        handler: Handler,
        *,
        dialect: Dialect,
        response_timeout_s: float = 30.0,
        id_factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        supported_actions: frozenset[str] = frozenset(),
        on_frame: FrameObserver | None = None,
        on_invalid: Incident | None = None,
        on_replay: Incident | None = None,
        gate: Gate | None = None,
        admit: Callable[[str], bool] | None = None,
    ) -> None:
        self._transport = transport
        # Whether this peer may send a valid CALL (a backend that does not own the command,
        # issue 15); a text is the refusal, answered SecurityError without an effect.
        self._gate = gate
        # Whether the peer may send one more CALL now (None: no bound); a CALL beyond it is
        # answered GenericError at once, before its schema check and without an effect.
        self._admit = admit
        self._handler = handler
        self._dialect = dialect
        self._supported = supported_actions
        self._timeout_s = response_timeout_s
        self._new_id = id_factory
        self._on_frame = on_frame
        self._on_invalid = on_invalid
        self._on_replay = on_replay
        # Message ids of the CALLs received on this connection, oldest first: a CSMS never
        # reuses one (OCPP-J 4.1.3), and a frame cannot get lost and be resent within one
        # TCP connection, so a reused id is a replay, not a retry.
        self._seen_ids: dict[str, None] = {}
        self._call_lock = asyncio.Lock()
        self._pending: tuple[str, str, asyncio.Future[dict[str, Any]]] | None = None
        self._inbound: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._closed = asyncio.Event()
        self.calls_sent = 0
        # While a boot is Rejected the charge point must not answer the CSMS (OCPP 1.6 4.2).
        self.silent = False
        # While a boot is Rejected every CSMS CALL is answered with this CALLERROR code
        # (2.0.1 B03.FR.08: SecurityError); None: handled normally.
        self.refuse_code: str | None = None

    async def call(
        self, action: str, payload: dict[str, Any], *, prevalidated: bool = False
    ) -> dict[str, Any]:
        """Send one CALL and return the validated CALLRESULT payload.

        ``prevalidated``: the payload was checked against the schema when it was journaled
        (outbox replay), so the send path skips that second check; answers are always checked.
        """
        if not prevalidated:
            self._dialect.validate(CALL, action, payload)  # our own bug if this fails
        async with self._call_lock:
            if self._closed.is_set():
                raise ConnectionLost("connection closed")
            message_id = self._new_id()
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, action, fut)
            try:
                await self._send([CALL, message_id, action, payload])
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
            self._invalid("frame is not valid JSON")
            await self._send_error(
                message_id, self._dialect.formation_violation, "frame is not valid JSON"
            )
            return
        if not isinstance(frame, list) or not frame or not isinstance(frame[0], int):
            self._invalid("frame is not an OCPP-J array")
            await self._send_error(
                UNKNOWN_MESSAGE_ID,
                self._dialect.not_rpc,
                "frame is not an OCPP-J array",
            )
            return
        message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
        kind = frame[0]
        if kind == CALL:
            if message_id is None or len(frame) != 4 or not isinstance(frame[2], str):
                self._invalid("malformed CALL")
                await self._send_error(
                    message_id or UNKNOWN_MESSAGE_ID,
                    self._dialect.not_rpc,
                    "malformed CALL",
                )
                return
            if len(message_id) > _MAX_MESSAGE_ID_LEN:
                self._invalid("CALL message id too long")
                await self._send_error(message_id, self._dialect.not_rpc, "message id too long")
                return
            if message_id in self._seen_ids:
                LOG.warning("CALL %s reuses message id %.36s: not executed", frame[2], message_id)
                if self._on_replay is not None:
                    self._on_replay(f"{frame[2][:40]} reused message id {message_id}")
                await self._send_error(
                    message_id, self._dialect.protocol_error, "message id already used"
                )
                return
            self._seen_ids[message_id] = None
            if len(self._seen_ids) > REPLAY_WINDOW:
                del self._seen_ids[next(iter(self._seen_ids))]
            if self._admit is not None and not self._admit(frame[2]):
                await self._send_error(
                    message_id, self._dialect.generic_error, "too many requests; try later"
                )
                return
            self._inbound.put_nowait(frame)
        elif kind in (CALLRESULT, CALLERROR):
            self._resolve(frame)
        else:
            self._invalid("unknown MessageTypeId")
            await self._send_error(
                message_id or UNKNOWN_MESSAGE_ID,
                self._dialect.message_type_not_supported or self._dialect.formation_violation,
                "unknown MessageTypeId",
            )

    def _resolve(self, frame: list[Any]) -> None:
        pending = self._pending
        if pending is None or len(frame) < 2 or frame[1] != pending[0]:
            LOG.warning("ignoring response to unknown message id: %.200s", frame)
            return
        _, action, fut = pending
        if fut.done():
            return
        if frame[0] == CALLRESULT:
            payload = frame[2] if len(frame) == 3 else None
            try:
                self._dialect.validate(CALLRESULT, action, payload)
            except CallError as exc:
                self._invalid(f"invalid {action} response ({exc.code})")
                # A malformed answer is not a confirmation: the message stays queued.
                fut.set_exception(CallError(exc.code, f"invalid {action} response: {exc}"))
                return
            assert isinstance(payload, dict)
            fut.set_result(payload)
        else:
            code = str(frame[2]) if len(frame) > 2 else self._dialect.generic_error
            desc = str(frame[3]) if len(frame) > 3 else ""
            details = frame[4] if len(frame) > 4 and isinstance(frame[4], dict) else {}
            fut.set_exception(CallError(code, desc, details))

    async def _serve_inbound(self) -> None:
        while True:
            _, message_id, action, payload = await self._inbound.get()
            if self.silent:
                LOG.info("ignoring %s while BootNotification is Rejected", action)
                continue
            if self.refuse_code is not None:
                LOG.info("refusing %s while BootNotification is Rejected", action)
                await self._send_error(message_id, self.refuse_code, "boot not accepted")
                continue
            try:
                result = await self._dispatch(action, payload)
            except CallError as exc:
                await self._send_error(message_id, exc.code, exc.description, exc.details)
                continue
            except Exception:
                LOG.exception("handler for %s failed", action)
                await self._send_error(
                    message_id, self._dialect.internal_error, f"{action} handler failed"
                )
                continue
            try:
                await self._send([CALLRESULT, message_id, result])
            except Exception:  # connection gone: run() notices and returns
                LOG.debug("could not send result for %s", action, exc_info=True)

    async def _dispatch(self, action: str, payload: Any) -> dict[str, Any]:
        d = self._dialect
        if action not in d.actions:
            raise CallError(d.not_implemented, f"{action!r} is not an OCPP {d.version} action")
        if action not in self._supported:
            raise CallError(d.not_supported, f"{action} is not supported by this charge point")
        try:
            d.validate(CALL, action, payload)
        except CallError as exc:
            self._invalid(f"{action} violates its schema ({exc.code})")
            raise
        refusal = None if self._gate is None else self._gate(action, payload)
        if refusal is not None:
            raise CallError("SecurityError", refusal)
        result = await self._handler(action, payload)
        try:
            d.validate(CALLRESULT, action, result)
        except CallError as exc:
            LOG.error("our %s response violates the schema: %s", action, exc)
            raise CallError(d.internal_error, "response failed validation") from None
        return result

    def _invalid(self, what: str) -> None:
        if self._on_invalid is not None:
            self._on_invalid(what)

    async def _send_error(
        self,
        message_id: str,
        code: str,
        description: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        try:
            await self._send([CALLERROR, message_id, code, description, details or {}])
        except Exception:
            LOG.debug("could not send CALLERROR", exc_info=True)

    async def _send(self, frame: list[Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        if self._on_frame:
            self._on_frame("out", text)
        await self._transport.send(text)
