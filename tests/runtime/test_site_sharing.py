"""Local load management (issue 12 items 6 and 7) end to end: simulated connectors under one
[site] limit with the dev CSMS over a real WebSocket, on the injected clock: sessions start,
end, pause and draw less; the sum of the offers never exceeds the site limit, not even
between two commands; local limits fall back to the safe current when not refreshed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from controller.core.connector import Command, PhaseChanged, SetCurrentLimit
from controller.dev.devcsms import DevCsms
from controller.runtime.limits import DRAW_SETTLE_S, SITE_RECHECK_S
from hal.base import VehicleState
from tests.conftest import CARD
from tests.ocpp16.test_e2e_csms_requests import start_session, wait_status

CARD2 = "04A1B2C4"
CARD3 = "04A1B2C5"


def offered(h: Any, connector_id: int) -> float:
    return float(h.rig(connector_id).vehicle.max_current_a)


class OfferWatch:
    """Follows every pilot command in execution order: the sum of the offers after each
    one, and each connector's phases."""

    def __init__(self, h: Any, site_a: float) -> None:
        self.site_a = site_a
        self.offers = {cid: offered(h, cid) for cid in h.station.connectors}
        self.worst = sum(self.offers.values())
        self.commands: list[tuple[int, Command]] = []
        h.station.add_listener(self.heard)

    def heard(self, connector_id: int, command: Command) -> None:
        self.commands.append((connector_id, command))
        if isinstance(command, SetCurrentLimit):
            self.offers[connector_id] = command.current_a
            self.worst = max(self.worst, sum(self.offers.values()))

    def phases(self, connector_id: int) -> list[str]:
        return [
            c.phase.value
            for cid, c in self.commands
            if cid == connector_id and isinstance(c, PhaseChanged)
        ]


def limit(h: Any, connector_id: int) -> tuple[float, str]:
    eff = h.station.smart.limit(connector_id)
    return float(eff.limit_a), eff.source.kind.value


async def test_two_connectors_share_the_site_limit(csms: DevCsms, charger: Any) -> None:
    """Both start, one EV draws less, one ends: 16 A alone, 10 + 10 A together (the first
    lowered before the second offers anything), 14 + 6 A when the second EV draws 3.3 A,
    16 A again when it ends. The sum never exceeds 20 A."""
    h = await charger(csms, connectors=2, site={"max_current_a": 20})
    watch = OfferWatch(h, 20.0)
    await start_session(h, csms, 1, CARD)
    assert offered(h, 1) == 16.0
    assert limit(h, 1) == (16.0, "Hardware")
    assert limit(h, 2) == (0.0, "SiteShare")  # idle: holds nothing of the site

    await start_session(h, csms, 2, CARD2)
    await h.settle(lambda: offered(h, 1) == 10.0 and offered(h, 2) == 10.0)
    assert limit(h, 1) == limit(h, 2) == (10.0, "SiteShare")
    # The first connector was lowered before the second was offered anything, and the
    # second never showed SuspendedEVSE on its way to Charging.
    order = [(cid, c.current_a) for cid, c in watch.commands if isinstance(c, SetCurrentLimit)]
    assert order.index((1, 10.0)) < order.index((2, 10.0))
    assert "SuspendedEVSE" not in watch.phases(2)
    await wait_status(h, 2, "Charging")

    # The second EV draws about 3.3 A (2.3 kW on three phases): after the offer stood and the
    # next check it keeps 6 A (its draw + 2 A, never below 6), the first gets the rest.
    h.rig(2).vehicle.set_state(VehicleState.C, power_w=2300)
    await h.advance(max(SITE_RECHECK_S, DRAW_SETTLE_S) + 2)
    await h.settle(lambda: offered(h, 1) == 14.0 and offered(h, 2) == 6.0)
    assert limit(h, 2) == (6.0, "SiteShare")
    # Stable: the next checks change nothing.
    await h.advance(SITE_RECHECK_S * 2)
    assert (offered(h, 1), offered(h, 2)) == (14.0, 6.0)
    # It wants more again: uncapped at the next check, back to equal shares.
    h.rig(2).vehicle.set_state(VehicleState.C, power_w=11000)
    await h.advance(SITE_RECHECK_S + 1)
    await h.settle(lambda: offered(h, 1) == 10.0 and offered(h, 2) == 10.0)

    h.unplug(2)
    await h.settle(lambda: h.connector(2).tx_key is None)
    await h.settle(lambda: offered(h, 1) == 16.0)
    assert limit(h, 1) == (16.0, "Hardware")
    assert watch.worst <= 20.0, watch.worst


