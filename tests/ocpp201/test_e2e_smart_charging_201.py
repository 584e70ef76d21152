"""OCPP 2.0.1 smart charging (K01, K02, K08-K10) over a real WebSocket against the dev CSMS,
on the manual clock: SetChargingProfile of every purpose reaching the simulated pilot (lowered
before raised), replacement, clearing, GetChargingProfiles with ReportChargingProfiles,
GetCompositeSchedule, persistence and every kind of refused profile (TC_K_*_CS)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import STATION_ID, Harness
from tests.ocpp16.test_fuzz_inbound import check_station, valid_value
from tests.ocpp201.test_e2e_boot import accepted, client
from tests.ocpp201.test_e2e_remote import offered_a, ready, req, session, set_variable
from tests.ocpp201.test_e2e_transactions import assert_one_transaction, events

HARDWARE_A = 16.0


def profile(
    profile_id: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    stack_level: int = 0,
    kind: str = "Absolute",
    unit: str = "A",
    start: datetime | None = None,
    duration_s: int | None = None,
    phases: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ChargingProfileType; times in the charger's own format so a report echoes it."""
    schedule: dict[str, Any] = {
        "id": profile_id * 10,
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [
            {"startPeriod": s, "limit": limit, **({"numberPhases": phases} if phases else {})}
            for s, limit in periods
        ],
    }
    if start is not None:
        schedule["startSchedule"] = iso_utc(start)
    if duration_s is not None:
        schedule["duration"] = duration_s
    return {
        "id": profile_id,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
        **extra,
    }


def now(h: Harness) -> datetime:
    return h.clock.utc_now().replace(microsecond=0)


def absolute(h: Harness, pid: int, purpose: str, limit: float, **kw: Any) -> dict[str, Any]:
    """An Absolute profile in force from a minute ago with one period."""
    return profile(pid, purpose, [(0, limit)], start=now(h) - timedelta(seconds=60), **kw)


async def set_profile(csms: DevCsms, evse_id: int, body: dict[str, Any]) -> dict[str, Any]:
    return await req(csms, "SetChargingProfile", {"evseId": evse_id, "chargingProfile": body})


async def until_offered(h: Harness, amps: float, connector_id: int = 1) -> None:
    await h.settle(lambda: float(h.rig(connector_id).vehicle.max_current_a) == amps)


def reports(h: Harness, request_id: int) -> list[dict[str, Any]]:
    pages = [f.payload for f in h.frames("ReportChargingProfiles")]
    return [p for p in pages if p["requestId"] == request_id]


async def get_profiles(
    h: Harness, csms: DevCsms, request_id: int, criteria: dict[str, Any], **extra: Any
) -> tuple[str, list[dict[str, Any]]]:
    """GetChargingProfiles: the status and the ReportChargingProfiles pages it brought."""
    answer = await req(
        csms,
        "GetChargingProfiles",
        {"requestId": request_id, "chargingProfile": criteria, **extra},
    )
    if answer["status"] == "Accepted":
        await h.settle(lambda: any(not p["tbc"] for p in reports(h, request_id)))
    return answer["status"], reports(h, request_id)


def reported(pages: list[dict[str, Any]]) -> dict[int, tuple[int, dict[str, Any]]]:
    """profile id -> (evseId, profile) over the pages."""
    return {p["id"]: (page["evseId"], p) for page in pages for p in page["chargingProfile"]}


async def charging_session(h: Harness) -> str:
    """A card-started transaction on EVSE 1, charging; its transactionId."""
    started = await session(h)
    assert offered_a(h) == HARDWARE_A
    return str(started["transactionInfo"]["transactionId"])


# ----------------------------------------------------------------------------- K01


