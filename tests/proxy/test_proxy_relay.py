"""`evsed proxy` relaying a real evsed charger (OCPP 1.6) to two real dev CSMSs on 127.0.0.1:
the primary's answers reach the charger, the mirror gets every message with its own
transactionId, exactly once and in order, also after being down for the whole session and
across a proxy restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.dev.devcsms import DevCsms
from controller.proxy.status import StatusServer
from tests.conftest import STATION_ID
from tests.proxy.proxyrig import (
    Rig,
    accepted,
    backend,
    eventually,
    proxy_config,
    session,
    tx_frames,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def primary() -> AsyncIterator[DevCsms]:
    async with DevCsms(heartbeat_interval_s=3600) as server:
        server._last_transaction_id = 100  # the primary's ids: 101, 102, ...
        yield server


@pytest.fixture
async def mirror() -> AsyncIterator[DevCsms]:
    async with DevCsms(heartbeat_interval_s=3600) as server:
        server._last_transaction_id = 500  # the mirror's own: 501, 502, ...
        yield server


@pytest.fixture
async def rig(tmp_path: Path, primary: DevCsms, mirror: DevCsms) -> AsyncIterator[Rig]:
    config = proxy_config(
        tmp_path,
        [backend("billing", primary.url, "primary"), backend("watch", mirror.url, "mirror")],
    )
    r = Rig(config)
    await r.start()
    yield r
    await r.stop()


def mirror_tx(mirror: DevCsms) -> list[tuple[str, Any]]:
    return tx_frames(mirror)


async def test_session_reaches_both_backends_with_their_own_transaction_ids(
    rig: Rig, primary: DevCsms, mirror: DevCsms, charger: Any
) -> None:
    """The charger boots through the proxy (the primary's BootNotification.conf), runs a
    session under the primary's transactionId 101, and the mirror receives the same messages
    in the same order under its own id 501 (Start, MeterValues, Stop)."""
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    await session(h)
    await eventually(lambda: ("StopTransaction", 501) in mirror_tx(mirror))
    assert tx_frames(primary)[0] == ("StartTransaction", None)
    assert {tx for a, tx in tx_frames(primary) if a != "StartTransaction"} == {101}
    assert [a for a, _ in tx_frames(primary)] == [a for a, _ in mirror_tx(mirror)]
    assert {tx for a, tx in mirror_tx(mirror) if a != "StartTransaction"} == {501}
    assert len(mirror.frames(STATION_ID, "BootNotification")) == 1
    assert primary.max_outstanding_calls == 1 and mirror.max_outstanding_calls == 1
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") == 0)


async def test_mirror_down_for_the_whole_session_gets_it_afterwards_exactly_once(
    rig: Rig, primary: DevCsms, mirror: DevCsms, charger: Any
) -> None:
    """The mirror refuses connections during boot and the whole session: the charger is not
    delayed (the primary confirms everything); when the mirror is back it receives the boot,
    statuses and the session exactly once, in the charger's order, with its own id."""
    mirror.refuse_connections = True
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    await session(h)
    await eventually(lambda: any(f.action == "StopTransaction" for f in primary.received))
    proxy = rig.proxy
    assert proxy is not None
    queued = proxy.store.queue_length(STATION_ID, "watch")
    assert queued >= 6  # boot, statuses, start, meter values, stop
    assert mirror.received == []
    status = proxy.status()["chargers"][0]
    watch = next(b for b in status["backends"] if b["name"] == "watch")
    assert watch["queue_length"] == queued and watch["state"] != "connected"
    mirror.refuse_connections = False
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") == 0)
    primary_order = [f.action for f in primary.received]
    assert [f.action for f in mirror.received] == primary_order
    assert {tx for a, tx in mirror_tx(mirror) if a != "StartTransaction"} == {501}
    assert len([f for f in mirror.received if f.action == "StartTransaction"]) == 1


async def test_proxy_restart_keeps_the_queue_and_the_transaction_map(
    rig: Rig, primary: DevCsms, mirror: DevCsms, charger: Any
) -> None:
    """The proxy is restarted twice while charger and backends are connected: mid-session
    (the mirror has the StartTransaction, its id 501 mapped) and while the mirror is down
    with the StopTransaction queued. The charger reconnects by itself; the mirror gets the
    rest once, mapped to 501 from the map on disk."""
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    h.plug()
    await h.advance(2)
    h.tap()
    await eventually(lambda: ("StartTransaction", None) in mirror_tx(mirror))
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await rig.restart()
    await accepted(h)
    await h.advance(61, step_s=5)
    await eventually(lambda: ("MeterValues", 501) in mirror_tx(mirror))
    mirror.refuse_connections = True
    await mirror.disconnect(STATION_ID)
    h.tap()
    await eventually(lambda: any(f.action == "StopTransaction" for f in primary.received))
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") >= 1)
    await rig.restart()
    await accepted(h)
    mirror.refuse_connections = False
    await eventually(lambda: ("StopTransaction", 501) in mirror_tx(mirror))
    stops = [f for f in mirror.received if f.action == "StopTransaction"]
    starts = [f for f in mirror.received if f.action == "StartTransaction"]
    assert len(stops) == 1 and len(starts) == 1
    primary_stops = [f for f in primary.received if f.action == "StopTransaction"]
    assert [f.payload["transactionId"] for f in primary_stops] == [101]


async def test_status_api_lists_charger_and_backends(
    rig: Rig, primary: DevCsms, mirror: DevCsms, charger: Any
) -> None:
    """/api/status on the local HTTP port: the charger, and per backend its role, state,
    last message and queue length; the page shows the same."""
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") == 0)
    status = StatusServer(proxy.status, "127.0.0.1", 0)
    await status.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{status.port}/api/status") as resp:
                body = await resp.json()
            async with http.get(f"http://127.0.0.1:{status.port}/") as resp:
                page = await resp.text()
    finally:
        await status.stop()
    (entry,) = body["chargers"]
    assert entry["id"] == STATION_ID and entry["connected"] and entry["ocpp_version"] == "1.6"
    by_name = {b["name"]: b for b in entry["backends"]}
    assert by_name["billing"]["role"] == "primary" and by_name["billing"]["state"] == "connected"
    assert by_name["watch"]["role"] == "mirror" and by_name["watch"]["state"] == "connected"
    assert by_name["watch"]["queue_length"] == 0
    assert by_name["watch"]["last_message"].endswith(".conf")
    assert "watch" in page and STATION_ID in page
