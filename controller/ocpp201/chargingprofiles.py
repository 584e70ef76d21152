"""OCPP 2.0.1 smart charging requests (K01, K08-K10) over the station's neutral profiles."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from controller.core.charging_profiles import (
    ChargingProfile,
    ProfilePurpose,
    ProfileRules,
    RateUnit,
    install_profile,
    same_level,
    validate_profile,
    validity_overlaps,
)
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import chargelimits, smartcharging
from controller.ocpp201 import status as status201
from controller.ocpp201.dm import ComponentKey, VariableKey
from controller.ocpp201.remote import connectors_of

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# SmartChargingCtrlr.Entries[ChargingProfiles] maxLimit when the model does not say.
DEFAULT_MAX_PROFILES = 20
# Profiles per ReportChargingProfilesRequest: a full station (20) fits in two frames.
PROFILES_PER_REPORT = 10
# The longest composite schedule computed (31 days): a CSMS asking for years of a daily
# recurrence would otherwise hold the event loop for seconds.
MAX_COMPOSITE_S = 31 * 86_400
_ENTRIES = VariableKey("Entries", "ChargingProfiles")


def _answer(status: str, reason_code: str | None = None, info: str = "") -> dict[str, Any]:
    answer: dict[str, Any] = {"status": status}
    if reason_code is not None:
        answer["statusInfo"] = {"reasonCode": reason_code}
        if info:
            answer["statusInfo"]["additionalInfo"] = info[:512]
    return answer


def _connector(client: Ocpp201Client, evse_id: int) -> int | None:
    """The station's connector id for ``evse_id`` (0: the station itself); None if unknown."""
    if evse_id == 0:
        return 0
    found = connectors_of(client.station, evse_id)
    return found[0] if found else None


def _evse(connector_id: int) -> int:
    """The EVSE a profile installed on ``connector_id`` belongs to (0: the station)."""
    return 0 if connector_id == 0 else status201.evse_of(connector_id)[0]


def _max_profiles(client: Ocpp201Client) -> int:
    model = client.device_model
    definition = None if model is None else model.find(smartcharging.SMART_CHARGING, _ENTRIES)
    if definition is None or definition.characteristics.max_limit is None:
        return DEFAULT_MAX_PROFILES
    return int(definition.characteristics.max_limit)


def _rules(client: Ocpp201Client) -> ProfileRules:
    assert client.device_model is not None
    return smartcharging.rules(client.device_model, len(client.station.connector_ids()))


def _reason_code(profile: ChargingProfile, rules: ProfileRules) -> str:
    """The Appendix 5 reason code of a profile validate_profile refused."""
    if profile.schedule.unit not in rules.allowed_units:
        return "UnsupportedRateUnit"
    if not 0 <= profile.stack_level <= rules.max_stack_level:
        return "InvalidStackLevel"
    if len(profile.schedule.periods) > rules.max_periods:
        return "TooManyElements"
    if profile.purpose is ProfilePurpose.TX and profile.tx_key is None:
        return "TxNotFound"
    return "InvalidProfile"


def _duplicate(installed: Sequence[ChargingProfile], profile: ChargingProfile) -> str | None:
    """Why ``profile`` clashes with another installed one (other id), or None: the same
    purpose and stack level on the same EVSE (or transaction) valid at the same time
    (K01.FR.06/39: a CSMS must not; the same id replaces instead, K01.FR.05), or a TX
    default of the same stack level on the station while one is set on an EVSE, or on an
    EVSE while one is set on the station (K01.FR.52/53)."""
    for other in installed:
        if same_level(other, profile) and validity_overlaps(other, profile):
            return (
                f"profile {other.profile_id} has the same purpose and stackLevel "
                f"{other.stack_level} on evse {_evse(other.connector_id)} with an "
                "overlapping validity (K01.FR.06/39)"
            )
        if (
            profile.purpose is ProfilePurpose.TX_DEFAULT
            and other.purpose is ProfilePurpose.TX_DEFAULT
            and other.stack_level == profile.stack_level
            and other.profile_id != profile.profile_id
            and (other.connector_id == 0) != (profile.connector_id == 0)
        ):
            return (
                f"TxDefaultProfile {other.profile_id} has stackLevel {other.stack_level} "
                f"on evse {_evse(other.connector_id)} (K01.FR.52/53)"
            )
    return None


