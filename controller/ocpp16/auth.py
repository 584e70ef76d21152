"""Local authorization for OCPP 1.6 (section 3.5): Local Authorization List and Authorization
Cache over the store.

The decision rules are version-neutral and pure (controller/core/authrules.py ``decide``) and
fed from the store by the neutral controller/csms/localauth.py, which the 2.0.1 adapter uses
too; ``LocalAuth`` steers it with the 1.6 keys and adds the 1.6 messages (3.5.1 cache
semantics, 5.15 SendLocalList, 5.10 GetLocalListVersion).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from controller.core.authrules import ACCEPTED, AuthConfig, Entry
from controller.core.records import TagInfo
from controller.csms import localauth
from controller.csms.localauth import CACHE_MAX_ENTRIES, CACHE_TOUCH_GRANULARITY_S
from controller.csms.rpc import CallError
from controller.ocpp16.rpc import (
    OCCURENCE_CONSTRAINT_VIOLATION,
    PROPERTY_CONSTRAINT_VIOLATION,
)
from controller.ocpp16.settings import Settings
from controller.storage.store import LocalListTooLong, Store

__all__ = ["CACHE_MAX_ENTRIES", "CACHE_TOUCH_GRANULARITY_S", "LocalAuth", "auth_config"]


def auth_config(settings: Settings) -> AuthConfig:
    """The OCPP 1.6 keys that steer local authorization (9.1, 9.2)."""
    return AuthConfig(
        local_auth_list_enabled=settings.get_bool("LocalAuthListEnabled"),
        authorization_cache_enabled=settings.get_bool("AuthorizationCacheEnabled"),
        local_pre_authorize=settings.get_bool("LocalPreAuthorize"),
        local_authorize_offline=settings.get_bool("LocalAuthorizeOffline"),
        allow_offline_tx_for_unknown_id=settings.get_bool("AllowOfflineTxForUnknownId"),
    )


class LocalAuth(localauth.LocalAuth):
    """Local Authorization List and Authorization Cache over the store, steered by the 1.6
    keys; SendLocalList and GetLocalListVersion in 1.6 words."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        now: Callable[[], datetime],
        *,
        cache_max_entries: int = CACHE_MAX_ENTRIES,
        wall_s: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            store,
            lambda: auth_config(settings),
            now,
            cache_max_entries=cache_max_entries,
            wall_s=wall_s,
        )
        self.settings = settings

    # ------------------------------------------------------------------ cache

    def remember(self, id_tag: str, info: dict[str, Any]) -> None:
        """Update the cache from an IdTagInfo (Authorize/StartTransaction/StopTransaction.conf,
        3.5.1). Not when the cache is disabled, nor for idTags in the list (3.5.3)."""
        entry = Entry(str(info["status"]), info.get("parentIdTag"), info.get("expiryDate"))
        self.remember_entry(id_tag, entry)

    def clear_cache(self) -> str:
        """5.4 ClearCache: the cache only; the Local Authorization List stays (3.5.3)."""
        self.empty_cache()
        return ACCEPTED

    # ------------------------------------------------------------------ local list

    def list_version(self) -> int:
        """5.10: the list's version; 0 when the list is empty. -1 ("not supported") is never
        answered: the profile is supported, even while LocalAuthListEnabled is false."""
        if self.store.local_list_count() == 0:
            return 0
        return self.store.local_list_version()

    def send_local_list(self, payload: dict[str, Any]) -> str:
        """5.15 SendLocalList: Accepted, VersionMismatch or Failed; CALLERROR for a request
        that breaks the field definitions (6.41, 7.1, errata 3.52)."""
        version = int(payload["listVersion"])
        full = payload["updateType"] == "Full"
        items: list[dict[str, Any]] = payload.get("localAuthorizationList") or []
        if version < 1:
            # Errata 3.52: listVersion SHALL NOT be -1 or 0 (special in GetLocalListVersion).
            raise CallError(PROPERTY_CONSTRAINT_VIOLATION, "listVersion must be 1 or more")
        seen: set[str] = set()
        entries: list[tuple[str, TagInfo | None]] = []
        for item in items:
            id_tag = str(item["idTag"])
            folded = id_tag.upper()  # IdToken is CiString20Type (errata 3.74/3.75)
            if folded in seen:
                raise CallError(PROPERTY_CONSTRAINT_VIOLATION, f"duplicate idTag {id_tag}")
            seen.add(folded)
            info = item.get("idTagInfo")
            if info is None and full:
                # 7.1: idTagInfo is required when updateType is Full.
                raise CallError(OCCURENCE_CONSTRAINT_VIOLATION, f"idTagInfo missing for {id_tag}")
            entries.append(
                (
                    id_tag,
                    None
                    if info is None
                    else (str(info["status"]), info.get("parentIdTag"), info.get("expiryDate")),
                )
            )
        if len(entries) > self.settings.get_int("SendLocalListMaxLength"):
            return "Failed"  # 6.41: at most SendLocalListMaxLength elements per request
        if not full and version <= self.list_version():
            return "VersionMismatch"  # 7.47
        try:
            self.store.local_list_apply(
                version,
                entries,
                full=full,
                max_entries=self.settings.get_int("LocalAuthListMaxLength"),
            )
        except LocalListTooLong:
            return "Failed"  # 9.2.2: the list cannot hold more
        return ACCEPTED
