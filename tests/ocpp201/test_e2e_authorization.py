"""OCPP 2.0.1 authorization over a real WebSocket against the dev CSMS (C01, C09-C16):
AuthorizeRequest with the reader's ISO14443 IdToken, idTokenInfo statuses, groupIdToken,
the Authorization Cache (LocalPreAuthorize, cacheExpiryDateTime, AuthCacheCtrlr.LifeTime,
DisablePostAuthorize, persistence, updates from Authorize and TransactionEvent answers),
ClearCache, the offline rules (LocalAuthorizeOffline, OfflineTxForUnknownIdEnabled) with the
offline transaction's TransactionEvents delivered afterwards, AuthCtrlr.Enabled false,
DisableRemoteAuthorization and the master pass."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from controller.ocpp201.authorization import token_key
from tests.conftest import CARD, STATION_ID, Harness
from tests.e2e.test_e2e_durability import come_back, go_offline
from tests.ocpp201.test_e2e_boot import accepted, client, start, wait_status
from tests.ocpp201.test_e2e_transactions import answered_events, events

OTHER = "04D5E6F7"  # a second card of the same account (group)
POLICE = "0499AA00"  # a master pass card
GROUP = {"idToken": "ACCOUNT-7", "type": "Central"}


async def result(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, action, payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, action, frame[2])
    answer: dict[str, Any] = frame[2]
    return answer


async def set_vars(csms: DevCsms, values: dict[str, str]) -> None:
    """SetVariables of ``"Component.Variable": value`` pairs, every one Accepted."""
    data = []
    for name, value in values.items():
        component, variable = name.split(".")
        data.append(
            {
                "component": {"name": component},
                "variable": {"name": variable},
                "attributeValue": value,
            }
        )
    answer = await result(csms, "SetVariables", {"setVariableData": data})
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * len(data)


def authorizes(h: Harness) -> list[dict[str, Any]]:
    return [f.payload["idToken"] for f in h.frames("Authorize")]


def cached(h: Harness, uid: str = CARD) -> tuple[str, str | None, str | None] | None:
    assert h.app.store is not None
    return h.app.store.cache_get(token_key({"idToken": uid, "type": "ISO14443"}))


async def booted(charger: Any, csms: DevCsms, **values: str) -> Harness:
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    if values:
        await set_vars(csms, {k.replace("__", "."): v for k, v in values.items()})
    return h


async def charging(h: Harness) -> None:
    await h.settle(lambda: h.connector().hw.contactor.closed)


async def tap_and_wait(h: Harness, uid: str = CARD) -> None:
    """Present a card and let its authorization finish (the connector leaves 'authorizing')."""
    h.tap(uid)
    await h.advance(0.1, step_s=0.1)
    await h.settle(lambda: h.connector().state.authorizing is None)


async def session(h: Harness, uid: str = CARD) -> None:
    """Plug, present ``uid``, charge, present it again, unplug: one complete transaction."""
    h.plug()
    await h.advance(1)
    await tap_and_wait(h, uid)
    await charging(h)
    await h.advance(5)
    await tap_and_wait(h, uid)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    h.unplug()
    await h.advance(1)


async def test_refused_statuses_start_nothing(charger: Any, csms: DevCsms) -> None:
    """TC_C_02_CS, TC_C_06_CS, TC_C_07_CS, TC_C_56_CS (C01.FR.01/02/07, C10.FR.01): the card
    is sent in AuthorizeRequest as ISO14443; Invalid, Blocked, Expired and Unknown start no
    transaction (no TransactionEvent) and close no contactor; each answer is cached."""
    h = await booted(charger, csms)
    h.plug()
    await h.advance(1)
    for status in ("Invalid", "Blocked", "Expired", "Unknown"):
        csms.id_token_infos[CARD] = {"status": status}
        await tap_and_wait(h)
        assert cached(h) == (status, None, None)
        await h.advance(2)
    assert authorizes(h) == [{"idToken": CARD, "type": "ISO14443"}] * 4
    for frame in h.frames("Authorize"):
        rpc201.validate(2, "Authorize", frame.payload)
    assert events(h) == []
    assert not h.connector().hw.contactor.closed


async def test_cache_accepted_starts_without_authorize(charger: Any, csms: DevCsms) -> None:
    """TC_C_33_CS (C10.FR.04, C12.FR.06) then TC_C_08_CS (C12.FR.02/04): the Accepted answer
    is cached; with LocalPreAuthorize the next session starts from the cache without an
    AuthorizeRequest, the TransactionEvent carries the idToken (the CSMS checks it there)."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    expiry = iso_utc(client(h).clock.utc_now() + timedelta(days=30))
    csms.id_token_infos[CARD] = {"status": "Accepted", "cacheExpiryDateTime": expiry}
    await session(h)
    assert len(authorizes(h)) == 1
    assert cached(h) == ("Accepted", None, expiry)
    first = len(events(h))
    await session(h)
    assert len(authorizes(h)) == 1  # the second session came from the cache
    started = events(h)[first]
    assert started["eventType"] == "Started"
    assert started["triggerReason"] == "Authorized"
    assert started["idToken"] == {"idToken": CARD, "type": "ISO14443"}


