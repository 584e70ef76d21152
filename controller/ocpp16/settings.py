"""OCPP configuration keys: definitions, validation, persistence and change listeners."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config.py reads the key definitions without loading the database code
    from controller.storage.store import Store

LOG = logging.getLogger(__name__)

_PREFIX = "cfg."

MEASURANDS = frozenset(
    {
        "Current.Export",
        "Current.Import",
        "Current.Offered",
        "Energy.Active.Export.Register",
        "Energy.Active.Import.Register",
        "Energy.Reactive.Export.Register",
        "Energy.Reactive.Import.Register",
        "Energy.Active.Export.Interval",
        "Energy.Active.Import.Interval",
        "Energy.Reactive.Export.Interval",
        "Energy.Reactive.Import.Interval",
        "Frequency",
        "Power.Active.Export",
        "Power.Active.Import",
        "Power.Factor",
        "Power.Offered",
        "Power.Reactive.Export",
        "Power.Reactive.Import",
        "RPM",
        "SoC",
        "Temperature",
        "Voltage",
    }
)
# What this controller can actually measure; other measurands are Rejected (9.1.17).
SUPPORTED_MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Energy.Active.Export.Register",
        "Power.Active.Import",
        "Current.Import",
        "Current.Offered",
        "Power.Offered",
        "Voltage",
        "Frequency",
    }
)
PHASE_ROTATIONS = frozenset({"NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"})
FEATURE_PROFILES = (
    "Core",
    "FirmwareManagement",
    "LocalAuthListManagement",
    "RemoteTrigger",
    "SmartCharging",
    "Reservation",
)
# Smart Charging (9.4): what SetChargingProfile may use. 48 periods: a day in half hours.
CHARGE_PROFILE_MAX_STACK_LEVEL = 10
CHARGING_SCHEDULE_MAX_PERIODS = 48
MAX_CHARGING_PROFILES_INSTALLED = 20
# Local Auth List Management (9.2): list capacity, also the most one SendLocalList may carry
# (a Full update must fit in one message).
LOCAL_AUTH_LIST_MAX_LENGTH = 1000
MAX_CSL_ITEMS = 10


class InvalidValue(ValueError):
    """A configuration value that does not fit the key's type or range."""


@dataclass(frozen=True)
class KeyDef:
    """One OCPP configuration key (OCPP 1.6 section 9)."""

    name: str
    kind: str  # "bool" | "int" | "csl" | "str"
    default: str
    readonly: bool = False
    reboot_required: bool = False
    write_only: bool = False
    min_value: int | None = None
    max_value: int | None = None
    validator: Callable[[str], None] | None = None


def _measurand_list(value: str) -> None:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if len(items) > MAX_CSL_ITEMS:
        raise InvalidValue(f"at most {MAX_CSL_ITEMS} items")
    for item in items:
        base = item.split(".L")[0] if item.startswith(("Voltage.L", "Current.Import.L")) else item
        if base not in SUPPORTED_MEASURANDS:
            raise InvalidValue(f"measurand {item!r} is not supported")


def _phase_rotation(value: str) -> None:
    for item in [v.strip() for v in value.split(",") if v.strip()]:
        index, _, rotation = item.partition(".")
        if not index.isdigit() or rotation not in PHASE_ROTATIONS:
            raise InvalidValue(f"{item!r} is not <connector>.<rotation>")


def _auth_key(value: str) -> None:
    # Security whitepaper A00.FR.205: at least 16 bytes, at most 40 characters.
    if value == "":
        return  # not set: the configured csms.password is used
    if not 16 <= len(value) <= 40 or not value.isprintable() or not value.isascii():
        raise InvalidValue("16 to 40 printable ASCII characters")


def _cpo_name(value: str) -> None:
    # It becomes the O RDN of the CSR (A03.FR.13): printable, at most 64 characters (X.520).
    if len(value) > 64 or not value.isprintable():
        raise InvalidValue("at most 64 printable characters")


# Security whitepaper section 7: CertificateSigned.req carries at most 10,000 characters.
CERTIFICATE_SIGNED_MAX_CHAIN_SIZE = 10000
# CentralSystemRootCertificate + ManufacturerRootCertificate entries (7.4).
CERTIFICATE_STORE_MAX_LENGTH = 20
FILE_TRANSFER_PROTOCOLS = "HTTP,HTTPS,FTP,FTPS"


def security_keys(security_profile: int) -> list[KeyDef]:
    """The security whitepaper's keys (section 7) plus SupportedFileTransferProtocols.
    ``security_profile``: the first-boot SecurityProfile ([csms] security_profile); a value
    the CSMS set is kept in the database and wins."""
    return [
        KeyDef("AdditionalRootCertificateCheck", "bool", "false", readonly=True),
        KeyDef(
            "CertificateSignedMaxChainSize",
            "int",
            str(CERTIFICATE_SIGNED_MAX_CHAIN_SIZE),
            readonly=True,
        ),
        KeyDef(
            "CertificateStoreMaxLength", "int", str(CERTIFICATE_STORE_MAX_LENGTH), readonly=True
        ),
        KeyDef("CpoName", "str", "", validator=_cpo_name),
        # Only raised, never lowered over OCPP (A05.FR.01); prerequisites are checked by the
        # guard the connection registers (Settings.add_guard).
        KeyDef("SecurityProfile", "int", str(security_profile), min_value=0, max_value=3),
        KeyDef("SupportedFileTransferProtocols", "csl", FILE_TRANSFER_PROTOCOLS, readonly=True),
    ]


