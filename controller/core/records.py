"""What the station runtime keeps durably, as a port: the storage package implements it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.core.charging_profiles import ChargingProfile

#: The name of the backend when only one is configured (and of the one before schema 3).
DEFAULT_BACKEND = "csms"

# (status, parent idTag, expiry date): an authorization as the cache or the local list holds it.
TagInfo = tuple[str, str | None, str | None]


class StoreError(Exception):
    """The database could not be written (disk full, I/O error); the caller keeps charging."""


@dataclass(frozen=True)
class TxRecord:
    """One transaction as stored. ``tx_key`` is the local key, ``tx_id`` the charger's own text
    id (OCPP 2.0.1 transactionId), ``csms_tx_ids`` each backend's id of it where the backend
    assigns one (OCPP 1.6: from StartTransaction.conf, absent until then)."""

    tx_key: int
    connector_id: int
    id_tag: str
    reservation_id: int | None
    meter_start_wh: int
    started_at: str
    last_meter_wh: int
    last_meter_at: str
    meter_stop_wh: int | None
    stopped_at: str | None
    stop_reason: str | None
    boot_id: str
    tx_id: str = ""
    csms_tx_ids: Mapping[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.stopped_at is None

    def csms_tx_id(self, backend: str = DEFAULT_BACKEND) -> str | None:
        """The backend's id of this transaction, None until it assigned one."""
        return self.csms_tx_ids.get(backend)

    def shown_tx_id(self, backend: str = DEFAULT_BACKEND) -> int | str | None:
        """The backend's id as the local API, the CSV and the ops CLI show it."""
        return shown_tx_id(self.csms_tx_ids.get(backend))


def shown_tx_id(text: str | None) -> int | str | None:
    """A backend's transaction id for people and the local API: a number where the backend
    gave one (OCPP 1.6 integers, shown as numbers as before schema 3), else the text."""
    if text is not None and text.lstrip("-").isdecimal() and str(int(text)) == text:
        return int(text)
    return text


class StationRecords(Protocol):
    """The durable records the station runtime reads and writes (controller.storage.store
    implements it): transactions left open by a crash, the persisted reading of a running
    one, availability and invalidation marks, reservations, and the authorization data it
    looks parents up in. Writes raise ``StoreError`` only when even the in-memory fallback failed.
    """

    @property
    def degraded(self) -> bool:
        """The database cannot be written; data is kept in memory until ``flush`` works."""
        ...

    def flush(self) -> bool: ...

    def get_transaction(self, tx_key: int) -> TxRecord | None: ...

    def open_transactions(self) -> list[TxRecord]: ...

    def record_meter(self, tx_key: int, energy_wh: int, at: str) -> None: ...

    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> None: ...

    def settings_with_prefix(self, prefix: str) -> dict[str, str]: ...

    def cache_get(self, id_tag: str) -> TagInfo | None: ...

    def local_list_get(self, id_tag: str) -> TagInfo | None: ...

    def profiles(self, backend: str = DEFAULT_BACKEND) -> list[ChargingProfile]:
        """The backend's installed charging profiles."""
        ...

    def save_profiles(
        self, backend: str, put: Sequence[ChargingProfile] = (), drop: Iterable[int] = ()
    ) -> None:
        """Install ``put`` and remove the profile ids ``drop`` in one commit."""
        ...
