"""ChangeConfiguration HeartbeatInterval (1.6 9.1.10): the next Heartbeat is due by the new
interval at once, not after the wait the old interval (3600 s here) began."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID


async def test_a_shorter_interval_applies_at_once(charger: Any, csms: DevCsms) -> None:
    h = await charger(csms)
    frame = await csms.call_raw(
        STATION_ID, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}
    )
    assert frame[2] == {"status": "Accepted"}
    elapsed_s = 0
    while not h.frames("Heartbeat") and elapsed_s < 120:
        await h.advance(1)
        elapsed_s += 1
    assert 58 <= elapsed_s <= 62
