"""Authorization decision rules, version-neutral and pure: which of the local list, the
authorization cache or the CSMS decides about a presented token, when a cache entry is
expired, and which cache entries make room first.

Written from OCPP 1.6 section 3.5 (3.5.1 cache, 3.5.3 priority, 3.5.4 offline) and 9.1/9.2;
OCPP 2.0.1 C (C10-C15: cache, local list, offline) states the same rules, except that a
list entry that is not valid is checked with the CSMS (C14.FR.03/05). The adapters map their
configuration onto ``AuthConfig``; controller/csms/localauth.py feeds the rules from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from controller.core.records import TagInfo
from controller.core.timestamps import parse_iso
from controller.core.values import value


class CachedTag(Protocol):
    """An authorization cache entry with the (wall clock) time it was last used."""

    @property
    def id_tag(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def parent_id_tag(self) -> str | None: ...
    @property
    def expiry_date(self) -> str | None: ...
    @property
    def last_used(self) -> float: ...


ACCEPTED = "Accepted"
EXPIRED = "Expired"


@value
class Entry:
    """An IdTagInfo as held by the local list or the cache (7.27)."""

    status: str
    parent_id_tag: str | None = None
    expiry_date: str | None = None

    @classmethod
    def of(cls, info: TagInfo | None) -> Entry | None:
        return None if info is None else cls(*info)


@value
class AuthConfig:
    """The configuration that steers local authorization (OCPP 1.6 keys 9.1, 9.2; OCPP 2.0.1
    LocalAuthListCtrlr, AuthCacheCtrlr, AuthCtrlr variables of the same meaning)."""

    local_auth_list_enabled: bool = True
    authorization_cache_enabled: bool = True
    local_pre_authorize: bool = False
    local_authorize_offline: bool = True
    allow_offline_tx_for_unknown_id: bool = False
    # Online with LocalPreAuthorize: whether a cache entry that is not valid is checked with
    # the CSMS (1.6 3.5.1; 2.0.1 C10.FR.03 unless AuthCacheCtrlr.DisablePostAuthorize) ...
    recheck_cached_not_valid: bool = True
    # ... and a list entry that is not valid (2.0.1 C14.FR.03/05 unless
    # LocalAuthListCtrlr.DisablePostAuthorize; in 1.6 3.5.2 the list entry decides alone).
    recheck_listed_not_valid: bool = False


@value
class Verdict:
    """What to do with a presented idTag.

    ``ask``: send Authorize.req and let the CSMS decide (``accepted`` is then meaningless).
    ``source``: "list", "cache", "offline-unknown", "offline" or "csms" (ask).
    ``expire_cache``: the cache entry was Accepted but has expired; mark it Expired (3.5.1).
    """

    accepted: bool
    status: str
    parent_id_tag: str | None = None
    source: str = "offline"
    ask: bool = False
    expire_cache: bool = False


ASK = Verdict(False, "Invalid", source="csms", ask=True)


def effective_status(entry: Entry, now: datetime) -> str:
    """The entry's status at ``now``: a passed (or unreadable) expiryDate makes it Expired
    (3.5.1 "changed to expired"; 3.5.4 "apparently expired ... MUST also be rejected")."""
    if entry.expiry_date is None or entry.status != ACCEPTED:
        return entry.status
    expiry = parse_iso(entry.expiry_date)
    if expiry is None or expiry <= now:
        return EXPIRED
    return entry.status


def decide(
    list_entry: Entry | None,
    cache_entry: Entry | None,
    *,
    online: bool,
    config: AuthConfig,
    now: datetime,
) -> Verdict:
    """Decide locally about an idTag, or say that the CSMS must be asked.

    * A disabled list (LocalAuthListEnabled=false) or cache (AuthorizationCacheEnabled=false)
      is treated as absent. A list entry hides any cache entry (3.5.3 priority).
    * Online, LocalPreAuthorize=true (9.1.13, C12, C14): a valid entry accepts at once. A
      NOT-valid cache entry is re-checked with the CSMS (3.5.1 last bullet, C10.FR.03) unless
      ``recheck_cached_not_valid`` is off; a NOT-valid list entry decides on its own in 1.6
      (Blocked/Expired/Invalid/ConcurrentTx refuse without asking the CSMS) and is re-checked
      in 2.0.1 (``recheck_listed_not_valid``, C14.FR.03/05). An unknown idTag is asked.
    * Online, LocalPreAuthorize=false: always ask the CSMS.
    * Offline: an entry that is not valid (status other than Accepted, or expired) refuses
      (3.5.4 MUST). A valid entry accepts when LocalAuthorizeOffline=true (9.1.12).
      AllowOfflineTxForUnknownId (3.5.4, 9.1.1) admits idTags in neither list nor cache; with
      LocalAuthorizeOffline=false it also admits valid known ones (refusing a valid card
      while admitting an unknown one would make no sense).
    """
    listed = list_entry if config.local_auth_list_enabled else None
    cached = cache_entry if config.authorization_cache_enabled and listed is None else None
    local = listed if listed is not None else cached
    source = "list" if listed is not None else "cache"
    if local is None:
        if online:
            return ASK
        if config.allow_offline_tx_for_unknown_id:
            return Verdict(True, ACCEPTED, None, "offline-unknown")
        return Verdict(False, "Invalid", None, "offline")

    status = effective_status(local, now)
    expire_cache = source == "cache" and status == EXPIRED and local.status != EXPIRED
    valid = status == ACCEPTED
    if online:
        recheck = (
            config.recheck_cached_not_valid
            if source == "cache"
            else config.recheck_listed_not_valid
        )
        if not config.local_pre_authorize or (recheck and not valid):
            return Verdict(False, status, None, "csms", ask=True, expire_cache=expire_cache)
        return Verdict(valid, status, local.parent_id_tag, source, expire_cache=expire_cache)
    if not valid:
        return Verdict(False, status, local.parent_id_tag, source, expire_cache=expire_cache)
    if config.local_authorize_offline:
        return Verdict(True, status, local.parent_id_tag, source)
    if config.allow_offline_tx_for_unknown_id:
        return Verdict(True, ACCEPTED, local.parent_id_tag, "offline-unknown")
    return Verdict(False, "Invalid", None, "offline")


def cache_victims(rows: Sequence[CachedTag], count: int, now: datetime) -> list[str]:
    """The ``count`` cache entries to drop for room (3.5.1): NOT-valid ones first (status
    other than Accepted, or expired), then the least recently used valid ones."""
    if count <= 0:
        return []

    def key(row: CachedTag) -> tuple[bool, float, str]:
        valid = effective_status(Entry(row.status, row.parent_id_tag, row.expiry_date), now)
        return valid == ACCEPTED, row.last_used, row.id_tag

    return [row.id_tag for row in sorted(rows, key=key)[:count]]