async def test_transaction_answer_updates_the_cache(charger: Any, csms: DevCsms) -> None:
    """TC_C_34_CS (C10.FR.05, C12.FR.06, C12 error handling): a cached Accepted token starts
    at once; the TransactionEventResponse says Invalid: the cache holds Invalid, the
    transaction is deauthorized (StopTxOnInvalidId), and the next presentation asks the
    CSMS (C10.FR.03)."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    await session(h)
    assert cached(h) == ("Accepted", None, None)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1  # from the cache
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert events(h)[-1]["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert cached(h) == ("Invalid", None, None)
    h.unplug()
    await h.advance(1)
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 2
    assert not h.connector().hw.contactor.closed


async def test_cache_entry_not_valid_is_asked_again(charger: Any, csms: DevCsms) -> None:
    """TC_C_09_CS, TC_C_10_CS, TC_C_11_CS, TC_C_12_CS (C10.FR.03, C12.FR.05, C10.FR.13): a
    cached Invalid / Blocked token, or an Accepted one past its cacheExpiryDateTime, is
    checked with an AuthorizeRequest even with LocalPreAuthorize; Accepted now: it charges."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    h.plug()
    await h.advance(1)
    for status in ("Invalid", "Blocked"):
        csms.id_token_infos[CARD] = {"status": status}
        await tap_and_wait(h)  # cached from this answer
        await tap_and_wait(h)  # asked again
        await h.advance(2)
    assert len(authorizes(h)) == 4
    soon = iso_utc(client(h).clock.utc_now() + timedelta(seconds=30))
    csms.id_token_infos[CARD] = {"status": "Accepted", "cacheExpiryDateTime": soon}
    await tap_and_wait(h)
    await charging(h)
    await tap_and_wait(h)  # the same card stops it locally (C01.FR.03)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert len(authorizes(h)) == 5
    h.unplug()
    await h.advance(40)  # past cacheExpiryDateTime
    h.plug()
    await h.advance(1)
    del csms.id_token_infos[CARD]
    await tap_and_wait(h)
    assert len(authorizes(h)) == 6  # expired in the cache: asked (TC_C_11_CS)
    await charging(h)


async def test_disable_post_authorize_refuses_locally(charger: Any, csms: DevCsms) -> None:
    """TC_C_57_CS (AuthCacheCtrlr.DisablePostAuthorize): a cached Invalid token is refused
    without an AuthorizeRequest."""
    h = await booted(
        charger,
        csms,
        AuthCtrlr__LocalPreAuthorize="true",
        AuthCacheCtrlr__DisablePostAuthorize="true",
    )
    h.plug()
    await h.advance(1)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    await tap_and_wait(h)
    await h.advance(2)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    assert events(h) == []


