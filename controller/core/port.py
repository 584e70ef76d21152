"""The core's port to a CSMS: what an OCPP adapter (or standalone mode) implements."""

from __future__ import annotations

from dataclasses import field
from typing import Protocol

from controller.core.connector import Phase, SessionEvent, StopCause
from controller.core.values import value
from hal.base import FaultKind, MeterReading


@value
class AuthDecision:
    """Outcome of an authorization; ``source`` says who decided (csms, cache, offline...)."""

    accepted: bool
    status: str = "Accepted"
    parent_id_tag: str | None = None
    source: str = "csms"
    # The connectors (2.0.1 EVSEs) the token may charge at; None: any (2.0.1 C01.FR.21:
    # idTokenInfo.evseId). Elsewhere the decision counts as not accepted.
    connector_ids: tuple[int, ...] | None = None

    def accepts_at(self, connector_id: int) -> bool:
        """Accepted, and for this connector."""
        return self.accepted and (self.connector_ids is None or connector_id in self.connector_ids)


@value
class Sample:
    """One metering sample: a reading, when it was taken and why (OCPP ReadingContext)."""

    reading: MeterReading
    timestamp: str
    context: str = "Sample.Periodic"
    offered_current_a: float | None = None
    # The power that current allows on the connector's phases at the nominal voltage.
    offered_power_w: float | None = None


@value
class TxStart:
    connector_id: int
    id_tag: str
    meter_start_wh: int
    timestamp: str
    reservation_id: int | None = None


@value
class TxStop:
    meter_stop_wh: int
    timestamp: str
    reason: StopCause
    id_tag: str | None = None
    transaction_data: list[Sample] = field(default_factory=list)
    # False when ``timestamp`` comes from an earlier process (a transaction closed after an
    # unclean stop carries its last persisted reading time): a later clock correction in
    # this process must not move it.
    stamped_now: bool = True


class CsmsPort(Protocol):
    """Implemented by controller.ocpp16.client.Ocpp16Client and controller.standalone."""

    def start_transaction(self, tx: TxStart) -> int:
        """Durably record the start (and queue its message); return the internal tx key."""
        ...

    def stop_transaction(self, tx_key: int, stop: TxStop) -> bool:
        """Durably record the stop; False when the transaction was already stopped."""
        ...

    def meter_values(self, connector_id: int, tx_key: int | None, samples: list[Sample]) -> None:
        """Report samples; transaction samples are durable, others best effort."""
        ...

    def status_changed(
        self, connector_id: int, phase: Phase, condition: FaultKind | None, at: str
    ) -> None:
        """The connector's phase or condition changed (``at``: when, UTC ISO 8601)."""
        ...

    def session_event(self, connector_id: int, event: SessionEvent, at: str) -> None:
        """Something happened in the connector's session (``at``: when, UTC ISO 8601), in
        the order the state machine emitted it; a 2.0.1 adapter derives its TransactionEvent
        trigger reasons and charging states from these."""
        ...

    async def authorize(self, id_tag: str) -> AuthDecision: ...

    def queued_messages(self) -> int: ...

    def connection_state(self) -> str: ...