async def test_tx_default_on_one_evse_steers_the_pilot_and_is_reported(
    charger: Any, csms: DevCsms
) -> None:
    """TC_K_01_CS (K01.FR.07, K01.FR.15), TC_K_28_CS (K01.FR.32), TC_K_32_CS (K09.FR.01/02):
    a TxDefaultProfile for EVSE 1 during a transaction is Accepted and the pilot offers its
    limit at once; GetChargingProfiles by id reports it as it was set (requestId, evseId 1,
    tbc false); SmartChargingCtrlr.Entries counts it."""
    h = await ready(charger, csms)
    await charging_session(h)
    body = absolute(h, 11, "TxDefaultProfile", 10, duration_s=300, phases=3)
    assert await set_profile(csms, 1, body) == {"status": "Accepted"}
    await until_offered(h, 10.0)
    status, pages = await get_profiles(h, csms, 501, {"chargingProfileId": [11]})
    assert status == "Accepted"
    assert pages == [
        {
            "requestId": 501,
            "chargingLimitSource": "CSO",
            "evseId": 1,
            "chargingProfile": [body],
            "tbc": False,
        }
    ]
    answer = await req(
        csms,
        "GetVariables",
        {
            "getVariableData": [
                {
                    "component": {"name": "SmartChargingCtrlr"},
                    "variable": {"name": "Entries", "instance": "ChargingProfiles"},
                }
            ]
        },
    )
    assert answer["getVariableResult"][0]["attributeValue"] == "1"


async def test_tx_default_on_the_station_applies_to_every_evse(charger: Any, csms: DevCsms) -> None:
    """TC_K_10_CS (K01.FR.14): a TxDefaultProfile on evseId 0 applies to both EVSEs (not
    copied: it is reported once, on evseId 0)."""
    h = await ready(charger, csms, connectors=2)
    body = absolute(h, 12, "TxDefaultProfile", 9)
    assert await set_profile(csms, 0, body) == {"status": "Accepted"}
    for evse in (1, 2):
        answer = await req(csms, "GetCompositeSchedule", {"evseId": evse, "duration": 60})
        assert answer["schedule"]["chargingSchedulePeriod"] == [
            {"startPeriod": 0, "limit": 9, "numberPhases": 3}
        ]
    await session(h)
    await until_offered(h, 9.0)
    _, pages = await get_profiles(h, csms, 502, {"chargingProfileId": [12]})
    assert reported(pages) == {12: (0, body)}


async def test_tx_profile_needs_its_running_transaction(charger: Any, csms: DevCsms) -> None:
    """TC_K_02_CS (K01.FR.09), TC_K_16_CS (K01.FR.33), TC_K_11_CS (K01.FR.16), TC_K_60_CS
    (K01.FR.04), K02.FR.04/05: a TxProfile without a transaction or naming an unknown one is
    Rejected (TxNotFound), on evseId 0 Rejected; with the running transactionId Accepted, it
    overrules the TxDefaultProfile and the pilot follows; it is gone when the transaction
    ends, and the default applies to the next one."""
    h = await ready(charger, csms)
    unknown = absolute(h, 21, "TxProfile", 7, transactionId="UNKNOWN-TRANSACTION-ID")
    answer = await set_profile(csms, 1, unknown)
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "TxNotFound"
    answer = await set_profile(csms, 1, absolute(h, 21, "TxProfile", 7))
    assert answer["status"] == "Rejected"
    assert await set_profile(csms, 1, absolute(h, 22, "TxDefaultProfile", 12)) == {
        "status": "Accepted"
    }
    started = await session(h)
    tx_id = str(started["transactionInfo"]["transactionId"])
    await until_offered(h, 12.0)
    on_station = absolute(h, 21, "TxProfile", 7, transactionId=tx_id)
    assert (await set_profile(csms, 0, on_station))["status"] == "Rejected"
    assert await set_profile(csms, 1, on_station) == {"status": "Accepted"}
    await until_offered(h, 7.0)
    _, pages = await get_profiles(h, csms, 503, {"chargingProfilePurpose": "TxProfile"})
    assert reported(pages) == {21: (1, on_station)}
    h.tap()  # the card again: the transaction ends
    await h.settle(lambda: h.connector().tx_key is None)
    assert [p.profile_id for p in h.station.installed_profiles()] == [22]
    h.unplug()
    await h.advance(2)
    await session(h)
    await until_offered(h, 12.0)


