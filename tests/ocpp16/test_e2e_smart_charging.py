"""End-to-end: OCPP 1.6 Smart Charging (3.13, 5.5, 5.7, 5.16, 9.4) over a real WebSocket with
the dev CSMS, on the injected clock: the exact sequences evcc and the Home Assistant `ocpp`
integration send, period boundaries reaching the (simulated) pilot, stacking and combining,
remote start with a TxProfile, persistence, and every kind of bad profile.

OCTT 1.6 smart charging cases (TC_056..TC_072) are named where a test follows one; the
2.0.1 TC_K ids where the rule is the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID
from tests.ocpp16.test_e2e_csms_requests import req, start_session, wait_status


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def profile(
    profile_id: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    stack_level: int = 0,
    kind: str = "Absolute",
    unit: str = "A",
    start: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": limit} for s, limit in periods],
    }
    if start is not None:
        schedule["startSchedule"] = _iso(start)
    return {
        "chargingProfileId": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
        **extra,
    }


async def set_profile(csms: DevCsms, connector_id: int, body: dict[str, Any]) -> str:
    result = await req(
        csms, "SetChargingProfile", {"connectorId": connector_id, "csChargingProfiles": body}
    )
    return str(result["status"])


def offered(h: Any, connector_id: int = 1) -> float:
    """What the pilot offers right now (the simulated EVSE's setpoint)."""
    return float(h.rig(connector_id).vehicle.max_current_a)


async def until_offered(h: Any, amps: float, connector_id: int = 1) -> None:
    await h.settle(lambda: offered(h, connector_id) == amps)


async def test_configuration_keys_evcc_reads(csms: DevCsms, charger: Any) -> None:
    """9.4: the keys evcc and Home Assistant read before steering; SmartCharging is a
    supported feature profile; Power.Offered and Current.Offered are accepted measurands."""
    await charger(csms)
    keys = [
        "ChargeProfileMaxStackLevel",
        "ChargingScheduleAllowedChargingRateUnit",
        "ChargingScheduleMaxPeriods",
        "MaxChargingProfilesInstalled",
        "ConnectorSwitch3to1PhaseSupported",
        "SupportedFeatureProfiles",
    ]
    result = await req(csms, "GetConfiguration", {"key": keys})
    values = {k["key"]: (k["value"], k["readonly"]) for k in result["configurationKey"]}
    assert values["ChargeProfileMaxStackLevel"] == ("10", True)
    assert values["ChargingScheduleAllowedChargingRateUnit"] == ("Current,Power", True)
    assert values["ChargingScheduleMaxPeriods"] == ("48", True)
    assert values["MaxChargingProfilesInstalled"] == ("20", True)
    assert values["ConnectorSwitch3to1PhaseSupported"] == ("false", True)
    assert "SmartCharging" in values["SupportedFeatureProfiles"][0].split(",")
    measurands = (
        "Power.Active.Import,Energy.Active.Import.Register,Current.Import,Voltage,"
        "Current.Offered,Power.Offered"
    )
    result = await req(
        csms, "ChangeConfiguration", {"key": "MeterValuesSampledData", "value": measurands}
    )
    assert result == {"status": "Accepted"}
    # SoC cannot be read by this hardware: Rejected as before (9.1.17).
    result = await req(
        csms, "ChangeConfiguration", {"key": "MeterValuesSampledData", "value": measurands + ",SoC"}
    )
    assert result == {"status": "Rejected"}


async def test_evcc_tx_default_profile_steers_the_pilot(csms: DevCsms, charger: Any) -> None:
    """evcc's charger/ocpp.go: a TxDefaultProfile on the connector (Absolute, startSchedule a
    minute ago, stackLevel = ChargeProfileMaxStackLevel, one period, numberPhases), read back
    with GetCompositeSchedule(60 s); limit 0 to pause, a limit again to resume.
    OCTT TC_056 (TxDefaultProfile), TC_K_01 (2.0.1)."""
    h = await charger(csms)
    await start_session(h, csms)
    assert offered(h) == 16.0

    def evcc(limit: float) -> dict[str, Any]:
        body = profile(
            1,
            "TxDefaultProfile",
            [(0, limit)],
            stack_level=10,
            start=h.clock.utc_now() - timedelta(minutes=1),
        )
        body["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = 3
        return body

    assert await set_profile(csms, 1, evcc(10.2)) == "Accepted"
    await until_offered(h, 10.2)
    composite = await req(
        csms, "GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "A"}
    )
    assert composite["status"] == "Accepted" and composite["connectorId"] == 1
    periods = composite["chargingSchedule"]["chargingSchedulePeriod"]
    assert periods == [{"startPeriod": 0, "limit": 10.2, "numberPhases": 3}]
    assert composite["chargingSchedule"]["duration"] == 60
    # Pause: below the 6 A pilot minimum nothing is offered, the contactor opens.
    assert await set_profile(csms, 1, evcc(0)) == "Accepted"
    await until_offered(h, 0.0)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await wait_status(h, 1, "SuspendedEVSE")
    # Resume.
    assert await set_profile(csms, 1, evcc(16)) == "Accepted"
    await until_offered(h, 16.0)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    assert [p.profile_id for p in h.station.installed_profiles()] == [1]  # replaced by id


async def test_home_assistant_sequence(csms: DevCsms, charger: Any) -> None:
    """The Home Assistant `ocpp` integration: a ChargePointMaxProfile on connector 0 of kind
    Relative, then a TxProfile bound to the running transaction, plus a TxDefaultProfile;
    the lowest applicable limit wins (3.13.3), clearing restores the others.
    OCTT TC_058 (ChargePointMaxProfile), TC_057 (TxProfile), TC_065 (clear)."""
    h = await charger(csms)
    tx_id = await start_session(h, csms)
    station_max = profile(8, "ChargePointMaxProfile", [(0, 13)], kind="Relative")
    assert await set_profile(csms, 0, station_max) == "Accepted"
    await until_offered(h, 13.0)
    tx = profile(9, "TxProfile", [(0, 10)], stack_level=2, kind="Relative", transactionId=tx_id)
    assert await set_profile(csms, 1, tx) == "Accepted"
    await until_offered(h, 10.0)
    default = profile(10, "TxDefaultProfile", [(0, 6)], stack_level=1)
    assert await set_profile(csms, 0, default) == "Accepted"
    assert offered(h) == 10.0  # the TxProfile overrides the default
    result = await req(csms, "ClearChargingProfile", {"chargingProfilePurpose": "TxProfile"})
    assert result == {"status": "Accepted"}
    await until_offered(h, 6.0)  # now the default applies
    result = await req(csms, "ClearChargingProfile", {"id": 10, "stackLevel": 7})
    assert result == {"status": "Accepted"}  # errata 3.26: with id, the other fields are ignored
    await until_offered(h, 13.0)
    result = await req(csms, "ClearChargingProfile", {"id": 10})
    assert result == {"status": "Unknown"}
    assert (await req(csms, "ClearChargingProfile", {})) == {"status": "Accepted"}
    await until_offered(h, 16.0)
    assert h.station.installed_profiles() == ()


async def test_period_boundaries_reach_the_pilot_on_time(csms: DevCsms, charger: Any) -> None:
    """An Absolute schedule's periods are applied at their boundaries (one wake-up each),
    on the injected clock: 16 A, 8 A after 60 s, paused after 120 s, 10 A after 180 s, and
    after its duration the hardware maximum again. TC_K_40-style stacking is in tests/core."""
    h = await charger(csms)
    await start_session(h, csms)
    start = h.clock.utc_now()
    body = profile(3, "TxDefaultProfile", [(0, 12), (60, 8), (120, 0), (180, 10)], start=start)
    body["chargingSchedule"]["duration"] = 240
    assert await set_profile(csms, 1, body) == "Accepted"
    await until_offered(h, 12.0)
    await h.advance(59)
    assert offered(h) == 12.0
    await h.advance(2)
    await until_offered(h, 8.0)
    await h.advance(60)
    await until_offered(h, 0.0)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(60)
    await until_offered(h, 10.0)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(60)
    await until_offered(h, 16.0)


async def test_watts_are_converted_with_the_connector_phases(csms: DevCsms, charger: Any) -> None:
    """7.12: a W limit is total power; per phase current = W / (230 V x phases); the
    composite can be asked in W (connector 0: the station). TC_K_53-style."""
    h = await charger(csms)
    await start_session(h, csms)
    watts = profile(4, "TxDefaultProfile", [(0, 6900)], unit="W")
    assert await set_profile(csms, 1, watts) == "Accepted"
    await until_offered(h, 10.0)  # 6900 / (230 * 3)
    composite = await req(
        csms, "GetCompositeSchedule", {"connectorId": 1, "duration": 300, "chargingRateUnit": "W"}
    )
    assert composite["chargingSchedule"]["chargingRateUnit"] == "W"
    assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 6900
    station = await req(csms, "GetCompositeSchedule", {"connectorId": 0, "duration": 300})
    assert station["status"] == "Accepted" and station["connectorId"] == 0


async def test_remote_start_with_a_tx_profile(csms: DevCsms, charger: Any) -> None:
    """5.11: the chargingProfile of RemoteStartTransaction is the TxProfile of the
    transaction it starts; it goes when the transaction ends (7.10). OCTT TC_059."""
    h = await charger(csms)
    h.plug()
    await wait_status(h, 1, "Preparing")
    body = profile(20, "TxProfile", [(0, 7)], kind="Relative")
    result = await req(
        csms,
        "RemoteStartTransaction",
        {"connectorId": 1, "idTag": CARD, "chargingProfile": body},
    )
    assert result == {"status": "Accepted"}
    await h.settle(lambda: h.connector().tx_key is not None)
    await until_offered(h, 7.0)
    installed = h.station.installed_profiles()
    assert [(p.profile_id, p.tx_key) for p in installed] == [(20, h.connector().tx_key)]
    h.unplug()
    await h.settle(lambda: h.connector().tx_key is None)
    await h.settle(lambda: h.station.installed_profiles() == ())
    # Not a TxProfile: the remote start is refused.
    h.plug()
    bad = profile(21, "TxDefaultProfile", [(0, 7)])
    result = await req(
        csms, "RemoteStartTransaction", {"connectorId": 1, "idTag": CARD, "chargingProfile": bad}
    )
    assert result == {"status": "Rejected"}


async def test_profiles_survive_a_restart(csms: DevCsms, charger: Any) -> None:
    """Installed profiles are durable: the next process applies them (offline too)."""
    h = await charger(csms)
    assert await set_profile(csms, 0, profile(5, "TxDefaultProfile", [(0, 9)])) == "Accepted"
    await h.app.stop()
    csms.refuse_connections = True
    h2 = await charger(
        csms, wait_accepted=False, boot_id="boot-2", ocpp={"AllowOfflineTxForUnknownId": True}
    )
    assert [p.profile_id for p in h2.station.installed_profiles()] == [5]
    h2.plug()
    await h2.advance(1)
    h2.tap()
    await h2.settle(lambda: h2.connector().hw.contactor.closed)  # offline, local auth
    assert offered(h2) == 9.0


async def test_bad_profiles_are_rejected_and_change_nothing(csms: DevCsms, charger: Any) -> None:
    """5.16 / 3.13 and errata: every semantically invalid profile is Rejected (an unknown
    connector is a PropertyConstraintViolation CALLERROR, errata 3.39) and nothing changes.
    OCTT TC_066 (TxProfile without transaction)."""
    h = await charger(csms)
    before = offered(h)
    rejected = [
        (1, profile(30, "TxProfile", [(0, 10)])),  # no transaction running
        (1, profile(31, "ChargePointMaxProfile", [(0, 10)])),  # not on connector 0
        (0, profile(32, "TxDefaultProfile", [(0, 10)], stack_level=11)),  # above max level
        (0, profile(33, "TxDefaultProfile", [(5, 10)])),  # first period not at 0
        (0, profile(34, "TxDefaultProfile", [(0, 10), (0, 8)])),  # not ascending
        (0, profile(35, "TxDefaultProfile", [(0, 10)], kind="Recurring")),  # no recurrency
        (0, profile(36, "TxDefaultProfile", [(0, 10)], validFrom="yesterday")),  # no date
        (
            0,
            profile(
                37, "TxDefaultProfile", [(s, 10) for s in range(0, 49 * 60, 60)]
            ),  # 49 periods > ChargingScheduleMaxPeriods
        ),
        (
            0,
            profile(
                38,
                "TxDefaultProfile",
                [(0, 10)],
                validFrom="2026-01-02T00:00:00Z",
                validTo="2026-01-01T00:00:00Z",
            ),
        ),
    ]
    for connector_id, body in rejected:
        status = await set_profile(csms, connector_id, body)
        assert status == "Rejected", body["chargingProfileId"]
    frame = await csms.call_raw(
        STATION_ID,
        "SetChargingProfile",
        {"connectorId": 7, "csChargingProfiles": profile(39, "TxDefaultProfile", [(0, 10)])},
        timeout_s=5,
    )
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation"
    assert h.station.installed_profiles() == ()
    assert offered(h) == before
    # Too many profiles (MaxChargingProfilesInstalled = 20): the 21st is Rejected.
    for n in range(20):
        body = profile(100 + n, "TxDefaultProfile", [(0, 16)], stack_level=n % 11)
        body["validTo"] = f"2099-01-01T00:00:0{n % 10}Z"
        connector_id = 0 if n < 11 else 1
        assert await set_profile(csms, connector_id, body) == "Accepted", n
    assert len(h.station.installed_profiles()) == 20
    one_more = profile(200, "ChargePointMaxProfile", [(0, 16)])
    assert await set_profile(csms, 0, one_more) == "Rejected"
    # GetCompositeSchedule for a connector that does not exist.
    assert (await req(csms, "GetCompositeSchedule", {"connectorId": 5, "duration": 60})) == {
        "status": "Rejected"
    }


async def test_two_connectors_lower_before_raise(csms: DevCsms, charger: Any) -> None:
    """Issue 12 item 3: when one connector's limit falls and another's rises at the same
    boundary, the lowered one reaches its hardware first."""
    h = await charger(csms, connectors=2)
    await start_session(h, csms, 1)
    await start_session(h, csms, 2, card="0B0B0B0B")
    start = h.clock.utc_now() + timedelta(seconds=30)
    up = profile(40, "TxDefaultProfile", [(0, 8), (60, 14)], start=start - timedelta(seconds=60))
    down = profile(41, "TxDefaultProfile", [(0, 14), (60, 8)], start=start - timedelta(seconds=60))
    assert await set_profile(csms, 1, up) == "Accepted"
    assert await set_profile(csms, 2, down) == "Accepted"
    await until_offered(h, 8.0, 1)
    await until_offered(h, 14.0, 2)
    order: list[tuple[int, float]] = []

    def watch(connector_id: int, command: Any) -> None:
        amps = getattr(command, "current_a", None)
        if type(command).__name__ == "SetCurrentLimit" and amps is not None:
            order.append((connector_id, amps))

    h.station.add_listener(watch)
    await h.advance(31)
    await until_offered(h, 14.0, 1)
    await until_offered(h, 8.0, 2)
    assert order == [(2, 8.0), (1, 14.0)]


async def test_station_maximum_is_shared_by_the_connectors(csms: DevCsms, charger: Any) -> None:
    """3.13.1: a ChargePointMaxProfile limits the charge point as a whole: two charging
    connectors share it (their sum never above it) instead of each getting all of it; one
    alone gets all of it again; clearing it gives each its hardware maximum. OCTT TC_058."""
    h = await charger(csms, connectors=2)
    await start_session(h, csms, 1)
    await start_session(h, csms, 2, card="0B0B0B0B")
    body = profile(50, "ChargePointMaxProfile", [(0, 20)], kind="Relative")
    assert await set_profile(csms, 0, body) == "Accepted"
    await until_offered(h, 10.0, 1)
    await until_offered(h, 10.0, 2)
    assert offered(h, 1) + offered(h, 2) <= 20.0
    status = h.station.snapshot()["connectors"]
    assert [c["limit_source"] for c in status] == ["StationMax", "StationMax"]
    h.tap("0B0B0B0B")  # connector 2's session ends: connector 1 may use all of it
    await h.settle(lambda: h.connector(2).tx_key is None)
    await until_offered(h, 16.0, 1)  # min(hardware 16 A, station 20 A)
    assert (await req(csms, "ClearChargingProfile", {"id": 50})) == {"status": "Accepted"}
    await h.advance(1)
    assert offered(h, 1) == 16.0
