"""Phase switching 3 to 1 and back (issue 12 item 4) end to end: a simulated connector with
a phase relay (``[connectors.phase_switch] driver = "sim"``), the dev CSMS over a real
WebSocket and the injected clock. numberPhases of a TxDefaultProfile picks the relay; it
moves only with the contactor open and nothing offered for the pause, once per change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.connector import Command, SetCurrentLimit, SwitchContactor, SwitchPhases
from controller.dev.devcsms import DevCsms
from tests.ocpp16.test_e2e_csms_requests import req, start_session, wait_status
from tests.ocpp16.test_e2e_smart_charging import offered, profile, set_profile

SWITCH = {"phase_switch": {"driver": "sim", "pause_s": 3, "settle_s": 1}}


class Trace:
    """Every hardware command of connector 1 with the injected clock's time."""

    def __init__(self, h: Any) -> None:
        self.h = h
        self.commands: list[tuple[float, Command]] = []
        h.station.add_listener(self.heard)

    def heard(self, connector_id: int, command: Command) -> None:
        if connector_id == 1 and isinstance(
            command, SwitchContactor | SetCurrentLimit | SwitchPhases
        ):
            self.commands.append((self.h.clock.monotonic_s(), command))

    def check_switch(self, phases: int) -> None:
        """The one SwitchPhases(phases): contactor opened and offer withdrawn at least the
        pause before it, nothing offered or closed until the settle time after it."""
        at = [i for i, (_, c) in enumerate(self.commands) if c == SwitchPhases(phases)]
        assert len(at) == 1, self.commands
        i = at[0]
        t_switch = self.commands[i][0]
        closed = offer = None
        for t, c in self.commands[:i]:
            if isinstance(c, SwitchContactor):
                closed = (t, c.on)
            if isinstance(c, SetCurrentLimit):
                offer = (t, c.current_a)
        assert closed is not None and not closed[1] and t_switch - closed[0] >= 3.0
        assert offer is not None and offer[1] == 0.0 and t_switch - offer[0] >= 3.0
        after = [(t, c) for t, c in self.commands[i + 1 :]]
        first_on = next(t for t, c in after if c == SwitchContactor(True))
        first_offer = next(t for t, c in after if isinstance(c, SetCurrentLimit))
        assert first_offer - t_switch >= 1.0 and first_on - t_switch >= 1.0


def tx_default(h: Any, limit: float, phases: int, unit: str = "A") -> dict[str, Any]:
    body = profile(
        1,
        "TxDefaultProfile",
        [(0, limit)],
        stack_level=5,
        unit=unit,
        start=h.clock.utc_now() - timedelta(minutes=1),
    )
    body["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = phases
    return body


async def test_number_phases_switches_the_relay_once_each_way(csms: DevCsms, charger: Any) -> None:
    """OCTT TC_056-like TxDefaultProfile, numberPhases 1 then 3: the relay moves exactly once
    each way, with the contactor open (and nothing offered) the pause before it and the
    settle time after it; charging resumes on its own; Power.Offered follows the phases."""
    h = await charger(csms, connector_extra=SWITCH)
    conf = await req(csms, "GetConfiguration", {"key": ["ConnectorSwitch3to1PhaseSupported"]})
    assert conf["configurationKey"] == [
        {"key": "ConnectorSwitch3to1PhaseSupported", "readonly": True, "value": "true"}
    ]
    await start_session(h, csms)
    switch = h.rig().phase_switch
    c = h.connector()
    assert offered(h) == 16.0 and switch.phases == 3 and c.phases == 3
    assert c.offered_power_w == 16 * 3 * 230
    trace = Trace(h)

    assert await set_profile(csms, 1, tx_default(h, 16, 1)) == "Accepted"
    await h.settle(lambda: not c.hw.contactor.closed)
    await wait_status(h, 1, "SuspendedEVSE")
    assert offered(h) == 0.0 and switch.history == []
    await h.advance(2)
    assert switch.history == []  # still pausing
    await h.advance(3)
    await h.settle(lambda: switch.phases == 1)
    await h.advance(2)
    await h.settle(lambda: c.hw.contactor.closed and offered(h) == 16.0)
    await wait_status(h, 1, "Charging")
    assert c.phases == 1 and c.offered_power_w == 16 * 1 * 230
    assert [(p, closed) for _, p, closed in switch.history] == [(1, False)]
    trace.check_switch(1)

    # Same number again (a new profile, the same phases): nothing moves.
    assert await set_profile(csms, 1, tx_default(h, 14, 1)) == "Accepted"
    await h.settle(lambda: offered(h) == 14.0)
    await h.advance(10)
    assert len(switch.history) == 1 and c.hw.contactor.closed

    assert await set_profile(csms, 1, tx_default(h, 16, 3)) == "Accepted"
    await h.settle(lambda: not c.hw.contactor.closed)
    await h.advance(6)
    await h.settle(lambda: c.hw.contactor.closed and offered(h) == 16.0)
    assert [(p, closed) for _, p, closed in switch.history] == [(1, False), (3, False)]
    assert c.phases == 3
    trace.check_switch(3)
    await h.advance(30)
    assert len(switch.history) == 2


async def test_watts_convert_with_the_phases_switched_in(csms: DevCsms, charger: Any) -> None:
    """A 3680 W period with numberPhases 1 is 16 A on one phase (not 5.3 A on three, which
    would pause the EV); removing the profile brings the wired three phases back."""
    h = await charger(csms, connector_extra=SWITCH)
    await start_session(h, csms)
    switch = h.rig().phase_switch
    assert await set_profile(csms, 1, tx_default(h, 3680, 1, unit="W")) == "Accepted"
    await h.advance(6)
    await h.settle(lambda: switch.phases == 1 and offered(h) == 16.0)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    result = await req(csms, "ClearChargingProfile", {"id": 1})
    assert result["status"] == "Accepted"
    await h.advance(6)
    await h.settle(lambda: switch.phases == 3 and h.connector().hw.contactor.closed)
    assert [p for _, p, _ in switch.history] == [1, 3]


async def test_without_a_phase_switch_number_phases_moves_nothing(
    csms: DevCsms, charger: Any
) -> None:
    h = await charger(csms)
    conf = await req(csms, "GetConfiguration", {"key": ["ConnectorSwitch3to1PhaseSupported"]})
    assert conf["configurationKey"][0]["value"] == "false"
    await start_session(h, csms)
    assert await set_profile(csms, 1, tx_default(h, 10, 1)) == "Accepted"
    await h.settle(lambda: offered(h) == 10.0)
    await h.advance(5)
    assert h.connector().hw.contactor.closed and h.connector().phases == 3