async def test_station_maximum_caps_the_evse(charger: Any, csms: DevCsms) -> None:
    """TC_K_03_CS (K04.FR.03/05, K01.FR.38): a ChargingStationMaxProfile on evseId 0 caps the
    pilot; on an EVSE or Relative it is Rejected; cleared, the hardware maximum returns."""
    h = await ready(charger, csms)
    await charging_session(h)
    assert (await set_profile(csms, 1, absolute(h, 31, "ChargingStationMaxProfile", 8)))[
        "status"
    ] == "Rejected"
    relative = profile(31, "ChargingStationMaxProfile", [(0, 8)], kind="Relative")
    answer = await set_profile(csms, 0, relative)
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "InvalidProfile"
    assert await set_profile(csms, 0, absolute(h, 31, "ChargingStationMaxProfile", 8)) == {
        "status": "Accepted"
    }
    await until_offered(h, 8.0)
    assert await req(csms, "ClearChargingProfile", {"chargingProfileId": 31}) == {
        "status": "Accepted"
    }
    await until_offered(h, HARDWARE_A)


async def test_replacing_by_id_lowers_then_raises(charger: Any, csms: DevCsms) -> None:
    """TC_K_04_CS (K01.FR.05): the same id replaces the profile; the pilot follows each new
    limit down and up, and the report shows the replacement only."""
    h = await ready(charger, csms)
    await charging_session(h)
    assert (await set_profile(csms, 1, absolute(h, 41, "TxDefaultProfile", 6)))[
        "status"
    ] == "Accepted"
    await until_offered(h, 6.0)
    replacement = absolute(h, 41, "TxDefaultProfile", 10, stack_level=2)
    assert (await set_profile(csms, 1, replacement))["status"] == "Accepted"
    await until_offered(h, 10.0)
    _, pages = await get_profiles(h, csms, 504, {"chargingProfileId": [41]})
    assert reported(pages) == {41: (1, replacement)}
    assert len(h.station.installed_profiles()) == 1


async def test_same_stack_level_only_at_different_times(charger: Any, csms: DevCsms) -> None:
    """K01.FR.06 (DuplicateProfile): another id with the same purpose and stackLevel on the
    EVSE is Rejected while their validity overlaps; valid at different times both stay
    installed and the pilot follows each in its time (K01.FR.36/37)."""
    h = await ready(charger, csms)
    await charging_session(h)
    t0 = now(h)
    day = {
        "validFrom": iso_utc(t0 - timedelta(seconds=60)),
        "validTo": iso_utc(t0 + timedelta(seconds=30)),
    }
    night = {"validFrom": iso_utc(t0 + timedelta(seconds=30))}
    first = absolute(h, 111, "TxDefaultProfile", 10, **day)
    assert (await set_profile(csms, 1, first))["status"] == "Accepted"
    await until_offered(h, 10.0)
    overlapping = absolute(h, 112, "TxDefaultProfile", 7)
    answer = await set_profile(csms, 1, overlapping)
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "DuplicateProfile"
    later = absolute(h, 112, "TxDefaultProfile", 7, **night)
    assert (await set_profile(csms, 1, later))["status"] == "Accepted"
    assert sorted(p.profile_id for p in h.station.installed_profiles()) == [111, 112]
    assert offered_a(h) == 10.0
    await h.advance(31)
    await until_offered(h, 7.0)


async def test_lowered_evse_reaches_its_board_before_the_raised_one(
    charger: Any, csms: DevCsms
) -> None:
    """Safety (K01.FR.07 at a period boundary): when one EVSE's limit falls and the other's
    rises at the same instant, the lowered one is applied to its hardware first."""
    h = await ready(charger, csms, connectors=2)
    await session(h)
    h.plug(2)
    await h.advance(1)
    h.tap("0B0B0B0B")
    await h.settle(lambda: h.connector(2).hw.contactor.closed)
    boundary = now(h) + timedelta(seconds=30)
    first = now(h) - timedelta(seconds=30)
    up = profile(51, "TxDefaultProfile", [(0, 8), (60, 14)], start=first)
    down = profile(52, "TxDefaultProfile", [(0, 14), (60, 8)], start=first, stack_level=1)
    assert (await set_profile(csms, 1, up))["status"] == "Accepted"
    assert (await set_profile(csms, 2, down))["status"] == "Accepted"
    await until_offered(h, 8.0, 1)
    await until_offered(h, 14.0, 2)
    order: list[tuple[int, float]] = []

    def watch(connector_id: int, command: Any) -> None:
        amps = getattr(command, "current_a", None)
        if type(command).__name__ == "SetCurrentLimit" and amps is not None:
            order.append((connector_id, amps))

    h.station.add_listener(watch)
    await h.advance((boundary - now(h)).total_seconds() + 1)
    await until_offered(h, 14.0, 1)
    await until_offered(h, 8.0, 2)
    assert order == [(2, 8.0), (1, 14.0)]


