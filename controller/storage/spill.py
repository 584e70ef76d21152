"""Spill file for the store's degraded mode: pending writes copied to RAM-backed storage.

While the database cannot be written (disk full, I/O error) the store keeps transaction
data in memory. A crash or a watchdog restart in that state would lose it, and with it
possibly a StopTransaction. systemd gives the service a tmpfs directory that survives
restarts of the service (RuntimeDirectory= with RuntimeDirectoryPreserve=yes,
$RUNTIME_DIRECTORY); the store appends each pending write there as one JSON line, so the
next process can apply them. A power cut clears tmpfs: that case is the same as before.

The first line names the file's generation (``{"generation": ...}``); the store records
the generation in the database in the same commit that applies the writes, so a crash
between that commit and removing the file cannot apply them twice. Then
``{"op": id, "w": {"type": ..., ...}}`` adds a typed write (controller/storage/writes.py),
``{"drop": id}`` cancels one that a later write made moot. A torn last line (a crash
mid-write) is ignored. A file of the schema-2 release (``{"op": id, "sql": ..., "params":
[...]}``) is read too: its frozen statements map onto the typed writes.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import IO, Any

from controller.storage.writes import Op, from_json, from_v2, to_json

LOG = logging.getLogger(__name__)


class SpillFile:
    """Append-only journal of pending typed writes, ordered by op id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self.failed = False
        self.generation = ""

    def load(self) -> tuple[str, dict[int, Op]]:
        """The generation and pending writes a previous process left ("", {} if none).
        Appending continues in the same generation."""
        ops: dict[int, Op] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return "", ops
        except OSError as exc:
            LOG.error("cannot read spill file %s: %s", self.path, exc)
            return "", ops
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                entry = json.loads(line)
                if "generation" in entry:
                    self.generation = str(entry["generation"])
                elif "drop" in entry:
                    ops.pop(int(entry["drop"]), None)
                elif "w" in entry:
                    ops[int(entry["op"])] = from_json(entry["w"])
                else:
                    ops[int(entry["op"])] = from_v2(str(entry["sql"]), list(entry["params"]))
            except (ValueError, KeyError, TypeError, IndexError):
                LOG.warning("spill file %s: line %d unreadable, ignored", self.path, number)
        return self.generation, ops

    def add(self, op_id: int, op: Op) -> None:
        self._write({"op": op_id, "w": to_json(op)})

    def drop(self, op_id: int) -> None:
        self._write({"drop": op_id})

    def _write(self, entry: dict[str, Any]) -> None:
        if self.failed:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists()
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                os.chmod(self.path, 0o600)
                if fresh or not self.generation:
                    self.generation = uuid.uuid4().hex
                    self._file.write(json.dumps({"generation": self.generation}) + "\n")
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            # tmpfs: flushing to the kernel is all a process crash needs.
            self._file.flush()
        except OSError as exc:
            self.failed = True
            LOG.error(
                "cannot write spill file %s (%s): pending writes only in memory", self.path, exc
            )

    def remove(self) -> None:
        """Everything was written to the database: forget the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.failed = False
        self.generation = ""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            LOG.error("cannot remove spill file %s: %s", self.path, exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