async def test_a_paused_ev_keeps_the_minimum(csms: DevCsms, charger: Any) -> None:
    """An EV that pauses (pilot B, SuspendedEV) keeps 6 A so it can resume; the other gets
    the rest at once, and equal shares come back the moment it asks again."""
    h = await charger(csms, connectors=2, site={"max_current_a": 24})
    watch = OfferWatch(h, 24.0)
    await start_session(h, csms, 1, CARD)
    await start_session(h, csms, 2, CARD2)
    await h.settle(lambda: offered(h, 1) == 12.0 and offered(h, 2) == 12.0)
    h.rig(1).vehicle.set_state(VehicleState.B)
    await h.settle(lambda: offered(h, 1) == 6.0 and offered(h, 2) == 16.0)
    await wait_status(h, 1, "SuspendedEV")
    h.rig(1).vehicle.set_state(VehicleState.C)
    await h.settle(lambda: offered(h, 1) == 12.0 and offered(h, 2) == 12.0)
    assert watch.worst <= 24.0, watch.worst


async def test_the_last_to_start_waits_when_the_site_is_short(csms: DevCsms, charger: Any) -> None:
    """16 A for three: two get 8 A each, the third (started last) waits with nothing
    offered (SuspendedEVSE, contactor open) instead of three unusable 5.3 A shares; it
    charges as soon as the first session ends."""
    h = await charger(csms, connectors=3, site={"max_current_a": 16})
    watch = OfferWatch(h, 16.0)
    await start_session(h, csms, 1, CARD)
    await start_session(h, csms, 2, CARD2)
    await h.settle(lambda: offered(h, 1) == 8.0 and offered(h, 2) == 8.0)

    h.plug(3)
    await h.advance(1)
    h.tap(CARD3)
    await wait_status(h, 3, "SuspendedEVSE")
    assert offered(h, 3) == 0.0 and not h.connector(3).hw.contactor.closed
    assert limit(h, 3) == (0.0, "SiteShare")
    assert (offered(h, 1), offered(h, 2)) == (8.0, 8.0)

    h.unplug(1)
    await h.settle(lambda: offered(h, 2) == 8.0 and offered(h, 3) == 8.0)
    await h.settle(lambda: h.connector(3).hw.contactor.closed)
    await wait_status(h, 3, "Charging")
    assert watch.worst <= 16.0, watch.worst


async def test_local_limit_falls_back_when_not_refreshed(csms: DevCsms, charger: Any) -> None:
    """A connector limit of 10 A for 60 s: refreshed it stays; not refreshed it falls back to
    [site] fallback_current_a (8 A) at its timeout on the injected clock; cleared, the
    hardware maximum applies again. A station-wide limit is shared like the site's."""
    h = await charger(csms, connectors=2, site={"fallback_current_a": 8})
    await start_session(h, csms, 1, CARD)
    assert offered(h, 1) == 16.0
    h.station.set_local_limit(1, Decimal("10"), 60)
    await h.settle(lambda: offered(h, 1) == 10.0)
    assert limit(h, 1) == (10.0, "LocalLimit")
    await h.advance(50)
    h.station.set_local_limit(1, Decimal("10"), 60)  # refreshed in time
    await h.advance(50)
    assert offered(h, 1) == 10.0
    await h.advance(11)  # 61 s after the refresh
    await h.settle(lambda: offered(h, 1) == 8.0)
    assert limit(h, 1) == (8.0, "LocalLimitFallback")
    assert h.station.local_limits()[0]["fallback"] is True
    assert h.station.clear_local_limit(1) is True
    await h.settle(lambda: offered(h, 1) == 16.0)
    assert limit(h, 1) == (16.0, "Hardware")

    # The station: 20 A shared by both sessions.
    await start_session(h, csms, 2, CARD2)
    h.station.set_local_limit(0, Decimal("20"), 30)
    await h.settle(lambda: offered(h, 1) == 10.0 and offered(h, 2) == 10.0)
    assert limit(h, 1) == (10.0, "LocalLimit")
    await h.advance(31)  # not refreshed: 8 A for the station, only the first charges
    await h.settle(lambda: offered(h, 1) == 8.0 and offered(h, 2) == 0.0)
    assert limit(h, 2) == (0.0, "LocalLimitFallback")
    assert h.station.clear_local_limit(0) is True
    await h.settle(lambda: offered(h, 1) == 16.0 and offered(h, 2) == 16.0)


async def test_without_a_site_nothing_changes(csms: DevCsms, charger: Any) -> None:
    """No [site] and no station local limit: every connector offers its own maximum and no
    timer runs for sharing."""
    h = await charger(csms, connectors=2)
    await start_session(h, csms, 1, CARD)
    await start_session(h, csms, 2, CARD2)
    assert (offered(h, 1), offered(h, 2)) == (16.0, 16.0)
    assert h.station.smart._recheck_at_s is None
