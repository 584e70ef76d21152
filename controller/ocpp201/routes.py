"""The CSMS requests the OCPP 2.0.1 client answers: one table of declared routes, each
feature module contributing its own ``ROUTES`` (action -> handler(client, payload))."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.ocpp201 import (
    authorization,
    availability,
    certificates,
    chargingprofiles,
    customer,
    datatransfer,
    firmware,
    locallist,
    logs,
    monitoring,
    network,
    provisioning,
    remote,
    reservations,
    reset,
    trigger,
    txstatus,
)

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

Handler = Callable[["Ocpp201Client", dict[str, Any]], Awaitable[dict[str, Any]]]

# One module per line: a feature adds its own.
ROUTES: dict[str, Handler] = {
    **provisioning.ROUTES,
    **authorization.ROUTES,
    **locallist.ROUTES,
    **txstatus.ROUTES,
    **reservations.ROUTES,
    **datatransfer.ROUTES,
    **availability.ROUTES,
    **reset.ROUTES,
    **remote.ROUTES,
    **trigger.ROUTES,
    **customer.ROUTES,
    **firmware.ROUTES,
    **logs.ROUTES,
    **monitoring.ROUTES,
    **certificates.ROUTES,
    **network.ROUTES,
    **chargingprofiles.ROUTES,
}