def _model_int(client: Ocpp201Client, component: ComponentKey, name: str, default: int) -> int:
    model = client.device_model
    try:
        return default if model is None else model.get_int(component, name)
    except (KeyError, ValueError):
        return default


def _phase_problem(client: Ocpp201Client, profile: ChargingProfile) -> str | None:
    """K01.FR.43/48 for the profiles that steer EVSEs (TX default and TX): fewer phases than
    an EVSE is wired for only where the phases can be switched (the 1/3-phase relay:
    SmartChargingCtrlr.ACPhaseSwitchingSupported); phaseToUse only where the EVSE will use
    that phase (one-phase charging always uses L1 here: the relay drops L2 and L3). More
    phases than wired are accepted and imposed on fewer (K01.FR.45)."""
    if profile.purpose not in (ProfilePurpose.TX_DEFAULT, ProfilePurpose.TX):
        return None
    model = client.device_model
    try:
        switch = model is not None and model.get_bool(
            smartcharging.SMART_CHARGING, "ACPhaseSwitchingSupported"
        )
    except KeyError:
        switch = False
    evses = (
        [status201.evse_of(c)[0] for c in client.station.connector_ids()]
        if profile.connector_id == 0
        else [_evse(profile.connector_id)]
    )
    wired = max(
        _model_int(client, ComponentKey("EVSE", evse_id=evse), "SupplyPhases", 3) for evse in evses
    )
    for period in profile.schedule.periods:
        if period.phases is not None and period.phases < wired and not switch:
            return (
                f"numberPhases {period.phases}: the EVSE is wired for {wired} and cannot "
                "switch phases (K01.FR.43)"
            )
        if period.phase_to_use is not None and not (
            period.phase_to_use == 1 and (switch or wired == 1)
        ):
            return f"phaseToUse {period.phase_to_use} cannot be chosen here (K01.FR.48)"
    return None


# ----------------------------------------------------------------------------- K01


