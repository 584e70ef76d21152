"""Standalone mode (no CSMS): local card list or free vend, sessions journaled as for a CSMS."""

from __future__ import annotations

import logging

from controller.config import StandaloneConfig
from controller.core.connector import Phase, SessionEvent
from controller.core.port import AuthDecision, Sample, TxStart, TxStop
from controller.storage.journal import TxJournal
from controller.storage.store import Store
from hal.base import FaultKind

LOG = logging.getLogger(__name__)


class StandalonePort:
    """Implements ``CsmsPort`` without a network: sessions are journaled without any
    backend's messages (nothing would ever confirm them); the local API and `evsed sessions`
    show them."""

    def __init__(self, journal: TxJournal, store: Store, config: StandaloneConfig) -> None:
        self.journal = journal
        self.store = store
        self.config = config

    def start_transaction(self, tx: TxStart) -> int:
        return self.journal.start_transaction(tx)

    def stop_transaction(self, tx_key: int, stop: TxStop) -> bool:
        return self.journal.stop_transaction(tx_key, stop)

    def meter_values(self, connector_id: int, tx_key: int | None, samples: list[Sample]) -> None:
        if tx_key is not None:
            self.journal.record_samples(connector_id, tx_key, samples)

    def status_changed(
        self, connector_id: int, phase: Phase, condition: FaultKind | None, at: str
    ) -> None:
        """Nobody to tell; the local API shows the status."""

    def session_event(self, connector_id: int, event: SessionEvent, at: str) -> None:
        """Nobody to tell; kept in the debug log."""
        LOG.debug("connector %d: %s at %s", connector_id, event, at)

    async def authorize(self, id_tag: str) -> AuthDecision:
        if self.config.free_vend or id_tag.upper() in self.config.id_tags:
            return AuthDecision(True, "Accepted", None, "local")
        return AuthDecision(False, "Invalid", None, "local")

    def queued_messages(self) -> int:
        return self.store.outbox_count()

    def connection_state(self) -> str:
        return "standalone"
