"""OCPP 2.0.1 Local Authorization List over a real WebSocket against the dev CSMS: SendLocalList
Full / Differential with the versionNumber rules, VersionMismatch and Failed, the
LocalAuthListCtrlr variables (Enabled, Entries, ItemsPerMessage, BytesPerMessage),
GetLocalListVersion (D01, D02), and authorization through the list online (C14) and
offline (C13), with the offline transaction's TransactionEvents delivered afterwards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.ocpp201.authorization import token_key
from tests.conftest import CARD, STATION_ID
from tests.e2e.test_e2e_durability import come_back
from tests.ocpp201.test_e2e_authorization import (
    OTHER,
    authorizes,
    booted,
    cached,
    charging,
    offline_session,
    result,
    set_vars,
    tap_and_wait,
)
from tests.ocpp201.test_e2e_boot import accepted, client, start, wait_status
from tests.ocpp201.test_e2e_transactions import answered_events, events


def iso14443(uid: str) -> dict[str, str]:
    return {"idToken": uid, "type": "ISO14443"}


def entry(uid: str, status: str | None = "Accepted", **info: Any) -> dict[str, Any]:
    """An AuthorizationData element; status None: without idTokenInfo (a removal)."""
    data: dict[str, Any] = {"idToken": iso14443(uid)}
    if status is not None:
        data["idTokenInfo"] = {"status": status, **info}
    return data


async def send(
    csms: DevCsms, version: int, update: str, entries: list[dict[str, Any]] | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"versionNumber": version, "updateType": update}
    if entries is not None:
        payload["localAuthorizationList"] = entries
    return await result(csms, "SendLocalList", payload)


async def version(csms: DevCsms) -> int:
    answer = await result(csms, "GetLocalListVersion", {})
    return int(answer["versionNumber"])


async def entries_variable(csms: DevCsms) -> str:
    answer = await result(
        csms,
        "GetVariables",
        {
            "getVariableData": [
                {"component": {"name": "LocalAuthListCtrlr"}, "variable": {"name": "Entries"}}
            ]
        },
    )
    return str(answer["getVariableResult"][0]["attributeValue"])


def listed(h: Any) -> dict[str, Any]:
    assert h.app.store is not None
    entries: dict[str, Any] = h.app.store.local_list_entries()
    return entries


async def test_full_differential_and_versions(charger: Any, csms: DevCsms) -> None:
    """TC_D_08_CS / D02.FR.02: version 0 before any list; TC_D_01_CS (D01.FR.01/02/15): a
    Full list replaces the list and sets the version; TC_D_02_CS (D01.FR.16): Differential
    adds and updates; TC_D_03_CS (D01.FR.17): an entry without idTokenInfo is removed;
    TC_D_05_CS (D01.FR.05): an empty Differential only sets the version; TC_D_04_CS
    (D01.FR.04): an empty Full empties the list and keeps the version (D02 remark);
    D01.FR.12: LocalAuthListCtrlr.Entries counts the entries. The group and
    cacheExpiryDateTime are kept with each entry."""
    h = await booted(charger, csms)
    assert await version(csms) == 0
    group = {"idToken": "ACCOUNT-7", "type": "Central"}
    answer = await send(
        csms,
        3,
        "Full",
        [entry(CARD, groupIdToken=group), entry("04AA1100"), entry("04BB2200", "Blocked")],
    )
    assert answer == {"status": "Accepted"}
    assert await version(csms) == 3
    assert await entries_variable(csms) == "3"
    assert listed(h)[CARD] == ("Accepted", "ACCOUNT-7", None)
    expiry = "2031-01-01T00:00:00.000Z"
    answer = await send(
        csms,
        4,
        "Differential",
        [
            entry("04BB2200", "Accepted", cacheExpiryDateTime=expiry),
            entry("04CC3300"),
            entry("04AA1100", None),
        ],
    )
    assert answer == {"status": "Accepted"}
    assert await version(csms) == 4
    assert set(listed(h)) == {CARD, "04BB2200", "04CC3300"}
    assert listed(h)["04BB2200"] == ("Accepted", None, expiry)
    # "Empty" is an absent list: the schema wants at least one element in an array.
    frame = await csms.call_raw(
        STATION_ID,
        "SendLocalList",
        {"versionNumber": 5, "updateType": "Differential", "localAuthorizationList": []},
    )
    assert frame[0] == 4 and frame[2] == "OccurrenceConstraintViolation", frame
    assert await send(csms, 6, "Differential", None) == {"status": "Accepted"}
    assert await version(csms) == 6
    assert set(listed(h)) == {CARD, "04BB2200", "04CC3300"}
    assert await send(csms, 7, "Full", None) == {"status": "Accepted"}
    assert listed(h) == {}
    assert await version(csms) == 7
    assert await entries_variable(csms) == "0"


async def test_version_mismatch_and_failures(charger: Any, csms: DevCsms) -> None:
    """TC_D_06_CS (D01.FR.19): a Differential update not above the list's version is
    VersionMismatch and changes nothing (a Full one may go back); D01.FR.06: a token twice is
    Failed; D01.FR.18: versionNumber 0 is refused (PropertyConstraintViolation); a Full entry
    without idTokenInfo is an OccurrenceConstraintViolation; each leaves the list as it was
    (D01 failure postcondition)."""
    h = await booted(charger, csms)
    assert (await send(csms, 5, "Full", [entry(CARD)]))["status"] == "Accepted"
    for v in (4, 5):
        answer = await send(csms, v, "Differential", [entry("04AA1100")])
        assert answer["status"] == "VersionMismatch"
    twice = await send(csms, 6, "Differential", [entry("04AA1100"), entry("04aa1100", "Blocked")])
    assert twice["status"] == "Failed"
    frame = await csms.call_raw(
        STATION_ID, "SendLocalList", {"versionNumber": 0, "updateType": "Full"}
    )
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation", frame
    frame = await csms.call_raw(
        STATION_ID,
        "SendLocalList",
        {
            "versionNumber": 6,
            "updateType": "Full",
            "localAuthorizationList": [entry("04AA1100", None)],
        },
    )
    assert frame[0] == 4 and frame[2] == "OccurrenceConstraintViolation", frame
    assert await version(csms) == 5
    assert set(listed(h)) == {CARD}
    assert (await send(csms, 2, "Full", [entry("04AA1100")]))["status"] == "Accepted"
    assert await version(csms) == 2


async def test_message_and_list_limits(charger: Any, csms: DevCsms) -> None:
    """D01.FR.11: more entries than LocalAuthListCtrlr.ItemsPerMessage (1000) or more bytes
    than BytesPerMessage (65536) in one request: Failed (TooManyElements / TooLargeElement);
    a list beyond the maxLimit of Entries (1000): Failed (OutOfStorage). Nothing changes."""
    h = await booted(charger, csms)
    too_many = [entry(f"{i:08X}") for i in range(1001)]
    answer = await send(csms, 1, "Full", too_many)
    assert answer["status"] == "Failed"
    assert answer["statusInfo"]["reasonCode"] == "TooManyElements"
    too_large = [entry(f"{i:036X}") for i in range(900)]
    answer = await send(csms, 1, "Full", too_large)
    assert answer["status"] == "Failed"
    assert answer["statusInfo"]["reasonCode"] == "TooLargeElement"
    assert await version(csms) == 0
    # D01 error handling: a list too large for one message is a Full and Differentials.
    half = [entry(f"{i:08X}") for i in range(500)]
    assert (await send(csms, 1, "Full", half))["status"] == "Accepted"
    half = [entry(f"{i:08X}") for i in range(500, 1000)]
    assert (await send(csms, 2, "Differential", half))["status"] == "Accepted"
    answer = await send(csms, 3, "Differential", [entry("FFFFFFFFFF")])
    assert answer["status"] == "Failed"
    assert answer["statusInfo"]["reasonCode"] == "OutOfStorage"
    assert await version(csms) == 2
    assert len(listed(h)) == 1000
    assert await entries_variable(csms) == "1000"


async def test_disabled_list(charger: Any, csms: DevCsms) -> None:
    """TC_D_10_CS (D02.FR.03): LocalAuthListCtrlr.Enabled false: GetLocalListVersion says 0,
    SendLocalList is Failed (NotEnabled), and a listed card is not taken from the list
    (C14 prerequisite): it is asked."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    assert (await send(csms, 3, "Full", [entry(CARD)]))["status"] == "Accepted"
    await set_vars(csms, {"LocalAuthListCtrlr.Enabled": "false"})
    assert await version(csms) == 0
    answer = await send(csms, 4, "Differential", [entry("04AA1100")])
    assert answer["status"] == "Failed"
    assert answer["statusInfo"]["reasonCode"] == "NotEnabled"
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    await set_vars(csms, {"LocalAuthListCtrlr.Enabled": "true"})
    assert await version(csms) == 3


