"""What every OCPP version's client shares around its connection: the link state the station
shows, frames seen (heartbeat timer, status page), security incidents, one RPC session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import websockets

from controller.core.control import StationControl
from controller.core.ownership import Command, Ownership
from controller.core.security import SecurityEventKind
from controller.csms.connection import CsmsConnection
from controller.csms.guard import BurstLog, TokenBucket
from controller.csms.heartbeat import Heartbeat
from controller.csms.rpc import ConnectionLost, RpcConnection
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup
from controller.security.log import SecurityLog

LOG = logging.getLogger(__name__)

# With several backends each may send this many CALLs at once and this many per second on
# average: generous for a CSMS that waits for each answer (OCPP-J: one CALL in flight), small
# enough that a loop gone wild cannot take the event loop from the others.
CALL_BURST = 50
CALLS_PER_S = 10.0


@dataclass
class _Guards:
    bucket: TokenBucket
    refusals: BurstLog


class AdapterBase:
    """The version-neutral part of an OCPP client (``Ocpp16Client``, ``Ocpp201Client``).

    A subclass sets, in its ``__init__``: ``station``, ``heartbeat``, ``security_log``,
    ``_link`` (its Connection), ``_tasks``, ``_on_frame_cb`` and ``_conn_state``; it builds
    its RpcConnection with ``_observe`` and ``_incident`` and runs it with ``_run_session``.
    """

    station: StationControl
    heartbeat: Heartbeat
    security_log: SecurityLog | None
    _link: CsmsConnection
    _tasks: TaskGroup
    _on_frame_cb: Callable[[str, str], None] | None
    _conn_state: str
    _rpc: RpcConnection | None
    last_message_s: float | None
    backend: str
    # Several backends (issue 15): only the primary authorizes, is the link state the
    # station shows, sets the clock and acts on the answers about an idTag; each backend
    # may only send the commands ``ownership`` gives it (None: one backend, all of them).
    primary: bool = True
    ownership: Ownership | None = None
    name: str = "csms"  # the backend's name in the configuration
    _guard_state: _Guards | None = None
    clock: Clock

    @property
    def profile_book(self) -> str | None:
        """Whose charging profiles this backend's requests install and clear (None: the
        primary's)."""
        return None if self.primary else self.backend

    def _command_of(self, action: str, payload: dict[str, Any]) -> Command:
        """The neutral command of a CSMS request (the version's commands.py)."""
        raise NotImplementedError

    def _gate(self, action: str, payload: dict[str, Any]) -> str | None:
        """None when this backend may send ``action``; else the refusal (a burst of them
        logged once)."""
        ownership = self.ownership
        if ownership is None:
            return None
        why = ownership.refusal(self.name, action, self._command_of(action, payload))
        if why is not None:
            self._guards().refusals(f"refused {why}")
        return why

    def _admit(self, action: str) -> bool:
        """Whether a CALL of this backend is within its rate (a runaway backend must not
        take the event loop from the others); always with one backend."""
        guards = self._guards()
        if guards.bucket.allow():
            return True
        guards.refusals(
            f"refused {action[:40]}: more than {guards.bucket.burst} CALLs at once or"
            f" {guards.bucket.per_s:g}/s"
        )
        return False

    def call_admission(self) -> Callable[[str], bool] | None:
        """The rate bound for this backend's session (None with one backend)."""
        return None if self.ownership is None else self._admit

    def _guards(self) -> _Guards:
        if self._guard_state is None:
            self._guard_state = _Guards(
                TokenBucket(CALL_BURST, CALLS_PER_S), BurstLog(LOG, f"backend {self.name}")
            )
        return self._guard_state

    def role_name(self) -> str:
        ownership = self.ownership
        role = None if ownership is None else ownership.role_of(self.name)
        return "primary" if ownership is None else ("unknown" if role is None else role.value)

    # ------------------------------------------------------------------ state

    @property
    def _state(self) -> str:
        return self._conn_state

    @_state.setter
    def _state(self, value: str) -> None:
        self._conn_state = value
        # Only an accepted boot counts as online (the indicator, the authorization rules);
        # only the primary's link is the station's.
        if self.primary:
            self.station.set_csms_online(value == "accepted")

    def connection_state(self) -> str:
        return self._conn_state

    @property
    def url(self) -> str:
        return self._link.url

    @property
    def connects(self) -> int:
        """Connections opened so far (each one boots only once per process, OCPP-J 5.4)."""
        return self._link.connects

    @property
    def handed_over(self) -> bool:
        """The CSMS picked another offered version: run() returned for the owner to switch."""
        return self._link.handed_over

    # ------------------------------------------------------------------ session

    def _observe(self, direction: str, text: str) -> None:
        """Any frame in either direction: the heartbeat timer restarts (1.6 4.6, 2.0.1
        G02.FR.05) and the status page shows the time of the last message."""
        self.heartbeat.activity()
        self.last_message_s = self.heartbeat.last_activity_s
        if self._on_frame_cb:
            self._on_frame_cb(direction, text)

    def _incident(self, kind: SecurityEventKind) -> Callable[[str], None] | None:
        """A recorder of one kind of security incident (invalid frames, replayed ids)."""
        log = self.security_log
        if log is None:
            return None

        def incident(what: str) -> None:
            log.record(kind, what)

        return incident

    async def _run_session(
        self, rpc: RpcConnection, bring_up: Coroutine[Any, Any, None], name: str
    ) -> None:
        """Read frames until the connection ends, while ``bring_up`` (boot, statuses, the
        queue) runs beside; then everything of the session stops and the link is offline."""
        self._rpc = rpc
        session = TaskGroup(f"{name}-session")
        reader = asyncio.create_task(rpc.run(), name=f"{name}:reader")  # awaited right here
        session.spawn(bring_up, name="bring-up")
        try:
            await reader
        except (websockets.exceptions.ConnectionClosed, ConnectionLost) as exc:
            if self._link.closing or self._link.reconnecting or self._link.held_offline:
                LOG.info("CSMS connection closed: %s", exc)
            else:
                LOG.warning("CSMS connection lost: %s", exc)
        finally:
            reader.cancel()
            await session.cancel_all()
            self._rpc = None
            self._state = "offline"

    # ------------------------------------------------------------------ lifecycle

    async def hold_offline(self, reason: str) -> None:
        """Drop the CSMS connection and keep it down until release_offline() (a simulated
        charger's offline period); everything meanwhile is queued as in any outage."""
        await self._link.hold_offline(reason)

    def release_offline(self) -> None:
        self._link.release()

    async def close(self, reason: str = "charging station stopping") -> None:
        """Close the CSMS connection normally (1000), then stop the background tasks."""
        await self._link.close(reason)
        await self._tasks.cancel_all()
