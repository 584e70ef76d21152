"""Local authorization decisions (OCPP 1.6 section 3.5) and the Authorization Cache (3.5.1).

``controller.ocpp16.auth.decide`` is pure: tested as a table and exhaustively against the
rules of 3.5 / 3.5.3 / 3.5.4 and 9.1.12 / 9.1.13. ``LocalAuth`` is tested over a real store:
cache eviction order (3.5.1), expiry, LRU, ClearCache (5.4) vs the list (3.5.3) and
AuthorizationCacheEnabled (9.1.2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.csms.rpc import CallError
from controller.ocpp16.auth import (
    CACHE_TOUCH_GRANULARITY_S,
    AuthConfig,
    Entry,
    LocalAuth,
    Verdict,
    cache_victims,
    decide,
    effective_status,
)
from controller.ocpp16.settings import Settings, core_keys
from controller.storage.store import CacheRow, Store

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FUTURE = "2027-01-01T00:00:00Z"
PAST = "2025-12-31T23:59:59Z"
STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")

ACC = Entry("Accepted", "PARENT")
ACC_FUTURE = Entry("Accepted", None, FUTURE)
ACC_PAST = Entry("Accepted", None, PAST)
BLOCKED = Entry("Blocked")

PRE = AuthConfig(local_pre_authorize=True)
ALLOW = AuthConfig(allow_offline_tx_for_unknown_id=True)
NO_LIST = AuthConfig(local_auth_list_enabled=False, local_pre_authorize=True)
NO_CACHE = AuthConfig(authorization_cache_enabled=False, local_pre_authorize=True)
NO_OFFLINE = AuthConfig(local_authorize_offline=False)
NO_OFFLINE_ALLOW = AuthConfig(local_authorize_offline=False, allow_offline_tx_for_unknown_id=True)


def v(accepted: bool, status: str, source: str, parent: str | None = None, **kw: Any) -> Verdict:
    return Verdict(accepted, status, parent, source, **kw)


ASK = Verdict(False, "Invalid", None, "csms", ask=True)

# (list entry, cache entry, online, config, expected verdict)
TABLE = [
    # --- online (9.1.13 LocalPreAuthorize)
    pytest.param(None, None, True, PRE, ASK, id="online-unknown-asks"),
    pytest.param(ACC, None, True, AuthConfig(), v(False, "Accepted", "csms", ask=True),
                 id="online-list-no-preauth-asks"),
    pytest.param(ACC, None, True, PRE, v(True, "Accepted", "list", "PARENT"),
                 id="online-list-accepted-preauth"),
    pytest.param(BLOCKED, None, True, PRE, v(False, "Blocked", "list"),
                 id="online-list-blocked-refuses-without-csms"),
    pytest.param(Entry("Invalid"), None, True, PRE, v(False, "Invalid", "list"),
                 id="online-list-invalid"),
    pytest.param(Entry("Expired"), None, True, PRE, v(False, "Expired", "list"),
                 id="online-list-expired"),
    pytest.param(Entry("ConcurrentTx"), None, True, PRE, v(False, "ConcurrentTx", "list"),
                 id="online-list-concurrent"),
    pytest.param(ACC_PAST, None, True, PRE, v(False, "Expired", "list"),
                 id="online-list-past-expiry"),
    pytest.param(ACC_FUTURE, None, True, PRE, v(True, "Accepted", "list"),
                 id="online-list-future-expiry"),
    pytest.param(None, ACC, True, PRE, v(True, "Accepted", "cache", "PARENT"),
                 id="online-cache-accepted-preauth"),
    pytest.param(None, ACC, True, AuthConfig(), v(False, "Accepted", "csms", ask=True),
                 id="online-cache-no-preauth-asks"),
    pytest.param(None, BLOCKED, True, PRE, v(False, "Blocked", "csms", ask=True),
                 id="online-cache-not-valid-rechecked"),
    pytest.param(None, ACC_PAST, True, PRE,
                 v(False, "Expired", "csms", ask=True, expire_cache=True),
                 id="online-cache-expired-rechecked-and-marked"),
    pytest.param(BLOCKED, ACC, True, PRE, v(False, "Blocked", "list"),
                 id="online-list-wins-over-cache"),
    pytest.param(BLOCKED, ACC, True, NO_LIST, v(True, "Accepted", "cache", "PARENT"),
                 id="online-list-disabled-cache-decides"),
    pytest.param(None, ACC, True, NO_CACHE, ASK, id="online-cache-disabled-asks"),
    # --- offline (9.1.12 LocalAuthorizeOffline, 3.5.4 AllowOfflineTxForUnknownId)
    pytest.param(None, None, False, AuthConfig(), v(False, "Invalid", "offline"),
                 id="offline-unknown-refused"),
    pytest.param(None, None, False, ALLOW, v(True, "Accepted", "offline-unknown"),
                 id="offline-unknown-allowed"),
    pytest.param(ACC, None, False, AuthConfig(), v(True, "Accepted", "list", "PARENT"),
                 id="offline-list-accepted"),
    pytest.param(BLOCKED, None, False, ALLOW, v(False, "Blocked", "list"),
                 id="offline-list-blocked-refused-even-with-allow-unknown"),
    pytest.param(Entry("ConcurrentTx"), None, False, ALLOW, v(False, "ConcurrentTx", "list"),
                 id="offline-list-concurrent-refused"),
    pytest.param(ACC_PAST, None, False, ALLOW, v(False, "Expired", "list"),
                 id="offline-list-past-expiry-refused"),
    pytest.param(None, ACC, False, AuthConfig(), v(True, "Accepted", "cache", "PARENT"),
                 id="offline-cache-accepted"),
    pytest.param(None, BLOCKED, False, ALLOW, v(False, "Blocked", "cache"),
                 id="offline-cache-blocked-is-not-unknown"),
    pytest.param(None, ACC_PAST, False, ALLOW, v(False, "Expired", "cache", expire_cache=True),
                 id="offline-cache-expired-refused-and-marked"),
    pytest.param(None, Entry("Expired", None, PAST), False, ALLOW, v(False, "Expired", "cache"),
                 id="offline-cache-already-marked"),
    pytest.param(None, Entry("Accepted", None, "not a date"), False, ALLOW,
                 v(False, "Expired", "cache", expire_cache=True),
                 id="offline-cache-unreadable-expiry-is-expired"),
    pytest.param(None, ACC, False, NO_OFFLINE, v(False, "Invalid", "offline"),
                 id="offline-local-authorize-off"),
    pytest.param(None, ACC, False, NO_OFFLINE_ALLOW, v(True, "Accepted", "offline-unknown",
                 "PARENT"), id="offline-local-authorize-off-allow-unknown"),
    pytest.param(None, BLOCKED, False, NO_OFFLINE_ALLOW, v(False, "Blocked", "cache"),
                 id="offline-local-authorize-off-still-refuses-blocked"),
    pytest.param(ACC, BLOCKED, False, AuthConfig(), v(True, "Accepted", "list", "PARENT"),
                 id="offline-list-wins-over-cache"),
    pytest.param(BLOCKED, None, False, AuthConfig(local_auth_list_enabled=False,
                 allow_offline_tx_for_unknown_id=True), v(True, "Accepted", "offline-unknown"),
                 id="offline-list-disabled-is-unknown"),
    pytest.param(None, BLOCKED, False, AuthConfig(authorization_cache_enabled=False,
                 allow_offline_tx_for_unknown_id=True), v(True, "Accepted", "offline-unknown"),
                 id="offline-cache-disabled-is-unknown"),
]  # fmt: skip


@pytest.mark.parametrize(("listed", "cached", "online", "config", "expected"), TABLE)
def test_decision_table(
    listed: Entry | None, cached: Entry | None, online: bool, config: AuthConfig, expected: Verdict
) -> None:
    """3.5 / 3.5.1 / 3.5.3 / 3.5.4, 9.1.12 LocalAuthorizeOffline, 9.1.13 LocalPreAuthorize,
    9.2.1 LocalAuthListEnabled, 9.1.2 AuthorizationCacheEnabled (see auth.decide)."""
    assert decide(listed, cached, online=online, config=config, now=NOW) == expected


ENTRIES = [None, *(Entry(s, None, e) for s in STATUSES for e in (None, FUTURE, PAST))]
CONFIGS = [AuthConfig(*flags) for flags in itertools.product((False, True), repeat=5)]


def test_decisions_exhaustive_invariants() -> None:
    """Every combination of list entry, cache entry, connection state and the five keys:
    3.5.4 non-valid (or apparently expired) list/cache entries never authorize offline;
    3.5.3 an (enabled) list entry always hides the cache; only known-valid or unknown ids
    are admitted offline; the CSMS is only asked while online; a disabled store is ignored."""
    for listed, cached, online, config in itertools.product(
        ENTRIES, ENTRIES, (False, True), CONFIGS
    ):
        got = decide(listed, cached, online=online, config=config, now=NOW)
        eff_list = listed if config.local_auth_list_enabled else None
        eff_cache = cached if config.authorization_cache_enabled and eff_list is None else None
        local = eff_list if eff_list is not None else eff_cache
        valid = local is not None and effective_status(local, NOW) == "Accepted"
        case = (listed, cached, online, config, got)
        assert not (got.ask and not online), case
        if eff_list is not None:
            assert got.source in ("list", "csms", "offline-unknown", "offline"), case
        if got.accepted:
            assert local is None or valid, case  # never a non-valid entry
            if got.source in ("list", "cache"):
                assert valid, case
        if local is not None and not valid:
            assert not got.accepted, case
        if not online and local is None:
            assert got.accepted == config.allow_offline_tx_for_unknown_id, case
        if not online and valid:
            assert got.accepted == (
                config.local_authorize_offline or config.allow_offline_tx_for_unknown_id
            ), case
        if online and not config.local_pre_authorize:
            assert got.ask, case
        if got.expire_cache:
            assert eff_cache is not None and eff_cache.status == "Accepted", case


def test_effective_status_expiry() -> None:
    """3.5.1: an entry whose validity expired counts as Expired; 7.27 (errata 3.73): no
    expiryDate means no end date."""
    assert effective_status(Entry("Accepted"), NOW) == "Accepted"
    assert effective_status(Entry("Accepted", None, FUTURE), NOW) == "Accepted"
    assert effective_status(Entry("Accepted", None, PAST), NOW) == "Expired"
    assert effective_status(Entry("Accepted", None, "2026-01-01T12:00:00Z"), NOW) == "Expired"
    assert effective_status(Entry("Accepted", None, "2026-01-01T13:00:00+01:00"), NOW) == (
        "Expired"
    )
    assert effective_status(Entry("Accepted", None, "2026-01-01T12:00:01"), NOW) == "Accepted"
    assert effective_status(Entry("Blocked", None, FUTURE), NOW) == "Blocked"


def test_cache_victims_order() -> None:
    """3.5.1: when full, NOT-valid entries go first, then the oldest (least recently used)
    valid ones."""
    rows = [
        CacheRow("VALID-OLD", "Accepted", None, None, 100.0),
        CacheRow("VALID-NEW", "Accepted", None, FUTURE, 500.0),
        CacheRow("BLOCKED-NEW", "Blocked", None, None, 900.0),
        CacheRow("EXPIRED-BY-TIME", "Accepted", None, PAST, 800.0),
        CacheRow("VALID-MID", "Accepted", None, None, 300.0),
    ]
    assert cache_victims(rows, 0, NOW) == []
    assert cache_victims(rows, 1, NOW) == ["EXPIRED-BY-TIME"]
    assert cache_victims(rows, 2, NOW) == ["EXPIRED-BY-TIME", "BLOCKED-NEW"]
    assert cache_victims(rows, 4, NOW) == [
        "EXPIRED-BY-TIME",
        "BLOCKED-NEW",
        "VALID-OLD",
        "VALID-MID",
    ]


# ----------------------------------------------------------------------------- LocalAuth


class Wall:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "evsed.db")
    yield s
    s.close()


def make(
    store: Store, wall: Wall | None = None, max_entries: int = 3, **ocpp: str
) -> tuple[LocalAuth, Settings]:
    settings = Settings(store, core_keys(1), ocpp)
    return LocalAuth(
        store, settings, lambda: NOW, cache_max_entries=max_entries, wall_s=wall or Wall()
    ), settings


def info(status: str = "Accepted", expiry: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"status": status}
    if expiry:
        result["expiryDate"] = expiry
    return result


def full_list(auth: LocalAuth, version: int, **tags: str) -> str:
    return auth.send_local_list(
        {
            "listVersion": version,
            "updateType": "Full",
            "localAuthorizationList": [
                {"idTag": t, "idTagInfo": {"status": s}} for t, s in tags.items()
            ],
        }
    )


def test_cache_eviction_not_valid_first_then_lru(store: Store) -> None:
    """3.5.1: "If new identifier authorization data is received and the Authorization Cache
    is full, the Charge Point SHALL remove any NOT-valid entries, and then, if necessary, the
    oldest valid entries to make space for the new entry." """
    wall = Wall()
    auth, _ = make(store, wall, max_entries=3)
    for tag, status in (("A", "Accepted"), ("B", "Blocked"), ("C", "Accepted")):
        auth.remember(tag, info(status))
        wall.t += 100
    auth.remember("D", info())  # full: the NOT-valid B goes although it is newer than A
    assert {r.id_tag for r in store.cache_rows()} == {"A", "C", "D"}
    wall.t += 100
    auth.remember("E", info())  # no NOT-valid left: the least recently used valid (A) goes
    assert {r.id_tag for r in store.cache_rows()} == {"C", "D", "E"}
    assert store.cache_count() == 3


