"""OCPP 1.6 transaction ids between the primary's namespace (the charger's reference) and a
secondary backend's own: the fields that carry one, in either direction. 2.0.1 needs none:
its transactionId is the charger's own, the same for every backend."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

# Charger-to-CSMS messages carrying the primary's transactionId at the top level.
TO_BACKEND_FIELDS = frozenset({"MeterValues", "StopTransaction"})


def to_backend(
    action: str, payload: dict[str, Any], lookup: Callable[[int], int | None]
) -> dict[str, Any] | None:
    """``payload`` with the primary's transactionId replaced by the backend's (``lookup``).
    None: the message names a transaction this backend never accepted (it was down before the
    proxy knew it, or refused its StartTransaction): it is not sent."""
    if action not in TO_BACKEND_FIELDS or "transactionId" not in payload:
        return payload
    mapped = lookup(int(payload["transactionId"]))
    if mapped is None:
        return None
    out = dict(payload)
    out["transactionId"] = mapped
    return out


class ForeignTransaction(ValueError):
    """A secondary named a transaction id that is not one of its own."""


def from_backend(
    action: str, payload: dict[str, Any], lookup: Callable[[int], list[int]]
) -> dict[str, Any]:
    """A secondary's command with its transactionId replaced by the primary's (the charger's
    reference); raises ForeignTransaction for an id it was never given, or one it gave to
    two transactions."""
    if action == "RemoteStopTransaction" and "transactionId" in payload:
        out = dict(payload)
        out["transactionId"] = _one(lookup, payload["transactionId"])
        return out
    if action == "SetChargingProfile":
        profile = payload.get("csChargingProfiles")
        if isinstance(profile, dict) and "transactionId" in profile:
            out = copy.deepcopy(payload)
            out["csChargingProfiles"]["transactionId"] = _one(lookup, profile["transactionId"])
            return out
    return payload


def _one(lookup: Callable[[int], list[int]], backend_tx: Any) -> int:
    found = lookup(int(backend_tx))
    if len(found) != 1:
        why = "is not one of this backend's" if not found else "was given to several"
        raise ForeignTransaction(f"transactionId {backend_tx} {why} transactions")
    return found[0]