async def test_local_pre_authorize_false_always_asks(charger: Any, csms: DevCsms) -> None:
    """TC_C_36_CS (C01.FR.05, C10.FR.11): with LocalPreAuthorize false a cached Accepted
    token is still sent in an AuthorizeRequest, whose Invalid answer refuses it."""
    h = await booted(charger, csms)
    await session(h)
    assert cached(h) == ("Accepted", None, None)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    h.plug()
    await h.advance(1)
    count = len(events(h))
    await tap_and_wait(h)
    assert len(authorizes(h)) == 2
    await h.advance(2)
    assert len(events(h)) == count
    assert cached(h) == ("Invalid", None, None)


async def test_cache_lifetime_since_last_use(charger: Any, csms: DevCsms) -> None:
    """TC_C_46_CS (C10.FR.08, C10.FR.10): an entry without cacheExpiryDateTime expires
    AuthCacheCtrlr.LifeTime after its last use: used within the lifetime it stays (and its
    use renews it); unused for longer, it is Expired and the CSMS is asked."""
    h = await booted(
        charger, csms, AuthCtrlr__LocalPreAuthorize="true", AuthCacheCtrlr__LifeTime="200"
    )
    await tap_and_wait(h)  # no cable: the authorization lapses after EVConnectionTimeOut
    assert len(authorizes(h)) == 1
    for _ in range(2):
        await h.advance(150)
        await tap_and_wait(h)
        assert len(authorizes(h)) == 1  # 150 s after the last use: from the cache
    await h.advance(250)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 2


