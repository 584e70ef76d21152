"""OCPP 2.0.1 authorization (C01, C09-C16): Authorize, the Authorization Cache, the offline
rules, the master pass and ClearCache, over the neutral controller/csms/localauth.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from controller.core import connector as sm
from controller.core.authrules import ACCEPTED, AuthConfig, Entry, Verdict
from controller.core.port import AuthDecision
from controller.core.records import StoreError
from controller.csms.localauth import LocalAuth
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201.dm import DeviceModel

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# What the card reader reads: a UID in hex (C 1.1); an OCPP 1.6 idTag was the same.
ISO14443 = "ISO14443"
ID_TOKEN_MAX_CHARS = 36
AUTH_CTRLR = "AuthCtrlr"
CACHE_CTRLR = "AuthCacheCtrlr"
LIST_CTRLR = "LocalAuthListCtrlr"


def reader_token(uid: str) -> dict[str, str]:
    """The IdTokenType of a card presented at the station's reader."""
    return {"idToken": uid[:ID_TOKEN_MAX_CHARS], "type": ISO14443}


def token_key(id_token: Mapping[str, Any]) -> str:
    """The key of an IdToken in the store's cache and list (both compare case-insensitively,
    as IdToken does, C 1.1). An idToken and its type identify a token: ISO14443 tokens are
    keyed by the idToken alone (as the 1.6 idTags were), every other type as
    ``<type>:<idToken>``; an ISO14443 idToken with a ':' gets its prefix too, so no two
    tokens share a key."""
    value = str(id_token.get("idToken", ""))
    kind = str(id_token.get("type", ISO14443))
    if kind == ISO14443 and ":" not in value:
        return value
    return f"{kind}:{value}"


def group_of(info: Mapping[str, Any]) -> str | None:
    """The groupIdToken's idToken of an IdTokenInfo (C09), the neutral parent id."""
    group = info.get("groupIdToken")
    if isinstance(group, Mapping) and group.get("idToken"):
        return str(group["idToken"])
    return None


def entry_of(info: Mapping[str, Any]) -> Entry:
    """An IdTokenInfo as the cache and the list hold it: status, group, cacheExpiryDateTime."""
    expiry = info.get("cacheExpiryDateTime")
    return Entry(str(info["status"]), group_of(info), None if expiry is None else str(expiry))


