"""A charger's secondaries after it left the proxy: each link stays up until its queue is
delivered or proxy.linger_s passed (then closed; the rest waits on disk), and a charger that
comes back meanwhile takes over the same links. The proxy runs on a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.csms.rpc import CallError
from controller.dev.devcsms import CsmsEvent, DevCsms, StationConnected
from controller.proxy.linger import ChargerLinks
from controller.proxy.protocol import PROTOCOLS
from controller.proxy.store import ProxyStore
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID
from tests.proxy.proxyrig import Rig, accepted, backend, eventually, proxy_config, session
from tests.proxy.proxyrig import tx_frames as txs

pytestmark = pytest.mark.timeout(60)

LINGER_S = 300.0


class Mirror(DevCsms):
    """A dev CSMS that counts the connections it accepted."""

    def __init__(self) -> None:
        self.connects = 0
        super().__init__(heartbeat_interval_s=3600, on_event=self._event)

    def _event(self, event: CsmsEvent) -> None:
        if isinstance(event, StationConnected):
            self.connects += 1


@pytest.fixture
async def primary() -> AsyncIterator[DevCsms]:
    async with DevCsms(heartbeat_interval_s=3600) as server:
        server._last_transaction_id = 100
        yield server


@pytest.fixture
async def mirror() -> AsyncIterator[Mirror]:
    async with Mirror() as server:
        server._last_transaction_id = 500
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_rig(
    tmp_path: Path, primary: DevCsms, mirror: Mirror, clock: ManualClock
) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[Rig] = []

    async def make(linger_s: float = LINGER_S) -> Rig:
        config = proxy_config(
            tmp_path,
            [backend("billing", primary.url, "primary"), backend("watch", mirror.url)],
            linger_s=linger_s,
        )
        r = Rig(config, clock=clock)
        await r.start()
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        await r.stop()


@pytest.fixture
async def rig(make_rig: Callable[..., Any]) -> Rig:
    rig: Rig = await make_rig()
    return rig


async def advance(clock: ManualClock, seconds: float) -> None:
    """Move the proxy's clock (back-off sleeps, linger_s), letting real I/O run between."""
    await clock.advance(seconds, step_s=1.0)
    await asyncio.sleep(0.02)


async def charger_leaves_with_a_queue(rig: Rig, primary: DevCsms, mirror: Mirror, h: Any) -> int:
    """The mirror refuses connections; a session; the charger stops for good (evsed
    process gone). The proxy holds the whole session for the mirror."""
    mirror.refuse_connections = True
    await accepted(h)
    await session(h)
    await eventually(lambda: any(f.action == "StopTransaction" for f in primary.received))
    await h.app.stop(reason=None)
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.sessions == {})
    queued = proxy.store.queue_length(STATION_ID, "watch")
    assert queued >= 6  # boot, statuses, start, meter values, stop
    return queued


async def test_secondary_back_within_linger_time_gets_the_queue_then_the_link_closes(
    rig: Rig, primary: DevCsms, mirror: Mirror, clock: ManualClock, charger: Any
) -> None:
    """The charger leaves with the mirror down; the link stays (shown on the status page
    as the charger offline, the link retrying, the time left). The mirror comes back after
    60 s, within linger_s: it receives the whole session once, under its own id 501, and the
    link then closes (the queue is empty): the mirror sees the proxy go."""
    h = await charger(rig.as_csms, wait_accepted=False)
    queued = await charger_leaves_with_a_queue(rig, primary, mirror, h)
    proxy = rig.proxy
    assert proxy is not None
    assert proxy.secondaries.lingering() == [STATION_ID]
    await advance(clock, 60)
    (entry,) = proxy.status()["chargers"]
    assert entry["connected"] is False and 0 < entry["linger_left_s"] <= LINGER_S - 60
    (watch,) = entry["backends"]
    assert watch["queue_length"] == queued and watch["state"] != "connected"
    mirror.refuse_connections = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while proxy.store.queue_length(STATION_ID, "watch") > 0:
        assert loop.time() < deadline
        await advance(clock, 0.5)
    await eventually(lambda: proxy.secondaries.lingering() == [])
    await mirror.wait_disconnected(STATION_ID, timeout_s=5)
    assert ("StopTransaction", 501) in txs(mirror)
    assert [f.action for f in mirror.received] == [f.action for f in primary.received]
    assert mirror.connects == 1
    assert proxy.status()["chargers"] == []


