"""OCPP 2.0.1 network connection profiles: SetNetworkProfile (B09) and the migration to a new
profile through NetworkConfigurationPriority (B10), with the security profile each carries.

How a slot maps onto the configuration: the first slot of NetworkConfigurationPriority's
valuesList ("1") is the ``[csms]`` table (url, tls_url, response_timeout_s and
security_profile of the TOML) until the CSMS sets that slot with SetNetworkProfile; every
other slot is empty until the CSMS sets it. A slot the CSMS set is stored in the database
(settings ``ocpp201.network_profile.<slot>``) and outlives restarts and TOML edits; the
TOML's password, reconnect back-off and compression apply to every slot.

Which slot connects: at start the first entry of NetworkConfigurationPriority (B10.FR.04;
the variable is RebootRequired, so a change applies after a Reset); after
NetworkProfileConnectionAttempts failed attempts the next entry (B10.FR.03); after the last,
the slot that connected last (B10.FR.07), else the list from the start. A slot whose
security profile is below the one a connection worked with is never used (no downgrade,
A05.FR.09 as in csms/secprofile.py); one above it is a raise on probation that the first
connection confirms, and that the neutral fallback (A05.FR.08) gives up after failed
attempts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controller.core.records import StoreError
from controller.csms.connection import ConnectionOptions
from controller.csms.secprofile import ConnectionSecurity
from controller.ocpp201.dm import DeviceModel, InvalidValue
from controller.storage.store import Store

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

COMM = "OCPPCommCtrlr"
PRIORITY = "NetworkConfigurationPriority"
SLOT_KEY = "ocpp201.network_profile."  # + slot: the CSMS's connectionData (JSON)
CONNECTED_KEY = "ocpp201.network_slot_connected"  # the slot that connected last
DEFAULT_ATTEMPTS = 3


@dataclass(frozen=True)
class NetworkProfile:
    """A slot's connection: where, how long to wait for answers, which security profile;
    ``from_config``: the [csms] table's slot (its tls_url applies)."""

    slot: str
    url: str
    message_timeout_s: float
    security_profile: int
    from_config: bool = False


def check_connection_data(data: dict[str, Any], current_profile: int) -> str | None:
    """B09.FR.02/04: why the station cannot use ``connectionData`` (None: it can).
    Only OCPP 2.0.1 over JSON (this adapter), a ws:// or wss:// URL that fits the
    profile (TLS for 2 and 3, A00.FR.311), no lower profile than the active one, and no
    VPN or APN (the station does not manage either: the OS does)."""
    if data.get("ocppVersion") != "OCPP20":
        return f"ocppVersion {data.get('ocppVersion')} is not spoken by this adapter"
    if data.get("ocppTransport") != "JSON":
        return "only the JSON transport"
    url = str(data.get("ocppCsmsUrl", ""))
    profile = int(data.get("securityProfile", -1))
    if profile < current_profile:
        return f"securityProfile {profile} is below the active {current_profile} (B09.FR.04)"
    if not url.startswith(("ws://", "wss://")) or len(url.split("://", 1)[1]) == 0:
        return "ocppCsmsUrl is not a ws:// or wss:// URL"
    if profile >= 2 and not url.startswith("wss://"):
        return f"securityProfile {profile} needs a wss:// URL (A00.FR.311)"
    if profile <= 1 and url.startswith("wss://"):
        return f"securityProfile {profile} is not TLS: a ws:// URL"
    if int(data.get("messageTimeout", 0)) <= 0:
        return "messageTimeout must be positive"
    if "vpn" in data or "apn" in data:
        return "the station does not set up a VPN or APN"
    return None