def core_keys(
    number_of_connectors: int, *, phase_switch: bool = False, security_profile: int = 1
) -> list[KeyDef]:
    """Every key this controller implements (Core and Local Auth List Management profiles,
    the security whitepaper's), with its default value. ``phase_switch``: a connector has a
    1p/3p relay (ConnectorSwitch3to1PhaseSupported, read-only, follows the configuration)."""
    n = str(number_of_connectors)
    return [
        *security_keys(security_profile),
        KeyDef("AllowOfflineTxForUnknownId", "bool", "false"),
        KeyDef("AuthorizationCacheEnabled", "bool", "true"),
        KeyDef("AuthorizeRemoteTxRequests", "bool", "false"),
        KeyDef("ClockAlignedDataInterval", "int", "0", min_value=0, max_value=86400),
        KeyDef("ChargeProfileMaxStackLevel", "int", str(CHARGE_PROFILE_MAX_STACK_LEVEL), True),
        KeyDef("ChargingScheduleAllowedChargingRateUnit", "csl", "Current,Power", True),
        KeyDef("ChargingScheduleMaxPeriods", "int", str(CHARGING_SCHEDULE_MAX_PERIODS), True),
        KeyDef("ConnectionTimeOut", "int", "60", min_value=0, max_value=3600),
        # No phase relay driver yet: switching 3 to 1 phases is not offered.
        KeyDef(
            "ConnectorSwitch3to1PhaseSupported",
            "bool",
            "true" if phase_switch else "false",
            readonly=True,
        ),
        KeyDef(
            "ConnectorPhaseRotation",
            "csl",
            ",".join(f"{i}.Unknown" for i in range(1, number_of_connectors + 1)),
            validator=_phase_rotation,
        ),
        KeyDef("ConnectorPhaseRotationMaxLength", "int", str(number_of_connectors + 1), True),
        KeyDef("GetConfigurationMaxKeys", "int", "64", readonly=True),
        KeyDef("HeartbeatInterval", "int", "300", min_value=0, max_value=86400),
        # 9.2 Local Auth List Management profile.
        KeyDef("LocalAuthListEnabled", "bool", "true"),
        KeyDef("LocalAuthListMaxLength", "int", str(LOCAL_AUTH_LIST_MAX_LENGTH), readonly=True),
        KeyDef("LocalAuthorizeOffline", "bool", "true"),
        KeyDef("LocalPreAuthorize", "bool", "false"),
        # 9.1.14: Wh still delivered after StartTransaction.conf rejected the idTag (when
        # StopTransactionOnInvalidId is false); 0 = suspend at once.
        KeyDef("MaxChargingProfilesInstalled", "int", str(MAX_CHARGING_PROFILES_INSTALLED), True),
        KeyDef("MaxEnergyOnInvalidId", "int", "0", min_value=0, max_value=1_000_000),
        KeyDef(
            "MeterValuesAlignedData",
            "csl",
            "Energy.Active.Import.Register",
            validator=_measurand_list,
        ),
        KeyDef("MeterValuesAlignedDataMaxLength", "int", str(MAX_CSL_ITEMS), readonly=True),
        KeyDef(
            "MeterValuesSampledData",
            "csl",
            "Energy.Active.Import.Register,Power.Active.Import",
            validator=_measurand_list,
        ),
        KeyDef("MeterValuesSampledDataMaxLength", "int", str(MAX_CSL_ITEMS), readonly=True),
        KeyDef("MeterValueSampleInterval", "int", "60", min_value=0, max_value=86400),
        KeyDef("MinimumStatusDuration", "int", "0", min_value=0, max_value=3600),
        KeyDef("NumberOfConnectors", "int", n, readonly=True),
        # 9.3.1 Reservation profile: ReserveNow for connector 0 ("any connector") is supported.
        KeyDef("ReserveConnectorZeroSupported", "bool", "true", readonly=True),
        KeyDef("ResetRetries", "int", "3", min_value=0, max_value=10),
        KeyDef("SendLocalListMaxLength", "int", str(LOCAL_AUTH_LIST_MAX_LENGTH), readonly=True),
        KeyDef("StopTransactionOnEVSideDisconnect", "bool", "true"),
        KeyDef("StopTransactionOnInvalidId", "bool", "true"),
        KeyDef("StopTxnAlignedData", "csl", "", validator=_measurand_list),
        KeyDef("StopTxnAlignedDataMaxLength", "int", str(MAX_CSL_ITEMS), readonly=True),
        KeyDef(
            "StopTxnSampledData", "csl", "Energy.Active.Import.Register", validator=_measurand_list
        ),
        KeyDef("StopTxnSampledDataMaxLength", "int", str(MAX_CSL_ITEMS), readonly=True),
        KeyDef("SupportedFeatureProfiles", "csl", ",".join(FEATURE_PROFILES), readonly=True),
        KeyDef("SupportedFeatureProfilesMaxLength", "int", "6", readonly=True),
        KeyDef("TransactionMessageAttempts", "int", "5", min_value=1, max_value=100),
        KeyDef("TransactionMessageRetryInterval", "int", "30", min_value=1, max_value=3600),
        KeyDef("UnlockConnectorOnEVSideDisconnect", "bool", "true"),
        # Applied when the next WebSocket connection is opened, hence "RebootRequired".
        KeyDef(
            "WebSocketPingInterval", "int", "60", reboot_required=True, min_value=0, max_value=3600
        ),
        # Accepted, then the charger reconnects with it (A01: the CSMS stops accepting the old
        # password once it saw Accepted).
        KeyDef("AuthorizationKey", "str", "", write_only=True, validator=_auth_key),
    ]