async def test_cache_persists_over_reboot(charger: Any, csms: DevCsms) -> None:
    """TC_C_32_CS (C10.FR.02): the cache survives a restart; the next session starts from
    it without an AuthorizeRequest."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    await h.app.stop(reason=None)
    again = await start(charger, csms)
    await accepted(again)
    await wait_status(again, 1, "Available")
    assert cached(again) == ("Accepted", None, None)
    again.plug()
    await again.advance(1)
    await tap_and_wait(again)
    await charging(again)
    assert len(authorizes(again)) == 1


async def test_clear_cache(charger: Any, csms: DevCsms) -> None:
    """TC_C_37_CS (C11.FR.01-03): ClearCache Accepted empties the cache (the next card is
    asked again); TC_C_38_CS (C11.FR.04): while AuthCacheCtrlr.Enabled is false, Rejected and
    the cache stays."""
    h = await booted(charger, csms, AuthCtrlr__LocalPreAuthorize="true")
    await tap_and_wait(h)
    assert cached(h) is not None
    await set_vars(csms, {"AuthCacheCtrlr.Enabled": "false"})
    assert (await result(csms, "ClearCache", {}))["status"] == "Rejected"
    assert cached(h) is not None
    await set_vars(csms, {"AuthCacheCtrlr.Enabled": "true"})
    assert await result(csms, "ClearCache", {}) == {"status": "Accepted"}
    assert cached(h) is None
    await h.advance(70)
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 2
    await charging(h)


async def test_group_id_stops_and_refuses(charger: Any, csms: DevCsms) -> None:
    """TC_C_39_CS (C09.FR.02/03, C01.FR.06): a second card whose idTokenInfo has the same
    groupIdToken stops the transaction (StopAuthorized with its idToken); TC_C_42_CS: a
    card of another group does not (C01.FR.03); TC_C_44_CS (C09.FR.11): one of the same group
    that is not Accepted does not either. The group is cached with the card (C09)."""
    h = await booted(charger, csms)
    csms.id_token_infos[CARD] = {"status": "Accepted", "groupIdToken": GROUP}
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    assert cached(h) == ("Accepted", "ACCOUNT-7", None)
    csms.id_token_infos[OTHER] = {
        "status": "Accepted",
        "groupIdToken": {"idToken": "ACCOUNT-8", "type": "Central"},
    }
    await tap_and_wait(h, OTHER)
    csms.id_token_infos[OTHER] = {"status": "Blocked", "groupIdToken": GROUP}
    await tap_and_wait(h, OTHER)
    assert h.connector().hw.contactor.closed
    assert all(e["eventType"] != "Ended" for e in events(h))
    csms.id_token_infos[OTHER] = {"status": "Accepted", "groupIdToken": GROUP}
    await tap_and_wait(h, OTHER)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    ended = events(h)[-1]
    assert ended["triggerReason"] == "StopAuthorized"
    assert ended["idToken"] == {"idToken": OTHER, "type": "ISO14443"}
    assert len(authorizes(h)) == 4


async def test_master_pass(charger: Any, csms: DevCsms) -> None:
    """TC_C_49_CS (C16.FR.02, no UI): a token whose group is AuthCtrlr.MasterPassGroupId
    stops every ongoing transaction (Ended, stoppedReason MasterPass); TC_C_45_CS /
    TC_C_14_CS (C12.FR.09, C16.FR.03): it starts none, also from the cache."""
    h = await booted(
        charger,
        csms,
        AuthCtrlr__MasterPassGroupId="POLICE",
        AuthCtrlr__LocalPreAuthorize="true",
    )
    csms.id_token_infos[POLICE] = {
        "status": "Accepted",
        "groupIdToken": {"idToken": "POLICE", "type": "Central"},
    }
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    await tap_and_wait(h, POLICE)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    ended = events(h)[-1]
    assert ended["triggerReason"] == "StopAuthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "MasterPass"
    h.unplug()
    await h.advance(1)
    h.plug()
    await h.advance(1)
    count = len(events(h))
    await tap_and_wait(h, POLICE)  # from the cache this time
    await h.advance(2)
    assert len(authorizes(h)) == 2
    assert len(events(h)) == count
    assert not h.connector().hw.contactor.closed


async def offline_session(h: Harness, csms: DevCsms, uid: str = CARD) -> int:
    """The CSMS goes away; plug, present ``uid``; returns how many TransactionEvents the
    CSMS had confirmed before."""
    await h.settle(lambda: client(h).queued_messages() == 0)
    online = len(answered_events(csms))
    await go_offline(h, csms)
    h.plug()
    await h.advance(1)
    await tap_and_wait(h, uid)
    return online


async def test_offline_from_the_cache(charger: Any, csms: DevCsms) -> None:
    """C12 / C13 offline with the cache (LocalAuthorizeOffline, TC_C_16_CS preparations): a
    cached Accepted card charges while the CSMS is away; its TransactionEvents reach the
    CSMS after the reconnect with offline true (C15.FR.02); the CSMS then says Invalid:
    the transaction ends Deauthorized (StopTxOnInvalidId, TC_C_16_CS) and the cache follows."""
    h = await booted(charger, csms)
    await tap_and_wait(h)
    assert cached(h) == ("Accepted", None, None)
    await h.advance(70)
    online = await offline_session(h, csms)
    await charging(h)
    assert len(authorizes(h)) == 1
    await h.advance(70)
    csms.id_token_infos[CARD] = {"status": "Invalid"}
    await come_back(h, csms)
    await h.settle(lambda: answered_events(csms)[-1]["eventType"] == "Ended", timeout_s=10)
    sent = answered_events(csms)[online:]
    assert sent[0]["eventType"] == "Started"
    assert sent[0]["offline"] is True
    assert sent[0]["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    assert sent[-1]["triggerReason"] == "Deauthorized"
    assert not h.connector().hw.contactor.closed
    assert cached(h) == ("Invalid", None, None)


async def test_offline_cache_not_used_without_local_authorize_offline(
    charger: Any, csms: DevCsms
) -> None:
    """C13/C15 with LocalAuthorizeOffline false and OfflineTxForUnknownIdEnabled false: a
    cached Accepted card is refused while offline."""
    h = await booted(charger, csms, AuthCtrlr__LocalAuthorizeOffline="false")
    await tap_and_wait(h)
    await h.advance(70)
    await offline_session(h, csms)
    await h.advance(2)
    assert not h.connector().hw.contactor.closed
    assert h.connector().state.authorized_tag is None


async def test_offline_unknown_id(charger: Any, csms: DevCsms) -> None:
    """TC_C_26_CS (C15.FR.01/02/08, C13.FR.04): offline, an unknown card is refused while
    OfflineTxForUnknownIdEnabled is false and accepted while true, without entering the
    cache (C15.FR.01); the transaction's events are delivered offline=true after the
    reconnect and the CSMS's answer is cached then (C10.FR.05)."""
    h = await booted(charger, csms)
    online = await offline_session(h, csms)
    await h.advance(2)
    assert not h.connector().hw.contactor.closed
    model = client(h).device_model
    assert model is not None
    model.set_internal("AuthCtrlr", "OfflineTxForUnknownIdEnabled", "true")  # CSMS is away
    await tap_and_wait(h)
    await charging(h)
    assert cached(h) is None
    await h.advance(30)
    await tap_and_wait(h)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    await h.advance(1)
    await come_back(h, csms)
    await h.settle(lambda: client(h).queued_messages() == 0, timeout_s=10)
    sent = answered_events(csms)[online:]
    assert [e["eventType"] for e in sent][0] == "Started"
    assert sent[-1]["eventType"] == "Ended"
    assert all(e.get("offline") is True for e in sent)
    assert authorizes(h) == []
    assert cached(h) == ("Accepted", None, None)