def test_cache_eviction_expired_counts_as_not_valid(store: Store) -> None:
    """3.5.1: an entry whose validity expired is NOT-valid, so it is evicted before any
    valid one, even before an older valid entry."""
    wall = Wall()
    auth, _ = make(store, wall, max_entries=2)
    auth.remember("OLD", info())
    wall.t += 100
    auth.remember("EXP", info("Accepted", PAST))
    wall.t += 100
    auth.remember("NEW", info())
    assert {r.id_tag for r in store.cache_rows()} == {"OLD", "NEW"}


def test_cache_update_of_known_entry_evicts_nothing(store: Store) -> None:
    """3.5.1: "When an IdTagInfo is received for an identifier in the Cache, it SHALL be
    updated" (no room needed, so no eviction)."""
    auth, _ = make(store, max_entries=2)
    auth.remember("A", info())
    auth.remember("B", info())
    auth.remember("A", info("Blocked"))
    assert store.cache_get("A") == ("Blocked", None, None)
    assert store.cache_get("B") == ("Accepted", None, None)


def test_cache_lru_use_refreshes_entry(store: Store) -> None:
    """3.5.1 "oldest valid entries": age is by last use, so using a cached card (offline
    authorization) protects it from eviction; uses closer than the write granularity are
    not written (tap-to-charge latency)."""
    wall = Wall()
    auth, _ = make(store, wall, max_entries=2)
    auth.remember("A", info())
    wall.t += 100
    auth.remember("B", info())
    wall.t += 100
    assert auth.decide("A", online=False).accepted  # A used: now B is the oldest
    used = {r.id_tag: r.last_used for r in store.cache_rows()}
    assert used["A"] == wall.t
    wall.t += CACHE_TOUCH_GRANULARITY_S / 2
    assert auth.decide("A", online=False).accepted
    assert {r.id_tag: r.last_used for r in store.cache_rows()}["A"] == used["A"]
    wall.t += 100
    auth.remember("C", info())
    assert {r.id_tag for r in store.cache_rows()} == {"A", "C"}