async def test_after_linger_time_nothing_connects_and_the_queue_waits_for_the_charger(
    rig: Rig, primary: DevCsms, mirror: Mirror, clock: ManualClock, charger: Any
) -> None:
    """The mirror stays down past linger_s: the link is closed then, and the mirror coming
    back later gets no connection at all (however long the proxy runs). The queue stays on
    disk and is delivered once the charger connects again."""
    h = await charger(rig.as_csms, wait_accepted=False)
    queued = await charger_leaves_with_a_queue(rig, primary, mirror, h)
    proxy = rig.proxy
    assert proxy is not None
    await advance(clock, LINGER_S + 1)
    await eventually(lambda: proxy.secondaries.lingering() == [])
    mirror.refuse_connections = False
    await advance(clock, 600)
    await asyncio.sleep(0.2)
    assert mirror.connects == 0 and mirror.received == []
    assert proxy.store.queue_length(STATION_ID, "watch") == queued
    (entry,) = proxy.status()["chargers"]  # listed: it has messages queued
    assert entry["connected"] is False and entry["backends"][0]["state"] == "offline"
    h2 = await charger(rig.as_csms, wait_accepted=False, boot_id="boot-2")
    await accepted(h2)
    await eventually(lambda: ("StopTransaction", 501) in txs(mirror))
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") == 0)
    assert len([f for f in mirror.received if f.action == "StartTransaction"]) == 1


async def test_charger_back_within_linger_time_reuses_the_links(
    rig: Rig, primary: DevCsms, mirror: Mirror, clock: ManualClock, charger: Any
) -> None:
    """The proxy drops the charger's connection while the mirror is down with messages
    queued; the charger reconnects by itself: its new session uses the same link (no
    second connection to the mirror), and the mirror gets the messages once."""
    mirror.refuse_connections = True
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.store.queue_length(STATION_ID, "watch") >= 2)
    link = proxy.sessions[STATION_ID].secondaries[0]
    await proxy.sessions[STATION_ID].close("test: drop the charger")
    await eventually(lambda: proxy.secondaries.lingering() == [STATION_ID])
    await accepted(h)
    await eventually(lambda: STATION_ID in proxy.sessions)
    assert proxy.sessions[STATION_ID].secondaries[0] is link
    assert proxy.secondaries.lingering() == []
    mirror.refuse_connections = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not mirror.connected(STATION_ID) or proxy.store.queue_length(STATION_ID, "watch"):
        assert loop.time() < deadline
        await advance(clock, 0.5)
    assert mirror.connects == 1
    assert len(mirror.frames(STATION_ID, "BootNotification")) == 1


async def test_linger_zero_closes_the_links_with_the_charger(
    make_rig: Callable[..., Any],
    primary: DevCsms,
    mirror: Mirror,
    clock: ManualClock,
    charger: Any,
) -> None:
    """proxy.linger_s = 0: as before, a secondary's link ends with the charger's connection;
    its queue waits on disk."""
    r = await make_rig(linger_s=0)
    h = await charger(r.as_csms, wait_accepted=False)
    queued = await charger_leaves_with_a_queue(r, primary, mirror, h)
    proxy = r.proxy
    assert proxy is not None
    assert proxy.secondaries.lingering() == []
    mirror.refuse_connections = False
    await advance(clock, 30)
    await asyncio.sleep(0.2)
    assert mirror.connects == 0
    assert proxy.store.queue_length(STATION_ID, "watch") == queued


async def test_a_backends_command_while_the_charger_is_away_is_answered(tmp_path: Path) -> None:
    """While the links linger without a charger, a command a secondary sends gets the
    OCPP-J answer GenericError "the charger is not connected to the proxy" (it passed its
    ownership gate: a mirror may read)."""
    config = proxy_config(
        tmp_path,
        [backend("billing", "ws://127.0.0.1:9/ocpp", "primary"), backend("watch", "ws://x/")],
    )
    charger_config = config.charger(STATION_ID)
    assert charger_config is not None
    store = ProxyStore(str(tmp_path / "unit.db"))
    try:
        entry = ChargerLinks(charger_config, PROTOCOLS["ocpp1.6"], config, store, ManualClock())
        (link,) = entry.links
        with pytest.raises(CallError) as refused:
            await link._gate("GetConfiguration", {"key": ["HeartbeatInterval"]})
        assert refused.value.code == "GenericError"
        assert "not connected to the proxy" in refused.value.description
    finally:
        store.close()
