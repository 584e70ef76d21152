"""Local API for load management (issue 12 item 7): POST/GET/DELETE /api/limit with its
fail-safe on the injected clock, GET /api/schedule/N and `evsed schedule`, GET
/api/energy/daily, the session history; bad input is a 400 naming the field and changes
nothing; the write endpoints follow the API's access rules."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.cli import main
from controller.config import ConfigError, parse
from controller.dev.devcsms import DevCsms
from tests.conftest import charger_config
from tests.ocpp16.test_e2e_csms_requests import req, start_session
from tests.ocpp16.test_e2e_smart_charging import profile, set_profile
from tests.web.test_api import TOKEN, http, secured, start

__all__ = ["http", "secured"]  # fixtures shared with test_api.py


def offered(h: Any, connector_id: int = 1) -> float:
    return float(h.rig(connector_id).vehicle.max_current_a)


async def test_local_limit_through_the_api(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http, site={"fallback_current_a": 7})
    await start_session(h, csms)
    result = await api.ok("/api/limit", {"connector": 1, "limit_a": 10.5, "timeout_s": 60})
    assert result == {
        "ok": True,
        "connector": 1,
        "limit_a": 10.5,
        "timeout_s": 60.0,
        "fallback_a": 7.0,
    }
    await h.settle(lambda: offered(h) == 10.5)
    c = await api.connector()
    assert (c["limit_a"], c["limit_source"], c["offered_current_a"]) == (10.5, "LocalLimit", 10.5)
    limits = await api.get("/api/limit")
    assert limits["fallback_current_a"] == 7.0
    (entry,) = limits["limits"]
    assert entry["connector"] == 1 and entry["fallback"] is False
    assert entry["expires_in_s"] == 60.0

    # Not refreshed: the fallback current at the timeout.
    await h.advance(61)
    await h.settle(lambda: offered(h) == 7.0)
    c = await api.connector()
    assert (c["limit_a"], c["limit_source"]) == (7.0, "LocalLimitFallback")
    # Refreshed again: the limit is back.
    await api.ok("/api/limit", {"connector": 1, "limit_a": 12})
    await h.settle(lambda: offered(h) == 12.0)
    # Cleared (query or body), the hardware maximum.
    async with http.delete(api.base + "/api/limit?connector=1") as resp:
        assert resp.status == 200 and (await resp.json())["cleared"] is True
    await h.settle(lambda: offered(h) == 16.0)
    assert (await api.connector())["limit_source"] == "Hardware"
    async with http.delete(api.base + "/api/limit", json={"connector": 1}) as resp:
        assert resp.status == 200 and (await resp.json())["cleared"] is False

    # The history of the running session: power against the offered power.
    await h.advance(30)
    history = await api.get("/api/connectors/1/history")
    session = history["session"]
    assert session["transaction_key"] == h.connector().tx_key
    points = session["points"]
    assert len(points) >= 3
    assert {p["offered_w"] for p in points} >= {16 * 3 * 230.0, 7 * 3 * 230.0}
    assert all(p["power_w"] is None or p["power_w"] <= p["offered_w"] for p in points)
    assert (await api.get("/api/connectors/1/history"))["connector"] == 1


BAD_LIMITS: list[tuple[dict[str, Any] | str, str]] = [
    ({"connector": 1, "limit_a": "10"}, "limit_a"),
    ({"connector": 1, "limit_a": -1}, "limit_a"),
    ({"connector": 1, "limit_a": 1e9}, "limit_a"),
    ({"connector": 1}, "limit_a"),
    ({"connector": 1, "limit_a": True}, "limit_a"),
    ({"connector": 9, "limit_a": 10}, "connector"),
    ({"connector": "1", "limit_a": 10}, "connector"),
    ({"connector": -1, "limit_a": 10}, "connector"),
    ({"connector": 1, "limit_a": 10, "timeout_s": 0}, "timeout_s"),
    ({"connector": 1, "limit_a": 10, "timeout_s": 10**7}, "timeout_s"),
    ({"connector": 1, "limit_a": 10, "timeout_s": None}, "timeout_s"),
    ({"connector": 1, "limit_a": 10, "timout_s": 5}, "timout_s"),
    ([1, 2], "JSON object"),
    ("not json", "JSON object"),
]


async def test_bad_limit_input_is_refused_and_changes_nothing(
    charger: Any, csms: DevCsms, http: aiohttp.ClientSession
) -> None:
    h, api = await start(charger, csms, http)
    await start_session(h, csms)
    for body, field in BAD_LIMITS:
        kwargs: dict[str, Any] = (
            {"data": body, "headers": {"Content-Type": "application/json"}}
            if isinstance(body, str)
            else {"json": body}
        )
        async with http.post(api.base + "/api/limit", **kwargs) as resp:
            payload = await resp.json()
            assert resp.status == 400, (body, payload)
            assert field in payload["error"], (body, payload)
    # NaN is not JSON a client may send; Python's json would: refused as well.
    async with http.post(
        api.base + "/api/limit",
        data='{"limit_a": NaN}',
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400 and "limit_a" in (await resp.json())["error"]
    async with http.delete(api.base + "/api/limit?connector=x") as resp:
        assert resp.status == 400 and "connector" in (await resp.json())["error"]
    assert (await api.get("/api/limit"))["limits"] == []
    assert offered(h) == 16.0
    assert (await api.connector())["limit_source"] == "Hardware"

    for path, field in (
        ("/api/schedule/1?duration=0", "duration"),
        ("/api/schedule/1?duration=abc", "duration"),
        ("/api/schedule/1?duration=999999999", "duration"),
        ("/api/schedule/1?unit=kW", "unit"),
        ("/api/connectors/7/history", "connector 7"),
    ):
        async with http.get(api.base + path) as resp:
            assert resp.status == 400, path
            assert field in (await resp.json())["error"], path
    async with http.get(api.base + "/api/schedule/5") as resp:
        assert resp.status == 404 and "connector 5" in (await resp.json())["error"]


async def test_limit_needs_control_rights(
    csms: DevCsms, secured: Any, http: aiohttp.ClientSession
) -> None:
    """With api.token set, a loopback client may read but not set or clear a limit; a
    cross-site POST is refused; with the token it works."""
    h, api = await secured(csms)
    body = {"limit_a": 10}
    async with http.post(api.base + "/api/limit", json=body) as resp:
        assert resp.status == 401
    async with http.delete(api.base + "/api/limit") as resp:
        assert resp.status == 401
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
    async with http.post(api.base + "/api/limit", json=body, headers=headers) as resp:
        assert resp.status == 403
    assert h.station.local_limits() == []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(api.base + "/api/limit", json=body, headers=headers) as resp:
        assert resp.status == 200
    assert [entry["connector"] for entry in h.station.local_limits()] == [0]
    async with http.get(api.base + "/api/limit") as resp:
        assert resp.status == 200  # reading is allowed on loopback


async def test_schedule_endpoint_and_cli(
    charger: Any,
    csms: DevCsms,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h, api = await start(charger, csms, http)
    start_at = h.clock.utc_now()
    body = profile(3, "TxDefaultProfile", [(0, 12), (3600, 8)], start=start_at)
    assert await set_profile(csms, 1, body) == "Accepted"
    data = await api.get("/api/schedule/1?duration=7200")
    assert data["connector"] == 1 and data["unit"] == "A" and data["duration_s"] == 7200
    assert data["periods"] == [
        {"start_s": 0.0, "limit": 12.0, "phases": 3},
        {"start_s": 3600.0, "limit": 8.0, "phases": 3},
    ]
    watts = await api.get("/api/schedule/1?duration=60&unit=W")
    assert watts["unit"] == "W" and watts["periods"][0]["limit"] == 12 * 3 * 230.0
    station = await api.get("/api/schedule/0")
    assert station["connector"] == 0 and station["duration_s"] == 86400
    # The same as the CSMS sees through GetCompositeSchedule.
    conf = await req(
        csms, "GetCompositeSchedule", {"connectorId": 1, "duration": 7200, "chargingRateUnit": "A"}
    )
    wire = conf["chargingSchedule"]["chargingSchedulePeriod"]
    assert [(p["startPeriod"], p["limit"]) for p in wire] == [(0, 12.0), (3600, 8.0)]

    base = f"http://127.0.0.1:{h.app.api.port}"
    code = await asyncio.to_thread(main, ["schedule", "1", "--duration", "7200", "--api", base])
    out = capsys.readouterr().out
    assert code == 0
    assert "composite schedule of connector 1" in out and "in A" in out
    first = start_at.strftime("%Y-%m-%d %H:%M:%S")
    second = (start_at + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    rows = [line.split() for line in out.splitlines()[2:]]
    assert rows == [
        [*first.split(), "+0:00:00", "12.0", "A", "3"],
        [*second.split(), "+1:00:00", "8.0", "A", "3"],
    ]
    code = await asyncio.to_thread(main, ["schedule", "0", "--json", "--api", base])
    assert code == 0 and json.loads(capsys.readouterr().out)["connector"] == 0
    with pytest.raises(SystemExit) as info:
        await asyncio.to_thread(main, ["schedule", "4", "--api", base])
    assert "unknown connector 4" in str(info.value)


async def test_energy_per_day(charger: Any, csms: DevCsms, http: aiohttp.ClientSession) -> None:
    h, api = await start(charger, csms, http)
    await start_session(h, csms)
    await h.advance(600)  # 10 minutes at 11 kW
    h.unplug()
    await h.settle(lambda: h.connector().tx_key is None)
    await h.settle(lambda: h.app.store.transactions(limit=1)[0].stopped_at is not None)
    data = await api.get("/api/energy/daily")
    assert data["unit"] == "Wh"
    days = data["days"]
    assert len(days) == 30
    assert days[-1]["date"] == h.clock.utc_now().date().isoformat()
    assert days[0]["date"] == (h.clock.utc_now().date() - timedelta(days=29)).isoformat()
    assert days[-1]["sessions"] == 1
    assert 1800 <= days[-1]["energy_wh"] <= 1900  # 11 kW x 10 min = 1833 Wh
    assert all(d["energy_wh"] == 0 and d["sessions"] == 0 for d in days[:-1])


@pytest.mark.parametrize(
    ("site", "key"),
    [
        ({"max_current_a": 4}, "site.max_current_a"),
        ({"max_current_a": [32, 32]}, "site.max_current_a"),
        ({"max_current_a": "32"}, "site.max_current_a"),
        ({"fallback_current_a": -1}, "site.fallback_current_a"),
        ({"fallback_current_a": 100}, "site.fallback_current_a"),
        ({"max_a": 32}, "site.max_a"),
    ],
)
def test_site_config_errors(tmp_path: Path, site: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(charger_config(tmp_path, None, site=site))
    assert info.value.key == key


def test_site_config_accepted(tmp_path: Path) -> None:
    data = charger_config(tmp_path, None, connectors=2, site={"max_current_a": [32, 32, 25]})
    data["connectors"][1]["phases"] = 1
    data["connectors"][1]["line"] = 3
    config = parse(data)
    assert config.site.max_current_a is not None
    assert [float(v) for v in config.site.max_current_a.values()] == [32.0, 32.0, 25.0]
    assert float(config.site.fallback_current_a) == 6.0  # the documented default
    assert config.connectors[1].line == 3
    data["connectors"][0]["line"] = 2  # a three-phase connector uses every line
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key == "connectors.1.line"
    assert parse(charger_config(tmp_path, None)).site.max_current_a is None