def test_cache_unchanged_answer_refreshes_use(store: Store) -> None:
    """3.5.1: an unchanged IdTagInfo from the CSMS (Authorize.conf) counts as a use."""
    wall = Wall()
    auth, _ = make(store, wall, max_entries=2)
    auth.remember("A", info())
    wall.t += 100
    auth.remember("B", info())
    wall.t += 100
    auth.remember("A", info())  # same info: only the use is recorded
    wall.t += 100
    auth.remember("C", info())
    assert {r.id_tag for r in store.cache_rows()} == {"A", "C"}


def test_cache_expiry_marks_entry_expired(store: Store) -> None:
    """3.5.1: "When the validity of a Cache entry expires, it SHALL be changed to expired in
    the Cache"; 3.5.4: an apparently expired id is rejected offline, even with
    AllowOfflineTxForUnknownId (the entry is kept, so the id does not become "unknown")."""
    auth, _ = make(store, AllowOfflineTxForUnknownId="true")
    auth.remember("A", info("Accepted", PAST))
    auth.remember("F", info("Accepted", FUTURE))
    verdict = auth.decide("A", online=False)
    assert not verdict.accepted and verdict.status == "Expired" and verdict.source == "cache"
    assert store.cache_get("A") == ("Expired", None, PAST)
    assert not auth.decide("A", online=False).accepted
    assert auth.decide("F", online=False).accepted
    assert store.cache_get("F") == ("Accepted", None, FUTURE)