async def test_schedules_follow_the_clock(charger: Any, csms: DevCsms) -> None:
    """TC_K_23_CS (K01.FR.30): a startSchedule in the future limits only from then;
    TC_K_22_CS (K01.FR.37): past validTo it limits no more; K01.FR.11/12: each period until
    the next or the duration."""
    h = await ready(charger, csms)
    await charging_session(h)
    later = profile(
        61, "TxDefaultProfile", [(0, 10), (30, 7)], start=now(h) + timedelta(seconds=20)
    )
    assert (await set_profile(csms, 1, later))["status"] == "Accepted"
    await h.advance(5)
    assert offered_a(h) == HARDWARE_A
    await h.advance(16)
    await until_offered(h, 10.0)
    await h.advance(30)
    await until_offered(h, 7.0)
    bounded = absolute(
        h, 62, "TxDefaultProfile", 6, stack_level=1, validTo=iso_utc(now(h) + timedelta(seconds=20))
    )
    assert (await set_profile(csms, 1, bounded))["status"] == "Accepted"
    await until_offered(h, 6.0)
    await h.advance(21)
    await until_offered(h, 7.0)


async def test_refused_profiles_change_nothing(
    charger: Any, csms: DevCsms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TC_K_14_CS (K01.FR.28), TC_K_19_CS (K01.FR.40), TC_K_12_CS (K01.FR.26), K01.FR.31/35/41,
    K01.FR.52/53, ProfileStackLevel, PeriodsPerSchedule, more than one schedule (K01.FR.34):
    Rejected with a reason code; nothing installed, the pilot unchanged."""
    h = await ready(charger, csms)
    await charging_session(h)
    start = now(h) - timedelta(seconds=10)

    async def refused(evse_id: int, body: dict[str, Any], code: str) -> None:
        answer = await set_profile(csms, evse_id, body)
        assert answer["status"] == "Rejected", body
        assert answer["statusInfo"]["reasonCode"] == code, answer

    await refused(2, absolute(h, 71, "TxDefaultProfile", 8), "UnknownEvse")
    await refused(1, absolute(h, -2, "TxDefaultProfile", 8), "InvalidProfile")  # K11.FR.06
    recurring = profile(71, "TxDefaultProfile", [(0, 8)], kind="Recurring", recurrencyKind="Daily")
    await refused(1, recurring, "InvalidProfile")
    await refused(1, profile(71, "TxDefaultProfile", [(0, 8)]), "InvalidProfile")  # no start
    relative_with_start = profile(71, "TxDefaultProfile", [(0, 8)], kind="Relative", start=start)
    await refused(1, relative_with_start, "InvalidProfile")
    await refused(1, profile(71, "TxDefaultProfile", [(10, 8)], start=start), "InvalidProfile")
    unordered = profile(71, "TxDefaultProfile", [(0, 8), (60, 9), (30, 7)], start=start)
    await refused(1, unordered, "InvalidProfile")
    await refused(1, absolute(h, 71, "TxDefaultProfile", 8, stack_level=11), "InvalidStackLevel")
    many = profile(71, "TxDefaultProfile", [(60 * i, 8) for i in range(49)], start=start)
    await refused(1, many, "TooManyElements")
    two = absolute(h, 71, "TxDefaultProfile", 8)
    two["chargingSchedule"].append({**two["chargingSchedule"][0], "id": 2})
    await refused(1, two, "InvalidSchedule")
    # K01.FR.43/48: one phase on a three-phase EVSE without a phase switch; phaseToUse.
    one_phase = absolute(h, 71, "TxDefaultProfile", 8, phases=1)
    await refused(1, one_phase, "InvalidSchedule")
    one_phase["chargingSchedule"][0]["chargingSchedulePeriod"][0]["phaseToUse"] = 2
    await refused(1, one_phase, "InvalidSchedule")
    assert h.station.installed_profiles() == ()
    # K01.FR.52/53: a TX default of one stack level on the station and on an EVSE.
    assert (await set_profile(csms, 0, absolute(h, 72, "TxDefaultProfile", 12)))[
        "status"
    ] == "Accepted"
    await refused(1, absolute(h, 73, "TxDefaultProfile", 8), "DuplicateProfile")
    # TC_K_12_CS: a unit the charger is not configured for (RateUnit is a constant "A,W"
    # here; a board without power metering would say "A").
    model = client(h).device_model
    assert model is not None
    listed = model.get_list

    def only_amps(component: Any, variable: Any) -> list[str]:
        return ["A"] if variable == "RateUnit" else listed(component, variable)

    monkeypatch.setattr(model, "get_list", only_amps)
    await refused(1, absolute(h, 74, "TxDefaultProfile", 8000, unit="W"), "UnsupportedRateUnit")
    answer = await req(
        csms, "GetCompositeSchedule", {"evseId": 1, "duration": 60, "chargingRateUnit": "W"}
    )
    assert answer["status"] == "Rejected"  # TC_K_42_CS (K08.FR.07)
    assert [p.profile_id for p in h.station.installed_profiles()] == [72]
    await until_offered(h, 12.0)


async def test_disabled_smart_charging_is_not_supported(charger: Any, csms: DevCsms) -> None:
    """TC_K_15_CS (K01.FR.29): with SmartChargingCtrlr.Enabled false SetChargingProfile is
    answered with the CALLERROR NotSupported."""
    h = await ready(charger, csms)
    await set_variable(csms, "SmartChargingCtrlr", "Enabled", "false")
    body = {"evseId": 0, "chargingProfile": absolute(h, 81, "TxDefaultProfile", 8)}
    frame = await csms.call_raw(STATION_ID, "SetChargingProfile", body)
    assert frame[0] == 4 and frame[2] == "NotSupported", frame
    assert h.station.installed_profiles() == ()


async def test_profiles_survive_a_restart(charger: Any, csms: DevCsms) -> None:
    """TC_K_13_CS (K01.FR.27): an installed profile is stored; after a restart it is
    reported the same and limits the next transaction."""
    h = await ready(charger, csms)
    body = absolute(h, 91, "TxDefaultProfile", 9)
    assert (await set_profile(csms, 0, body))["status"] == "Accepted"
    await h.app.stop()
    h2: Harness = await charger(csms, wait_accepted=False, boot_id="boot-2", ocpp_version="2.0.1")
    await csms.wait_connected(STATION_ID, timeout_s=5)
    await accepted(h2)
    status, pages = await get_profiles(h2, csms, 505, {"chargingProfileId": [91]})
    assert status == "Accepted"
    assert reported(pages) == {91: (0, body)}
    await session(h2)
    await until_offered(h2, 9.0)


# ----------------------------------------------------------------------------- K10


async def test_clear_by_id_and_by_criteria(charger: Any, csms: DevCsms) -> None:
    """TC_K_05_CS (K10.FR.03), TC_K_06_CS / TC_K_24_CS (K10.FR.04), TC_K_07_CS / TC_K_08_CS
    (K10.FR.01), TC_K_09_CS (K10.FR.05/07): by id, then GetChargingProfiles says NoProfiles;
    by purpose and stack level (one or several); nothing matching is Unknown; clearing the
    TxDefaultProfile of a running transaction gives it the hardware maximum at once."""
    h = await ready(charger, csms, connectors=2)
    assert await req(csms, "ClearChargingProfile", {"chargingProfileId": 1}) == {
        "status": "Unknown"
    }
    for pid, evse in ((1, 1), (2, 2)):
        body = absolute(h, pid, "TxDefaultProfile", 8, stack_level=3)
        assert (await set_profile(csms, evse, body))["status"] == "Accepted"
    assert (await set_profile(csms, 0, absolute(h, 3, "ChargingStationMaxProfile", 20)))[
        "status"
    ] == "Accepted"
    assert await req(csms, "ClearChargingProfile", {"chargingProfileId": 3}) == {
        "status": "Accepted"
    }
    status, _ = await get_profiles(h, csms, 506, {"chargingProfileId": [3]})
    assert status == "NoProfiles"
    unknown = {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 4}
    assert await req(csms, "ClearChargingProfile", {"chargingProfileCriteria": unknown}) == {
        "status": "Unknown"
    }
    external = {"chargingProfilePurpose": "ChargingStationExternalConstraints"}
    assert await req(csms, "ClearChargingProfile", {"chargingProfileCriteria": external}) == {
        "status": "Unknown"
    }
    one = {"evseId": 2, "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 3}
    assert await req(csms, "ClearChargingProfile", {"chargingProfileCriteria": one}) == {
        "status": "Accepted"
    }
    assert [p.profile_id for p in h.station.installed_profiles()] == [1]
    await session(h)
    await until_offered(h, 8.0)
    both = {"chargingProfilePurpose": "TxDefaultProfile"}
    assert await req(csms, "ClearChargingProfile", {"chargingProfileCriteria": both}) == {
        "status": "Accepted"
    }
    await until_offered(h, HARDWARE_A)
    status, _ = await get_profiles(h, csms, 507, {"chargingProfilePurpose": "TxDefaultProfile"})
    assert status == "NoProfiles"


# ----------------------------------------------------------------------------- K09


async def test_get_charging_profiles_by_criteria(charger: Any, csms: DevCsms) -> None:
    """TC_K_29_CS (K09.FR.05), TC_K_30_CS / TC_K_33_CS / TC_K_35_CS / TC_K_36_CS (K09.FR.04),
    TC_K_31_CS (K09.FR.06), TC_K_34_CS: evseId 0 reports only the station's profiles, an
    EVSE only its own, no evseId all of them (one message per EVSE, tbc on all but the
    last, K09.FR.02); stackLevel, purpose and chargingLimitSource narrow it; nothing
    matching is NoProfiles."""
    h = await ready(charger, csms, connectors=2)
    station_max = absolute(h, 1, "ChargingStationMaxProfile", 30, stack_level=1)
    default1 = absolute(h, 2, "TxDefaultProfile", 10, stack_level=1)
    default1b = absolute(h, 3, "TxDefaultProfile", 11, stack_level=2)
    default2 = absolute(h, 4, "TxDefaultProfile", 12, stack_level=1)
    for evse, body in ((0, station_max), (1, default1), (1, default1b), (2, default2)):
        assert (await set_profile(csms, evse, body))["status"] == "Accepted"
    everything = {"chargingLimitSource": ["CSO"]}
    status, pages = await get_profiles(h, csms, 601, {"stackLevel": 1}, evseId=0)
    assert status == "Accepted" and reported(pages) == {1: (0, station_max)}
    _, pages = await get_profiles(h, csms, 602, everything, evseId=1)
    assert reported(pages) == {2: (1, default1), 3: (1, default1b)}
    _, pages = await get_profiles(h, csms, 603, {"stackLevel": 1}, evseId=1)
    assert reported(pages) == {2: (1, default1)}
    criteria = {"chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 2}
    _, pages = await get_profiles(h, csms, 604, criteria, evseId=1)
    assert reported(pages) == {3: (1, default1b)}
    _, pages = await get_profiles(h, csms, 605, everything)
    assert [(p["evseId"], p["tbc"]) for p in pages] == [(0, True), (1, True), (2, False)]
    assert set(reported(pages)) == {1, 2, 3, 4}
    status, _ = await get_profiles(h, csms, 606, {"chargingLimitSource": ["EMS"]}, evseId=1)
    assert status == "NoProfiles"
    status, _ = await get_profiles(h, csms, 607, {"stackLevel": 5})
    assert status == "NoProfiles"


# ----------------------------------------------------------------------------- K08


async def test_composite_schedule(charger: Any, csms: DevCsms) -> None:
    """TC_K_39_CS (K08.FR.02/03/06): without profiles the station's schedule starts at 0 with
    the hardware limit; TC_K_47_CS (K08.FR.05): an unknown EVSE is Rejected; TC_K_41_CS
    (K08.FR.04): a station maximum, a TxDefaultProfile and a TxProfile combine into the
    lowest of them, the TxDefaultProfile again after the TxProfile's duration; in W too."""
    h = await ready(charger, csms)
    answer = await req(
        csms, "GetCompositeSchedule", {"evseId": 0, "duration": 300, "chargingRateUnit": "A"}
    )
    assert answer["status"] == "Accepted"
    schedule = answer["schedule"]
    assert (schedule["evseId"], schedule["duration"], schedule["chargingRateUnit"]) == (0, 300, "A")
    assert schedule["chargingSchedulePeriod"][0]["startPeriod"] == 0
    answer = await req(csms, "GetCompositeSchedule", {"evseId": 3, "duration": 300})
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == "UnknownEvse"
    tx_id = await charging_session(h)
    start = now(h)
    valid = {"validFrom": iso_utc(start), "validTo": iso_utc(start + timedelta(seconds=401))}
    maximum = profile(1, "ChargingStationMaxProfile", [(0, 10)], start=start, duration_s=86400)
    default = profile(
        2,
        "TxDefaultProfile",
        [(0, 6), (60, 10), (120, 8), (180, 15), (260, 8)],
        start=start,
        duration_s=300,
        **valid,
    )
    tx = profile(
        3,
        "TxProfile",
        [(0, 8), (50, 11), (140, 16), (200, 6), (240, 12)],
        start=start,
        duration_s=260,
        transactionId=tx_id,
        **valid,
    )
    for evse, body in ((0, maximum), (1, default), (1, tx)):
        assert (await set_profile(csms, evse, body))["status"] == "Accepted"
    await until_offered(h, 8.0)
    answer = await req(
        csms, "GetCompositeSchedule", {"evseId": 1, "duration": 400, "chargingRateUnit": "A"}
    )
    schedule = answer["schedule"]
    assert schedule["duration"] == 400
    assert [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]] == [
        (0, 8),
        (50, 10),
        (200, 6),
        (240, 10),
        (260, 8),
        (300, 10),
    ]
    answer = await req(
        csms, "GetCompositeSchedule", {"evseId": 1, "duration": 60, "chargingRateUnit": "W"}
    )
    assert answer["schedule"]["chargingSchedulePeriod"][0] == {
        "startPeriod": 0,
        "limit": 8 * 230 * 3,
        "numberPhases": 3,
    }
    assert events(h)[0]["eventType"] == "Started"


