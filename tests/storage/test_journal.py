"""The version-neutral transaction journal (controller/storage/journal.py): every event is
written before anything is sent, each backend's message of it is queued in the same commit
with that backend's own gap-free sequence number (OCPP 2.0.1 seqNo, E01.FR.xx / E02), the
numbers survive a restart and a full disk, and a backend's outbox holds only its messages.

Two renderers stand in for two backends: the real OCPP 1.6 one (``TxMessages16``) and a
small TransactionEvent-shaped one, because the 2.0.1 adapter does not exist yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.core.connector import StopCause
from controller.core.port import Sample, TxStart, TxStop
from controller.core.records import StoreError
from controller.ocpp16.settings import Settings, core_keys
from controller.ocpp16.txmessages import TxMessages16
from controller.storage.journal import Rendered, TxJournal
from controller.storage.store import Store
from hal.base import MeterReading

T0 = "2026-12-01T08:00:00.000+00:00"


class EventRenderer:
    """TransactionEvent-like messages for backend ``energy``; like a 2.0.1 station with
    SampledDataTxUpdatedInterval it skips some samples (here every second call), and a
    skipped event must not use up a sequence number."""

    backend = "energy"

    def __init__(self) -> None:
        self.sample_calls = 0

    def started(self, tx: TxStart, tx_id: str, seq: int) -> Rendered:
        return "TransactionEvent", {"eventType": "Started", "transactionId": tx_id, "seqNo": seq}

    def samples(self, connector_id: int, tx_id: str, seq: int, samples: list[Sample]) -> Rendered:
        self.sample_calls += 1
        if self.sample_calls % 2 == 0:
            return None
        energy = [round(s.reading.energy_wh) for s in samples]
        return "TransactionEvent", {
            "eventType": "Updated",
            "transactionId": tx_id,
            "seqNo": seq,
            "energy": energy,
        }

    def ended(self, stop: TxStop, tx_id: str, seq: int) -> Rendered:
        return "TransactionEvent", {"eventType": "Ended", "transactionId": tx_id, "seqNo": seq}


def _samples(energy_wh: float, at: str = T0) -> list[Sample]:
    return [Sample(MeterReading(energy_wh, 7400.0), at)]


def _journal(store: Store, *, with_16: bool = True) -> tuple[TxJournal, EventRenderer]:
    events = EventRenderer()
    renderers: list[Any] = [events]
    if with_16:
        renderers.insert(0, TxMessages16(Settings(store, core_keys(1)), "billing"))
    return TxJournal(store, renderers, boot_id="b1"), events


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "evsed.db")
    yield s
    s.close()


def test_each_backend_gets_its_messages_in_the_commit_of_the_event(store: Store) -> None:
    journal, _ = _journal(store)
    key = journal.start_transaction(TxStart(1, "04A1B2C3", 1000, T0))
    billing = store.outbox_batch(0, 10, "billing")
    energy = store.outbox_batch(0, 10, "energy")
    assert [(m.action, m.tx_seq) for m in billing] == [("StartTransaction", 0)]
    assert [(m.action, m.tx_seq) for m in energy] == [("TransactionEvent", 0)]
    tx = store.get_transaction(key)
    assert tx is not None
    # The charger's own id is what a 2.0.1 backend knows the transaction by.
    assert energy[0].payload == {"eventType": "Started", "transactionId": tx.tx_id, "seqNo": 0}
    assert billing[0].payload["meterStart"] == 1000
    # Each backend's queue holds only its own messages, the default backend's nothing.
    assert store.outbox_count("billing") == store.outbox_count("energy") == 1
    assert store.outbox_count() == 2 and store.outbox_head() is None


def test_sequence_numbers_are_per_backend_and_gap_free(store: Store) -> None:
    """E02: seqNo counts a backend's messages of one transaction, 0 for the start."""
    journal, _ = _journal(store)
    key = journal.start_transaction(TxStart(1, "04A1B2C3", 1000, T0))
    for n in range(1, 6):
        journal.record_samples(1, key, _samples(1000 + n * 100))
    journal.stop_transaction(key, TxStop(1600, T0, StopCause.LOCAL))
    billing = [m.tx_seq for m in store.outbox_batch(0, 20, "billing")]
    energy = store.outbox_batch(0, 20, "energy")
    assert billing == [0, 1, 2, 3, 4, 5, 6]
    # The energy backend skipped samples 2 and 4: its numbers have no gaps all the same.
    assert [m.tx_seq for m in energy] == [0, 1, 2, 3, 4]
    assert [m.payload["seqNo"] for m in energy] == [0, 1, 2, 3, 4]
    assert [m.payload.get("energy") for m in energy[1:4]] == [[1100], [1300], [1500]]
    assert energy[-1].payload["eventType"] == "Ended"
    # A second transaction numbers from 0 again.
    other = journal.start_transaction(TxStart(1, "CAFE0001", 1600, T0))
    assert store.next_tx_seq(other, "energy") == 1 and store.next_tx_seq(other, "billing") == 1


