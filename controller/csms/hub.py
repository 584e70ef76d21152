"""The station's one CSMS port over every backend's adapter (issue 15): each transaction
event is journaled once with every backend's message of it, the primary authorizes."""

from __future__ import annotations

import logging
from typing import Protocol

from controller.core.connector import Phase, SessionEvent
from controller.core.control import StationControl
from controller.core.port import AuthDecision, Sample, TxStart, TxStop
from controller.storage.journal import TxJournal, TxRenderer
from hal.base import FaultKind

LOG = logging.getLogger(__name__)


class BackendAdapter(Protocol):
    """What one backend's OCPP adapter (``Ocpp16Client``, ``Ocpp201Client``) does for the
    station besides its journaled messages, which the hub records for all backends."""

    backend: str  # its outbox and transaction id map in the store

    @property
    def renderer(self) -> TxRenderer | None:
        """Its messages of transaction events (None: it sends none, the records alone)."""
        ...

    def journaled(self) -> None:
        """A transaction event was journaled with this backend's message: send it."""
        ...

    def transaction_stopped(self) -> None:
        """A transaction's end was journaled (its message queued like any other)."""
        ...

    def samples_outside(self, connector_id: int, samples: list[Sample]) -> None:
        """Samples of no transaction (clock-aligned, best effort)."""
        ...

    def status_changed(
        self, connector_id: int, phase: Phase, condition: FaultKind | None, at: str
    ) -> None: ...

    def note_session_event(self, connector_id: int, event: SessionEvent) -> None:
        """Told every session event in order, before the hub journals it."""
        ...

    async def authorize(self, id_tag: str) -> AuthDecision: ...

    def queued_messages(self) -> int: ...

    def connection_state(self) -> str: ...


class BackendHub:
    """Implements ``CsmsPort`` (controller/core/port.py) for one backend or several.

    Writes before sending, for all of them at once: each transaction event lands in the
    store with every backend's message of it in one commit (``TxJournal``), then each
    adapter's pump is woken; a backend that is offline, slow or rejecting only keeps its
    own messages queued. The primary decides authorizations and is the link state the
    station shows; statuses and samples outside transactions go to every backend.
    """

    def __init__(self, journal: TxJournal, station: StationControl) -> None:
        self.journal = journal
        self._station = station
        self._adapters: list[BackendAdapter] = []  # the primary first

    @property
    def primary(self) -> BackendAdapter:
        return self._adapters[0]

    @property
    def adapters(self) -> tuple[BackendAdapter, ...]:
        return tuple(self._adapters)

    def attach(self, adapter: BackendAdapter, *, primary: bool = False) -> None:
        """Add a backend's adapter (the primary replaces the one before, e.g. after the
        CSMS picked another OCPP version); its renderer joins the journal."""
        if primary and self._adapters:
            self.detach(self._adapters[0])
        renderer = adapter.renderer
        if renderer is not None and renderer not in self.journal.renderers:
            self.journal.add_renderer(renderer)
        if primary:
            self._adapters.insert(0, adapter)
        else:
            self._adapters.append(adapter)

    def detach(self, adapter: BackendAdapter) -> None:
        renderer = adapter.renderer
        if renderer is not None:
            self.journal.remove_renderer(renderer)
        self._adapters = [a for a in self._adapters if a is not adapter]

    # ------------------------------------------------------------------ CsmsPort

    def start_transaction(self, tx: TxStart) -> int:
        tx_key = self.journal.start_transaction(tx)
        self._journaled()
        return tx_key

    def stop_transaction(self, tx_key: int, stop: TxStop) -> bool:
        done = self.journal.stop_transaction(tx_key, stop)
        for adapter in self._adapters:
            adapter.transaction_stopped()
        return done

    def meter_values(self, connector_id: int, tx_key: int | None, samples: list[Sample]) -> None:
        if tx_key is not None:
            self.journal.record_samples(connector_id, tx_key, samples)
            self._journaled()
            return
        for adapter in self._adapters:
            adapter.samples_outside(connector_id, samples)

    def status_changed(
        self, connector_id: int, phase: Phase, condition: FaultKind | None, at: str
    ) -> None:
        for adapter in self._adapters:
            adapter.status_changed(connector_id, phase, condition, at)

    def session_event(self, connector_id: int, event: SessionEvent, at: str) -> None:
        """Every adapter hears the event first (2.0.1 derives trigger reasons from it), then
        it is journaled once for the backends that report it (TransactionEvent Updated)."""
        LOG.debug("connector %d: %s at %s", connector_id, event.kind.value, at)
        for adapter in self._adapters:
            adapter.note_session_event(connector_id, event)
        if not self.journal.renderers:
            return
        try:
            tx_key = self._station.view(connector_id).tx_key
        except KeyError:
            return
        if tx_key is not None:
            self.journal.record_event(connector_id, tx_key, event, at)
            self._journaled()

    async def authorize(self, id_tag: str) -> AuthDecision:
        """The primary authorizes (its list, cache, CSMS and offline rules)."""
        return await self.primary.authorize(id_tag)

    def queued_messages(self) -> int:
        """The primary's queue (the backends' own in ``backends`` of the status)."""
        return self.primary.queued_messages()

    def connection_state(self) -> str:
        return self.primary.connection_state()

    def _journaled(self) -> None:
        for adapter in self._adapters:
            adapter.journaled()
