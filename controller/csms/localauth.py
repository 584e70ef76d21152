"""Local authorization over the store for every OCPP version: the Authorization Cache and the
Local Authorization List feed the pure rules of controller/core/authrules.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from controller.core.authrules import (
    EXPIRED,
    AuthConfig,
    Entry,
    Verdict,
    cache_victims,
    decide,
)
from controller.core.timestamps import iso_utc
from controller.storage.store import Store

# Authorization Cache capacity (1.6 3.5.1, 2.0.1 C10.FR.07: room is made by eviction).
CACHE_MAX_ENTRIES = 1000
# A use of a cache entry is written back (for LRU eviction) at most this often.
CACHE_TOUCH_GRANULARITY_S = 60.0


class LocalAuth:
    """Local Authorization List and Authorization Cache over the store.

    ``config`` is read at each decision (the CSMS may change the keys or variables at any
    time); ``cache_lifetime_s`` (2.0.1 AuthCacheCtrlr.LifeTime, C10.FR.08) gives entries
    without an expiry of their own one that far after their last use; None: no lifetime.
    Entries are keyed by text: the 1.6 idTag, or the 2.0.1 adapter's key of an IdToken.
    """

    def __init__(
        self,
        store: Store,
        config: Callable[[], AuthConfig],
        now: Callable[[], datetime],
        *,
        cache_max_entries: int = CACHE_MAX_ENTRIES,
        wall_s: Callable[[], float] | None = None,
        cache_lifetime_s: Callable[[], float | None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._now = now
        self._wall_s = wall_s or time.time
        self._cache_lifetime_s = cache_lifetime_s
        self.cache_max_entries = cache_max_entries

    # ------------------------------------------------------------------ decisions

    def decide(self, key: str, *, online: bool, config: AuthConfig | None = None) -> Verdict:
        """``decide`` fed from the store; marks expired cache entries and records cache use.
        ``config``: instead of the configured one (a rule that applies in one situation)."""
        config = self.config() if config is None else config
        listed = (
            Entry.of(self.store.local_list_get(key)) if config.local_auth_list_enabled else None
        )
        cached = (
            self._with_lifetime(key, Entry.of(self.store.cache_get(key)))
            if config.authorization_cache_enabled and listed is None
            else None
        )
        verdict = decide(listed, cached, online=online, config=config, now=self._now())
        if verdict.expire_cache:
            self.store.cache_set_status(key, EXPIRED)
        if cached is not None and verdict.source == "cache" and verdict.accepted:
            self.store.cache_touch(key, self._wall_s(), min_age_s=CACHE_TOUCH_GRANULARITY_S)
        return verdict

    def _with_lifetime(self, key: str, entry: Entry | None) -> Entry | None:
        """C10.FR.08: an entry without its own expiry expires LifeTime after its last use."""
        if entry is None or entry.expiry_date is not None or self._cache_lifetime_s is None:
            return entry
        lifetime_s = self._cache_lifetime_s()
        last_used = self.store.cache_last_used(key)
        if lifetime_s is None or last_used is None:
            return entry
        expiry = datetime.fromtimestamp(last_used + lifetime_s, UTC)
        return Entry(entry.status, entry.parent_id_tag, iso_utc(expiry))

    def entry(self, key: str) -> Entry | None:
        """The (enabled) list's entry for the key, else the (enabled) cache's, else None."""
        config = self.config()
        listed = self.store.local_list_get(key) if config.local_auth_list_enabled else None
        if listed is not None:
            return Entry.of(listed)
        if config.authorization_cache_enabled:
            return Entry.of(self.store.cache_get(key))
        return None

    def listed(self, key: str) -> bool:
        """Whether the key is in the (enabled) Local Authorization List."""
        return self.config().local_auth_list_enabled and self.store.local_list_get(key) is not None

    # ------------------------------------------------------------------ cache

    def remember_entry(self, key: str, entry: Entry) -> None:
        """Update the cache from what the CSMS answered (1.6 3.5.1, 2.0.1 C10.FR.01/04/05).
        Not when the cache is disabled, nor for keys in the list (list entries have priority
        and are not duplicated, 1.6 3.5.3, 2.0.1 C13.FR.01)."""
        if not self.config().authorization_cache_enabled:
            return
        if self.listed(key):
            if self.store.cache_get(key) is not None:
                self.store.cache_delete(key)
            return
        row = (entry.status, entry.parent_id_tag, entry.expiry_date)
        current = self.store.cache_get(key)
        now_s = self._wall_s()
        if current == row:
            # Skip the (fsync'ed) write when nothing changed: it sits on the tap-to-charge path.
            self.store.cache_touch(key, now_s, min_age_s=CACHE_TOUCH_GRANULARITY_S)
            return
        evict: list[str] = []
        if current is None:
            excess = self.store.cache_count() + 1 - self.cache_max_entries
            if excess > 0:
                evict = cache_victims(self.store.cache_rows(), excess, self._now())
        self.store.cache_put(key, *row, used_at=now_s, evict=evict)

    def empty_cache(self) -> None:
        """ClearCache: the cache only; the Local Authorization List stays (1.6 3.5.3, C11)."""
        self.store.cache_clear()
