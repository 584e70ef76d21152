"""GetCompositeSchedule combines local limits with the charging profiles (2.0.1 K08,
TC_K_39/40/41_CS "a combination of local limits and the prevailing Charging Profiles"; the
same for 1.6 5.7): the local API's limit until its timeout, the site fallback after it, the
[site] current, and (issue 15) every backend's profiles."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from controller.dev.devcsms import DevCsms
from tests.ocpp16.test_e2e_csms_requests import req as req16
from tests.ocpp201.test_e2e_remote import ready, req


async def test_1_6_composite_has_the_local_limit_then_its_fallback(
    charger: Any, csms: DevCsms
) -> None:
    h = await charger(csms, site={"max_current_a": 14, "fallback_current_a": 8})
    h.station.set_local_limit(1, Decimal(10), 600)
    answer = await req16(
        csms, "GetCompositeSchedule", {"connectorId": 1, "duration": 1200, "chargingRateUnit": "A"}
    )
    assert answer["status"] == "Accepted"
    periods = answer["chargingSchedule"]["chargingSchedulePeriod"]
    assert [(p["startPeriod"], p["limit"]) for p in periods] == [(0, 10), (600, 8)]
    # The station (connector 0): the site's 14 A caps the connector's 16 A hardware.
    station = await req16(
        csms, "GetCompositeSchedule", {"connectorId": 0, "duration": 60, "chargingRateUnit": "A"}
    )
    assert [p["limit"] for p in station["chargingSchedule"]["chargingSchedulePeriod"]] == [14]


async def test_2_0_1_composite_has_the_station_wide_local_limit(
    charger: Any, csms: DevCsms
) -> None:
    """TC_K_41_CS with a local limit: the lowest of the profile and the local limit."""
    h = await ready(charger, csms)
    h.station.set_local_limit(0, Decimal(9), 300)
    answer = await req(csms, "GetCompositeSchedule", {"evseId": 1, "duration": 600})
    assert answer["status"] == "Accepted"
    periods = answer["schedule"]["chargingSchedulePeriod"]
    assert [(p["startPeriod"], p["limit"]) for p in periods] == [(0, 9), (300, 6)]
