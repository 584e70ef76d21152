"""OCPP 2.0.1 DataTransfer from the CSMS (P01): evsed implements no vendor extension, so
every vendorId is unknown (P01.FR.05); it sends none itself (P02.FR.02: OCPP covers what it
does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client


async def data_transfer(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """P01.FR.05: UnknownVendorId for any vendorId, the request has no effect."""
    return {"status": "UnknownVendorId"}


ROUTES = {"DataTransfer": data_transfer}
