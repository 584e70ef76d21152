"""Security events as SecurityEventNotification (1.6 security whitepaper, OCPP 2.0.1 A04),
queued in a backend's durable outbox; each version spells the event types its own way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from controller.core.security import SecurityEvent, SecurityEventKind
from controller.csms.rpc import CallError
from controller.storage.journal import TxJournal
from controller.storage.store import QueuedMessage
from controller.storage.writes import EventKind, Outgoing

LOG = logging.getLogger(__name__)

ACTION = "SecurityEventNotification"
# The CALLERROR codes (the same words in 1.6 and 2.0.1) of a CSMS without the message.
_UNSUPPORTED = frozenset({"NotImplemented", "NotSupported"})


def notification(event: SecurityEvent, spell: Callable[[SecurityEventKind], str]) -> dict[str, Any]:
    """The SecurityEventNotification request payload of ``event``."""
    payload: dict[str, Any] = {"type": spell(event.kind), "timestamp": event.at}
    info = event.tech_info
    if event.repeated:
        info = f"{info or ''} (+{event.repeated} earlier in this burst)".strip()
    if info:
        payload["techInfo"] = info[:255]
    return payload


class SecurityEventQueue:
    """Listener of the security log: each event becomes a SecurityEventNotification in the
    backend's durable outbox (A04.FR.02: queued with guaranteed delivery, in order with the
    transaction messages, removed when the CSMS confirmed it). Non-critical events are sent
    too, once per burst (the log folds repeats), so a CSMS sees a failed certificate or an
    invalid frame without asking for the log."""

    def __init__(
        self,
        journal: TxJournal,
        backend: str,
        wake: Callable[[], None],
        spell: Callable[[SecurityEventKind], str],
    ) -> None:
        self._journal = journal
        self._backend = backend
        self._wake = wake
        self._spell = spell
        self._told_unsupported = False

    def __call__(self, event: SecurityEvent) -> None:
        payload = notification(event, self._spell)
        self._journal.enqueue(EventKind.SECURITY, [Outgoing(self._backend, ACTION, payload, 0)])
        self._wake()

    def refused_for_good(self, msg: QueuedMessage, exc: CallError) -> bool:
        """A CSMS without the message answers NotImplemented/NotSupported: the event stays
        in the security log, and the queue behind it moves on."""
        if msg.kind is not EventKind.SECURITY or exc.code not in _UNSUPPORTED:
            return False
        if not self._told_unsupported:
            self._told_unsupported = True
            LOG.info(
                "the CSMS does not take SecurityEventNotification (%s): security events are"
                " kept in the security log only",
                exc.code,
            )
        return True
