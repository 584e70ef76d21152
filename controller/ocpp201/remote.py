"""OCPP 2.0.1 remote control (F01-F03, F05, K05): RequestStartTransaction,
RequestStopTransaction and UnlockConnector over the station's neutral controls."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controller.core.charging_profiles import ChargingProfile, validate_remote_start_profile
from controller.core.connector import StopCause
from controller.core.control import StationControl, UnlockResult
from controller.ocpp201 import smartcharging
from controller.ocpp201 import status as status201
from controller.ocpp201.transactions import RemoteStart

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# IdTokenEnumType of a remote start that needs no authorization (F01 remark).
NO_AUTHORIZATION = "NoAuthorization"


def connectors_of(
    station: StationControl, evse_id: int, connector_id: int | None = None
) -> list[int]:
    """The station's connectors on EVSE ``evse_id`` (only ``connector_id`` of it, if given);
    empty when there is no such EVSE or connector."""
    found = []
    for cid in station.connector_ids():
        evse, on_evse = status201.evse_of(cid)
        if evse == evse_id and connector_id in (None, on_evse):
            found.append(cid)
    return found


def _answer(status: str, reason_code: str | None = None, info: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {"status": status}
    if reason_code is not None:
        answer["statusInfo"] = {"reasonCode": reason_code}
        if info:
            answer["statusInfo"]["additionalInfo"] = info[:512]
    return answer


# ----------------------------------------------------------------------------- F01, F02


async def request_start_transaction(
    client: Ocpp201Client, payload: dict[str, Any]
) -> dict[str, Any]:
    """F01/F02: Accepted when a connector can take the start (the given EVSE, else the one
    the station picks, F01.FR.20: plugged in first, then the lowest id); the start itself
    follows the answer (F01.FR.01). Rejected while Pending (B02.FR.05), for an unknown,
    unavailable, faulted or reserved EVSE (F01.FR.21-23) or one whose transaction is
    authorized (F01.FR.24, with its transactionId), and for an invalid chargingProfile
    (F01.FR.26, K05.FR.05)."""
    token: dict[str, Any] = payload["idToken"]
    id_tag = str(token["idToken"])
    # F01.FR.22: a reservation for the token's group admits it.
    group = payload.get("groupIdToken")
    parent = str(group["idToken"]) if isinstance(group, dict) else None
    station = client.station
    if client.connection_state() != "accepted":
        return _answer("Rejected", "CSNotAccepted")
    evse_id = payload.get("evseId")
    requested: int | None = None
    if evse_id is not None:
        found = connectors_of(station, int(evse_id))
        if not found:
            return _answer("Rejected", "UnknownEvse")
        requested = found[0]
        running = station.view(requested).tx_key
        if running is not None:
            answer = _answer("Rejected", "TxInProgress")
            record = client.store.get_transaction(running)
            if record is not None:
                answer["transactionId"] = record.tx_id
            return answer
    cid = station.remote_start(requested, id_tag, parent)
    if cid is None:
        LOG.info("RequestStartTransaction %s rejected: no connector can start", id_tag)
        return _answer("Rejected")
    tx_profile: ChargingProfile | None = None
    raw = payload.get("chargingProfile")
    model = client.device_model
    if raw is not None and model is not None and smartcharging.enabled(model):
        checked = _tx_profile(client, raw, cid)
        if isinstance(checked, dict):
            return checked
        tx_profile = checked
    elif raw is not None:
        LOG.info("RequestStartTransaction: smart charging disabled, profile ignored (F01.FR.12)")
    request = RemoteStart(int(payload["remoteStartId"]), dict(token), parent)
    client.spawn(_begin(client, cid, request, tx_profile), name="remote-start")
    return _answer("Accepted")


def _tx_profile(
    client: Ocpp201Client, raw: dict[str, Any], connector_id: int
) -> ChargingProfile | dict[str, Any]:
    """The chargingProfile of a remote start: a TxProfile without transactionId (F01.FR.09/
    11) for the transaction it starts, checked as if that ran (K05.FR.03); else the
    Rejected answer."""
    if "transactionId" in raw:
        return _answer("Rejected", "InvalidProfile", "transactionId set (F01.FR.11)")
    evse_id, _ = status201.evse_of(connector_id)
    try:
        profile = smartcharging.parse_profile(raw, evse_id)
    except smartcharging.BadProfile as exc:
        return _answer("Rejected", exc.reason_code, str(exc))
    assert client.device_model is not None
    rules = smartcharging.rules(client.device_model, len(client.station.connector_ids()))
    reason = validate_remote_start_profile(profile, rules)
    if reason is not None:
        LOG.warning("RequestStartTransaction rejected: chargingProfile %s", reason)
        return _answer("Rejected", "InvalidProfile", reason)
    return profile


def _authorize_first(client: Ocpp201Client) -> bool:
    """AuthCtrlr.AuthorizeRemoteStart (F01.FR.01/02)."""
    model = client.device_model
    if model is None:
        return False
    try:
        return model.get_bool("AuthCtrlr", "AuthorizeRemoteStart")
    except KeyError:
        return False


async def _begin(
    client: Ocpp201Client,
    connector_id: int,
    request: RemoteStart,
    tx_profile: ChargingProfile | None,
) -> None:
    """After the answer: authorize like a local action when AuthorizeRemoteStart is true
    (F01.FR.01, F02.FR.09; not for a NoAuthorization token), then authorize the connector
    (F01.FR.02, F02.FR.10); the transaction starts once the EV is connected too."""
    id_tag = str(request.id_token["idToken"])
    if request.id_token["type"] != NO_AUTHORIZATION and _authorize_first(client):
        # The CSMS's IdToken as it sent it (its type, additionalInfo), not a reader card's.
        decision = await client.auth.authorize(request.id_token)
        if not decision.accepts_at(connector_id):  # C01.FR.21: its EVSEs only
            LOG.info("remote start %d: idToken %s not authorized", request.remote_start_id, id_tag)
            return
    # Still free? A card, a fault or an earlier remote start may have taken it since the
    # answer (the state machine changes synchronously, so this check and the start agree).
    parent = request.parent_id_tag
    if client.station.remote_start(connector_id, id_tag, parent) != connector_id:
        LOG.warning(
            "remote start %d: connector %d no longer free; not started",
            request.remote_start_id,
            connector_id,
        )
        return
    if client.transactions is not None:
        client.transactions.remote_start(connector_id, request)
    client.station.begin_remote(connector_id, id_tag, tx_profile, parent)


# ----------------------------------------------------------------------------- F03


async def request_stop_transaction(
    client: Ocpp201Client, payload: dict[str, Any]
) -> dict[str, Any]:
    """F03: Accepted when the transactionId is one of the station's running transactions
    (F03.FR.07), which then ends with triggerReason RemoteStop and stoppedReason Remote
    (F03.FR.03, TxStopPoint Authorized); Rejected otherwise (F03.FR.08) and while Pending
    (B02.FR.05)."""
    if client.connection_state() != "accepted":
        return _answer("Rejected", "CSNotAccepted")
    record = client.store.transaction_by_tx_id(str(payload["transactionId"]))
    if record is None or not record.open:
        return _answer("Rejected", "TxNotFound")
    if not client.station.stop_transaction(record.tx_key, StopCause.REMOTE):
        return _answer("Rejected", "TxNotFound")
    return _answer("Accepted")


# ----------------------------------------------------------------------------- F05

_UNLOCK = {
    UnlockResult.UNLOCKED: _answer("Unlocked"),
    UnlockResult.UNLOCK_FAILED: _answer("UnlockFailed"),
    # No cable lock on this connector: nothing to release (Appendix 5 FixedCable).
    UnlockResult.NOT_SUPPORTED: _answer("UnlockFailed", "FixedCable"),
}


async def unlock_connector(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """F05: UnknownConnector (F05.FR.03); OngoingAuthorizedTransaction without touching the
    lock or the transaction (F05.FR.02); else the result of an unlock attempt, also with no
    cable connected (F05.FR.04-06). A deauthorized transaction that still runs ends with
    the unlock (triggerReason UnlockCommand)."""
    station = client.station
    found = connectors_of(station, int(payload["evseId"]), int(payload["connectorId"]))
    if not found:
        return _answer("UnknownConnector")
    cid = found[0]
    view = station.view(cid)
    if view.tx_key is not None and not view.deauthorized:
        return _answer("OngoingAuthorizedTransaction")
    result = await station.unlock(cid)
    LOG.info("UnlockConnector %d: %s", cid, result.value)
    return dict(_UNLOCK[result])


ROUTES = {
    "RequestStartTransaction": request_start_transaction,
    "RequestStopTransaction": request_stop_transaction,
    "UnlockConnector": unlock_connector,
}
