"""The transaction journal: records starts, samples and ends durably, with each backend's
message of them queued in the same commit, for any protocol version and any number of
backends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from controller.core.connector import SessionEvent
from controller.core.port import Sample, TxStart, TxStop
from controller.core.records import StoreError
from controller.runtime.clock import Clock
from controller.storage.store import Store
from controller.storage.writes import EventKind, Outgoing, new_tx_id

LOG = logging.getLogger(__name__)

#: (action, payload) of one message, or None when the backend sends nothing for the event.
Rendered = tuple[str, dict[str, Any]] | None


class TxRenderer(Protocol):
    """One backend's protocol adapter, turning transaction events into its messages.

    ``seq`` is the backend's sequence number of the message within the transaction (0 for
    the start; a renderer that returns None for an event does not use up a number).
    Implemented by controller.ocpp16.txmessages.TxMessages16 and
    controller.ocpp201.transactions.TxMessages201.
    """

    @property
    def backend(self) -> str: ...

    def started(self, tx: TxStart, tx_id: str, seq: int) -> Rendered: ...

    def samples(
        self, connector_id: int, tx_id: str, seq: int, samples: list[Sample]
    ) -> Rendered: ...

    def ended(self, stop: TxStop, tx_id: str, seq: int) -> Rendered: ...

    def updated(
        self, connector_id: int, tx_id: str, seq: int, event: SessionEvent, at: str
    ) -> Rendered:
        """A session event within the transaction (charging state, authorization)."""
        ...


class TxJournal:
    """Writes before sending: every transaction event lands in the store first, with each
    backend's message of it in the same commit (no backend: standalone, the records alone).

    When the database cannot be written (disk full, I/O error) the store keeps the writes
    in memory instead (``Store.degraded``), with keys continuing the database's, so
    charging and the CSMS traffic go on; the station retries the write every 60 s and the
    store then writes them out in order. A crash while degraded loses what was only in
    memory (unless the spill file kept it).

    With a clock that is not confirmed yet (a Pi without RTC after a power cut), it notes
    what it stamped on that clock; when NTP or the CSMS confirms the time, those queued
    messages and transaction times are moved onto the confirmed timeline before they are
    sent (issue 4 item 7), so an offline session is billed at the hours it really ran.
    """

    def __init__(
        self,
        store: Store,
        renderers: Sequence[TxRenderer] = (),
        *,
        boot_id: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.renderers = tuple(renderers)
        self.boot_id = boot_id
        self._clock = clock
        self._untrusted_seqs: list[int] = []
        self._untrusted_started: set[int] = set()
        self._untrusted_stopped: set[int] = set()
        add_listener = getattr(clock, "add_trust_listener", None)
        if add_listener is not None:
            add_listener(self._on_time_confirmed)

    def add_renderer(self, renderer: TxRenderer) -> None:
        """One more backend's messages from the next event on (a backend's adapter, built
        after the journal; with several backends every adapter adds its own)."""
        if any(r.backend == renderer.backend for r in self.renderers):
            raise ValueError(f"backend {renderer.backend!r} already has a renderer")
        self.renderers = (*self.renderers, renderer)

    def remove_renderer(self, renderer: TxRenderer) -> None:
        """The backend's adapter is gone (another version took over): no more messages for
        it; what it has queued stays in the store."""
        self.renderers = tuple(r for r in self.renderers if r is not renderer)

    def _untrusted(self) -> bool:
        return self._clock is not None and not getattr(self._clock, "trusted", True)

    def _on_time_confirmed(self, shift_s: float) -> None:
        try:
            changed = self.store.shift_timestamps(
                shift_s,
                seqs=self._untrusted_seqs,
                started=self._untrusted_started,
                stopped=self._untrusted_stopped,
            )
        except StoreError:
            LOG.exception("could not move queued timestamps by %+.1f s", shift_s)
            changed = 0
        finally:
            self._untrusted_seqs.clear()
            self._untrusted_started.clear()
            self._untrusted_stopped.clear()
        if changed:
            LOG.warning(
                "time confirmed: %d queued message(s)/transaction(s) stamped on the unconfirmed"
                " clock moved by %+.1f s",
                changed,
                shift_s,
            )

    def start_transaction(self, tx: TxStart) -> int:
        tx_id = new_tx_id()
        messages = [
            Outgoing(r.backend, *rendered, tx_seq=0)
            for r in self.renderers
            if (rendered := r.started(tx, tx_id, 0)) is not None
        ]
        tx_key = self.store.begin_transaction(
            connector_id=tx.connector_id,
            id_tag=tx.id_tag,
            meter_start_wh=tx.meter_start_wh,
            started_at=tx.timestamp,
            reservation_id=tx.reservation_id,
            messages=messages,
            boot_id=self.boot_id,
            tx_id=tx_id,
        )
        if self._untrusted():
            self._untrusted_started.add(tx_key)
        return tx_key

    def stop_transaction(self, tx_key: int, stop: TxStop) -> bool:
        record = self.store.get_transaction(tx_key)
        if record is None or not record.open:
            return False  # a transaction never ends twice
        messages = self._render(tx_key, lambda r, seq: r.ended(stop, record.tx_id, seq))
        stopped = self.store.end_transaction(
            tx_key,
            meter_stop_wh=stop.meter_stop_wh,
            stopped_at=stop.timestamp,
            reason=stop.reason.value,
            messages=messages,
        )
        if stopped and stop.stamped_now and self._untrusted():
            self._untrusted_stopped.add(tx_key)
        return stopped

    def record_samples(self, connector_id: int, tx_key: int, samples: list[Sample]) -> None:
        """Samples of a running transaction: the latest reading persisted and each
        backend's message queued, in one commit."""
        if not samples:
            return
        record = self.store.get_transaction(tx_key)
        if record is None:
            LOG.error("samples for unknown transaction %d not journaled", tx_key)
            return
        messages = self._render(
            tx_key, lambda r, seq: r.samples(connector_id, record.tx_id, seq, samples)
        )
        last = samples[-1]
        try:
            seqs = self.store.append_tx_event(
                tx_key,
                EventKind.SAMPLES,
                messages,
                energy_wh=round(last.reading.energy_wh),
                at=last.timestamp,
            )
        except StoreError:
            # Not expected (a full disk switches the store to memory); charging goes on,
            # the reading is lost but the end still carries the total.
            LOG.exception("could not journal samples")
            return
        if self._untrusted():
            self._untrusted_seqs.extend(seqs)

    def record_event(self, connector_id: int, tx_key: int, event: SessionEvent, at: str) -> None:
        """A session event of a running transaction, for the backends that report it (2.0.1
        TransactionEvent Updated); nothing is written when none does."""
        record = self.store.get_transaction(tx_key)
        if record is None or not record.open:
            return
        messages = self._render(
            tx_key, lambda r, seq: r.updated(connector_id, record.tx_id, seq, event, at)
        )
        if not messages:
            return
        try:
            seqs = self.store.append_tx_event(tx_key, EventKind.UPDATED, messages)
        except StoreError:
            LOG.exception("could not journal %s of transaction %d", event.kind.value, tx_key)
            return
        if self._untrusted():
            self._untrusted_seqs.extend(seqs)

    def record_message(
        self, tx_key: int, backend: str, render: Callable[[str, int], Rendered]
    ) -> bool:
        """One backend's own message within a running transaction (a triggered 2.0.1
        TransactionEvent): ``render(tx_id, seq)`` numbered and queued like every other
        message of the transaction. False when it is not running or nothing was queued."""
        record = self.store.get_transaction(tx_key)
        if record is None or not record.open:
            return False
        seq = self.store.next_tx_seq(tx_key, backend)
        rendered = render(record.tx_id, seq)
        if rendered is None:
            return False
        try:
            seqs = self.store.append_tx_event(
                tx_key, EventKind.UPDATED, [Outgoing(backend, *rendered, tx_seq=seq)]
            )
        except StoreError:
            LOG.exception("could not journal %s of transaction %d", rendered[0], tx_key)
            return False
        if self._untrusted():
            self._untrusted_seqs.extend(seqs)
        return True

    def enqueue(self, kind: EventKind, messages: Sequence[Outgoing]) -> None:
        """Queue messages of no transaction (security events) with the same guarantee; their
        timestamps move with the transactions' when an untrusted clock is confirmed."""
        try:
            seqs = self.store.enqueue(kind, messages)
        except StoreError:
            LOG.exception("could not queue %s", ", ".join(m.action for m in messages))
            return
        if self._untrusted():
            self._untrusted_seqs.extend(seqs)

    def _render(self, tx_key: int, render: Callable[[TxRenderer, int], Rendered]) -> list[Outgoing]:
        """Each backend's message for the event, numbered with its next sequence number."""
        out = []
        for r in self.renderers:
            seq = self.store.next_tx_seq(tx_key, r.backend)
            rendered = render(r, seq)
            if rendered is not None:
                out.append(Outgoing(r.backend, *rendered, tx_seq=seq))
        return out
