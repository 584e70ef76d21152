"""The station as protocol adapters and the local API see it: typed requests, typed answers."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from controller.core.charging_profiles import ChargingProfile, ProfilePurpose, RateUnit
from controller.core.composite import CompositeSchedule
from controller.core.connector import Phase, StopCause
from controller.core.reservations import (
    CancelResult,
    Reservation,
    ReservationEnd,
    ReserveResult,
)
from hal.base import FaultKind, MeterReading

__all__ = [
    "AvailabilityResult",
    "CancelResult",
    "ConnectorView",
    "ReserveResult",
    "Reservation",
    "StationControl",
    "UnlockResult",
]


class AvailabilityResult(enum.StrEnum):
    ACCEPTED = "Accepted"
    # A transaction runs: the connector becomes inoperative when it ends.
    SCHEDULED = "Scheduled"


class UnlockResult(enum.StrEnum):
    UNLOCKED = "Unlocked"
    UNLOCK_FAILED = "UnlockFailed"
    NOT_SUPPORTED = "NotSupported"  # no cable lock on this connector


@dataclass(frozen=True)
class ConnectorView:
    """One connector at one moment, for adapters (statuses, triggered samples)."""

    connector_id: int
    phase: Phase
    condition: FaultKind | None
    tx_key: int | None
    plugged: bool
    offered_current_a: float
    offered_power_w: float
    # The latest reading; None while the meter does not answer (no sample is invented).
    live_reading: MeterReading | None
    # The CSMS rejected the idTag of the running transaction (it runs on unauthorized).
    deauthorized: bool = False


class StationControl(Protocol):
    """What a protocol adapter or the local API may ask of the station runtime.

    Nothing outside ``controller/runtime`` reads the station's internals; an import-linter
    contract keeps ``runtime.station`` and its collaborators to the runtime and the
    composition root.
    """

    boot_id: str

    @property
    def station_operative(self) -> bool: ...

    def connector_ids(self) -> list[int]: ...

    def view(self, connector_id: int) -> ConnectorView: ...

    def remote_start(
        self, connector_id: int | None, id_tag: str, parent_id_tag: str | None = None
    ) -> int | None:
        """The connector a remote start would use; None when none can take it
        (``parent_id_tag``: the token's group, which a group reservation admits)."""
        ...

    def begin_remote(
        self,
        connector_id: int,
        id_tag: str,
        tx_profile: ChargingProfile | None = None,
        parent_id_tag: str | None = None,
    ) -> None:
        """Start the authorized remote session; ``tx_profile`` (validated) becomes the TX
        profile of the transaction it starts."""
        ...

    def stop_transaction(self, tx_key: int, cause: StopCause) -> bool:
        """Stop a running transaction; False when no connector runs it."""
        ...

    def deauthorize(self, tx_key: int) -> None:
        """The backend rejected the idTag of a running transaction."""
        ...

    def change_availability(
        self, connector_id: int, operative: bool, *, cascade: bool = True
    ) -> AvailabilityResult:
        """Connector 0 is the whole station: with ``cascade`` (1.6) every connector follows;
        without it (2.0.1, G04 Note 1: the station, EVSEs and connectors have their own
        states) only the station's own state changes and the caller sets each connector."""
        ...

    async def unlock(self, connector_id: int) -> UnlockResult: ...

    def reserve(self, reservation: Reservation, *, any_connector_supported: bool) -> ReserveResult:
        """Make (or, same reservation id, replace) a reservation; connector 0 = any connector,
        refused unless ``any_connector_supported`` (the adapter's configuration says)."""
        ...

    def cancel_reservation(self, reservation_id: int) -> CancelResult: ...

    def current_reservations(self) -> list[Reservation]:
        """The reservations kept now."""
        ...

    def on_reservation_ended(self, listener: Callable[[Reservation, ReservationEnd], None]) -> None:
        """``listener(reservation, end)`` whenever a reservation ends (used, cancelled,
        expired, removed by a fault or unavailability)."""
        ...

    async def stop_all(self, cause: StopCause) -> None: ...

    def set_csms_online(self, online: bool) -> None: ...

    def set_connector_fault(self, connector_id: int, fault: FaultKind | None) -> None:
        """A fault from outside the connector's own inputs (API, simulation)."""
        ...

    # ------------------------------------------------------------------ smart charging

    def running_transactions(self) -> dict[int, int]:
        """connector id -> tx_key of every running transaction."""
        ...

    def installed_profiles(self, backend: str | None = None) -> tuple[ChargingProfile, ...]:
        """The profiles ``backend`` installed (None: the primary backend; with several
        backends each has its own and the station follows the lowest limit of all)."""
        ...

    def install_profile(
        self,
        profile: ChargingProfile,
        *,
        same_level_replaces: bool = True,
        backend: str | None = None,
    ) -> None:
        """A validated profile of ``backend`` (None: the primary); it replaces what it
        replaces among that backend's (``install_profile`` in core/charging_profiles.py;
        2.0.1 passes ``same_level_replaces`` False) and applies at once."""
        ...

    def clear_profiles(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: ProfilePurpose | None = None,
        stack_level: int | None = None,
        backend: str | None = None,
    ) -> int:
        """Remove ``backend``'s profiles matching every given criterion; how many."""
        ...

    def composite_schedule(
        self, connector_id: int, duration_s: int, unit: RateUnit | None = None
    ) -> CompositeSchedule:
        """From now; connector 0 is the station."""
        ...

    def on_local_limit(self, listener: Callable[[int, Decimal | None], None]) -> None:
        """``listener(connector_id, value_a)`` whenever the local API's limit in effect on a
        connector (0: the station) changes: set, fallen back after its timeout, cleared
        (None). The local limit is an external system's (an EMS's) limit."""
        ...

    def local_limits(self) -> list[dict[str, Any]]:
        """The local limits now: ``connector``, ``limit_a``, ``timeout_s``, ``expires_in_s``,
        ``fallback``, ``effective_a`` each."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The data behind the local API's GET /api/status."""
        ...