async def set_charging_profile(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """K01: install a ChargingStationMaxProfile (evseId 0), TxDefaultProfile (evseId 0: every
    EVSE, K01.FR.14; one EVSE, K01.FR.15) or TxProfile (the running transaction named by
    transactionId, K01.FR.04); it replaces the profile with the same id (K01.FR.05), is
    stored (K01.FR.27) and the limits it changes reach the pilot at once, lowered before
    raised (K01.FR.07, K01.FR.32). Rejected with a reason code for an unknown EVSE
    (K01.FR.28), a TxProfile without its transaction (K01.FR.09/33) or on evseId 0
    (K01.FR.16), a unit not in RateUnit (K01.FR.26), the schedule rules (K01.FR.31/35/38/
    40/41), a TX default clashing with one of the other scope (K01.FR.52/53) and more
    profiles than Entries allows. SmartChargingCtrlr.Enabled false: NotSupported
    (K01.FR.29)."""
    model = client.device_model
    if model is None or not smartcharging.enabled(model):
        raise CallError("NotSupported", "smart charging is not enabled (SmartChargingCtrlr)")
    station = client.station
    evse_id = int(payload["evseId"])
    raw: dict[str, Any] = payload["chargingProfile"]
    cid = _connector(client, evse_id)
    if cid is None:
        return _answer("Rejected", "UnknownEvse", f"no EVSE {evse_id} (K01.FR.28)")
    if int(raw["id"]) < 0:
        # Negative ids are the station's own external constraints (K11.FR.06 note).
        return _answer("Rejected", "InvalidProfile", "a negative id is the station's")
    running = station.running_transactions()
    tx_key: int | None = None
    if raw["chargingProfilePurpose"] == "TxProfile":
        if "transactionId" in raw:
            record = client.store.transaction_by_tx_id(str(raw["transactionId"]))
            if record is None or not record.open or running.get(cid) != record.tx_key:
                return _answer(
                    "Rejected",
                    "TxNotFound",
                    f"no transaction {raw['transactionId']} on EVSE {evse_id} (K01.FR.33)",
                )
            tx_key = record.tx_key
        else:
            # K01.FR.03 wants the transactionId; without one the transaction running on the
            # EVSE is the only one the profile can mean.
            tx_key = running.get(cid)
    try:
        profile = smartcharging.parse_profile(raw, cid, tx_key)
    except smartcharging.BadProfile as exc:
        LOG.warning("SetChargingProfile rejected: %s", exc)
        return _answer("Rejected", exc.reason_code, str(exc))
    rules = _rules(client)
    reason = validate_profile(profile, rules, running_tx=running)
    if reason is not None:
        LOG.warning("SetChargingProfile %d rejected: %s", profile.profile_id, reason)
        return _answer("Rejected", _reason_code(profile, rules), reason)
    phases = _phase_problem(client, profile)
    if phases is not None:
        LOG.warning("SetChargingProfile %d rejected: %s", profile.profile_id, phases)
        return _answer("Rejected", "InvalidSchedule", phases)
    installed = station.installed_profiles(client.profile_book)
    clash = _duplicate(installed, profile)
    if clash is not None:
        LOG.warning("SetChargingProfile %d rejected: %s", profile.profile_id, clash)
        return _answer("Rejected", "DuplicateProfile", clash)
    most = _max_profiles(client)
    if len(install_profile(installed, profile, same_level_replaces=False)) > most:
        info = f"more than {most} profiles (SmartChargingCtrlr.Entries)"
        LOG.warning("SetChargingProfile %d rejected: %s", profile.profile_id, info)
        return _answer("Rejected", "TooManyElements", info)
    station.install_profile(profile, same_level_replaces=False, backend=client.profile_book)
    LOG.info(
        "charging profile %d (%s, stack level %d) installed on evse %d",
        profile.profile_id,
        raw["chargingProfilePurpose"],
        profile.stack_level,
        evse_id,
    )
    return _answer("Accepted")


# ----------------------------------------------------------------------------- K10


async def clear_charging_profile(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """K10: by chargingProfileId (K10.FR.03; other criteria ignored) or by the criteria
    evseId, chargingProfilePurpose and stackLevel together (K10.FR.04); external
    constraints are never cleared (K10.FR.08/09). Unknown when nothing matched
    (K10.FR.01); the limits are computed again at once (K10.FR.05/07)."""
    station = client.station
    if "chargingProfileId" in payload:
        cleared = station.clear_profiles(
            profile_id=int(payload["chargingProfileId"]), backend=client.profile_book
        )
        return _answer("Accepted" if cleared else "Unknown")
    criteria: dict[str, Any] = payload.get("chargingProfileCriteria") or {}
    connector_id: int | None = None
    if "evseId" in criteria:
        connector_id = _connector(client, int(criteria["evseId"]))
        if connector_id is None:
            return _answer("Unknown")
    purpose_name = criteria.get("chargingProfilePurpose")
    purpose = None if purpose_name is None else smartcharging.PURPOSES[purpose_name]
    if purpose is ProfilePurpose.EXTERNAL_CONSTRAINTS:
        return _answer("Unknown")  # K10.FR.06/08: not the CSMS's to clear
    stack_level = criteria.get("stackLevel")
    cleared = station.clear_profiles(
        backend=client.profile_book,
        connector_id=connector_id,
        purpose=purpose,
        stack_level=None if stack_level is None else int(stack_level),
    )
    return _answer("Accepted" if cleared else "Unknown")


# ----------------------------------------------------------------------------- K09


def _matching(client: Ocpp201Client, payload: dict[str, Any]) -> list[ChargingProfile]:
    """The installed profiles matching every criterion (K09.FR.04-06)."""
    criteria: dict[str, Any] = payload["chargingProfile"]
    evse_id = payload.get("evseId")
    purpose_name = criteria.get("chargingProfilePurpose")
    purpose = None if purpose_name is None else smartcharging.PURPOSES[purpose_name]
    stack_level = criteria.get("stackLevel")
    ids = criteria.get("chargingProfileId")
    sources = criteria.get("chargingLimitSource")
    out = []
    for p in (
        *client.station.installed_profiles(client.profile_book),
        *chargelimits.external_profiles(client),
    ):
        if evse_id is not None and _evse(p.connector_id) != int(evse_id):
            continue
        if purpose is not None and p.purpose is not purpose:
            continue
        if stack_level is not None and p.stack_level != int(stack_level):
            continue
        if ids is not None and p.profile_id not in {int(i) for i in ids}:
            continue
        if sources is not None and smartcharging.limit_source(p) not in sources:
            continue
        out.append(p)
    return out


def report_pages(
    client: Ocpp201Client, request_id: int, profiles: Sequence[ChargingProfile]
) -> list[dict[str, Any]]:
    """ReportChargingProfilesRequest payloads: one EVSE and one limit source per message
    (the message has one of each), at most PROFILES_PER_REPORT profiles each, requestId in
    every one (K09.FR.01) and tbc true on all but the last (K09.FR.02)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for p in sorted(profiles, key=lambda p: (p.connector_id, p.profile_id)):
        transaction_id: str | None = None
        if p.tx_key is not None:
            record = client.store.get_transaction(p.tx_key)
            transaction_id = None if record is None else record.tx_id
        key = (_evse(p.connector_id), smartcharging.limit_source(p))
        groups.setdefault(key, []).append(smartcharging.profile_payload(p, transaction_id))
    pages: list[dict[str, Any]] = []
    for (evse_id, source), bodies in groups.items():
        for at in range(0, len(bodies), PROFILES_PER_REPORT):
            pages.append(
                {
                    "requestId": request_id,
                    "chargingLimitSource": source,
                    "evseId": evse_id,
                    "chargingProfile": bodies[at : at + PROFILES_PER_REPORT],
                    "tbc": True,
                }
            )
    if pages:
        pages[-1]["tbc"] = False
    return pages


async def get_charging_profiles(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """K09: NoProfiles when nothing matches; else Accepted and, after the answer, the
    matching profiles in ReportChargingProfiles messages."""
    request_id = int(payload["requestId"])
    pages = report_pages(client, request_id, _matching(client, payload))
    if not pages:
        return _answer("NoProfiles")
    client.spawn(_send_pages(client, request_id, pages), name=f"report-profiles-{request_id}")
    return _answer("Accepted")


async def _send_pages(client: Ocpp201Client, request_id: int, pages: list[dict[str, Any]]) -> None:
    await asyncio.sleep(0)  # let the request's answer go out first
    for n, page in enumerate(pages):
        try:
            await client.call("ReportChargingProfiles", page)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            # A snapshot: the CSMS asks again rather than getting the rest of an old one.
            LOG.warning("ReportChargingProfiles %d page %d failed (%s)", request_id, n, exc)
            return


# ----------------------------------------------------------------------------- K08


async def get_composite_schedule(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """K08: the limits from now for ``duration`` seconds (K08.FR.02) of one EVSE, or with
    evseId 0 of the station (K08.FR.03), the lowest of every applying profile and the
    hardware (K08.FR.04), as if a transaction ran where none does (K08.FR.06), for at most
    31 days (the answer's duration). Rejected for an unknown EVSE (K08.FR.05) or a unit
    not in RateUnit (K08.FR.07). The local API's limit and the site share are not in it:
    they are not schedules (GetChargingProfiles reports the local limit)."""
    evse_id = int(payload["evseId"])
    cid = _connector(client, evse_id)
    if cid is None:
        return _answer("Rejected", "UnknownEvse", f"no EVSE {evse_id} (K08.FR.05)")
    unit_name = payload.get("chargingRateUnit")
    unit: RateUnit | None = None
    if unit_name is not None:
        unit = smartcharging.UNITS[unit_name]
        if client.device_model is not None and unit not in _rules(client).allowed_units:
            return _answer("Rejected", "UnsupportedRateUnit", f"{unit_name} (K08.FR.07)")
    # At least a second (a period needs a window to be stated), at most MAX_COMPOSITE_S:
    # the answer's duration says how far it reaches.
    duration_s = min(max(1, int(payload["duration"])), MAX_COMPOSITE_S)
    schedule = client.station.composite_schedule(cid, duration_s, unit)
    return smartcharging.composite_payload(schedule, evse_id)


ROUTES = {
    "SetChargingProfile": set_charging_profile,
    "ClearChargingProfile": clear_charging_profile,
    "GetChargingProfiles": get_charging_profiles,
    "GetCompositeSchedule": get_composite_schedule,
}
