"""OCPP 2.0.1 external limits (K11-K13): the local API's limit as an EMS's limit."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from controller.core.charging_profiles import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
    to_decimal,
)
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import smartcharging
from controller.ocpp201 import status as status201

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)


def _evse(connector_id: int) -> int:
    """The EVSE of a connector (0: the station)."""
    return 0 if connector_id == 0 else status201.evse_of(connector_id)[0]


def external_profiles(client: Ocpp201Client) -> list[ChargingProfile]:
    """The local API's limits (a home energy manager's, evsed's external limit source) as
    ChargingStationExternalConstraints for reports (K11.FR.06, K12.FR.05): negative ids as
    K11.FR.06 recommends (-1 the station, -1-N connector N), the value in effect from now."""
    start = client.clock.utc_now().replace(microsecond=0)
    out = []
    for limit in client.station.local_limits():
        cid = int(limit["connector"])
        out.append(
            ChargingProfile(
                profile_id=-1 - cid,
                stack_level=0,
                purpose=ProfilePurpose.EXTERNAL_CONSTRAINTS,
                kind=ProfileKind.ABSOLUTE,
                connector_id=cid,
                schedule=ChargingSchedule(
                    unit=RateUnit.A,
                    start=start,
                    periods=(SchedulePeriod(0, to_decimal(limit["effective_a"])),),
                    schedule_id=-1 - cid,
                ),
            )
        )
    return out


def follow(client: Ocpp201Client) -> None:
    """NotifyChargingLimit (source EMS) when the local API's limit in effect on an EVSE or
    the station moved by more than LimitChangeSignificance percent from what the CSMS was
    last told (K12.FR.02, K11.FR.02; never CSO, K11.FR.05/K12.FR.04); ClearedChargingLimit
    when it is removed (K13.FR.02). Sent while connected (a change while offline is told
    with the next one)."""
    told: dict[int, Decimal] = {}  # connector -> the limit the CSMS was told

    def changed(connector_id: int, value_a: Decimal | None) -> None:
        if client.connection_state() != "accepted":
            return
        evse: dict[str, Any] = {} if connector_id == 0 else {"evseId": _evse(connector_id)}
        if value_a is None:
            if told.pop(connector_id, None) is not None:
                payload = {"chargingLimitSource": smartcharging.SOURCE_EMS, **evse}
                client.spawn(_notify(client, "ClearedChargingLimit", payload), name="limit")
            return
        before = told.get(connector_id)
        if before is not None and not _significant(client, before, value_a):
            return
        told[connector_id] = value_a
        payload = {
            "chargingLimit": {"chargingLimitSource": smartcharging.SOURCE_EMS},
            **evse,
        }
        client.spawn(_notify(client, "NotifyChargingLimit", payload), name="limit")

    client.station.on_local_limit(changed)


def _significant(client: Ocpp201Client, before: Decimal, after: Decimal) -> bool:
    """More than SmartChargingCtrlr.LimitChangeSignificance percent of ``before``."""
    model = client.device_model
    try:
        percent = (
            Decimal(0)
            if model is None
            else model.get_decimal(smartcharging.SMART_CHARGING, "LimitChangeSignificance")
        )
    except (KeyError, ValueError, ArithmeticError):
        percent = Decimal(0)
    change = abs(after - before)
    return change > 0 and (before == 0 or change * 100 / before > percent)


async def _notify(client: Ocpp201Client, action: str, payload: dict[str, Any]) -> None:
    try:
        await client.call(action, payload)
    except (CallError, CallTimeout, ConnectionLost) as exc:
        LOG.warning("%s %s not delivered: %s", action, payload, exc)
