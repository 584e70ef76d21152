"""Local HTTP API (README "Local API"): status shape, sim control, transactions, CSV export,
control endpoints, authentication (token, loopback policy, cross-site), bad input."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hmac
import io
from collections.abc import AsyncIterator, Callable
from datetime import date
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.app import App
from controller.cli import main
from controller.config import ConfigError, parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from controller.storage.sessions import CSV_COLUMNS
from controller.web.api import AccessPolicy, Api, same_origin, sessions_between
from tests.conftest import CARD, STATION_ID, Harness, charger_config

ROOT = Path(__file__).resolve().parents[2]

CONNECTOR_FIELDS = {
    "connector",
    "status",
    "error_code",
    "vehicle_state",
    "contactor_closed",
    "offered_current_a",
    "limit_a",
    "limit_source",
    "transaction_id",
    "transaction_key",
    "id_tag",
    "energy_wh",
    "session_energy_wh",
    "power_w",
    "meter_ok",  # False while the meter does not answer (power_w is then None)
    "meter_reading_at",  # when energy_wh was read (UTC); None before the first reading
    "reservation",  # the reservation the connector keeps (id, idTag, expiry), else None
}
CSMS_FIELDS = {"state", "queued_messages", "storage", "last_message_at", "last_message_age_s"}
CSMS_STATES = {"connecting", "booting", "pending", "rejected", "accepted", "offline", "standalone"}


class Client:
    """Small JSON client for the charger's API."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str) -> Any:
        async with self.session.get(self.base + path) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "application/json"
            return await resp.json()

    async def status(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.get("/api/status")
        return data

    async def connector(self, n: int = 1) -> dict[str, Any]:
        status = await self.status()
        return next(c for c in status["connectors"] if c["connector"] == n)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        if body is not None:
            kwargs["json"] = body
        async with self.session.post(self.base + path, **kwargs) as resp:
            try:
                payload = await resp.json(content_type=None)
            except ValueError:
                payload = await resp.text()
            return resp.status, payload

    async def ok(self, path: str, body: Any) -> dict[str, Any]:
        status, payload = await self.post(path, body)
        assert status == 200, payload
        assert payload["ok"] is True
        result: dict[str, Any] = payload
        return result

    async def until(
        self, h: Any, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Poll connector 1 over HTTP, nudging the manual clock, until ``predicate`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            c = await self.connector()
            if predicate(c):
                return c
            if loop.time() > deadline:
                raise AssertionError(f"API status never matched; last: {c}")
            await h.advance(1)
            await asyncio.sleep(0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def start(charger: Any, csms: DevCsms, http: aiohttp.ClientSession, **kw: Any) -> Any:
    h = await charger(csms, **kw)
    assert isinstance(h.app.api.port, int) and h.app.api.port > 0
    return h, Client(http, f"http://127.0.0.1:{h.app.api.port}")


async def test_status_shape(charger: Any, csms: DevCsms, http: aiohttp.ClientSession) -> None:
    h, api = await start(charger, csms, http, connectors=2)
    status = await api.status()
    assert set(status) == {
        "backends",
        "station_id",
        "simulated",
        "connectors",
        "csms",
        "clock",
        "faults",
        "security",
    }
    assert set(status["clock"]) == {"utc", "trusted", "trust_source"}
    # Profile 1 (ws://): no certificate store opened, no update running, the start recorded.
    security = status["security"]
    assert (security["profile"], security["certificate"], security["firmware"]) == (1, None, "idle")
    assert security["last_event"]["kind"] == "StartupOfTheDevice"
    assert set(status["csms"]) == CSMS_FIELDS
    assert status["station_id"] == STATION_ID
    assert status["simulated"] is True
    assert status["faults"] == []
    assert status["csms"]["state"] == "accepted"
    # Frames went both ways during boot: the time is known and not in the future.
    assert status["csms"]["last_message_at"] is not None
    assert 0 <= status["csms"]["last_message_age_s"] < 5
    assert status["csms"]["last_message_at"] <= status["clock"]["utc"]
    assert status["csms"]["state"] in CSMS_STATES
    assert status["csms"]["queued_messages"] == 0
    assert [c["connector"] for c in status["connectors"]] == [1, 2]
    for c in status["connectors"]:
        assert set(c) == CONNECTOR_FIELDS
        assert c["status"] == "Available"
        assert c["error_code"] == "NoError"
        assert c["vehicle_state"] == "A"
        assert c["contactor_closed"] is False
        assert c["transaction_id"] is None and c["transaction_key"] is None
        assert c["id_tag"] is None and c["session_energy_wh"] is None
    await h.advance(2)
    c = await api.connector(2)
    assert c["energy_wh"] == 1000.0  # initial register of the simulated meter
    assert c["power_w"] == 0.0
    assert await api.get("/api/transactions") == []


async def test_session_driven_through_the_api(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)

    await api.ok("/api/sim/plug", {"connector": 1})
    c = await api.until(h, lambda c: c["status"] == "Preparing")
    assert c["vehicle_state"] in ("B", "C")
    assert c["contactor_closed"] is False and c["transaction_key"] is None

    assert await api.ok("/api/sim/card", {"uid": CARD.lower()}) == {"ok": True, "delivered": True}
    start_frame = await csms.wait_for(lambda f: f.action == "StartTransaction")
    assert start_frame.payload["idTag"] == CARD
    c = await api.until(h, lambda c: c["contactor_closed"] and c["transaction_id"] is not None)
    assert c["status"] == "Charging"
    assert c["vehicle_state"] == "C"
    assert c["transaction_id"] == 1
    assert c["id_tag"] == CARD
    assert c["offered_current_a"] == 16.0

    await api.ok("/api/sim/vehicle", {"connector": 1, "state": "C", "power_w": 7400})
    c = await api.until(h, lambda c: c["power_w"] == 7400.0)
    assert c["status"] == "Charging" and c["contactor_closed"] is True
    await h.advance(360, step_s=10)
    c = await api.connector()
    # 7.4 kW for 6 minutes = 740 Wh (plus the ticks before and while switching power).
    assert 740 <= c["session_energy_wh"] <= 740 + 35
    assert c["energy_wh"] == pytest.approx(1000 + c["session_energy_wh"], abs=0.2)

    await api.ok("/api/sim/fault", {"connector": 1, "fault": "GroundFailure"})
    c = await api.until(h, lambda c: c["status"] == "Faulted")
    assert c["error_code"] == "GroundFailure"
    faults = (await api.status())["faults"]
    assert [(f["connector"], f["error_code"], f["source"]) for f in faults] == [
        (1, "GroundFailure", "input")
    ]
    assert faults[0]["cleared_at"] is None and faults[0]["at"]
    assert c["contactor_closed"] is False
    assert h.connector().hw.contactor.closed is False
    await h.advance(5)
    assert (await api.connector())["power_w"] == 0.0

    await api.ok("/api/sim/fault", {"connector": 1, "fault": None})
    c = await api.until(h, lambda c: c["status"] != "Faulted")
    assert c["error_code"] == "NoError"
    (fault,) = (await api.status())["faults"]
    assert fault["cleared_at"] is not None and fault["cleared_at"] > fault["at"]

    await api.ok("/api/sim/unplug", {"connector": 1})
    c = await api.until(h, lambda c: c["status"] == "Available" and c["transaction_key"] is None)
    assert c["vehicle_state"] == "A" and c["contactor_closed"] is False
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    status = await api.status()
    assert status["csms"]["state"] == "accepted"
    assert (status["csms"]["queued_messages"], status["csms"]["storage"]) == (0, "ok")

    txs = await api.get("/api/transactions")
    assert len(txs) == 1
    tx = txs[0]
    assert tx["transaction_id"] == 1
    assert tx["connector"] == 1
    assert tx["id_tag"] == CARD
    assert tx["started_at"] and tx["stopped_at"]
    assert tx["stop_reason"] is not None
    assert tx["meter_start_wh"] == 1000
    assert tx["meter_stop_wh"] == stop.payload["meterStop"]
    assert tx["energy_wh"] == tx["meter_stop_wh"] - tx["meter_start_wh"]
    assert 740 <= tx["energy_wh"] <= 740 + 40
    assert isinstance(tx["transaction_key"], int)


async def test_open_transaction_listed_with_energy_so_far(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    await api.ok("/api/sim/plug", {})  # connector defaults to 1
    await api.ok("/api/sim/card", {"uid": CARD})
    await api.until(h, lambda c: c["contactor_closed"])
    await h.advance(120, step_s=10)
    txs = await api.get("/api/transactions")
    assert len(txs) == 1
    assert txs[0]["stopped_at"] is None and txs[0]["meter_stop_wh"] is None
    assert txs[0]["energy_wh"] >= 300  # 11 kW for 2 minutes = 366 Wh, as last persisted


BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("not JSON", "/api/sim/plug", {"data": b"{connector: 1", "headers": {"Content-Type": "x"}}),
    ("empty body", "/api/sim/plug", {"data": b""}),
    ("body a list", "/api/sim/plug", {"json": [1]}),
    ("body a string", "/api/sim/unplug", {"json": "connector 1"}),
    ("body null", "/api/sim/vehicle", {"json": None, "data": b"null"}),
    ("unknown connector", "/api/sim/plug", {"json": {"connector": 7}}),
    ("connector 0", "/api/sim/unplug", {"json": {"connector": 0}}),
    ("connector a string", "/api/sim/plug", {"json": {"connector": "1"}}),
    ("connector a bool", "/api/sim/plug", {"json": {"connector": True}}),
    ("connector a float", "/api/sim/plug", {"json": {"connector": 1.0}}),
    ("bad state X", "/api/sim/vehicle", {"json": {"connector": 1, "state": "X"}}),
    ("state missing", "/api/sim/vehicle", {"json": {"connector": 1}}),
    ("state a number", "/api/sim/vehicle", {"json": {"connector": 1, "state": 3}}),
    ("state lower case", "/api/sim/vehicle", {"json": {"connector": 1, "state": "c"}}),
    ("power_w a string", "/api/sim/vehicle", {"json": {"state": "C", "power_w": "7k"}}),
    ("power_w negative", "/api/sim/vehicle", {"json": {"state": "C", "power_w": -1}}),
    ("power_w a bool", "/api/sim/vehicle", {"json": {"state": "C", "power_w": True}}),
    ("bad uid xyz", "/api/sim/card", {"json": {"uid": "xyz"}}),
    ("uid too short", "/api/sim/card", {"json": {"uid": "04A1B2"}}),
    ("uid a number", "/api/sim/card", {"json": {"uid": 4711}}),
    ("uid missing", "/api/sim/card", {"json": {}}),
    ("unknown fault", "/api/sim/fault", {"json": {"connector": 1, "fault": "Smoke"}}),
    ("fault NoError", "/api/sim/fault", {"json": {"connector": 1, "fault": "NoError"}}),
    ("fault unknown connector", "/api/sim/fault", {"json": {"connector": 9, "fault": None}}),
]


async def test_bad_requests(charger: Any, csms: DevCsms, http: aiohttp.ClientSession) -> None:
    h, api = await start(charger, csms, http)
    for name, path, kwargs in BAD_REQUESTS:
        if "data" in kwargs:
            kwargs = {k: v for k, v in kwargs.items() if k != "json"}
        async with http.post(api.base + path, **kwargs) as resp:
            assert resp.status == 400, (name, resp.status, await resp.text())
            payload = await resp.json()
            assert isinstance(payload["error"], str) and payload["error"], name

    # Nothing happened to the charger, and the server still answers.
    c = await api.connector()
    assert c["status"] == "Available" and c["vehicle_state"] == "A"
    assert c["error_code"] == "NoError"
    await api.ok("/api/sim/plug", {"connector": 1})
    await api.until(h, lambda c: c["status"] == "Preparing")


async def test_error_messages_are_helpful(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    status, payload = await api.post("/api/sim/plug", {"connector": 5})
    assert status == 400 and "connector 5" in payload["error"]
    status, payload = await api.post("/api/sim/vehicle", {"connector": 1, "state": "X"})
    assert status == 400 and "A B C D E F" in payload["error"]
    status, payload = await api.post("/api/sim/fault", {"connector": 1, "fault": "Smoke"})
    assert status == 400 and "GroundFailure" in payload["error"]


async def test_huge_body_refused_and_server_keeps_working(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    body = {"connector": 1, "padding": "x" * 5000}
    for _ in range(3):
        async with http.post(api.base + "/api/sim/plug", json=body) as resp:
            assert resp.status in (400, 413), (resp.status, await resp.text())
    async with http.post(api.base + "/api/sim/card", data=b"0" * 100_000) as resp:
        assert resp.status in (400, 413)
    assert (await api.connector())["vehicle_state"] == "A"  # the plug did not happen
    await api.ok("/api/sim/plug", {"connector": 1})
    await api.until(h, lambda c: c["status"] == "Preparing")


async def test_huge_body_gives_413(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    body = {"connector": 1, "padding": "x" * 5000}
    async with http.post(api.base + "/api/sim/plug", json=body) as resp:
        assert resp.status == 413, (resp.status, await resp.text())


async def test_body_just_under_the_limit_is_accepted(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    body = {"connector": 1, "padding": "x" * 3000}
    await api.ok("/api/sim/plug", body)
    await api.until(h, lambda c: c["status"] == "Preparing")


@pytest.mark.parametrize("fault", [["GroundFailure"], {"code": "GroundFailure"}])
async def test_fault_of_wrong_type_gives_400(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession, fault: Any
) -> None:
    h, api = await start(charger, csms, http)
    status, payload = await api.post("/api/sim/fault", {"connector": 1, "fault": fault})
    assert status == 400, (status, payload)


async def test_unknown_route_and_method(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    async with http.get(api.base + "/api/nope") as resp:
        assert resp.status == 404
    async with http.get(api.base + "/api/sim/plug") as resp:
        assert resp.status == 405
    async with http.post(api.base + "/api/status", json={}) as resp:
        assert resp.status == 405
    assert (await api.status())["station_id"] == STATION_ID


async def test_sim_endpoints_404_without_simulated_hardware(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    """README: simulation control answers 404 when the device is not simulated."""
    h, api = await start(charger, csms, http)
    h.app.shared.pop("sim.reader")
    status, payload = await api.post("/api/sim/card", {"uid": CARD})
    assert status == 404, payload
    assert "reader" in payload["error"]

    h.app.shared.pop("sim.rig.1")
    for path, body in (
        ("/api/sim/plug", {"connector": 1}),
        ("/api/sim/unplug", {"connector": 1}),
        ("/api/sim/vehicle", {"connector": 1, "state": "C"}),
        ("/api/sim/fault", {"connector": 1, "fault": "GroundFailure"}),
    ):
        status, payload = await api.post(path, body)
        assert status == 404, (path, payload)
        assert "no simulated vehicle" in payload["error"]
    # Unknown connectors stay a 400, and the status endpoint keeps working.
    status, _ = await api.post("/api/sim/plug", {"connector": 3})
    assert status == 400
    assert (await api.connector())["status"] == "Available"


async def test_standalone_status(charger: Any, http: aiohttp.ClientSession) -> None:
    h = await charger(None)
    api = Client(http, f"http://127.0.0.1:{h.app.api.port}")
    status = await api.status()
    assert status["csms"] == {
        "state": "standalone",
        "queued_messages": 0,
        "storage": "ok",
        "last_message_at": None,  # no CSMS, no messages
        "last_message_age_s": None,
    }


# --------------------------------------------------------------------------- status page


async def test_status_page_and_assets_served(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    for path, ctype, marker in (
        ("/", "text/html", b'<script src="/app.js"'),
        ("/app.js", "text/javascript", b"/api/status"),
        ("/style.css", "text/css", b"#connectors"),
    ):
        async with http.get(api.base + path) as resp:
            assert resp.status == 200, path
            assert resp.content_type == ctype
            body = await resp.read()
            assert marker in body
            # No inline script may run, nothing may load from elsewhere.
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            etag = resp.headers["ETag"]
        async with http.get(api.base + path, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
    # What the page is built from is in the package (pyproject package-data "web/*").
    assert b"innerHTML" not in (ROOT / "controller" / "web" / "app.js").read_bytes()
    async with http.get(api.base + "/api/status") as resp:
        assert resp.headers["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------- CSV export


async def _session(h: Any, api: Client, csms: DevCsms, seconds: float) -> None:
    """One complete session of ``seconds`` on connector 1 (11 kW simulated car)."""
    before = len(h.frames("StopTransaction"))
    await api.ok("/api/sim/plug", {"connector": 1})
    await api.ok("/api/sim/card", {"uid": CARD})
    await api.until(h, lambda c: c["contactor_closed"])
    await h.advance(seconds, step_s=10)
    await api.ok("/api/sim/unplug", {"connector": 1})
    await api.until(h, lambda c: c["transaction_key"] is None and c["status"] == "Available")
    await h.settle(lambda: len(h.frames("StopTransaction")) > before)


async def _csv(http: aiohttp.ClientSession, url: str) -> tuple[int, list[list[str]], Any]:
    async with http.get(url) as resp:
        text = await resp.text()
        if resp.status != 200:
            return resp.status, [], await resp.json(content_type=None)
        assert resp.content_type == "text/csv"
        return resp.status, list(csv.reader(io.StringIO(text))), resp.headers


async def test_sessions_csv_with_date_range(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    # The manual clock starts on 2026-01-01 12:00 UTC.
    await _session(h, api, csms, 120)
    await h.advance(2 * 86400, step_s=3600)  # to 2026-01-03
    await _session(h, api, csms, 60)

    status, rows, headers = await _csv(http, api.base + "/api/sessions.csv")
    assert status == 200
    assert headers["Content-Disposition"] == (
        f'attachment; filename="evsed-sessions-{STATION_ID}.csv"'
    )
    assert tuple(rows[0]) == CSV_COLUMNS
    first, second = (dict(zip(CSV_COLUMNS, r, strict=True)) for r in rows[1:])
    assert first["started_at"].startswith("2026-01-01T12:")
    assert second["started_at"].startswith("2026-01-03T12:")
    assert (first["connector"], first["id_tag"], first["transaction_id"]) == ("1", CARD, "1")
    assert first["stop_reason"] == "EVDisconnected"
    # 11 kW for 2 minutes ~ 0.367 kWh; the meter columns add up.
    assert 0.35 <= float(first["energy_kwh"]) <= 0.40
    wh = int(first["meter_stop_wh"]) - int(first["meter_start_wh"])
    assert float(first["energy_kwh"]) == pytest.approx(wh / 1000, abs=0.0005)
    assert float(second["energy_kwh"]) < float(first["energy_kwh"])

    async def started(query: str) -> list[str]:
        status, rows, _ = await _csv(http, api.base + "/api/sessions.csv" + query)
        assert status == 200, query
        return [r[0][:10] for r in rows[1:]]

    assert await started("?from=2026-01-01&to=2026-01-01") == ["2026-01-01"]
    assert await started("?from=2026-01-02") == ["2026-01-03"]
    assert await started("?to=2026-01-02") == ["2026-01-01"]
    assert await started("?from=2026-01-01&to=2026-01-03") == ["2026-01-01", "2026-01-03"]
    assert await started("?from=2026-01-04") == []
    assert await started("?from=&to=") == ["2026-01-01", "2026-01-03"]
    _, _, headers = await _csv(http, api.base + "/api/sessions.csv?from=2026-01-02")
    assert "-2026-01-02-now.csv" in headers["Content-Disposition"]

    for query in (
        "?from=2026-13-01",
        "?from=2026-02-30",
        "?to=yesterday",
        "?from=2026-1-1",
        "?from=2026-01-01T00:00",
        "?to=20260101",
        "?from=2026-01-03&to=2026-01-01",
        "?from=" + "9" * 5000,
    ):
        status, _, payload = await _csv(http, api.base + "/api/sessions.csv" + query)
        assert status == 400, query
        assert "from" in payload["error"] or "to" in payload["error"], query


def test_sessions_between_orders_and_filters() -> None:
    from controller.core.records import TxRecord

    def tx(key: int, started: str) -> TxRecord:
        blank: dict[str, Any] = {f.name: None for f in dataclasses.fields(TxRecord)}
        return TxRecord(**{**blank, "tx_key": key, "started_at": started})

    rows = [
        tx(3, "2026-03-01T00:30:00+01:00"),  # 2026-02-28 in UTC
        tx(1, "2026-02-28T23:59:59Z"),
        tx(2, "garbage"),
    ]
    assert [t.tx_key for t in sessions_between(rows, None, None)] == [1, 2, 3]
    day = date(2026, 2, 28)
    assert [t.tx_key for t in sessions_between(rows, day, day)] == [1, 3]
    assert sessions_between(rows, date(2026, 3, 1), None) == []


# --------------------------------------------------------------------------- control


async def test_control_stop_availability_unlock(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    status, payload = await api.post("/api/connectors/1/stop")
    assert status == 409 and "no session" in payload["error"]

    await api.ok("/api/sim/plug", {"connector": 1})
    await api.ok("/api/sim/card", {"uid": CARD})
    c = await api.until(h, lambda c: c["contactor_closed"])
    # Stop with no body at all (the page sends {}).
    async with http.post(api.base + "/api/connectors/1/stop") as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"ok": True, "transaction_key": c["transaction_key"]}
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "Local"
    c = await api.until(h, lambda c: c["transaction_key"] is None)
    assert c["contactor_closed"] is False

    # Availability: Inoperative while idle is Accepted at once, and persists.
    await api.ok("/api/sim/unplug", {"connector": 1})
    await api.until(h, lambda c: c["status"] == "Available")
    result = await api.ok("/api/connectors/1/availability", {"type": "Inoperative"})
    assert result["status"] == "Accepted"
    await api.until(h, lambda c: c["status"] == "Unavailable")
    assert h.app.store.get_setting("availability.1") == "Inoperative"
    await csms.wait_for(
        lambda f: f.action == "StatusNotification" and f.payload["status"] == "Unavailable"
    )
    result = await api.ok("/api/connectors/1/availability", {"type": "Operative"})
    assert result["status"] == "Accepted"
    await api.until(h, lambda c: c["status"] == "Available")

    # During a session: Scheduled; unlock stops the session (UnlockCommand) and unlocks.
    await api.ok("/api/sim/plug", {"connector": 1})
    await api.ok("/api/sim/card", {"uid": CARD})
    await api.until(h, lambda c: c["contactor_closed"])
    result = await api.ok("/api/connectors/1/availability", {"type": "Inoperative"})
    assert result["status"] == "Scheduled"
    assert (await api.connector())["contactor_closed"] is True  # the session goes on
    result = await api.ok("/api/connectors/1/unlock", {})
    assert result["status"] == "Unlocked"
    stop = await csms.wait_for(
        lambda f: f.action == "StopTransaction" and f.payload["reason"] == "UnlockCommand"
    )
    await api.until(h, lambda c: c["transaction_key"] is None)

    for path, body, code in (
        ("/api/connectors/1/availability", {"type": "operative"}, 400),
        ("/api/connectors/1/availability", {}, 400),
        ("/api/connectors/1/availability", {"type": None}, 400),
        ("/api/connectors/2/availability", {"type": "Operative"}, 400),
        ("/api/connectors/0/availability", {"type": "Operative"}, 400),
        ("/api/connectors/0/stop", {}, 400),
        ("/api/connectors/9/unlock", {}, 400),
        ("/api/connectors/1/stop", [1], 400),
        ("/api/connectors/x/stop", {}, 404),
        ("/api/connectors/-1/stop", {}, 404),
        ("/api/connectors/1/reboot", {}, 404),
    ):
        status, payload = await api.post(path, body)
        assert status == code, (path, body, status, payload)
    async with http.post(api.base + "/api/connectors/1/availability", data=b"{no") as resp:
        assert resp.status == 400
    async with http.get(api.base + "/api/connectors/1/stop") as resp:
        assert resp.status == 405
    big = {"type": "Operative", "padding": "x" * 5000}
    status, _ = await api.post("/api/connectors/1/availability", big)
    assert status == 413


async def test_unlock_without_a_lock_is_not_supported(
    tmp_path: Path, csms: DevCsms, http: aiohttp.ClientSession, secured: Any
) -> None:
    data = charger_config(tmp_path, csms.url)
    del data["connectors"][0]["lock"]
    h, api = await secured(csms, data=data, token=None)
    assert (await api.ok("/api/connectors/1/unlock", {}))["status"] == "NotSupported"


# --------------------------------------------------------------------------- simulation routes


async def test_sim_routes_absent_without_simulated_hardware(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    """Without any "sim" driver in the configuration /api/sim/* is not routed at all."""
    h, _ = await start(charger, csms, http)
    cfg = h.app.config
    real = dataclasses.replace(
        cfg,
        reader=dataclasses.replace(cfg.reader, driver="pcsc"),
        connectors=tuple(
            dataclasses.replace(
                cc,
                devices={
                    role: dataclasses.replace(dev, driver="gpio")
                    for role, dev in cc.devices.items()
                },
            )
            for cc in cfg.connectors
        ),
    )
    assert not real.uses_simulation
    h.app.config = real
    api = Api(h.app)
    await api.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{api.port}"
        for action in ("plug", "unplug", "card", "vehicle", "fault"):
            async with http.post(f"{base}/api/sim/{action}", json={"connector": 1}) as resp:
                assert resp.status == 404, action
            async with http.get(f"{base}/api/sim/{action}") as resp:
                assert resp.status == 404, action  # not even a 405: no such route
        async with http.get(base + "/api/status") as resp:
            assert (await resp.json())["simulated"] is False
        assert h.connector().state.vehicle.value == "A"  # nothing was plugged
    finally:
        await api.stop()
        h.app.config = cfg


# --------------------------------------------------------------------------- authentication

TOKEN = "s3cret-Token_for-tests-0123456789"


@pytest.fixture
async def secured(tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    """Factory: a charger whose [api] has ``token`` (and ``extra`` keys) -> (Harness, Client)."""
    apps: list[App] = []

    async def factory(
        csms: DevCsms | None,
        *,
        token: str | None = TOKEN,
        data: dict[str, Any] | None = None,
        **api_keys: Any,
    ) -> tuple[Harness, Client]:
        data = data or charger_config(tmp_path, csms.url if csms else None)
        if token is not None:
            data["api"]["token"] = token
        data["api"].update(api_keys)
        clock = ManualClock()
        app = App(parse(data), clock=clock, boot_id="boot-1")
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        if csms is not None:
            await h.settle(
                lambda: app.port is not None and app.port.connection_state() == "accepted"
            )
        return h, Client(http, f"http://127.0.0.1:{app.api.port}")

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_configured_loopback_reads_but_needs_token_to_control(
    csms: DevCsms, http: aiohttp.ClientSession, secured: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h, api = await secured(csms)
    base = api.base
    # Read-only status is open on loopback.
    assert (await api.status())["station_id"] == STATION_ID
    async with http.get(base + "/api/auth") as resp:
        assert await resp.json() == {
            "token_configured": True,
            "local": True,
            "authenticated": False,
            "bad_credentials": False,
            "read": True,
            "control": False,
        }
    # Control (and simulation) needs the token, even from 127.0.0.1.
    for path, body in (
        ("/api/connectors/1/stop", {}),
        ("/api/connectors/1/availability", {"type": "Inoperative"}),
        ("/api/connectors/1/unlock", {}),
        ("/api/sim/plug", {"connector": 1}),
    ):
        async with http.post(base + path, json=body) as resp:
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in (await resp.json())["error"]
    assert h.connector().state.vehicle.value == "A"
    assert h.connector().state.operative is True

    # Wrong tokens are refused everywhere, also where no token would be needed.
    wrong = [
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        bearer(""),
        bearer(TOKEN.upper()),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        bearer("ä" * 40),
        bearer("x" * 6000),
    ]
    for headers in wrong:
        async with http.get(base + "/api/status", headers=headers) as resp:
            assert resp.status == 401, headers["Authorization"][:20]
            assert (await resp.json())["error"] == "wrong token"
        async with http.post(base + "/api/sim/plug", json={}, headers=headers) as resp:
            assert resp.status == 401
        async with http.get(base + "/api/auth", headers=headers) as resp:
            answer = await resp.json()
            assert answer["bad_credentials"] is True and answer["read"] is False

    # The right one works, scheme case-insensitively.
    for headers in (bearer(TOKEN), {"Authorization": f"bearer {TOKEN}"}):
        async with http.post(base + "/api/sim/plug", json={}, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    await api.until(h, lambda c: c["status"] == "Preparing")
    async with http.get(base + "/api/auth", headers=bearer(TOKEN)) as resp:
        answer = await resp.json()
        assert answer["authenticated"] is True and answer["control"] is True

    # Refusals are logged (rate-limited), the token never.
    assert "refused POST /api/connectors/1/stop from 127.0.0.1" in caplog.text
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text
    assert TOKEN not in repr(h.app.config) and TOKEN not in repr(h.app.api.policy)


async def test_non_loopback_peer_needs_the_token_for_everything(
    csms: DevCsms, http: aiohttp.ClientSession, secured: Any
) -> None:
    """A real second client address: the server trusts only 127.0.0.1/32 as local here and
    the client connects from 127.0.0.2, so the policy sees a genuinely different TCP peer
    (sending to another machine's address is not possible in this sandbox)."""
    h, _ = await secured(csms)
    api = Api(h.app, policy=AccessPolicy(TOKEN, local_networks=[ip_network("127.0.0.1/32")]))
    await api.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{api.port}"
    remote = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)),
        timeout=aiohttp.ClientTimeout(total=10),
    )
    try:
        for path in ("/api/status", "/api/transactions", "/api/sessions.csv", "/api/nope"):
            async with remote.get(base + path) as resp:
                assert resp.status == 401, path
        async with remote.post(base + "/api/sim/plug", json={}) as resp:
            assert resp.status == 401
        async with remote.get(base + "/api/auth") as resp:
            answer = await resp.json()
            assert answer["local"] is False and answer["read"] is False
        # The page itself carries no data and loads (it shows the login form).
        async with remote.get(base + "/") as resp:
            assert resp.status == 200
        # Forwarding headers do not make a remote client local.
        spoof = {
            "X-Forwarded-For": "127.0.0.1",
            "X-Real-IP": "127.0.0.1",
            "Forwarded": "for=127.0.0.1",
        }
        async with remote.get(base + "/api/status", headers=spoof) as resp:
            assert resp.status == 401
        async with remote.get(base + "/api/status", headers=bearer(TOKEN)) as resp:
            assert resp.status == 200
        async with remote.get(base + "/api/sessions.csv", headers=bearer(TOKEN)) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
        async with remote.post(base + "/api/sim/plug", json={}, headers=bearer(TOKEN)) as resp:
            assert resp.status == 200
        # From 127.0.0.1 the same server treats the client as local.
        async with http.get(base + "/api/status") as resp:
            assert resp.status == 200
    finally:
        await remote.close()
        await api.stop()


async def test_loopback_without_token_is_local_admin(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    async with http.get(api.base + "/api/auth") as resp:
        answer = await resp.json()
    assert answer["token_configured"] is False
    assert answer["local"] and answer["read"] and answer["control"]
    # Any Authorization header is wrong when no token exists.
    async with http.get(api.base + "/api/status", headers=bearer(TOKEN)) as resp:
        assert resp.status == 401


async def test_cross_site_and_rebound_requests_refused(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    """Loopback without a token is admin: a web page on another site must not be able to
    use that (a form POST to 127.0.0.1, or DNS rebinding its own name to 127.0.0.1)."""
    h, api = await start(charger, csms, http)
    port = h.app.api.port
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", "file://"):
        async with http.post(
            api.base + "/api/sim/plug", json={"connector": 1}, headers={"Origin": origin}
        ) as resp:
            assert resp.status == 403, origin
    assert h.connector().state.vehicle.value == "A"
    # Rebinding: the browser sends the attacker's name as Host (and as Origin).
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    async with http.post(api.base + "/api/sim/plug", json={}, headers=rebound) as resp:
        assert resp.status == 401
    async with http.get(api.base + "/api/status", headers={"Host": "evil.example"}) as resp:
        assert resp.status == 401
    # This page itself (same origin) may post.
    same = {"Origin": f"http://127.0.0.1:{port}"}
    async with http.post(api.base + "/api/sim/plug", json={}, headers=same) as resp:
        assert resp.status == 200
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1"):
        async with http.get(api.base + "/api/status", headers={"Host": host}) as resp:
            assert resp.status == 200, host


async def test_trust_loopback_false_needs_token_on_loopback(
    csms: DevCsms, http: aiohttp.ClientSession, secured: Any
) -> None:
    h, api = await secured(csms, trust_loopback=False)
    async with http.get(api.base + "/api/status") as resp:
        assert resp.status == 401
    async with http.get(api.base + "/api/status", headers=bearer(TOKEN)) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("peer", "host", "local"),
    [
        ("127.0.0.1", "127.0.0.1:8080", True),
        ("127.0.0.2", "127.0.0.1:8080", True),
        ("127.0.0.1", "localhost:8080", True),
        ("127.0.0.1", "LOCALHOST", True),
        ("::1", "[::1]:8080", True),
        ("::ffff:127.0.0.1", "127.0.0.1:8080", True),
        ("192.168.1.20", "192.168.1.2:8080", False),
        ("10.0.0.5", "127.0.0.1:8080", False),
        ("::ffff:192.168.1.20", "127.0.0.1", False),
        ("fe80::1%eth0", "[::1]:8080", False),
        ("127.0.0.1", "evil.example:8080", False),
        ("127.0.0.1", "raspberrypi.local", False),
        ("127.0.0.1", "192.168.1.2:8080", False),
        ("127.0.0.1", "", False),
        ("127.0.0.1", None, False),
        (None, "127.0.0.1", False),
        ("not-an-ip", "127.0.0.1", False),
    ],
)
def test_policy_local_clients(peer: str | None, host: str | None, local: bool) -> None:
    policy = AccessPolicy(None)
    assert policy.is_local(peer, host) is local
    access = policy.evaluate(peer, host, None)
    assert (access.read, access.control) == (local, local)
    assert AccessPolicy(None, trust_loopback=False).is_local(peer, host) is False
    tokened = AccessPolicy(TOKEN).evaluate(peer, host, None)
    assert (tokened.read, tokened.control) == (local, False)
    authed = AccessPolicy(TOKEN).evaluate(peer, host, f"Bearer {TOKEN}")
    assert (authed.read, authed.control, authed.authenticated) == (True, True, True)


def test_policy_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("controller.web.api.hmac.compare_digest", spy)
    policy = AccessPolicy(TOKEN)
    assert policy.check_token(f"Bearer {TOKEN}") is True
    assert policy.check_token("Bearer nope") is False
    assert policy.check_token(None) is None
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"nope", TOKEN.encode())]


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("https://charger.lan:8443", "charger.lan:8443", True),
        ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
        ("http://evil.example", "127.0.0.1:8080", False),
        ("null", "127.0.0.1:8080", False),
        ("ftp://127.0.0.1:8080", "127.0.0.1:8080", False),
    ],
)
def test_same_origin(origin: str | None, host: str, ok: bool) -> None:
    assert same_origin(origin, host) is ok


# --------------------------------------------------------------------------- [api] config


@pytest.mark.parametrize(
    ("api", "fragment"),
    [
        ({"host": "0.0.0.0"}, "required when api.host is 0.0.0.0"),
        ({"host": "::"}, "required when api.host is ::"),
        ({"host": "192.168.1.2"}, "reachable from the network"),
        ({"token": "short"}, "16-256 characters (it is 5)"),
        ({"token": "x" * 257}, "16-256 characters"),
        ({"token": 1234567890123456789}, "string"),
        ({"token": "with space in the middle"}, "printable ASCII"),
        ({"token": "äöü-not-ascii-0123456789"}, "printable ASCII"),
        ({"trust_loopback": "no"}, "true or false"),
        ({"trust_loopback": False}, "required when api.trust_loopback = false"),
    ],
)
def test_api_config_errors(tmp_path: Path, api: dict[str, Any], fragment: str) -> None:
    data = charger_config(tmp_path, None)
    data["api"].update(api)
    with pytest.raises(ConfigError) as info:
        parse(data)
    key = "api.trust_loopback" if api.get("trust_loopback") == "no" else "api.token"
    assert info.value.key == key
    assert fragment in str(info.value)
    token = api.get("token")
    if isinstance(token, str):
        assert token not in str(info.value)  # errors never echo the secret


def test_api_config_accepted(tmp_path: Path) -> None:
    data = charger_config(tmp_path, None)
    config = parse(data)
    assert config.api_token is None and config.api_trust_loopback is True
    data["api"]["host"] = "127.0.0.2"  # loopback: no token needed
    assert parse(data).api_token is None
    data["api"].update(host="0.0.0.0", token=TOKEN, trust_loopback=False)
    config = parse(data)
    assert (config.api_token, config.api_trust_loopback) == (TOKEN, False)
    assert TOKEN not in repr(config)


# --------------------------------------------------------------------------- CLI with a token


async def test_cli_sends_the_configured_token(
    tmp_path: Path,
    csms: DevCsms,
    secured: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, api = await secured(csms)
    monkeypatch.delenv("EVSED_API_TOKEN", raising=False)
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[station]\nid = "{STATION_ID}"\n[api]\nport = {h.app.api.port}\ntoken = "{TOKEN}"\n'
        '[reader]\ndriver = "sim"\n[[connectors]]\ncontactor = { driver = "sim" }\n'
        'meter = { driver = "sim" }\nvehicle = { driver = "sim" }\n',
        encoding="utf-8",
    )
    assert await asyncio.to_thread(main, ["sim", "plug", "1", "-c", str(config)]) == 0
    await api.until(h, lambda c: c["status"] == "Preparing")
    assert await asyncio.to_thread(main, ["status", "-c", str(config)]) == 0
    assert "Preparing" in capsys.readouterr().out

    # Without the token: a clear refusal naming the two ways to give it.
    base = f"http://127.0.0.1:{h.app.api.port}"
    with pytest.raises(SystemExit) as info:
        await asyncio.to_thread(main, ["sim", "unplug", "1", "--api", base])
    assert "EVSED_API_TOKEN" in str(info.value) and TOKEN not in str(info.value)
    monkeypatch.setenv("EVSED_API_TOKEN", TOKEN)
    assert await asyncio.to_thread(main, ["sim", "unplug", "1", "--api", base]) == 0
    await api.until(h, lambda c: c["status"] == "Available")
