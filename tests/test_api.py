"""Local HTTP API (README "Local API"): status shape, sim control, transactions, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from controller.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID

CONNECTOR_FIELDS = {
    "connector",
    "status",
    "error_code",
    "vehicle_state",
    "contactor_closed",
    "offered_current_a",
    "transaction_id",
    "transaction_key",
    "id_tag",
    "energy_wh",
    "session_energy_wh",
    "power_w",
}
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
    assert set(status) == {"station_id", "connectors", "csms", "clock"}
    assert set(status["clock"]) == {"utc", "trusted", "trust_source"}
    assert status["station_id"] == STATION_ID
    assert status["csms"]["state"] == "accepted"
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
    assert c["contactor_closed"] is False
    assert h.connector().hw.contactor.closed is False
    await h.advance(5)
    assert (await api.connector())["power_w"] == 0.0

    await api.ok("/api/sim/fault", {"connector": 1, "fault": None})
    c = await api.until(h, lambda c: c["status"] != "Faulted")
    assert c["error_code"] == "NoError"

    await api.ok("/api/sim/unplug", {"connector": 1})
    c = await api.until(h, lambda c: c["status"] == "Available" and c["transaction_key"] is None)
    assert c["vehicle_state"] == "A" and c["contactor_closed"] is False
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    status = await api.status()
    assert status["csms"] == {"state": "accepted", "queued_messages": 0, "storage": "ok"}

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
    assert status["csms"] == {"state": "standalone", "queued_messages": 0, "storage": "ok"}
