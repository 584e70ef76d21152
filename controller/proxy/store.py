"""The proxy's durable state in SQLite: per charger and secondary backend, the queue of the
charger's messages still to deliver, and the map of the primary's transaction ids to that
backend's own (OCPP 1.6). WAL with synchronous=FULL: a message the charger saw confirmed
is on disk for every secondary before the confirmation is sent."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    charger TEXT NOT NULL,
    backend TEXT NOT NULL,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    primary_tx INTEGER,            -- StartTransaction: the primary's transactionId
    queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_head ON queue (charger, backend, id);
CREATE TABLE IF NOT EXISTS tx_map (
    charger TEXT NOT NULL,
    backend TEXT NOT NULL,
    primary_tx INTEGER NOT NULL,
    backend_tx INTEGER NOT NULL,
    mapped_at REAL NOT NULL,
    PRIMARY KEY (charger, backend, primary_tx)
);
CREATE INDEX IF NOT EXISTS tx_map_backend ON tx_map (charger, backend, backend_tx);
"""

# Transaction ids kept per charger and backend: enough for every open and recent session
# (a StopTransaction can come days late from a charger's own queue), bounded on disk.
MAP_KEEP = 1000


@dataclass(frozen=True)
class Queued:
    id: int
    action: str
    payload: dict[str, Any]
    primary_tx: int | None


class ProxyStore:
    """All writes are single transactions (isolation_level None + explicit BEGIN)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def enqueue(
        self,
        charger: str,
        backends: list[str],
        action: str,
        payload: dict[str, Any],
        primary_tx: int | None = None,
    ) -> None:
        """One copy of a charger's CALL for each of ``backends``, in one commit. A Heartbeat
        is not queued again behind one still waiting (a backend down for days would
        otherwise collect thousands of them)."""
        text = json.dumps(payload, separators=(",", ":"))
        now = time.time()
        with self._tx():
            for backend in backends:
                if (
                    action == "Heartbeat"
                    and self._db.execute(
                        "SELECT 1 FROM queue WHERE charger=? AND backend=? AND action='Heartbeat'",
                        (charger, backend),
                    ).fetchone()
                ):
                    continue
                self._db.execute(
                    "INSERT INTO queue (charger, backend, action, payload, primary_tx, queued_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (charger, backend, action, text, primary_tx, now),
                )

    def head(self, charger: str, backend: str) -> Queued | None:
        row = self._db.execute(
            "SELECT id, action, payload, primary_tx FROM queue WHERE charger=? AND backend=?"
            " ORDER BY id LIMIT 1",
            (charger, backend),
        ).fetchone()
        if row is None:
            return None
        return Queued(int(row[0]), str(row[1]), json.loads(row[2]), row[3])

    def confirm(self, item_id: int, mapping: tuple[str, str, int, int] | None = None) -> None:
        """Remove a delivered message; ``mapping`` (charger, backend, primary_tx, backend_tx)
        is stored in the same commit (the backend's StartTransaction.conf)."""
        with self._tx():
            self._db.execute("DELETE FROM queue WHERE id=?", (item_id,))
            if mapping is not None:
                charger, backend, primary_tx, backend_tx = mapping
                self._db.execute(
                    "INSERT OR REPLACE INTO tx_map VALUES (?, ?, ?, ?, ?)",
                    (charger, backend, primary_tx, backend_tx, time.time()),
                )
                self._db.execute(
                    "DELETE FROM tx_map WHERE charger=? AND backend=? AND primary_tx NOT IN"
                    " (SELECT primary_tx FROM tx_map WHERE charger=? AND backend=?"
                    "  ORDER BY mapped_at DESC LIMIT ?)",
                    (charger, backend, charger, backend, MAP_KEEP),
                )

    def backend_tx(self, charger: str, backend: str, primary_tx: int) -> int | None:
        row = self._db.execute(
            "SELECT backend_tx FROM tx_map WHERE charger=? AND backend=? AND primary_tx=?",
            (charger, backend, primary_tx),
        ).fetchone()
        return None if row is None else int(row[0])

    def primary_txs(self, charger: str, backend: str, backend_tx: int) -> list[int]:
        """The primary's transaction ids that ``backend`` knows as ``backend_tx`` (more than
        one: the backend gave one id to two transactions, and none can be told apart)."""
        rows = self._db.execute(
            "SELECT primary_tx FROM tx_map WHERE charger=? AND backend=? AND backend_tx=?",
            (charger, backend, backend_tx),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def queue_length(self, charger: str, backend: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM queue WHERE charger=? AND backend=?", (charger, backend)
        ).fetchone()
        return int(row[0])

    def queued_chargers(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT DISTINCT charger FROM queue")]

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
