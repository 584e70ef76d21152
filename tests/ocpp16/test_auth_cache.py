"""The OCPP 1.6 Authorization Cache (3.5.1) and Local Authorization List (3.5.2) over a real
store: cache eviction order, expiry, LRU, ClearCache (5.4) vs the list (3.5.3),
AuthorizationCacheEnabled (9.1.2), SendLocalList. The decision rules themselves are pure and
tested in tests/core/test_authrules.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.csms.rpc import CallError
from controller.ocpp16.auth import CACHE_TOUCH_GRANULARITY_S, LocalAuth
from controller.ocpp16.settings import Settings, core_keys
from controller.storage.store import Store

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
FUTURE = "2027-01-01T00:00:00Z"
PAST = "2025-12-31T23:59:59Z"


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
