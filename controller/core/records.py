"""What the station runtime keeps durably, as a port: the storage package implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# (status, parent idTag, expiry date): an authorization as the cache or the local list holds it.
TagInfo = tuple[str, str | None, str | None]


class StoreError(Exception):
    """The database could not be written (disk full, I/O error); the caller keeps charging."""


@dataclass(frozen=True)
class TxRecord:
    """One transaction as stored; ``csms_tx_id`` is None until StartTransaction.conf."""

    tx_key: int
    connector_id: int
    id_tag: str
    reservation_id: int | None
    meter_start_wh: int
    started_at: str
    csms_tx_id: int | None
    last_meter_wh: int
    last_meter_at: str
    meter_stop_wh: int | None
    stopped_at: str | None
    stop_reason: str | None
    boot_id: str

    @property
    def open(self) -> bool:
        return self.stopped_at is None


class StationRecords(Protocol):
    """The durable records the station runtime reads and writes (controller.storage.store
    implements it): transactions left open by a crash, the persisted reading of a running
    one, availability and invalidation marks, and the authorization data it looks parents
    up in. Writes raise ``StoreError`` only when even the in-memory fallback failed.
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

    def cache_get(self, id_tag: str) -> TagInfo | None: ...

    def local_list_get(self, id_tag: str) -> TagInfo | None: ...
