"""Which OCPP version to speak: the configured preference order, the WebSocket subprotocols
offered for it, the CSMS's pick and the version remembered for the next start."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

LOG = logging.getLogger(__name__)

# OCPP-J 1.6 3.1.2 and 2.0.1 part 4 3.1.2: the subprotocol names the version.
SUBPROTOCOLS: dict[str, str] = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
# The store setting that holds the version the CSMS picked last.
REMEMBERED_KEY = "csms.ocpp_version"


class SettingStore(Protocol):
    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...


def version_of(subprotocol: str | None) -> str | None:
    """The OCPP version a subprotocol names (None: not an OCPP version we speak)."""
    for version, name in SUBPROTOCOLS.items():
        if name == subprotocol:
            return version
    return None


class VersionChoice:
    """The versions in order of preference; offers all of them at every connection attempt
    and learns which one the CSMS picked (remembered in the store, so the next start builds
    that adapter first). ``switch_to`` is set when the CSMS picked a listed version other
    than the one the running adapter speaks: its connection stops and the owner hands over."""

    def __init__(self, preferred: Sequence[str], store: SettingStore) -> None:
        unknown = [v for v in preferred if v not in SUBPROTOCOLS]
        if not preferred or unknown:
            raise ValueError(f"unknown OCPP version(s) {unknown or preferred}")
        self.preferred = tuple(preferred)
        self._store = store
        self.switch_to: str | None = None

    def offered(self) -> list[str]:
        """The subprotocols of an attempt, in order of preference (RFC 6455 4.1)."""
        return [SUBPROTOCOLS[v] for v in self.preferred]

    def first(self) -> str:
        """The version to build the adapter of: the one remembered, else the first listed."""
        remembered = self._store.get_setting(REMEMBERED_KEY)
        return remembered if remembered in self.preferred else self.preferred[0]

    def remember(self, version: str) -> None:
        if self._store.get_setting(REMEMBERED_KEY) != version:
            self._store.set_setting(REMEMBERED_KEY, version)

    def picked(self, subprotocol: str | None, own: str) -> bool:
        """The CSMS answered the upgrade with ``subprotocol``; ``own`` is what the running
        adapter speaks. True: run the session. False: close this connection (none of ours
        picked: an error, retried with back-off; another of ours: ``switch_to`` is set)."""
        version = version_of(subprotocol)
        if version is None or version not in self.preferred:
            LOG.error(
                "the CSMS accepted none of the offered subprotocols %s (it answered %s)",
                ", ".join(self.offered()),
                subprotocol or "without a subprotocol",
            )
            return False
        self.remember(version)
        if subprotocol == own:
            return True
        LOG.info("the CSMS picked OCPP %s: handing over from %s", version, version_of(own))
        self.switch_to = version
        return False