def test_clear_cache_keeps_local_list(store: Store) -> None:
    """5.4 ClearCache clears the Authorization Cache only; the Local Authorization List is a
    distinct structure (3.5.3) changed only by SendLocalList (3.5.2)."""
    auth, _ = make(store)
    assert full_list(auth, 3, LISTED="Accepted") == "Accepted"
    auth.remember("CACHED", info())
    assert auth.clear_cache() == "Accepted"
    assert store.cache_count() == 0
    assert store.local_list_entries() == {"LISTED": ("Accepted", None, None)}
    assert auth.list_version() == 3
    assert auth.decide("LISTED", online=False).accepted
    assert not auth.decide("CACHED", online=False).accepted


def test_listed_id_is_never_cached(store: Store) -> None:
    """3.5.3: "Identifiers known in the Local Authorization List SHALL NOT be added to the
    Authorization Cache" (also: a cached id that becomes listed leaves the cache)."""
    auth, _ = make(store)
    auth.remember("CARD", info())
    assert store.cache_get("CARD") is not None
    assert full_list(auth, 1, card="Blocked") == "Accepted"  # idTag is case-insensitive
    assert store.cache_get("CARD") is None
    auth.remember("CARD", info("Accepted"))
    assert store.cache_get("CARD") is None
    assert auth.decide("CARD", online=False).status == "Blocked"


