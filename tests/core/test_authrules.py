"""Authorization decision rules (controller/core/authrules.py), pure and version-neutral:
``decide`` as a table and exhaustively against the rules of OCPP 1.6 3.5 / 3.5.3 / 3.5.4 and
9.1.12 / 9.1.13 (OCPP 2.0.1 C10-C14 state the same), expiry, and the cache eviction order
(3.5.1). The store-backed cache and list are tested in tests/ocpp16/test_auth_cache.py.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core.authrules import (
    AuthConfig,
    Entry,
    Verdict,
    cache_victims,
    decide,
    effective_status,
)
from controller.storage.store import CacheRow

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


def test_recheck_of_entries_that_are_not_valid() -> None:
    """OCPP 2.0.1 C14.FR.03/05: online with LocalPreAuthorize a list entry that is not valid
    (status or expired) is checked with the CSMS (``recheck_listed_not_valid``), a valid one
    still decides alone (C14.FR.02/04); C10.FR.03 / AuthCacheCtrlr.DisablePostAuthorize: the
    cache's recheck can be switched off, and the entry then refuses on its own."""
    listed_201 = AuthConfig(local_pre_authorize=True, recheck_listed_not_valid=True)
    for entry in (BLOCKED, Entry("Invalid"), ACC_PAST):
        got = decide(entry, None, online=True, config=listed_201, now=NOW)
        assert got.ask and not got.accepted, entry
        got = decide(entry, None, online=False, config=listed_201, now=NOW)
        assert not got.ask and not got.accepted, entry
    assert decide(ACC, None, online=True, config=listed_201, now=NOW) == v(
        True, "Accepted", "list", "PARENT"
    )
    no_post = AuthConfig(local_pre_authorize=True, recheck_cached_not_valid=False)
    assert decide(None, BLOCKED, online=True, config=no_post, now=NOW) == v(
        False, "Blocked", "cache"
    )
    got = decide(None, ACC_PAST, online=True, config=no_post, now=NOW)
    assert (got.accepted, got.ask, got.status, got.expire_cache) == (False, False, "Expired", True)


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