async def test_list_persists_over_reboot(charger: Any, csms: DevCsms) -> None:
    """TC_D_07_CS (D01.FR.10): the list and its version survive a restart."""
    h = await booted(charger, csms)
    assert (await send(csms, 9, "Full", [entry(CARD)]))["status"] == "Accepted"
    await h.app.stop(reason=None)
    again = await start(charger, csms)
    await accepted(again)
    await wait_status(again, 1, "Available")
    assert await version(csms) == 9
    assert set(listed(again)) == {CARD}


async def test_online_through_the_list(charger: Any, csms: DevCsms) -> None:
    """TC_C_27_CS (C14.FR.02, C01.FR.05): a listed Accepted card charges without an
    AuthorizeRequest (LocalPreAuthorize); TC_C_28_CS / TC_C_29_CS / TC_C_31_CS (C14.FR.03):
    a listed Invalid or Blocked card is asked, and charges when the CSMS accepts it; the
    list is not changed by that answer (D01.FR.09) and the cache keeps no copy of listed
    cards (C13.FR.01)."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    await send(csms, 1, "Full", [entry(CARD), entry(OTHER, "Invalid")])
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    assert authorizes(h) == []
    await tap_and_wait(h)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    h.unplug()
    await h.advance(1)
    for status in ("Invalid", "Blocked"):
        await send(csms, 2 if status == "Invalid" else 3, "Full", [entry(OTHER, status)])
        h.plug()
        await h.advance(1)
        csms.id_token_infos[OTHER] = {"status": "Invalid"}
        await tap_and_wait(h, OTHER)
        await h.advance(2)
        assert not h.connector().hw.contactor.closed
        h.unplug()
        await h.advance(1)
    assert len(authorizes(h)) == 2
    h.plug()
    await h.advance(1)
    csms.id_token_infos[OTHER] = {"status": "Accepted"}
    await tap_and_wait(h, OTHER)
    await charging(h)
    assert len(authorizes(h)) == 3
    assert listed(h)[OTHER] == ("Blocked", None, None)
    assert cached(h, OTHER) is None


async def test_online_expired_and_post_authorize_disabled(charger: Any, csms: DevCsms) -> None:
    """TC_C_30_CS (C14.FR.04/05, LocalAuthListCtrlr.SupportsExpiryDateTime): a listed
    Accepted card whose cacheExpiryDateTime passed is asked; TC_C_28_CS
    (LocalAuthListCtrlr.DisablePostAuthorize): a listed Invalid card is refused without
    asking."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    past = iso_utc(client(h).clock.utc_now() - timedelta(minutes=1))
    await send(csms, 1, "Full", [entry(CARD, cacheExpiryDateTime=past), entry(OTHER, "Invalid")])
    h.plug()
    await h.advance(1)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    await set_vars(csms, {"LocalAuthListCtrlr.DisablePostAuthorize": "true"})
    await h.advance(2)
    await tap_and_wait(h, OTHER)
    await h.advance(2)
    assert len(authorizes(h)) == 1
    assert not h.connector().hw.contactor.closed