def normalise(key: KeyDef, value: str) -> str:
    """Check ``value`` for ``key`` and return its canonical text; raise InvalidValue."""
    if not isinstance(value, str) or len(value) > 500:
        raise InvalidValue("value must be a string of at most 500 characters")
    if key.kind == "bool":
        low = value.strip().lower()
        if low not in ("true", "false"):
            raise InvalidValue("expected true or false")
        return low
    if key.kind == "int":
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,12}", text):
            raise InvalidValue("expected an integer")
        number = int(text)
        if key.min_value is not None and number < key.min_value:
            raise InvalidValue(f"must be >= {key.min_value}")
        if key.max_value is not None and number > key.max_value:
            raise InvalidValue(f"must be <= {key.max_value}")
        return str(number)
    if key.validator:
        key.validator(value)
    if key.kind == "csl":
        return ",".join(v.strip() for v in value.split(",") if v.strip())
    return value


class Settings:
    """Current OCPP configuration: defaults < TOML overrides < values set by the CSMS (DB)."""

    def __init__(
        self,
        store: Store,
        keys: list[KeyDef],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store
        self._keys = {k.name: k for k in keys}
        self._values = {k.name: k.default for k in keys}
        self._listeners: list[Callable[[str, str], None]] = []
        self._guards: dict[str, Callable[[str, str], str | None]] = {}
        for name, raw in (overrides or {}).items():
            if name not in self._keys:
                raise InvalidValue(f"unknown OCPP configuration key {name!r}")
            text = str(raw).lower() if isinstance(raw, bool) else str(raw)
            self._values[name] = normalise(self._keys[name], text)
        for full, value in store.settings_with_prefix(_PREFIX).items():
            name = full[len(_PREFIX) :]
            if name in self._keys:
                try:
                    self._values[name] = normalise(self._keys[name], value)
                except InvalidValue:
                    LOG.warning("ignoring invalid stored value for %s", name)

    def keys(self) -> list[KeyDef]:
        return list(self._keys.values())

    def key(self, name: str) -> KeyDef | None:
        return self._keys.get(name)

    def configured(self, name: str) -> str:
        """The key's value from the configuration file (its default here), before any
        change the CSMS made."""
        return self._keys[name].default

    def get(self, name: str) -> str:
        return self._values[name]

    def get_int(self, name: str) -> int:
        return int(self._values[name])

    def get_bool(self, name: str) -> bool:
        return self._values[name] == "true"

    def get_csl(self, name: str) -> list[str]:
        return [v for v in self._values[name].split(",") if v]

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)

    def add_guard(self, name: str, guard: Callable[[str, str], str | None]) -> None:
        """``guard(old, new)`` decides a CSMS change of ``name`` beyond its type and range:
        it returns why the change is Rejected, or None to accept it (SecurityProfile: only
        raised, and only with the new profile's prerequisites in place)."""
        self._guards[name] = guard

    def change(self, name: str, value: str) -> str:
        """Apply ChangeConfiguration: Accepted, Rejected, RebootRequired or NotSupported."""
        key = self._keys.get(name)
        if key is None:
            return "NotSupported"
        if key.readonly:
            return "Rejected"
        try:
            canonical = normalise(key, value)
        except InvalidValue as exc:
            LOG.info("ChangeConfiguration %s rejected: %s", name, exc)
            return "Rejected"
        guard = self._guards.get(name)
        if guard is not None:
            reason = guard(self._values[name], canonical)
            if reason is not None:
                LOG.info("ChangeConfiguration %s rejected: %s", name, reason)
                return "Rejected"
        self._store.set_setting(_PREFIX + name, canonical)
        self._values[name] = canonical
        for listener in self._listeners:
            listener(name, canonical)
        return "RebootRequired" if key.reboot_required else "Accepted"

    def set_internal(self, name: str, value: str) -> None:
        """Set a value the charge point itself learned (e.g. interval from BootNotification)."""
        key = self._keys[name]
        canonical = normalise(key, value)
        if canonical != self._values[name]:
            self._store.set_setting(_PREFIX + name, canonical)
            self._values[name] = canonical
            for listener in self._listeners:
                listener(name, canonical)
