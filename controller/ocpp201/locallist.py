"""OCPP 2.0.1 Local Authorization List management (D01 SendLocalList, D02
GetLocalListVersion) over the store's list, which the 1.6 adapter shares."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from controller.core.records import StoreError, TagInfo
from controller.csms.rpc import CallError
from controller.ocpp201 import rpc as rpc201
from controller.ocpp201.authorization import LIST_CTRLR, entry_of, token_key
from controller.ocpp201.dm import DeviceModel
from controller.storage.store import LocalListTooLong

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# Without a device model (unit tests of the wire alone): the list is enabled, as in the model.
DEFAULT_MAX_ENTRIES = 1000


def _enabled(model: DeviceModel | None) -> bool:
    if model is None:
        return True
    try:
        return model.get(LIST_CTRLR, "Enabled") != "false"
    except KeyError:
        return True


def _limit(model: DeviceModel | None, variable: str) -> int | None:
    """LocalAuthListCtrlr.<variable> (ItemsPerMessage, BytesPerMessage), None if absent."""
    if model is None:
        return None
    try:
        text = model.get(LIST_CTRLR, variable)
    except KeyError:
        return None
    return None if text is None else int(text)


def _max_entries(model: DeviceModel | None) -> int:
    """The maxLimit of LocalAuthListCtrlr.Entries (D01.FR.12): what the list can hold."""
    if model is None:
        return DEFAULT_MAX_ENTRIES
    definition = model.find(LIST_CTRLR, "Entries")
    limit = None if definition is None else definition.characteristics.max_limit
    return DEFAULT_MAX_ENTRIES if limit is None else int(limit)


def _failed(reason: str, detail: str) -> dict[str, Any]:
    LOG.warning("SendLocalList failed: %s", detail)
    return {"status": "Failed", "statusInfo": {"reasonCode": reason, "additionalInfo": detail}}


async def send_local_list(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """D01: a Full list replaces the list (D01.FR.04/15), a Differential one adds or updates
    the entries with an idTokenInfo and removes those without (D01.FR.05/16/17); the version
    is stored with the change in one commit (D01.FR.01). VersionMismatch for a Differential
    update not above the list's version (D01.FR.19). Failed, with the list as it was, while
    LocalAuthListCtrlr is disabled, beyond ItemsPerMessage / BytesPerMessage (D01.FR.11), with
    a token twice (D01.FR.06), or when the list would outgrow Entries' maxLimit. A
    versionNumber under 1 (D01.FR.18) or a Full entry without idTokenInfo is a CALLERROR."""
    model = client.device_model
    version = int(payload["versionNumber"])
    full = payload["updateType"] == "Full"
    items: list[dict[str, Any]] = payload.get("localAuthorizationList") or []
    if version < 1:
        # GetLocalListVersion's 0 means "no list" (D02); a list never has it.
        raise CallError(rpc201.PROPERTY_CONSTRAINT_VIOLATION, "versionNumber must be 1 or more")
    entries: list[tuple[str, TagInfo | None]] = []
    seen: set[str] = set()
    for item in items:
        key = token_key(item["idToken"])
        info = item.get("idTokenInfo")
        if info is None and full:
            raise CallError(
                rpc201.OCCURRENCE_CONSTRAINT_VIOLATION,
                f"idTokenInfo missing for {key} in a Full update",
            )
        folded = key.casefold()
        if folded in seen:
            return _failed("InvalidValue", f"{key} is in the list twice (D01.FR.06)")
        seen.add(folded)
        if info is None:
            entries.append((key, None))
        else:
            entry = entry_of(info)
            entries.append((key, (entry.status, entry.parent_id_tag, entry.expiry_date)))
    if not _enabled(model):
        return _failed("NotEnabled", "LocalAuthListCtrlr.Enabled is false")
    items_max = _limit(model, "ItemsPerMessage")
    if items_max is not None and len(items) > items_max:
        return _failed("TooManyElements", f"{len(items)} entries, at most {items_max}")
    bytes_max = _limit(model, "BytesPerMessage")
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if bytes_max is not None and size > bytes_max:
        return _failed("TooLargeElement", f"{size} bytes, at most {bytes_max}")
    store = client.store
    if not full and version <= store.local_list_version():
        return {"status": "VersionMismatch"}
    try:
        store.local_list_apply(version, entries, full=full, max_entries=_max_entries(model))
    except LocalListTooLong as exc:
        return _failed("OutOfStorage", str(exc))
    except StoreError as exc:
        return _failed("InternalError", str(exc))
    LOG.info(
        "local list version %d (%s, %d entries): %d entries now",
        version,
        payload["updateType"],
        len(entries),
        store.local_list_count(),
    )
    return {"status": "Accepted"}


async def get_local_list_version(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """D02: the version of the last accepted SendLocalList (D02.FR.01), also of a list that
    was emptied since (D02 remark); 0 before any (D02.FR.02) and while LocalAuthListCtrlr is
    disabled (D02.FR.03)."""
    if not _enabled(client.device_model):
        return {"versionNumber": 0}
    return {"versionNumber": client.store.local_list_version()}


ROUTES = {
    "SendLocalList": send_local_list,
    "GetLocalListVersion": get_local_list_version,
}
