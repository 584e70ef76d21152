"""End-to-end: the Local Auth List Management profile against the dev CSMS over a real
WebSocket: 5.15 SendLocalList (Full / Differential / VersionMismatch / Failed), 5.10
GetLocalListVersion, 9.2 configuration keys, and the list in authorization (3.5.2, 3.5.3,
3.5.4, 9.1.12 LocalAuthorizeOffline, 9.1.13 LocalPreAuthorize), with the OCPP 1.6 errata
sheet (3.52 listVersion never 0 / -1).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ocpp.v16 import call

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD, STATION_ID

OTHER = "0B0B0B0B"
THIRD = "0C0C0C0C"


# ----------------------------------------------------------------------------- helpers


async def raw(csms: DevCsms, action: str, payload: dict[str, Any]) -> list[Any]:
    return await csms.call_raw(STATION_ID, action, payload, timeout_s=5)


async def req(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A CSMS CALL as raw JSON; returns the CALLRESULT payload (fails on CALLERROR)."""
    frame = await raw(csms, action, payload)
    assert frame[0] == 3, f"expected CALLRESULT to {action}, got {frame}"
    assert isinstance(frame[2], dict)
    return frame[2]


def entry(id_tag: str, status: str | None = "Accepted", **extra: str) -> dict[str, Any]:
    """AuthorizationData (7.1); status None = no idTagInfo (Differential: delete)."""
    if status is None:
        return {"idTag": id_tag}
    return {"idTag": id_tag, "idTagInfo": {"status": status, **extra}}


async def send_list(
    csms: DevCsms, version: int, update: str, items: list[dict[str, Any]] | None
) -> str:
    payload: dict[str, Any] = {"listVersion": version, "updateType": update}
    if items is not None:
        payload["localAuthorizationList"] = items
    result = await req(csms, "SendLocalList", payload)
    return str(result["status"])


async def list_version(csms: DevCsms) -> int:
    result = await req(csms, "GetLocalListVersion", {})
    assert set(result) == {"listVersion"}
    return int(result["listVersion"])


def local_list(h: Any) -> dict[str, str]:
    return {tag: info[0] for tag, info in h.app.store.local_list_entries().items()}


async def go_offline(h: Any, csms: DevCsms) -> None:
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.settle(lambda: h.app.port.connection_state() != "accepted")


async def tap_started(h: Any, card: str = CARD) -> bool:
    """Plug in, tap ``card``; True when the contactor closed (a transaction started)."""
    h.plug()
    await h.advance(1)
    h.tap(card)
    await h.settle(lambda: h.connector().state.authorizing is None)
    await h.advance(2)
    await asyncio.sleep(0.05)  # real time for any straggling task before judging
    return bool(h.connector().state.tx_active and h.connector().hw.contactor.closed)


async def change(csms: DevCsms, key: str, value: str) -> str:
    result = await req(csms, "ChangeConfiguration", {"key": key, "value": value})
    return str(result["status"])


# ----------------------------------------------------------------------------- 5.15 / 5.10


