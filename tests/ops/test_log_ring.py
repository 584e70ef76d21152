"""The in-memory ring of recent log records (controller/ops/logsetup.py): what diagnostics
archives hold when there is no readable journal. Bounded, RAM only, secrets masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from controller.ops.logsetup import RING_MAX_LINE_CHARS, RingHandler, ring_handler, setup_logging

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("evsed.test", logging.WARNING, __file__, 1, msg, args, None)


def test_ring_is_bounded_and_keeps_the_newest() -> None:
    ring = RingHandler(capacity=3)
    now = [T0]
    ring.now = lambda: now[0]
    for i in range(5):
        ring.handle(record("line %d", i))
        now[0] += timedelta(minutes=1)
    lines = ring.lines()
    assert [line.split()[-1] for line in lines] == ["2", "3", "4"]
    assert lines[0].startswith("2026-01-01T12:02:00.000+00:00 WARNING evsed.test: line 2")
    assert ring.lines(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=3)) == [
        lines[1]
    ]
    ring.handle(record("x" * (3 * RING_MAX_LINE_CHARS)))
    assert len(ring.lines()[-1].split(" ", 1)[1]) == RING_MAX_LINE_CHARS


def test_ring_is_attached_once_and_masks_known_secrets(root_logger: logging.Logger) -> None:
    """The ring sits on the root logger once, across setup_logging() calls, and gets the
    same SecretFilter as the journal/stderr handler."""
    setup_logging("INFO", "stderr", stream=io.StringIO())
    secrets = setup_logging("INFO", "stderr", stream=io.StringIO())
    ring = ring_handler()
    assert root_logger.handlers.count(ring) == 1
    assert len(ring.filters) == 1
    secrets.add_secret("hunter2-csms-password")
    logging.getLogger("evsed.test.ring").warning("logging in with hunter2-csms-password")
    last = ring.lines()[-1]
    assert "hunter2" not in last and "logging in with ***" in last
