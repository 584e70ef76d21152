"""`evsed fleet --serve`: a fleet driven over a pipe (JSON lines), for Locust and other tools.

In: one JSON object per line on stdin –
``{"op": "add", "number": N}`` starts station N (identity PREFIX-000N) with its seeded script,
``{"op": "remove", "number": N}`` stops it cleanly (its session ends, its queue drains),
``{"op": "quit"}`` (or the end of stdin: the driving process is gone) stops every station.
Out: one JSON object per line on stdout –
``{"ev": "call", "station": ID, "action": A, "ms": T, "error": E}`` for every CALL a station
sent once answered (``error`` None), refused (the CALLERROR code) or lost (``ms`` None),
``{"ev": "added" | "removed", "number": N}``, ``{"ev": "error", "message": M}`` for a line it
could not use, and ``{"ev": "ready"}`` once it reads commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any, TextIO

from controller.fleet.config import FleetConfig
from controller.fleet.fleet import Fleet, work_dir_for
from controller.fleet.report import CallEvent
from controller.fleet.station import station_id

LOG = logging.getLogger(__name__)

# Lines out are flushed together at most this often: a busy fleet answers many calls a
# second and the reader wants them soon, not one write system call each.
FLUSH_INTERVAL_S = 0.05
MAX_NUMBER = 1_000_000


class Server:
    """Reads commands, applies them to the fleet, writes events."""

    def __init__(self, fleet: Fleet, out: TextIO) -> None:
        self.fleet = fleet
        self.out = out
        self._flush_pending = False
        self._ops: set[asyncio.Task[Any]] = set()
        fleet.stats.listeners.append(self._on_call)

    def emit(self, **event: Any) -> None:
        self.out.write(json.dumps(event, separators=(",", ":")) + "\n")
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        try:
            self.out.flush()
        except (BrokenPipeError, ValueError):  # the reader is gone: quit follows at EOF
            pass

    def _on_call(self, event: CallEvent) -> None:
        self.emit(
            ev="call",
            station=event.station_id,
            action=event.action,
            ms=None if event.response_s is None else round(event.response_s * 1000.0, 3),
            error=event.error,
        )

    async def handle(self, line: bytes) -> bool:
        """Apply one command line; False once told to quit."""
        try:
            msg = json.loads(line)
            op = msg["op"]
            if op == "quit":
                return False
            number = msg["number"]
            if not isinstance(number, int) or isinstance(number, bool):
                raise TypeError("number must be an integer")
            if not 1 <= number <= MAX_NUMBER:
                raise ValueError(f"number must be 1..{MAX_NUMBER}")
            if op not in ("add", "remove"):
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self.emit(ev="error", message=f"unusable command {line[:200]!r}: {exc}")
            return True
        # Each command on its own: a slow stop (a queue draining) does not hold up adds.
        task = asyncio.ensure_future(self._apply(op, number))
        self._ops.add(task)
        task.add_done_callback(self._ops.discard)
        return True

    async def _apply(self, op: str, number: int) -> None:
        sid = station_id(self.fleet.config.prefix, number - 1)
        try:
            if op == "add":
                if sid in self.fleet.stations:
                    raise ValueError(f"{sid} runs already")
                await self.fleet.add_station(number - 1)
                self.emit(ev="added", number=number, station=sid)
            else:
                if sid not in self.fleet.stations:
                    raise ValueError(f"{sid} does not run")
                await self.fleet.remove_station(sid)
                self.emit(ev="removed", number=number, station=sid)
        except Exception as exc:
            self.emit(ev="error", message=f"{op} {sid}: {exc}")

    async def finish(self) -> None:
        """Let running commands end (bounded by the fleet's own drain timeout)."""
        if self._ops:
            await asyncio.gather(*self._ops, return_exceptions=True)


async def serve(config: FleetConfig, stdin: Any = None, out: TextIO | None = None) -> int:
    """Run a fleet with no stations of its own until stdin says quit or ends."""
    work_dir, cleanup = work_dir_for(config)
    try:
        fleet = Fleet(config, work_dir=work_dir, count=0, summary_out=sys.stderr)
        server = Server(fleet, out if out is not None else sys.stdout)
        runner = asyncio.ensure_future(fleet.run())
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), stdin if stdin is not None else sys.stdin
        )
        server.emit(ev="ready")
        try:
            while True:
                line = await reader.readline()
                if not line or not await server.handle(line):
                    break
        finally:
            await server.finish()
            fleet.request_stop()
            await runner
            server._flush()
        return 0
    finally:
        cleanup()