async def test_offline_through_the_list(charger: Any, csms: DevCsms) -> None:
    """TC_C_21_CS (C13.FR.02/03): offline, a listed Accepted card charges; after the
    reconnect every TransactionEvent of that transaction reaches the CSMS with offline true
    (C15.FR.02), the stop with StopAuthorized."""
    h = await booted(charger, csms)
    await send(csms, 1, "Full", [entry(CARD)])
    online = await offline_session(h, csms)
    await charging(h)
    await h.advance(70)
    await tap_and_wait(h)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(1)
    await come_back(h, csms)
    await h.settle(lambda: client(h).queued_messages() == 0, timeout_s=10)
    sent = answered_events(csms)[online:]
    assert sent[0]["eventType"] == "Started"
    assert sent[0]["idToken"] == iso14443(CARD)
    assert sent[-1]["eventType"] == "Ended"
    assert sent[-1]["triggerReason"] == "StopAuthorized"
    assert all(e.get("offline") is True for e in sent)
    assert authorizes(h) == []


async def test_offline_list_refusals(charger: Any, csms: DevCsms) -> None:
    """TC_C_22_CS / TC_C_23_CS / TC_C_24_CS (C13.FR.02/05/06): offline, a listed Invalid,
    Blocked or expired card is refused, even with OfflineTxForUnknownIdEnabled (it is not
    unknown); TC_C_25_CS (C13.FR.01): the list's Blocked wins over the cache's Accepted."""
    h = await booted(charger, csms, AuthCtrlr__OfflineTxForUnknownIdEnabled="true")
    await tap_and_wait(h, "04AA1100")  # Accepted by the CSMS: cached
    assert cached(h, "04AA1100") == ("Accepted", None, None)
    past = iso_utc(client(h).clock.utc_now() - timedelta(minutes=1))
    await send(
        csms,
        1,
        "Full",
        [
            entry(CARD, "Invalid"),
            entry(OTHER, "Blocked"),
            entry("04CC3300", cacheExpiryDateTime=past),
        ],
    )
    assert h.app.store is not None
    await send(csms, 2, "Differential", [entry("04AA1100", "Blocked")])
    # Listing a card drops its cache entry; one written after (a 1.6 cache, an older
    # release) must still lose against the list.
    h.app.store.cache_put(token_key(iso14443("04AA1100")), "Accepted", None, None)
    await h.advance(70)
    await offline_session(h, csms, CARD)
    for uid in (OTHER, "04CC3300", "04AA1100"):
        await h.advance(2)
        await tap_and_wait(h, uid)
    await h.advance(2)
    assert not h.connector().hw.contactor.closed
    assert h.connector().tx_key is None
    await tap_and_wait(h, "04DD4400")  # unknown: OfflineTxForUnknownIdEnabled admits it
    await charging(h)