class NetworkProfiles:
    """The slots, the one in use and its failed attempts (see the module docstring).
    ``apply(options)`` hands the options of the chosen slot to the client."""

    def __init__(
        self,
        *,
        model: DeviceModel,
        store: Store,
        security: ConnectionSecurity,
        base: ConnectionOptions,
        configured_profile: int,
    ) -> None:
        self._model = model
        self._store = store
        self._security = security
        self._base = base
        self._configured_profile = configured_profile
        definition = model.find(COMM, PRIORITY)
        self.slots: tuple[str, ...] = (
            definition.characteristics.values_list if definition is not None else ("1",)
        ) or ("1",)
        self.active: str | None = None
        self._failures = 0
        self.options = base
        model.add_guard(COMM, PRIORITY, self._guard_priority)

    # ------------------------------------------------------------------ slots

    def profile(self, slot: str) -> NetworkProfile | None:
        """The slot's connection, None when it holds none."""
        text = self._store.get_setting(SLOT_KEY + slot)
        if text is not None:
            try:
                data = json.loads(text)
                return NetworkProfile(
                    slot,
                    str(data["ocppCsmsUrl"]),
                    float(data["messageTimeout"]),
                    int(data["securityProfile"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                LOG.error("network profile %s unreadable (%s): ignored", slot, exc)
                return None
        if slot == self.slots[0]:
            return NetworkProfile(
                slot,
                self._base.csms_url,
                self._base.response_timeout_s,
                self._configured_profile,
                from_config=True,
            )
        return None

    def set_profile(self, slot: str, data: dict[str, Any]) -> None:
        """B09.FR.01: store the slot's connectionData (raises StoreError)."""
        self._store.set_setting(SLOT_KEY + slot, json.dumps(data, sort_keys=True))
        LOG.warning("network profile %s set: %s", slot, data.get("ocppCsmsUrl"))

    def priority(self) -> list[str]:
        try:
            return self._model.get_list(COMM, PRIORITY)
        except KeyError:
            return [self.slots[0]]

    def _usable(self, profile: NetworkProfile | None) -> bool:
        """Not below the confirmed profile; above it only with what it needs."""
        if profile is None:
            return False
        confirmed = self._security.confirmed_profile()
        if profile.security_profile == confirmed:
            return True
        return (
            profile.security_profile > confirmed
            and self._security.missing_prerequisite(profile.security_profile) is None
        )

    def _guard_priority(self, old: str | None, new: str) -> str | None:
        """B10.FR.01/02: every slot named holds a connection the station can use: not below
        the active security profile (errata A05.FR.10) and with what that profile needs
        (A05.FR.02-04: password, CSMS root, station certificate; TC_A_20/21_CS)."""
        active = self._security.profile
        for slot in (s for s in new.split(",") if s):
            profile = self.profile(slot)
            if profile is None:
                return f"network profile slot {slot} holds no connection (B10.FR.02)"
            if profile.security_profile < active:
                return (
                    f"slot {slot}: securityProfile {profile.security_profile} is below the"
                    f" active {active} (A05.FR.10)"
                )
            if profile.security_profile > active:
                why = self._security.missing_prerequisite(profile.security_profile)
                if why is not None:
                    return f"slot {slot}: {why}"
        return None

    # ------------------------------------------------------------------ the connection

    def start(self) -> None:
        """B10.FR.04: the first usable entry of NetworkConfigurationPriority."""
        for slot in self.priority():
            if self._use(slot):
                return
        LOG.error("no slot of NetworkConfigurationPriority is usable: the [csms] table it is")
        self._use(self.slots[0], force=True)

    def _use(self, slot: str, *, force: bool = False) -> bool:
        profile = self.profile(slot)
        if profile is None or not (force or self._usable(profile)):
            return False
        try:
            self._security.use_profile(profile.security_profile, f"network profile {slot}")
        except ValueError as exc:
            if not force:
                LOG.warning("network profile %s not used: %s", slot, exc)
                return False
        self.options = replace(
            self._base,
            csms_url=profile.url,
            tls_url=self._base.tls_url if profile.from_config else None,
            response_timeout_s=profile.message_timeout_s,
        )
        self._security.options = self.options
        if self.active is not None and slot != self.active:
            LOG.warning("connecting with network profile %s from now on", slot)
        self.active = slot
        self._failures = 0
        try:
            self._model.set_internal(COMM, "ActiveNetworkProfile", slot)
        except (KeyError, InvalidValue) as exc:
            LOG.warning("ActiveNetworkProfile %s not shown: %s", slot, exc)
        return True

    def attempt_failed(self) -> None:
        """After the security's own bookkeeping of the failure: B10.FR.03, the next slot
        after NetworkProfileConnectionAttempts failures, or at once when the neutral
        fallback gave up this slot's raised profile (A05.FR.08)."""
        self._failures += 1
        active = None if self.active is None else self.profile(self.active)
        abandoned = active is not None and active.security_profile != self._security.profile
        if not abandoned and self._failures < self._attempts():
            return
        nxt = self._next_slot()
        if nxt is None or (nxt == self.active and not abandoned):
            self._failures = 0
            return
        LOG.warning(
            "network profile %s failed %d attempt(s): trying slot %s (B10.FR.03)",
            self.active,
            self._failures,
            nxt,
        )
        if not self._use(nxt):
            self._failures = 0

    def _next_slot(self) -> str | None:
        order = self.priority()
        index = order.index(self.active) if self.active in order else -1
        for slot in order[index + 1 :]:
            if self._usable(self.profile(slot)):
                return slot
        # B10.FR.07: every entry had its attempts: reconnecting (with the usual back-off)
        # with the slot that connected last, also when that is the one that just failed.
        last = self._store.get_setting(CONNECTED_KEY)
        if last is not None and self._usable(self.profile(last)):
            return last
        for slot in order:
            if self._usable(self.profile(slot)):
                return slot
        return None

    def _attempts(self) -> int:
        try:
            return max(1, self._model.get_int(COMM, "NetworkProfileConnectionAttempts"))
        except (KeyError, ValueError):
            return DEFAULT_ATTEMPTS

    def connected(self) -> None:
        self._failures = 0
        if self.active is not None and self._store.get_setting(CONNECTED_KEY) != self.active:
            self._store.set_setting(CONNECTED_KEY, self.active)


async def set_network_profile(client: Ocpp201Client, p: dict[str, Any]) -> dict[str, Any]:
    """B09.FR.01-05: Rejected for a slot NetworkConfigurationPriority does not offer
    (B09.FR.05), connection data the station cannot use or a lower security profile than
    the active one (B09.FR.02/04); Failed when it could not be stored (B09.FR.03); else
    stored and Accepted. It is used once NetworkConfigurationPriority names it (B10)."""
    networks = client.networks
    if networks is None:
        return {"status": "Failed", "statusInfo": {"reasonCode": "NoDeviceModel"}}
    slot = str(p["configurationSlot"])
    data = dict(p["connectionData"])
    if slot not in networks.slots:
        why: str | None = f"configurationSlot {slot} is not one of {','.join(networks.slots)}"
    else:
        security = client.security
        why = check_connection_data(data, 0 if security is None else security.profile)
    if why is not None:
        LOG.warning("SetNetworkProfile slot %s Rejected: %s", slot, why)
        return {
            "status": "Rejected",
            "statusInfo": {"reasonCode": "InvalidNetworkConf", "additionalInfo": why[:512]},
        }
    try:
        networks.set_profile(slot, data)
    except StoreError as exc:  # the database refused: nothing stored (B09.FR.03)
        LOG.error("SetNetworkProfile slot %s not stored: %s", slot, exc)
        return {"status": "Failed"}
    return {"status": "Accepted"}


ROUTES = {"SetNetworkProfile": set_network_profile}