def test_cache_disabled(store: Store) -> None:
    """9.1.2 AuthorizationCacheEnabled=false: the cache is neither updated nor used."""
    auth, settings = make(store)
    auth.remember("OLD", info())
    assert settings.change("AuthorizationCacheEnabled", "false") == "Accepted"
    auth.remember("NEW", info())
    assert store.cache_get("NEW") is None
    verdict = auth.decide("OLD", online=False)
    assert not verdict.accepted and verdict.source == "offline"
    assert auth.decide("OLD", online=True).ask  # LocalPreAuthorize irrelevant: unknown
    assert settings.change("AuthorizationCacheEnabled", "true") == "Accepted"
    assert auth.decide("OLD", online=False).accepted


def test_cache_and_list_persist(tmp_path: Path) -> None:
    """3.5.1 (errata 3.4: "persisted across reboots, resets and power outages") and 3.5.2:
    cache and list survive reopening the database."""
    store = Store(tmp_path / "evsed.db")
    auth, _ = make(store)
    auth.remember("CACHED", info("Accepted", FUTURE))
    assert full_list(auth, 7, LISTED="Accepted") == "Accepted"
    store.close()
    store = Store(tmp_path / "evsed.db")
    auth, _ = make(store)
    assert store.cache_get("CACHED") == ("Accepted", None, FUTURE)
    assert auth.list_version() == 7
    assert auth.decide("LISTED", online=False).source == "list"
    store.close()


def test_send_local_list_over_capacity_changes_nothing(store: Store) -> None:
    """5.15 / 9.2.2 LocalAuthListMaxLength: an update that would overflow the list is
    Failed and leaves list and version untouched (one SQLite transaction)."""
    auth, settings = make(store)
    settings.set_internal("LocalAuthListMaxLength", "2")
    assert full_list(auth, 1, A="Accepted", B="Accepted") == "Accepted"
    assert full_list(auth, 2, C="Accepted", D="Accepted", E="Accepted") == "Failed"
    diff = {"listVersion": 3, "updateType": "Differential"}
    one_more = [{"idTag": "C", "idTagInfo": {"status": "Accepted"}}]
    assert auth.send_local_list({**diff, "localAuthorizationList": one_more}) == "Failed"
    assert store.local_list_entries() == {
        "A": ("Accepted", None, None),
        "B": ("Accepted", None, None),
    }
    assert auth.list_version() == 1
    # Removing one and adding one in the same request fits.
    swap = [{"idTag": "A"}, {"idTag": "C", "idTagInfo": {"status": "Blocked"}}]
    assert auth.send_local_list({**diff, "localAuthorizationList": swap}) == "Accepted"
    assert set(store.local_list_entries()) == {"B", "C"}
    assert auth.list_version() == 3


@pytest.mark.parametrize("version", [0, -1, -7])
def test_send_local_list_version_zero_or_negative(store: Store, version: int) -> None:
    """Errata 3.52 (6.41): listVersion "SHALL NOT be -1 or 0 as these have a special
    meaning in GetLocalListVersion.conf" -> PropertyConstraintViolation, list unchanged."""
    auth, _ = make(store)
    with pytest.raises(CallError) as err:
        full_list(auth, version, A="Accepted")
    assert err.value.code == "PropertyConstraintViolation"
    assert store.local_list_count() == 0