async def test_full_update_replaces_list(csms: DevCsms, charger: Any) -> None:
    """5.15 / 7.48 Full: "the current Local Authorization List must be replaced by the values
    in this message"; 5.10 GetLocalListVersion reports its version (sent through the ocpp
    library, schema-validated on both ends).

    OCTT: TC_043_CS (1.6); TC_D_01_CS, TC_D_08_CS (2.0.1)
    """
    h = await charger(csms)
    assert await list_version(csms) == 0  # 5.10: 0 = the list is empty
    result = await csms.call(
        STATION_ID,
        call.SendLocalList(
            list_version=4,
            update_type="Full",
            local_authorization_list=[
                {"idTag": CARD, "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}},
                {"idTag": OTHER, "idTagInfo": {"status": "Blocked"}},
            ],
        ),
    )
    assert result.status == "Accepted"
    lib = await csms.call(STATION_ID, call.GetLocalListVersion())
    assert lib.list_version == 4
    assert h.app.store.local_list_entries() == {
        CARD: ("Accepted", "FLEET", None),
        OTHER: ("Blocked", None, None),
    }
    # A second Full list replaces the first entirely, also with a lower version (the version
    # check of 7.47 is for Differential updates only).
    assert await send_list(csms, 2, "Full", [entry(THIRD, "Expired")]) == "Accepted"
    assert local_list(h) == {THIRD: "Expired"}
    assert await list_version(csms) == 2


async def test_full_update_without_list_empties_it(csms: DevCsms, charger: Any) -> None:
    """6.41: "If no (empty) localAuthorizationList is given and the updateType is Full, all
    identifications are removed from the list"; 5.10: then version 0 (empty list).

    OCTT: TC_D_04_CS (2.0.1)
    """
    h = await charger(csms)
    assert await send_list(csms, 3, "Full", [entry(CARD)]) == "Accepted"
    assert await send_list(csms, 5, "Full", None) == "Accepted"
    assert local_list(h) == {}
    assert await list_version(csms) == 0
    assert await send_list(csms, 6, "Full", [entry(CARD)]) == "Accepted"
    assert await send_list(csms, 7, "Full", []) == "Accepted"
    assert local_list(h) == {}
    assert await list_version(csms) == 0


async def test_differential_update_adds_updates_and_removes(csms: DevCsms, charger: Any) -> None:
    """5.15 / 7.1 Differential: an entry with idTagInfo is added or updated, one without it is
    deleted; the list then carries the request's listVersion (6.41). 6.41: a Differential
    without localAuthorizationList "will have no effect on the list".

    OCTT: TC_043_CS (1.6); TC_D_02_CS, TC_D_03_CS (2.0.1)
    """
    h = await charger(csms)
    assert await send_list(csms, 1, "Full", [entry(CARD), entry(OTHER)]) == "Accepted"
    items = [entry(CARD, "Blocked"), entry(OTHER, None), entry(THIRD, "Accepted")]
    assert await send_list(csms, 2, "Differential", items) == "Accepted"
    assert local_list(h) == {CARD: "Blocked", THIRD: "Accepted"}
    assert await list_version(csms) == 2
    # Deleting an idTag that is not in the list is harmless.
    assert await send_list(csms, 3, "Differential", [entry("NOT-LISTED", None)]) == "Accepted"
    assert await send_list(csms, 4, "Differential", None) == "Accepted"
    assert local_list(h) == {CARD: "Blocked", THIRD: "Accepted"}
    assert await list_version(csms) == 4
    # IdToken is CiString20Type (errata 3.74): case-insensitive.
    assert await send_list(csms, 5, "Differential", [entry(CARD.lower(), None)]) == "Accepted"
    assert local_list(h) == {THIRD: "Accepted"}


async def test_differential_version_mismatch(csms: DevCsms, charger: Any) -> None:
    """7.47 VersionMismatch: "Version number in the request for a differential update is less
    or equal then version number of current list"; the list stays as it was.

    OCTT: TC_043_2_CS (1.6); TC_D_06_CS (2.0.1)
    """
    h = await charger(csms)
    assert await send_list(csms, 5, "Full", [entry(CARD)]) == "Accepted"
    for version in (5, 4, 1):
        status = await send_list(csms, version, "Differential", [entry(OTHER)])
        assert status == "VersionMismatch", version
    assert local_list(h) == {CARD: "Accepted"}
    assert await list_version(csms) == 5
    assert await send_list(csms, 6, "Differential", [entry(OTHER)]) == "Accepted"
    assert await list_version(csms) == 6
    # An empty list has version 0 (5.10), so any valid version (>= 1) may follow.
    assert await send_list(csms, 9, "Full", None) == "Accepted"
    assert await send_list(csms, 1, "Differential", [entry(CARD)]) == "Accepted"
    assert await list_version(csms) == 1


@pytest.mark.parametrize("version", [0, -1])
async def test_list_version_zero_and_minus_one_refused(
    csms: DevCsms, charger: Any, version: int
) -> None:
    """Errata 3.52 (6.41): listVersion "SHALL NOT be -1 or 0 as these have a special meaning
    in GetLocalListVersion.conf" -> CALLERROR PropertyConstraintViolation (OCPP-J 4.2.3:
    a field contains an invalid value); nothing changes."""
    h = await charger(csms)
    assert await send_list(csms, 2, "Full", [entry(CARD)]) == "Accepted"
    for update in ("Full", "Differential"):
        frame = await raw(
            csms,
            "SendLocalList",
            {"listVersion": version, "updateType": update, "localAuthorizationList": []},
        )
        assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation", frame
    assert local_list(h) == {CARD: "Accepted"}
    assert await list_version(csms) == 2


async def test_malformed_lists_get_callerrors(csms: DevCsms, charger: Any) -> None:
    """6.41: "All idTags in the localAuthorizationList MUST be unique" (CiString20, errata
    3.74) -> PropertyConstraintViolation; 7.1: idTagInfo "Required when UpdateType is Full"
    -> OccurenceConstraintViolation (OCPP-J errata 5.2 spelling)."""
    h = await charger(csms)
    dup = [entry(CARD), entry(CARD.lower(), "Blocked")]
    frame = await raw(
        csms,
        "SendLocalList",
        {"listVersion": 1, "updateType": "Full", "localAuthorizationList": dup},
    )
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation", frame
    frame = await raw(
        csms,
        "SendLocalList",
        {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [entry(CARD, None)]},
    )
    assert frame[0] == 4 and frame[2] == "OccurenceConstraintViolation", frame
    assert local_list(h) == {}
    assert await list_version(csms) == 0


async def test_failed_over_send_local_list_max_length(csms: DevCsms, charger: Any) -> None:
    """6.41 / 9.2.3 SendLocalListMaxLength: a request with more elements is not applied ->
    Failed (7.47 "Failed to update the Local Authorization List").

    OCTT: TC_043_3_CS (1.6)
    """
    h = await charger(csms)
    h.app.settings.set_internal("SendLocalListMaxLength", "2")
    assert await send_list(csms, 1, "Full", [entry(CARD)]) == "Accepted"
    three = [entry(CARD, "Blocked"), entry(OTHER), entry(THIRD)]
    assert await send_list(csms, 2, "Full", three) == "Failed"
    assert await send_list(csms, 2, "Differential", three) == "Failed"
    assert local_list(h) == {CARD: "Accepted"}
    assert await list_version(csms) == 1


async def test_failed_over_local_auth_list_max_length(csms: DevCsms, charger: Any) -> None:
    """9.2.2 LocalAuthListMaxLength (default 1000, also SendLocalListMaxLength so a Full list
    fits one message): 1000 entries are Accepted; an update that would leave more is Failed
    and changes nothing (one SQLite transaction).

    OCTT: TC_043_3_CS (1.6)
    """
    h = await charger(csms)
    cards = [entry(f"T{i:05d}") for i in range(1000)]
    assert await send_list(csms, 1, "Full", cards) == "Accepted"
    assert await list_version(csms) == 1
    assert h.app.store.local_list_count() == 1000
    assert await send_list(csms, 2, "Differential", [entry(CARD)]) == "Failed"
    assert await send_list(csms, 2, "Full", [*cards, entry(CARD)]) == "Failed"  # > 1000 sent
    assert h.app.store.local_list_count() == 1000
    assert await list_version(csms) == 1
    # Deleting one and adding one in the same Differential fits.
    swap = [entry("T00000", None), entry(CARD, "Blocked")]
    assert await send_list(csms, 2, "Differential", swap) == "Accepted"
    assert h.app.store.local_list_count() == 1000
    assert local_list(h)[CARD] == "Blocked"


async def test_keys_and_feature_profile(csms: DevCsms, charger: Any) -> None:
    """9.2: LocalAuthListEnabled (RW boolean), LocalAuthListMaxLength and
    SendLocalListMaxLength (R integers); 3.5.2: support is announced by LocalAuthListManagement
    in SupportedFeatureProfiles (9.1.29)."""
    await charger(csms)
    result = await req(
        csms,
        "GetConfiguration",
        {
            "key": [
                "LocalAuthListEnabled",
                "LocalAuthListMaxLength",
                "SendLocalListMaxLength",
                "SupportedFeatureProfiles",
            ]
        },
    )
    keys = {e["key"]: (e["readonly"], e["value"]) for e in result["configurationKey"]}
    assert keys["LocalAuthListEnabled"] == (False, "true")
    assert keys["LocalAuthListMaxLength"] == (True, "1000")
    assert keys["SendLocalListMaxLength"] == (True, "1000")
    assert "LocalAuthListManagement" in keys["SupportedFeatureProfiles"][1].split(",")
    assert await change(csms, "LocalAuthListMaxLength", "5") == "Rejected"
    assert await change(csms, "SendLocalListMaxLength", "5") == "Rejected"
    assert await change(csms, "LocalAuthListEnabled", "maybe") == "Rejected"
    assert await change(csms, "LocalAuthListEnabled", "false") == "Accepted"


async def test_list_persists_across_restart(csms: DevCsms, charger: Any) -> None:
    """3.5.2: the list "SHOULD be persisted across reboots and power outages" (entries and
    version), and is still used for authorization afterwards.

    OCTT: TC_D_07_CS (2.0.1)
    """
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    assert await send_list(csms, 8, "Full", [entry(CARD), entry(OTHER, "Blocked")]) == "Accepted"
    await h.app.stop(reason=None)
    await csms.wait_disconnected(STATION_ID, timeout_s=5)
    csms.clear_records()
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    assert await list_version(csms) == 8
    assert local_list(h) == {CARD: "Accepted", OTHER: "Blocked"}
    assert await tap_started(h, CARD)
    assert h.frames("Authorize") == []  # LocalPreAuthorize: the list decided


# ----------------------------------------------------------------------------- 3.5 authorization


async def test_list_used_offline(csms: DevCsms, charger: Any) -> None:
    """3.5.2 / 9.1.12 LocalAuthorizeOffline: offline, an Accepted list entry authorizes the
    card (never seen online, so not cached; AllowOfflineTxForUnknownId is false).

    OCTT: TC_C_21_CS (2.0.1)
    """
    h = await charger(csms)
    assert await send_list(csms, 1, "Full", [entry(CARD)]) == "Accepted"
    assert h.app.store.cache_get(CARD) is None
    await go_offline(h, csms)
    assert await tap_started(h, CARD)
    assert h.app.store.cache_get(CARD) is None


async def test_list_not_valid_refused_offline_even_for_unknown_allowed(
    csms: DevCsms, charger: Any
) -> None:
    """3.5.4: "Identifiers that are present in a Local Authorization List that have a status
    other than Accepted ... MUST be rejected" even with AllowOfflineTxForUnknownId=true, as
    are apparently expired ones; a card in neither list nor cache is admitted.

    OCTT: TC_C_22_CS (2.0.1)
    """
    h = await charger(csms, ocpp={"AllowOfflineTxForUnknownId": True})
    items = [
        entry(CARD, "Blocked"),
        entry(OTHER, "Accepted", expiryDate="2025-06-01T00:00:00Z"),  # clock: 2026-01-01
    ]
    assert await send_list(csms, 1, "Full", items) == "Accepted"
    await go_offline(h, csms)
    assert not await tap_started(h, CARD)
    h.tap(OTHER)
    await h.advance(1)
    await h.settle(lambda: h.connector().state.authorizing is None)
    await h.advance(2)
    assert not h.connector().state.tx_active
    h.tap(THIRD)  # unknown: AllowOfflineTxForUnknownId
    await h.settle(lambda: h.connector().hw.contactor.closed)


async def test_list_blocked_refuses_with_local_pre_authorize(csms: DevCsms, charger: Any) -> None:
    """9.1.13 LocalPreAuthorize / 3.5.3 priority: online, a Blocked list entry refuses at once
    although the CSMS would accept the card: no Authorize.req, no transaction."""
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    assert csms.id_tag_info(CARD).status == "Accepted"
    assert await send_list(csms, 1, "Full", [entry(CARD, "Blocked")]) == "Accepted"
    assert not await tap_started(h, CARD)
    assert h.frames("Authorize") == [] and h.frames("StartTransaction") == []


async def test_list_accepted_starts_without_authorize(csms: DevCsms, charger: Any) -> None:
    """9.1.13 LocalPreAuthorize: an Accepted list entry starts the transaction without waiting
    for (or sending) Authorize.req; StartTransaction.conf does not put the listed card into
    the Authorization Cache (3.5.3).

    OCTT: TC_C_27_CS (2.0.1)
    """
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    assert await send_list(csms, 1, "Full", [entry(CARD)]) == "Accepted"
    assert await tap_started(h, CARD)
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    assert h.frames("Authorize") == []
    assert h.app.store.cache_get(CARD) is None


async def test_without_pre_authorize_the_csms_decides(csms: DevCsms, charger: Any) -> None:
    """9.1.13 LocalPreAuthorize=false: online, the Charge Point asks the CSMS even for a
    listed card; the answer is not cached for a listed card (3.5.3)."""
    h = await charger(csms)
    assert await send_list(csms, 1, "Full", [entry(CARD, "Blocked")]) == "Accepted"
    assert await tap_started(h, CARD)  # the dev CSMS accepts it
    assert len(h.frames("Authorize")) == 1
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    assert h.app.store.cache_get(CARD) is None


async def test_disabled_list(csms: DevCsms, charger: Any) -> None:
    """9.2.1 LocalAuthListEnabled=false: the list is kept (and still maintained by
    SendLocalList, 3.5.2) but not used: a listed Blocked card goes to the CSMS, and offline a
    listed Accepted card counts as unknown. GetLocalListVersion keeps reporting the version:
    -1 means "does not support Local Authorization Lists" (5.10), and the profile is
    supported."""
    h = await charger(csms, ocpp={"LocalPreAuthorize": True})
    assert await send_list(csms, 1, "Full", [entry(CARD, "Blocked")]) == "Accepted"
    assert await change(csms, "LocalAuthListEnabled", "false") == "Accepted"
    assert await send_list(csms, 2, "Full", [entry(CARD, "Blocked"), entry(OTHER)]) == "Accepted"
    assert await list_version(csms) == 2
    assert await tap_started(h, CARD)  # the CSMS (Authorize.conf Accepted) decided
    assert len(h.frames("Authorize")) == 1
    h.tap(CARD)
    await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=5)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    await go_offline(h, csms)
    assert not await tap_started(h, OTHER)  # listed Accepted, but the list is off
    assert local_list(h) == {CARD: "Blocked", OTHER: "Accepted"}