# ----------------------------------------------------------------------------- K11/K13


def rate_changes(h: Harness) -> list[dict[str, Any]]:
    return [e for e in events(h) if e["triggerReason"] == "ChargingRateChanged"]


async def test_charging_rate_changed_when_the_limit_moves_significantly(
    charger: Any, csms: DevCsms
) -> None:
    """TriggerReasonEnumType ChargingRateChanged (K11.FR.04, K13.FR.03): a limit change of a
    running transaction by more than SmartChargingCtrlr.LimitChangeSignificance percent
    (a profile or the local API's limit, evsed's external limit) is an Updated event with
    triggerReason ChargingRateChanged, journaled in the transaction's seqNo order; smaller
    changes are not."""
    h = await ready(charger, csms)
    tx_id = await charging_session(h)
    assert rate_changes(h) == []
    body = absolute(h, 101, "TxDefaultProfile", 10)
    assert (await set_profile(csms, 1, body))["status"] == "Accepted"
    await until_offered(h, 10.0)
    await h.settle(lambda: len(rate_changes(h)) == 1)
    change = rate_changes(h)[0]
    assert change["eventType"] == "Updated"
    assert change["transactionInfo"]["transactionId"] == tx_id
    body = absolute(h, 101, "TxDefaultProfile", 10.05)  # 0.5 %: below the default 1 %
    assert (await set_profile(csms, 1, body))["status"] == "Accepted"
    await until_offered(h, 10.05)
    await set_variable(csms, "SmartChargingCtrlr", "LimitChangeSignificance", "50")
    body = absolute(h, 101, "TxDefaultProfile", 8)  # 20 % of 10 A
    assert (await set_profile(csms, 1, body))["status"] == "Accepted"
    await until_offered(h, 8.0)
    h.station.set_local_limit(1, Decimal(4), 600)  # the local API: 60 % below 10 A
    await until_offered(h, 0.0)  # below the 6 A pilot minimum: paused
    await h.settle(lambda: len(rate_changes(h)) == 2)
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert_one_transaction(events(h))
    assert len(rate_changes(h)) == 2