def test_sequence_numbers_survive_a_restart(tmp_path: Path) -> None:
    """The next number is stored in the commit that queues the message: a new process
    continues the transaction's numbering instead of starting again."""
    first = Store(tmp_path / "evsed.db")
    journal, _ = _journal(first)
    key = journal.start_transaction(TxStart(1, "04A1B2C3", 1000, T0))
    journal.record_samples(1, key, _samples(1100))
    first.close()
    second = Store(tmp_path / "evsed.db")
    try:
        journal, events = _journal(second)
        events.sample_calls = 0  # the next sample is sent
        journal.record_samples(1, key, _samples(1200))
        journal.stop_transaction(key, TxStop(1250, T0, StopCause.POWER_LOSS))
        assert [m.tx_seq for m in second.outbox_batch(0, 10, "energy")] == [0, 1, 2, 3]
        assert [m.tx_seq for m in second.outbox_batch(0, 10, "billing")] == [0, 1, 2, 3]
    finally:
        second.close()


def test_sequence_numbers_continue_on_a_full_disk_and_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Degraded mode keeps the counters in memory with the messages; the replay writes
    both, and numbering goes on without a gap or a repeat."""
    store = Store(tmp_path / "evsed.db")
    journal, _ = _journal(store, with_16=False)
    key = journal.start_transaction(TxStart(1, "04A1B2C3", 1000, T0))
    original = Store._tx
    full = {"on": True}

    def tx(self: Store) -> Any:
        if full["on"]:
            raise StoreError("database or disk is full")
        return original(self)

    monkeypatch.setattr(Store, "_tx", tx)
    journal.record_samples(1, key, _samples(1100))  # sent: 1
    journal.record_samples(1, key, _samples(1200))  # skipped
    journal.record_samples(1, key, _samples(1300))  # sent: 2
    assert store.degraded and store.memory_messages() == 2
    assert store.next_tx_seq(key, "energy") == 3
    full["on"] = False
    assert store.flush()
    journal.stop_transaction(key, TxStop(1400, T0, StopCause.LOCAL))
    queued = store.outbox_batch(0, 10, "energy")
    assert [m.tx_seq for m in queued] == [0, 1, 2, 3]
    # Delivered messages leave the queue; their numbers are never handed out again, also
    # not by the next process.
    store.outbox_delete_many([m.seq for m in queued])
    store.close()
    again = Store(tmp_path / "evsed.db")
    try:
        assert again.next_tx_seq(key, "energy") == 4
    finally:
        again.close()


def test_without_backends_the_session_is_recorded_and_nothing_queued(store: Store) -> None:
    """Standalone: the transaction and its readings are journaled; no message waits for a
    backend that would never confirm it."""
    journal = TxJournal(store, boot_id="b1")
    key = journal.start_transaction(TxStart(1, "04A1B2C3", 1000, T0))
    journal.record_samples(1, key, _samples(1500, "2026-12-01T08:30:00.000+00:00"))
    tx = store.get_transaction(key)
    assert tx is not None and (tx.last_meter_wh, tx.last_meter_at) == (
        1500,
        "2026-12-01T08:30:00.000+00:00",
    )
    assert journal.stop_transaction(key, TxStop(1600, T0, StopCause.LOCAL))
    assert not journal.stop_transaction(key, TxStop(1700, T0, StopCause.LOCAL))
    done = store.get_transaction(key)
    assert done is not None and done.meter_stop_wh == 1600 and done.stop_reason == "Local"
    assert store.outbox_count() == 0


def test_transaction_ids_are_unique_text(store: Store) -> None:
    journal, _ = _journal(store)
    keys = [journal.start_transaction(TxStart(1, "A", n, T0)) for n in range(50)]
    ids = [t.tx_id for k in keys if (t := store.get_transaction(k)) is not None]
    assert len(set(ids)) == 50 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