async def test_clear_cache_keeps_the_list(csms: DevCsms, charger: Any) -> None:
    """5.4 ClearCache empties the Authorization Cache only; the Local Authorization List
    (3.5.3: a distinct data structure) keeps its entries and version and still authorizes
    offline."""
    h = await charger(csms)
    assert await send_list(csms, 3, "Full", [entry(CARD)]) == "Accepted"
    h.app.store.cache_put(OTHER, "Accepted", None, None)
    assert await req(csms, "ClearCache", {}) == {"status": "Accepted"}
    assert h.app.store.cache_get(OTHER) is None
    assert await list_version(csms) == 3
    await go_offline(h, csms)
    assert await tap_started(h, CARD)


async def test_csms_answer_contradicting_the_list_reports_local_list_conflict(
    csms: DevCsms, charger: Any
) -> None:
    """3.5.2: when the validity reported by the CSMS (here Authorize.conf) conflicts with
    the Local Authorization List, the Charge Point sends a StatusNotification on connector 0
    with errorCode LocalListConflict."""
    h = await charger(csms)
    assert await send_list(csms, 1, "Full", [entry(CARD, "Blocked")]) == "Accepted"
    assert await tap_started(h, CARD)  # the dev CSMS says Accepted, the list says Blocked
    conflict = await csms.wait_for(
        lambda f: (
            f.action == "StatusNotification"
            and f.payload["connectorId"] == 0
            and f.payload["errorCode"] == "LocalListConflict"
        ),
        timeout_s=5,
    )
    assert "Blocked" in conflict.payload["info"] and "Accepted" in conflict.payload["info"]


async def test_agreeing_csms_answer_reports_no_conflict(csms: DevCsms, charger: Any) -> None:
    """3.5.2: no LocalListConflict when the CSMS agrees with the list."""
    h = await charger(csms)
    assert await send_list(csms, 1, "Full", [entry(CARD, "Accepted")]) == "Accepted"
    assert await tap_started(h, CARD)
    await csms.wait_for(lambda f: f.action == "StartTransaction", timeout_s=5)
    await h.settle(lambda: h.app.port.queued_messages() == 0)
    assert not [
        f for f in h.frames("StatusNotification") if f.payload["errorCode"] == "LocalListConflict"
    ]