async def test_local_api_limit_is_an_external_limit(charger: Any, csms: DevCsms) -> None:
    """K12.FR.02/04/05, TC_K_52_CS, K13.FR.02: the local API's limit (a home energy
    manager's) is told with NotifyChargingLimit source EMS (never CSO) when it changes by
    more than LimitChangeSignificance, not on each refresh; GetChargingProfiles reports it
    as ChargingStationExternalConstraints (negative id, K11.FR.06); the CSMS cannot clear
    it (K10.FR.08); removing it sends ClearedChargingLimit."""
    h = await ready(charger, csms)
    h.station.set_local_limit(1, Decimal(10), 600)
    await h.settle(lambda: len(h.frames("NotifyChargingLimit")) == 1)
    assert h.frames("NotifyChargingLimit")[0].payload == {
        "chargingLimit": {"chargingLimitSource": "EMS"},
        "evseId": 1,
    }
    h.station.set_local_limit(1, Decimal(10), 600)  # a refresh
    h.station.set_local_limit(1, Decimal("10.05"), 600)  # 0.5 %: below 1 %
    h.station.set_local_limit(0, Decimal(20), 600)  # the station
    await h.settle(lambda: len(h.frames("NotifyChargingLimit")) == 2)
    assert h.frames("NotifyChargingLimit")[1].payload == {
        "chargingLimit": {"chargingLimitSource": "EMS"}
    }
    status, pages = await get_profiles(h, csms, 701, {"chargingLimitSource": ["EMS"]}, evseId=1)
    assert status == "Accepted"
    assert [(p["evseId"], p["chargingLimitSource"]) for p in pages] == [(1, "EMS")]
    (external,) = pages[0]["chargingProfile"]
    assert external["id"] == -2
    assert external["chargingProfilePurpose"] == "ChargingStationExternalConstraints"
    assert external["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 10.05}
    ]
    assert await req(csms, "ClearChargingProfile", {"chargingProfileId": -2}) == {
        "status": "Unknown"
    }
    status, _ = await get_profiles(h, csms, 702, {"chargingLimitSource": ["CSO"]})
    assert status == "NoProfiles"
    assert h.station.clear_local_limit(1)
    await h.settle(lambda: len(h.frames("ClearedChargingLimit")) == 1)
    assert h.frames("ClearedChargingLimit")[0].payload == {
        "chargingLimitSource": "EMS",
        "evseId": 1,
    }
    assert len(h.frames("NotifyChargingLimit")) == 2


