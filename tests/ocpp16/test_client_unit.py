"""Unit tests of the OCPP 1.6 client's pure helpers: back-off, URL, Basic auth header."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

from controller.csms.connection import backoff_s
from tests.conftest import STATION_ID


def test_backoff_is_exponential_jittered_and_capped() -> None:
    """OCPP-J errata 3.4: retry "with an appropriate back-off mechanism"."""
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2**attempt)
        samples = [backoff_s(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert len({round(s, 6) for s in samples}) > 150  # really jittered
    assert backoff_s(10_000, 1.0, 60.0, rng) <= 60.0  # no overflow for huge attempt counts


async def test_url_appends_quoted_station_id_and_basic_auth(charger: Any, tmp_path: Path) -> None:
    """OCPP-J 3.1.1: the connection URL ends with the charge point identity; security
    profile 1 sends HTTP Basic with user = identity."""
    h = await charger(None, wait_accepted=False)
    assert h.app.client is None  # no [csms] table: standalone
    from controller.csms.connection import ConnectionOptions
    from controller.ocpp16.client import Ocpp16Client, StationIdentity
    from controller.runtime.clock import ManualClock

    client = Ocpp16Client(
        identity=StationIdentity("CP/1 x", "v", "m"),
        options=ConnectionOptions(csms_url="ws://127.0.0.1:9/ocpp/", password="pw:1"),
        station=h.station,
        store=h.app.store,
        settings=h.app.settings,
        clock=ManualClock(),
    )
    assert client.url == "ws://127.0.0.1:9/ocpp/CP%2F1%20x"
    header = client._headers()["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "CP/1 x:pw:1"
    # A CSMS-provided AuthorizationKey wins over the configured password.
    assert h.app.settings.change("AuthorizationKey", "00112233445566778899") == "Accepted"
    header = client._headers()["Authorization"]
    assert base64.b64decode(header[6:]).decode() == "CP/1 x:00112233445566778899"
    assert STATION_ID == "CP-TEST"