async def test_token_type_is_part_of_the_identity(charger: Any, csms: DevCsms) -> None:
    """C 1.1 (an IdToken is its idToken and its type, case-insensitive): a listed Central
    token with the card's digits does not authorize the ISO14443 card, which is asked; the
    listed ISO14443 token matches in any letter case."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    central = {"idToken": CARD, "type": "Central"}
    await send(csms, 1, "Full", [{"idToken": central, "idTokenInfo": {"status": "Accepted"}}])
    assert set(listed(h)) == {token_key(central)}
    h.plug()
    await h.advance(1)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    await send(csms, 2, "Differential", [entry(OTHER.lower())])
    await h.advance(2)
    await tap_and_wait(h, OTHER)
    await charging(h)
    assert len(authorizes(h)) == 1


async def test_group_stop_through_the_list(charger: Any, csms: DevCsms) -> None:
    """TC_C_40_CS (C09.FR.02/03/07): two listed valid cards of one group: the second ends the
    transaction of the first without any AuthorizeRequest (StopAuthorized with its idToken);
    TC_C_43_CS (C09.FR.11, C14.FR.03): a listed Invalid card of the group is asked and, still
    Invalid, stops nothing."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    group = {"idToken": "ACCOUNT-7", "type": "Central"}
    await send(
        csms,
        1,
        "Full",
        [
            entry(CARD, groupIdToken=group),
            entry(OTHER, groupIdToken=group),
            entry("04CC3300", "Invalid", groupIdToken=group),
        ],
    )
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    csms.id_token_infos["04CC3300"] = {"status": "Invalid", "groupIdToken": group}
    await tap_and_wait(h, "04CC3300")
    assert len(authorizes(h)) == 1
    await h.advance(2)
    assert h.connector().hw.contactor.closed
    await tap_and_wait(h, OTHER)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    ended = events(h)[-1]
    assert ended["triggerReason"] == "StopAuthorized"
    assert ended["idToken"] == iso14443(OTHER)
    assert len(authorizes(h)) == 1