# ----------------------------------------------------------------------------- untrusted input

FUZZED_ACTIONS = (
    "SetChargingProfile",
    "SetChargingProfile",
    "ClearChargingProfile",
    "GetChargingProfiles",
    "GetCompositeSchedule",
)


@st.composite
def smart_call(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A schema-valid request of this block, from the official 2.0.1 schemas."""
    action = draw(st.sampled_from(FUZZED_ACTIONS))
    schema = rpc201.load_schema(2, action)
    payload = draw(
        valid_value(schema, schema).filter(
            lambda p: rpc201.SCHEMAS.first_error(2, action, p) is None
        )
    )
    return action, payload


@pytest.fixture
async def fuzz_target(csms: DevCsms, charger: Any) -> Harness:
    """One charger for all examples (the state carries over, as in the field)."""
    h = await ready(charger, csms)
    await session(h)
    return h


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(smart_call(), min_size=1, max_size=4))
async def test_fuzzed_smart_charging_requests_are_answered_safely(
    csms: DevCsms, fuzz_target: Harness, steps: list[tuple[str, dict[str, Any]]]
) -> None:
    """Untrusted input: every schema-valid SetChargingProfile, ClearChargingProfile,
    GetChargingProfiles and GetCompositeSchedule (any ids, times, limits, periods, EVSEs)
    gets a schema-valid CALLRESULT, never a CALLERROR or a crash; the pilot never offers
    more than the hardware nor is the contactor closed outside a transaction; every
    ReportChargingProfiles is schema-valid; the connection stays up."""
    h = fuzz_target
    for action, payload in steps:
        frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
        assert frame[0] == 3, (action, payload, frame)
        rpc201.validate(3, action, frame[2])
        await h.advance(0.2, step_s=0.1)
        check_station(h)
        assert offered_a(h) <= HARDWARE_A
    for page in [f.payload for f in h.frames("ReportChargingProfiles")]:
        rpc201.validate(2, "ReportChargingProfiles", page)
    assert client(h).connects == 1
