"""Delivers one backend's queued transaction messages in order, one CALL at a time, any version."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from controller.core.records import DEFAULT_BACKEND
from controller.csms.rpc import CallError, CallTimeout
from controller.runtime.clock import Clock
from controller.storage.store import QueuedMessage, Store
from controller.storage.writes import EventKind

LOG = logging.getLogger(__name__)

#: Queued messages read per database query during a replay; also the most confirmed
#: batched messages whose (non-durable) delete is held back, i.e. re-sent after a crash.
OUTBOX_READ_AHEAD = 64


@dataclass(frozen=True)
class OutboxRules:
    """What the protocol adapter decides about its messages.

    ``prepare(msg)``: the payload to send (the adapter fills in ids it learned since the
    message was queued). ``confirmed(msg, result)``: the CSMS confirmed ``msg``; return True
    when the adapter removed the message itself (in the same commit as what it learned,
    e.g. the transaction id of a start), False to let the pump delete it.
    """

    prepare: Callable[[QueuedMessage], dict[str, Any]]
    confirmed: Callable[[QueuedMessage, dict[str, Any]], bool]
    max_attempts: Callable[[], int]
    retry_interval_s: Callable[[], int]
    forget_ids: Callable[[], None] = lambda: None
    # The CSMS refused ``msg`` for good (e.g. NotImplemented for an optional message such as
    # a security event): drop it at once instead of blocking the queue with retries.
    refused_for_good: Callable[[QueuedMessage, CallError], bool] = lambda msg, exc: False


Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class OutboxPump:
    """Sends the store's outbox in order until each message is confirmed.

    No answer is not a failure to process (OCPP-J errata 3.3): billing data is never
    dropped for a timeout, only resent after the retry interval. A CALLERROR counts as an
    attempt; after ``max_attempts`` the message is dropped (TransactionMessageAttempts).

    Replay speed (>= 0.8 of the one-outstanding-CALL bound, bench/durability.py) comes from
    doing the database work in bulk: messages are read ahead in batches, and confirmed
    samples are deleted in batches without fsync; before any other confirmation the pump
    commits the pending batch, so a crash can never resend a sample after the end that
    followed it.
    """

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        rules: OutboxRules,
        call: Call,
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self._rules = rules
        self._call = call
        self._wakeup = asyncio.Event()
        self._reload = False  # queued messages changed under the read-ahead
        self._confirmed: list[int] = []  # confirmed batched seqs, deleted together
        self.timeouts = 0

    def wake(self) -> None:
        """A message was queued."""
        self._wakeup.set()

    def reload(self) -> None:
        """Queued messages were rewritten (clock correction, storage mode change): read
        them again instead of sending stale copies."""
        self._reload = True
        self._wakeup.set()

    def pending_deletes(self) -> int:
        """Confirmed messages whose batched delete has not been committed yet."""
        return len(self._confirmed)

    async def run(self) -> None:
        ahead: deque[QueuedMessage] = deque()
        last_seq = 0
        rules = self._rules
        try:
            while True:
                if self._reload:
                    self._reload = False
                    self.flush()
                    ahead.clear()
                    last_seq = 0
                    rules.forget_ids()
                if not ahead:
                    ahead.extend(
                        self._store.outbox_batch(last_seq, OUTBOX_READ_AHEAD, self._backend)
                    )
                    if not ahead:
                        self.flush()
                        self._wakeup.clear()
                        await self._wakeup.wait()
                        continue
                    last_seq = ahead[-1].seq
                msg = ahead[0]
                try:
                    result = await self._call(msg.action, rules.prepare(msg))
                except CallTimeout:
                    self.timeouts += 1
                    self.flush()
                    retry_s = rules.retry_interval_s()
                    LOG.warning(
                        "%s not answered; resending in %d s",
                        msg.action,
                        retry_s,
                        extra={"action": msg.action, "tx_key": msg.tx_key},
                    )
                    await self._clock.sleep(retry_s)
                    continue
                except CallError as exc:
                    self.flush()
                    if rules.refused_for_good(msg, exc):
                        self._store.outbox_delete(msg.seq)
                        ahead.popleft()
                        continue
                    attempts = self._store.outbox_mark_attempt(msg.seq)
                    if attempts == 0:
                        # No longer queued (the memory cap of a full disk dropped it while
                        # it was read ahead): nothing to retry, and no count to pace it by.
                        ahead.popleft()
                        continue
                    if attempts >= rules.max_attempts():
                        LOG.error(
                            "%s (seq %d) dropped after %d attempts: %s",
                            msg.action,
                            msg.seq,
                            attempts,
                            exc,
                            extra={"action": msg.action, "tx_key": msg.tx_key},
                        )
                        self._store.outbox_delete(msg.seq)
                        ahead.popleft()
                        continue
                    retry_s = rules.retry_interval_s() * attempts
                    LOG.warning(
                        "%s failed (%s); retry %d in %d s",
                        msg.action,
                        exc,
                        attempts,
                        retry_s,
                        extra={"action": msg.action, "tx_key": msg.tx_key},
                    )
                    await self._clock.sleep(retry_s)
                    continue
                ahead.popleft()
                if msg.kind is EventKind.SAMPLES:
                    self._confirmed.append(msg.seq)
                    if len(self._confirmed) >= OUTBOX_READ_AHEAD:
                        self.flush()
                    continue
                # Commit the batch first: nothing confirmed before this message may come
                # back after a crash once this one is gone for good.
                self.flush()
                if not rules.confirmed(msg, result):
                    self._store.outbox_delete(msg.seq)
        finally:
            self.flush()

    def flush(self, *, durable: bool = False) -> None:
        """Delete the confirmed messages held back (one commit)."""
        if self._confirmed:
            seqs, self._confirmed = self._confirmed, []
            self._store.outbox_delete_many(seqs, durable=durable)