def evse_limits(info: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The EVSEs an IdTokenInfo allows the token at (C01.FR.20/21); None: every EVSE (an
    absent or empty evseId list, C01.FR.19). evsed's EVSE n is its connector n."""
    ids = info.get("evseId")
    if not isinstance(ids, list) or not ids:
        return None
    return tuple(int(i) for i in ids)


def _bool(model: DeviceModel | None, component: str, variable: str, default: bool) -> bool:
    if model is None:
        return default
    try:
        text = model.get(component, variable)
    except KeyError:
        return default
    return default if text is None else text == "true"


def auth_config(model: DeviceModel | None) -> AuthConfig:
    """The device model variables that steer local authorization (C10-C15, Part 2 2.3-2.5).
    DisableRemoteAuthorization: the list and the cache decide alone, also for entries that
    are not valid (nothing is asked)."""
    remote = not _bool(model, AUTH_CTRLR, "DisableRemoteAuthorization", False)
    return AuthConfig(
        local_auth_list_enabled=_bool(model, LIST_CTRLR, "Enabled", True),
        authorization_cache_enabled=_bool(model, CACHE_CTRLR, "Enabled", True),
        local_pre_authorize=_bool(model, AUTH_CTRLR, "LocalPreAuthorize", False) or not remote,
        local_authorize_offline=_bool(model, AUTH_CTRLR, "LocalAuthorizeOffline", True),
        allow_offline_tx_for_unknown_id=_bool(
            model, AUTH_CTRLR, "OfflineTxForUnknownIdEnabled", False
        ),
        recheck_cached_not_valid=remote
        and not _bool(model, CACHE_CTRLR, "DisablePostAuthorize", False),
        recheck_listed_not_valid=remote
        and not _bool(model, LIST_CTRLR, "DisablePostAuthorize", False),
    )


class Authorization:
    """The 2.0.1 client's authorization: decisions, the cache kept from the CSMS's answers."""

    def __init__(self, client: Ocpp201Client) -> None:
        self.client = client
        self.local = LocalAuth(
            client.store,
            lambda: auth_config(client.device_model),
            client.clock.utc_now,
            wall_s=lambda: client.clock.utc_now().timestamp(),
            cache_lifetime_s=self._cache_lifetime_s,
        )

    def _cache_lifetime_s(self) -> float | None:
        model = self.client.device_model
        if model is None:
            return None
        try:
            lifetime_s = model.get_int(CACHE_CTRLR, "LifeTime")
        except (KeyError, ValueError):
            return None
        return float(lifetime_s) if lifetime_s > 0 else None

    def _master_pass_group(self) -> str | None:
        model = self.client.device_model
        if model is None:
            return None
        try:
            group = model.get(AUTH_CTRLR, "MasterPassGroupId")
        except KeyError:
            return None
        return group or None

    def required(self) -> bool:
        """AuthCtrlr.Enabled: false means no authorization at all (Part 2 2.3.1)."""
        return _bool(self.client.device_model, AUTH_CTRLR, "Enabled", True)

    def ev_connected(self, connector_id: int) -> None:
        """AuthCtrlr.Enabled false: a car plugged in charges without anybody's idToken; the
        transaction's idToken is empty with type NoAuthorization (AuthCtrlr.Enabled, Part 2
        appendix; C02.FR.01). A card presented first keeps its own idToken. Spawned: this
        runs inside the state machine's step."""
        if not self.required():
            self.client.spawn(self._start_unauthorized(connector_id), name="no-authorization")

    async def _start_unauthorized(self, connector_id: int) -> None:
        station = self.client.station
        # Not when a card or a remote start authorized it, nor on a reserved, unavailable
        # or faulted connector (the same checks as a RequestStartTransaction).
        if self.required() or station.remote_start(connector_id, "") != connector_id:
            return
        if self.client.transactions is not None:
            self.client.transactions.no_authorization(connector_id)
        LOG.info("connector %d: no authorization needed (AuthCtrlr.Enabled false)", connector_id)
        station.begin_remote(connector_id, "")

    # ------------------------------------------------------------------ decisions

    async def authorize(self, id_token: Mapping[str, Any]) -> AuthDecision:
        """C01: the list and the cache first (C12-C14), AuthorizeRequest when they leave it
        to the CSMS (C01.FR.02, C10.FR.03, C14.FR.03), the offline rules when the CSMS is
        away or does not answer (C13, C15). AuthCtrlr.Enabled false: no authorization at all
        (every token is accepted as presented). A token of the master pass group never
        starts a transaction and stops every ongoing one (C12.FR.09, C16.FR.02/03)."""
        if not self.required():
            return AuthDecision(True, ACCEPTED, None, "auth-disabled")
        key = token_key(id_token)
        online = self.client.connection_state() == "accepted"
        verdict = (self._stops_own_group(key) if online else None) or self.local.decide(
            key, online=online
        )
        if verdict.ask and online and not self._remote_disabled():
            try:
                result = await self.client.call("Authorize", {"idToken": dict(id_token)})
            except (CallError, CallTimeout, ConnectionLost) as exc:
                LOG.warning("Authorize for %s failed (%s); deciding offline", key, exc)
                verdict = self.local.decide(key, online=False)
            else:
                info = result["idTokenInfo"]
                self.remember(id_token, info)
                status = str(info["status"])
                return self._master_pass(
                    AuthDecision(
                        status == ACCEPTED, status, group_of(info), "csms", evse_limits(info)
                    )
                )
        elif verdict.ask:
            # DisableRemoteAuthorization: a token in neither the list nor the cache is unknown.
            verdict = Verdict(False, "Unknown", None, "local")
        return self._master_pass(
            AuthDecision(verdict.accepted, verdict.status, verdict.parent_id_tag, verdict.source)
        )

    def _stops_own_group(self, key: str) -> Verdict | None:
        """C01.FR.03 (b), C09.FR.07: a token valid in the list or the cache whose group is
        the group of a running transaction's token ends it without an AuthorizeRequest, also
        without LocalPreAuthorize. Only while every connector is in a transaction: with a
        free one the token may be meant to start, and LocalPreAuthorize decides."""
        station = self.client.station
        running = station.running_transactions()
        if not running or any(cid not in running for cid in station.connector_ids()):
            return None
        config = replace(self.local.config(), local_pre_authorize=True)
        verdict = self.local.decide(key, online=True, config=config)
        group = verdict.parent_id_tag
        if not verdict.accepted or group is None:
            return None
        for record in self.client.store.open_transactions():
            starter = self.local.entry(token_key(reader_token(record.id_tag)))
            parent = None if starter is None else starter.parent_id_tag
            if parent is not None and parent.casefold() == group.casefold():
                return verdict
        return None

    def _remote_disabled(self) -> bool:
        return _bool(self.client.device_model, AUTH_CTRLR, "DisableRemoteAuthorization", False)

    def _master_pass(self, decision: AuthDecision) -> AuthDecision:
        """C16: an accepted token whose group is MasterPassGroupId stops every ongoing
        transaction (no UI to choose: C16.FR.02) and starts none (C12.FR.09, C16.FR.03)."""
        group = self._master_pass_group()
        parent = decision.parent_id_tag
        if not decision.accepted or group is None or parent is None:
            return decision
        if parent.casefold() != group.casefold():
            return decision
        running = self.client.station.running_transactions()
        LOG.warning("master pass presented: stopping %d transaction(s)", len(running))
        for tx_key in running.values():
            self.client.station.stop_transaction(tx_key, sm.StopCause.MASTER_PASS)
        return AuthDecision(False, decision.status, parent, decision.source)

    # ------------------------------------------------------------------ cache

    def remember(self, id_token: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        """C10.FR.01/04/05, C12.FR.06: an IdTokenInfo from the CSMS updates the cache (any
        status), unless the cache is disabled or the token is in the list."""
        key = token_key(id_token)
        try:
            if evse_limits(info) is not None:
                # The cache keeps no evseId: a token allowed at some EVSEs only is not cached
                # (an older entry goes), so no local decision lets it charge elsewhere; the
                # CSMS is asked each time (C01.FR.21).
                if self.client.store.cache_get(key) is not None:
                    self.client.store.cache_delete(key)
                return
            self.local.remember_entry(key, entry_of(info))
        except (KeyError, TypeError, ValueError) as exc:
            LOG.warning("idTokenInfo not cached: %s", exc)

    def allowed_at(self, info: Mapping[str, Any], connector_id: int | None) -> bool:
        """An IdTokenInfo's status is Accepted, and for this EVSE (C01.FR.21)."""
        if str(info.get("status")) != ACCEPTED:
            return False
        limits = evse_limits(info)
        return limits is None or connector_id is None or connector_id in limits

    def transaction_answered(self, payload: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """C10.FR.05: the idTokenInfo of a TransactionEventResponse about the event's idToken."""
        id_token = payload.get("idToken")
        info = result.get("idTokenInfo")
        if (
            isinstance(id_token, Mapping)
            and isinstance(info, Mapping)
            and id_token.get("type") != "NoAuthorization"  # C02.FR.03: never cached
        ):
            self.remember(id_token, info)


async def clear_cache(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """C11: Accepted once the cache is empty (C11.FR.03); Rejected while AuthCacheCtrlr is
    disabled (C11.FR.04) or when it could not be cleared (C11.FR.05). The list stays."""
    if not _bool(client.device_model, CACHE_CTRLR, "Enabled", True):
        return {"status": "Rejected"}
    try:
        client.auth.local.empty_cache()
    except StoreError as exc:
        LOG.error("ClearCache failed: %s", exc)
        return {"status": "Rejected", "statusInfo": {"reasonCode": "InternalError"}}
    return {"status": ACCEPTED}


ROUTES = {"ClearCache": clear_cache}