async def test_auth_disabled_needs_no_authorization(charger: Any, csms: DevCsms) -> None:
    """AuthCtrlr.Enabled false (Part 2 2.3.1, C01.FR.01): any card starts charging at once,
    no AuthorizeRequest; the TransactionEvent carries its idToken, and what the CSMS answers
    about that token does not stop the energy. The card comes before the cable here (a
    cable alone starts a NoAuthorization transaction: test_e2e_no_authorization_201.py)."""
    h = await booted(charger, csms, AuthCtrlr__Enabled="false")
    csms.id_token_infos[CARD] = {"status": "Blocked"}
    await tap_and_wait(h)
    h.plug()
    await h.advance(1)
    await charging(h)
    assert authorizes(h) == []
    assert events(h)[0]["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    await h.settle(lambda: client(h).queued_messages() == 0)
    await h.advance(2)
    assert h.connector().hw.contactor.closed


async def test_disable_remote_authorization(charger: Any, csms: DevCsms) -> None:
    """AuthCtrlr.DisableRemoteAuthorization (Part 2 2.3.8): no AuthorizeRequest at all; a
    cached Accepted card charges, an unknown one is refused."""
    h = await booted(charger, csms)
    await tap_and_wait(h)
    assert len(authorizes(h)) == 1
    await set_vars(csms, {"AuthCtrlr.DisableRemoteAuthorization": "true"})
    await h.advance(70)
    h.plug()
    await h.advance(1)
    await tap_and_wait(h, OTHER)
    await h.advance(2)
    assert not h.connector().hw.contactor.closed
    await tap_and_wait(h)
    await charging(h)
    assert len(authorizes(h)) == 1


async def test_authorize_failure_decides_offline(charger: Any, csms: DevCsms) -> None:
    """C01 error handling: a CALLERROR to AuthorizeRequest falls back to the offline rules:
    a cached Accepted card (LocalAuthorizeOffline) charges."""
    h = await booted(charger, csms)
    await tap_and_wait(h)
    await h.advance(70)
    csms.error_actions_once["Authorize"] = "InternalError"
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    assert len(authorizes(h)) == 2


async def test_group_stop_from_the_cache_without_authorize(charger: Any, csms: DevCsms) -> None:
    """TC_C_41_CS (C09.FR.03/07, C01.FR.03 b): a cached valid card of the transaction's group
    ends it without an AuthorizeRequest, even with LocalPreAuthorize false (every connector
    is busy, so the card can only be meant to stop)."""
    h = await booted(charger, csms)
    csms.id_token_infos[OTHER] = {"status": "Accepted", "groupIdToken": GROUP}
    csms.id_token_infos[CARD] = {"status": "Accepted", "groupIdToken": GROUP}
    await tap_and_wait(h, OTHER)  # cached with its group; lapses without a cable
    await h.advance(70)
    h.plug()
    await h.advance(1)
    await tap_and_wait(h)
    await charging(h)
    assert len(authorizes(h)) == 2
    await tap_and_wait(h, OTHER)
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")
    assert events(h)[-1]["idToken"] == {"idToken": OTHER, "type": "ISO14443"}
    assert len(authorizes(h)) == 2
