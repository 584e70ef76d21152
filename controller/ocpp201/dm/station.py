"""The station's device model, built from a description of its hardware.

The required variables of the controller components for the blocks evsed implements
(Part 2, "Referenced Components and Variables"; appendices-csv/dm_components_vars.csv),
ChargingStation, EVSE n and Connector n, and the standard physical components of the parts
it has (FiscalMetering, PowerContactor, TokenReader; Appendix 3.2 names, no vendor
components). Defaults are the
spec's where it gives one, else those of the 1.6 keys (HeartbeatInterval 300, ...).

evsed's 1.6 connectors are 2.0.1 EVSEs with one connector each: 1.6 connector n is EVSE n,
connector 1."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from controller.core.timestamps import iso_utc
from controller.ocpp201.dm.firstboot import first_boot_values
from controller.ocpp201.dm.model import DeviceModel, SettingsStore
from controller.ocpp201.dm.types import (
    AttributeDef,
    Characteristics,
    ComponentKey,
    DataType,
    Mutability,
    VariableDef,
    VariableKey,
)

AVAILABILITY_STATES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
# What the meter drivers can read (1.6 SUPPORTED_MEASURANDS, in 2.0.1 spelling).
MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Power.Offered",
    "Voltage",
    "Frequency",
)
# TxStartPoint / TxStopPoint values the controller can detect (no bay sensor, no signed meter).
TX_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
FILE_TRANSFER_PROTOCOLS = ("HTTP", "HTTPS", "FTP", "FTPS")
TIME_SOURCES = ("NTP", "Heartbeat")
# AuthCacheCtrlr.Policy: the cache makes room least recently used first (core.authrules).
CACHE_POLICIES = ("LRU", "LFU", "FIFO", "CUSTOM")
# The CSV length of a measurand list: all supported measurands fit.
MEASURAND_LIST_MAX = Decimal(len(",".join(MEASURANDS)))


@dataclass(frozen=True)
class EvseDescription:
    """One EVSE (a 1.6 connector) with its single connector."""

    evse_id: int
    max_current_a: Decimal
    phases: int = 3
    nominal_voltage_v: Decimal = Decimal(230)
    connector_type: str = "sType2"
    fixed_cable: bool = False
    has_meter: bool = True
    has_contactor: bool = True
    phase_switch: bool = False

    @property
    def max_power_w(self) -> Decimal:
        return self.max_current_a * self.phases * self.nominal_voltage_v


@dataclass(frozen=True)
class StationDescription:
    """What the model reflects. ``network_slots``: the NetworkConnectionProfile slots
    NetworkConfigurationPriority may name; ``security_profile``: the first-boot value."""

    evses: tuple[EvseDescription, ...]
    has_reader: bool = True
    vendor_name: str = "evsed"
    model: str = "evsed"
    security_profile: int = 1
    network_slots: tuple[str, ...] = ("1", "2")
    items_per_message: int = 32
    bytes_per_message: int = 65536
    local_list_max_entries: int = 1000
    certificate_max_entries: int = 20
    charging_profiles_max: int = 20
    periods_per_schedule: int = 48
    profile_stack_level: int = 10


@dataclass(frozen=True)
class LiveValues:
    """Where live values come from (all optional; the runtime wires them): availability of
    the station (evse None), an EVSE or a connector as AvailabilityState text; power (W) and
    energy register (Wh) per EVSE; contactor closed per EVSE; a problem (fault) on the station
    (None) or an EVSE; the current UTC time (RFC 3339); counts of installed certificates,
    local list entries and charging profiles."""

    availability: Callable[[int | None, int | None], str] | None = None
    power_w: Callable[[int], Decimal | None] | None = None
    energy_wh: Callable[[int], Decimal | None] | None = None
    contactor_closed: Callable[[int], bool] | None = None
    problem: Callable[[int | None], bool] | None = None
    utc_now: Callable[[], str] | None = None
    certificate_entries: Callable[[], int] | None = None
    local_list_entries: Callable[[], int] | None = None
    charging_profile_entries: Callable[[], int] | None = None


class _ConnectorConfig(Protocol):
    max_current_a: float
    phases: int
    nominal_voltage_v: float
    devices: dict[str, Any]

    @property
    def has_phase_switch(self) -> bool: ...


def describe(
    connectors: Sequence[_ConnectorConfig], *, has_reader: bool, **station: Any
) -> StationDescription:
    """The description of a configured charger (controller.config: ``cfg.connectors``,
    ``cfg.reader is not None``); ``station``: other StationDescription fields."""
    evses = tuple(
        EvseDescription(
            evse_id=index,
            max_current_a=Decimal(str(c.max_current_a)),
            phases=c.phases,
            nominal_voltage_v=Decimal(str(c.nominal_voltage_v)),
            has_meter="meter" in c.devices,
            has_contactor="contactor" in c.devices,
            phase_switch=c.has_phase_switch,
        )
        for index, c in enumerate(connectors, start=1)
    )
    return StationDescription(evses=evses, has_reader=has_reader, **station)


def _text(fn: Callable[[], Any]) -> Callable[[], str | None]:
    def read() -> str | None:
        value = fn()
        if value is None:
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return read


def _var(
    component: ComponentKey,
    name: str,
    data_type: DataType,
    default: str | None = None,
    *,
    instance: str | None = None,
    mutability: Mutability = "ReadWrite",
    unit: str | None = None,
    min_limit: Decimal | int | None = None,
    max_limit: Decimal | int | None = None,
    values: Sequence[str] = (),
    provider: Callable[[], Any] | None = None,
    reboot: bool = False,
    monitoring: bool | None = None,
) -> VariableDef:
    constant = mutability == "ReadOnly" and provider is None
    if monitoring is None:
        # A value the CSMS can set can be monitored (N04): it is evaluated when it changes,
        # at no cost while nothing changes. Read-only values opt in where evsed reads them.
        monitoring = mutability != "ReadOnly"
    attribute = AttributeDef(
        "Actual",
        mutability,
        # The spec wants writable variables persistent; a read-only one is rebuilt at start.
        persistent=mutability != "ReadOnly",
        constant=constant,
        default=default,
        provider=None if provider is None else _text(provider),
    )
    return VariableDef(
        component,
        VariableKey(name, instance),
        Characteristics(
            data_type,
            unit,
            None if min_limit is None else Decimal(min_limit),
            None if max_limit is None else Decimal(max_limit),
            tuple(values),
            monitoring,
        ),
        (attribute,),
        reboot_required=reboot,
    )


def _password(old: str | None, new: str) -> str | None:
    # Part 2 2.2.1 / A00.FR.205: a passwordString of 16 to 40 characters.
    allowed = set("*-_=:+|@.")
    if not 16 <= len(new) <= 40 or not all(
        ch.isascii() and (ch.isalnum() or ch in allowed) for ch in new
    ):
        return "16 to 40 alphanumeric characters or *-_=:+|@."
    return None


def station_variables(desc: StationDescription, live: LiveValues) -> list[VariableDef]:
    """Every variable of the station's model, in report order."""
    ro: Mutability = "ReadOnly"
    out: list[VariableDef] = []

    comm = ComponentKey("OCPPCommCtrlr")
    only_fixed = all(e.fixed_cable for e in desc.evses)
    out += [
        _var(
            comm,
            "FileTransferProtocols",
            "MemberList",
            ",".join(FILE_TRANSFER_PROTOCOLS),
            mutability=ro,
            values=FILE_TRANSFER_PROTOCOLS,
        ),
        _var(comm, "HeartbeatInterval", "integer", "300", unit="s", min_limit=1, max_limit=86400),
        _var(comm, "MessageTimeout", "integer", "30", instance="Default", mutability=ro, unit="s"),
        _var(
            comm,
            "MessageAttempts",
            "integer",
            "5",
            instance="TransactionEvent",
            min_limit=1,
            max_limit=100,
        ),
        _var(
            comm,
            "MessageAttemptInterval",
            "integer",
            "30",
            instance="TransactionEvent",
            unit="s",
            min_limit=1,
            max_limit=3600,
        ),
        # Applied when the next connection is opened, hence RebootRequired (as 1.6 keys).
        _var(
            comm,
            "NetworkConfigurationPriority",
            "SequenceList",
            desc.network_slots[0],
            values=desc.network_slots,
            reboot=True,
        ),
        _var(comm, "NetworkProfileConnectionAttempts", "integer", "3", min_limit=1, max_limit=100),
        # The slot of the connection in use (errata 2.57: required with B09/B10); the
        # connection sets it (controller/ocpp201/network.py).
        _with_attribute(
            _var(comm, "ActiveNetworkProfile", "integer", desc.network_slots[0], mutability=ro),
            constant=False,
            persistent=False,
        ),
        _var(comm, "OfflineThreshold", "integer", "60", unit="s", min_limit=0, max_limit=86400),
        _var(comm, "ResetRetries", "integer", "3", min_limit=0, max_limit=10),
        # Part 2 2.1.12: ReadOnly false when every EVSE has a fixed cable.
        _var(
            comm,
            "UnlockOnEVSideDisconnect",
            "boolean",
            "false" if only_fixed else "true",
            mutability=ro if only_fixed else "ReadWrite",
        ),
        _var(
            comm,
            "WebSocketPingInterval",
            "integer",
            "60",
            unit="s",
            min_limit=0,
            max_limit=3600,
            reboot=True,
        ),
        _var(comm, "RetryBackOffRepeatTimes", "integer", "5", min_limit=0, max_limit=20),
        _var(
            comm, "RetryBackOffRandomRange", "integer", "10", unit="s", min_limit=0, max_limit=3600
        ),
        _var(
            comm, "RetryBackOffWaitMinimum", "integer", "10", unit="s", min_limit=0, max_limit=3600
        ),
    ]
    data = ComponentKey("DeviceDataCtrlr")
    for action in ("GetReport", "GetVariables", "SetVariables"):
        out.append(
            _var(
                data,
                "ItemsPerMessage",
                "integer",
                str(desc.items_per_message),
                instance=action,
                mutability=ro,
            )
        )
        out.append(
            _var(
                data,
                "BytesPerMessage",
                "integer",
                str(desc.bytes_per_message),
                instance=action,
                mutability=ro,
            )
        )
    sec = ComponentKey("SecurityCtrlr")
    out += [
        _var(
            sec,
            "CertificateEntries",
            "integer",
            "0",
            mutability=ro,
            max_limit=desc.certificate_max_entries,
            provider=live.certificate_entries,
        ),
        # The O RDN of the CSR (A00.FR.509): X.520 allows 64 characters.
        _var(sec, "OrganizationName", "string", "", max_limit=64),
        # ReadOnly (Part 2 2.2.5), but the connection raises it (set_internal): stored, not
        # constant.
        _with_attribute(
            _var(
                sec,
                "SecurityProfile",
                "integer",
                str(desc.security_profile),
                mutability=ro,
                min_limit=0,
                max_limit=3,
            ),
            constant=False,
            persistent=True,
        ),
        _var(
            sec,
            "BasicAuthPassword",
            "string",
            None,
            mutability="WriteOnly",
            max_limit=40,
            monitoring=True,
        ),
        _var(sec, "AdditionalRootCertificateCheck", "boolean", "false", mutability=ro),
        _var(sec, "MaxCertificateChainSize", "integer", "10000", mutability=ro),
        # A02/A03.FR.17-19: a SignCertificate the CSMS Accepted is sent again after this wait
        # (doubling) while no CertificateSigned came, at most CertSigningRepeatTimes times.
        _var(
            sec, "CertSigningWaitMinimum", "integer", "60", unit="s", min_limit=1, max_limit=86400
        ),
        _var(sec, "CertSigningRepeatTimes", "integer", "3", min_limit=0, max_limit=10),
    ]
    auth = ComponentKey("AuthCtrlr")
    out += [
        _var(auth, "AuthorizeRemoteStart", "boolean", "false"),
        _var(auth, "LocalAuthorizeOffline", "boolean", "true"),
        _var(auth, "LocalPreAuthorize", "boolean", "false"),
        _var(auth, "OfflineTxForUnknownIdEnabled", "boolean", "false"),
        # C: authorization (controller/ocpp201/authorization.py).
        _var(auth, "Enabled", "boolean", "true"),
        _var(auth, "DisableRemoteAuthorization", "boolean", "false"),
        _var(auth, "MasterPassGroupId", "string", None, max_limit=36),
    ]
    cache = ComponentKey("AuthCacheCtrlr")
    out += [
        _var(cache, "Enabled", "boolean", "true"),
        _var(cache, "Available", "boolean", "true", mutability=ro),
        _var(cache, "LifeTime", "integer", "86400", unit="s", min_limit=1, max_limit=31536000),
        _var(cache, "Policy", "OptionList", "LRU", mutability=ro, values=CACHE_POLICIES),
        _var(cache, "DisablePostAuthorize", "boolean", "false"),
    ]
    local = ComponentKey("LocalAuthListCtrlr")
    out += [
        _var(local, "Enabled", "boolean", "true"),
        _var(local, "Available", "boolean", "true", mutability=ro),
        _var(
            local,
            "Entries",
            "integer",
            "0",
            mutability=ro,
            max_limit=desc.local_list_max_entries,
            provider=live.local_list_entries,
        ),
        _var(local, "ItemsPerMessage", "integer", str(desc.local_list_max_entries), mutability=ro),
        _var(local, "BytesPerMessage", "integer", str(desc.bytes_per_message), mutability=ro),
        _var(local, "DisablePostAuthorize", "boolean", "false"),
        _var(local, "SupportsExpiryDateTime", "boolean", "true", mutability=ro),
    ]
    sampled = ComponentKey("SampledDataCtrlr")
    out += [
        _var(sampled, "Enabled", "boolean", "true"),
        _var(sampled, "Available", "boolean", "true", mutability=ro),
        _var(
            sampled,
            "TxEndedMeasurands",
            "MemberList",
            "Energy.Active.Import.Register",
            values=MEASURANDS,
            max_limit=MEASURAND_LIST_MAX,
        ),
        _var(sampled, "TxEndedInterval", "integer", "0", unit="s", min_limit=0, max_limit=86400),
        _var(
            sampled,
            "TxStartedMeasurands",
            "MemberList",
            "Energy.Active.Import.Register",
            values=MEASURANDS,
            max_limit=MEASURAND_LIST_MAX,
        ),
        _var(
            sampled,
            "TxUpdatedMeasurands",
            "MemberList",
            "Energy.Active.Import.Register,Power.Active.Import",
            values=MEASURANDS,
            max_limit=MEASURAND_LIST_MAX,
        ),
        _var(sampled, "TxUpdatedInterval", "integer", "60", unit="s", min_limit=0, max_limit=86400),
    ]
    aligned = ComponentKey("AlignedDataCtrlr")
    out += [
        _var(aligned, "Enabled", "boolean", "true"),
        _var(aligned, "Available", "boolean", "true", mutability=ro),
        _var(aligned, "Interval", "integer", "0", unit="s", min_limit=0, max_limit=86400),
        _var(
            aligned,
            "Measurands",
            "MemberList",
            "Energy.Active.Import.Register",
            values=MEASURANDS,
            max_limit=MEASURAND_LIST_MAX,
        ),
        _var(aligned, "TxEndedInterval", "integer", "0", unit="s", min_limit=0, max_limit=86400),
        _var(
            aligned,
            "TxEndedMeasurands",
            "MemberList",
            "",
            values=MEASURANDS,
            max_limit=MEASURAND_LIST_MAX,
        ),
    ]
    tx = ComponentKey("TxCtrlr")
    out += [
        _var(tx, "EVConnectionTimeOut", "integer", "60", unit="s", min_limit=0, max_limit=3600),
        _var(tx, "StopTxOnEVSideDisconnect", "boolean", "true"),
        _var(tx, "StopTxOnInvalidId", "boolean", "true"),
        _var(
            tx, "MaxEnergyOnInvalidId", "integer", "0", unit="Wh", min_limit=0, max_limit=1_000_000
        ),
        # The transaction is the core's (authorized and connected, to the unplug or the stop
        # authorization): the 1.6-compatible points of Part 2 E 1.1.2, fixed (E 1.1.1 "R").
        _var(
            tx,
            "TxStartPoint",
            "MemberList",
            "PowerPathClosed",
            mutability=ro,
            values=TX_POINTS,
        ),
        _var(
            tx,
            "TxStopPoint",
            "MemberList",
            "EVConnected,Authorized",
            mutability=ro,
            values=TX_POINTS,
        ),
    ]
    smart = ComponentKey("SmartChargingCtrlr")
    switch = any(e.phase_switch for e in desc.evses)
    out += [
        _var(smart, "Enabled", "boolean", "true"),
        _var(smart, "Available", "boolean", "true", mutability=ro),
        _var(
            smart,
            "Entries",
            "integer",
            "0",
            instance="ChargingProfiles",
            mutability=ro,
            max_limit=desc.charging_profiles_max,
            provider=live.charging_profile_entries,
        ),
        _var(
            smart,
            "LimitChangeSignificance",
            "decimal",
            "1.0",
            unit="Percent",
            min_limit=0,
            max_limit=100,
        ),
        _var(smart, "PeriodsPerSchedule", "integer", str(desc.periods_per_schedule), mutability=ro),
        _var(smart, "ProfileStackLevel", "integer", str(desc.profile_stack_level), mutability=ro),
        _var(smart, "RateUnit", "MemberList", "A,W", mutability=ro, values=("A", "W")),
        _var(
            smart,
            "ACPhaseSwitchingSupported",
            "boolean",
            "true" if switch else "false",
            mutability=ro,
        ),
        _var(smart, "Phases3to1", "boolean", "true" if switch else "false", mutability=ro),
    ]
    reservation = ComponentKey("ReservationCtrlr")
    out += [
        _var(reservation, "Enabled", "boolean", "true"),
        _var(reservation, "Available", "boolean", "true", mutability=ro),
        _var(reservation, "NonEvseSpecific", "boolean", "true", mutability=ro),
    ]
    clock = ComponentKey("ClockCtrlr")
    out += [
        # Errata 2025-09 6.2.19 (TC_B_53_CS): a required variable reports a value; without an
        # injected clock the system clock answers.
        _var(clock, "DateTime", "dateTime", None, mutability=ro, provider=live.utc_now or _now),
        _var(clock, "TimeSource", "SequenceList", ",".join(TIME_SOURCES), values=TIME_SOURCES),
    ]
    out += _monitoring(desc)
    out += _infrastructure(desc, live)
    return out


MONITORING_BASES = ("All", "FactoryDefault", "HardWiredOnly")


def _monitoring(desc: StationDescription) -> list[VariableDef]:
    """MonitoringCtrlr (Part 2 N, controller/ocpp201/monitoring.py). The active base and level
    are ReadOnly but set by SetMonitoringBase / SetMonitoringLevel: stored, not constant."""
    ro: Mutability = "ReadOnly"
    mon = ComponentKey("MonitoringCtrlr")
    out = [
        _var(mon, "Enabled", "boolean", "true"),
        _var(mon, "Available", "boolean", "true", mutability=ro),
        _var(mon, "OfflineQueuingSeverity", "integer", "4", min_limit=0, max_limit=9),
    ]
    for action in ("SetVariableMonitoring", "ClearVariableMonitoring"):
        out.append(
            _var(
                mon,
                "ItemsPerMessage",
                "integer",
                str(desc.items_per_message),
                instance=action,
                mutability=ro,
            )
        )
        out.append(
            _var(
                mon,
                "BytesPerMessage",
                "integer",
                str(desc.bytes_per_message),
                instance=action,
                mutability=ro,
            )
        )
    out += [
        _with_attribute(
            _var(
                mon,
                "ActiveMonitoringBase",
                "OptionList",
                "All",
                mutability=ro,
                values=MONITORING_BASES,
            ),
            constant=False,
            persistent=True,
        ),
        _with_attribute(
            _var(
                mon,
                "ActiveMonitoringLevel",
                "integer",
                "9",
                mutability=ro,
                min_limit=0,
                max_limit=9,
            ),
            constant=False,
            persistent=True,
        ),
    ]
    return out


def _with_attribute(definition: VariableDef, **changes: Any) -> VariableDef:
    attributes = tuple(replace(a, **changes) for a in definition.attributes)
    return replace(definition, attributes=attributes)


def _now() -> str:
    return iso_utc(datetime.now(UTC))


def _bind(fn: Callable[[int], Any], evse_id: int) -> Callable[[], Any]:
    return lambda: fn(evse_id)


def _availability(live: LiveValues, evse: int | None, connector: int | None) -> Any:
    if live.availability is None:
        return None
    fn = live.availability
    return lambda: fn(evse, connector)


def _available(live: LiveValues, evse: int | None, connector: int | None) -> Any:
    if live.availability is None:
        return None
    fn = live.availability
    return lambda: fn(evse, connector) not in ("Unavailable", "Faulted")


def _total_power(live: LiveValues, desc: StationDescription) -> Callable[[], Any] | None:
    if live.power_w is None:
        return None
    power_w = live.power_w

    def total() -> Decimal | None:
        values = [v for e in desc.evses if (v := power_w(e.evse_id)) is not None]
        return sum(values, Decimal(0)) if values else None

    return total


def _infrastructure(desc: StationDescription, live: LiveValues) -> list[VariableDef]:
    ro: Mutability = "ReadOnly"
    station = ComponentKey("ChargingStation")
    phases = max(e.phases for e in desc.evses)
    out = [
        # L02.FR.04: true lets free EVSEs take new sessions while an install waits for the
        # transactions to end (Part 2 appendix 2.1.2).
        _var(station, "AllowNewSessionsPendingFirmwareUpdate", "boolean", "false"),
        _var(
            station,
            "AvailabilityState",
            "OptionList",
            "Available",
            mutability=ro,
            provider=_availability(live, None, None),
            values=AVAILABILITY_STATES,
            monitoring=True,
        ),
        _var(
            station,
            "Available",
            "boolean",
            "true",
            mutability=ro,
            provider=_available(live, None, None),
            monitoring=True,
        ),
        _var(station, "SupplyPhases", "integer", str(phases), mutability=ro),
        # The station's power, the sum of its EVSEs' (monitorable, TC_N_03_CS / TC_N_39_CS).
        _var(
            station,
            "Power",
            "decimal",
            None,
            mutability=ro,
            unit="W",
            max_limit=sum((e.max_power_w for e in desc.evses), Decimal(0)),
            provider=_total_power(live, desc),
            monitoring=True,
        ),
        _var(station, "VendorName", "string", desc.vendor_name, mutability=ro),
        _var(station, "Model", "string", desc.model, mutability=ro),
    ]
    if live.problem is not None:
        problem = live.problem
        out.append(
            _var(
                station,
                "Problem",
                "boolean",
                None,
                mutability=ro,
                provider=lambda: problem(None),
                monitoring=True,
            )
        )
    for e in desc.evses:
        evse = ComponentKey("EVSE", evse_id=e.evse_id)
        connector = ComponentKey("Connector", evse_id=e.evse_id, connector_id=1)
        power = None
        if live.power_w is not None:
            power_w = live.power_w
            power = _bind(power_w, e.evse_id)
        out += [
            _var(
                evse,
                "AvailabilityState",
                "OptionList",
                "Available",
                mutability=ro,
                provider=_availability(live, e.evse_id, None),
                values=AVAILABILITY_STATES,
                monitoring=True,
            ),
            _var(
                evse,
                "Available",
                "boolean",
                "true",
                mutability=ro,
                provider=_available(live, e.evse_id, None),
                monitoring=True,
            ),
            _var(evse, "SupplyPhases", "integer", str(e.phases), mutability=ro),
            # B11.FR.10: each EVSE can be reset on its own (controller/ocpp201/reset.py).
            _var(evse, "AllowReset", "boolean", "true", mutability=ro),
            # Part 2 2.13.7: required for its maxLimit, the EVSE's rated power.
            _var(
                evse,
                "Power",
                "decimal",
                None,
                mutability=ro,
                unit="W",
                max_limit=e.max_power_w,
                provider=power,
                monitoring=True,
            ),
        ]
        if live.problem is not None:
            problem = live.problem
            out.append(
                _var(
                    evse,
                    "Problem",
                    "boolean",
                    None,
                    mutability=ro,
                    provider=_bind(problem, e.evse_id),
                    monitoring=True,
                )
            )
        out += [
            _var(
                connector,
                "AvailabilityState",
                "OptionList",
                "Available",
                mutability=ro,
                provider=_availability(live, e.evse_id, 1),
                values=AVAILABILITY_STATES,
                monitoring=True,
            ),
            _var(
                connector,
                "Available",
                "boolean",
                "true",
                mutability=ro,
                provider=_available(live, e.evse_id, 1),
                monitoring=True,
            ),
            _var(connector, "ConnectorType", "string", e.connector_type, mutability=ro),
            _var(connector, "SupplyPhases", "integer", str(e.phases), mutability=ro),
        ]
        if e.has_meter:
            meter = ComponentKey("FiscalMetering", evse_id=e.evse_id)
            energy = None
            if live.energy_wh is not None:
                energy_wh = live.energy_wh
                energy = _bind(energy_wh, e.evse_id)
            out.append(
                _var(
                    meter,
                    "EnergyImportRegister",
                    "decimal",
                    None,
                    mutability=ro,
                    unit="Wh",
                    provider=energy,
                    monitoring=True,
                )
            )
        if e.has_contactor:
            contactor = ComponentKey("PowerContactor", evse_id=e.evse_id)
            closed = None
            if live.contactor_closed is not None:
                closed_fn = live.contactor_closed
                closed = _bind(closed_fn, e.evse_id)
            out.append(
                _var(
                    contactor,
                    "Active",
                    "boolean",
                    "false",
                    mutability=ro,
                    provider=closed,
                    monitoring=True,
                )
            )
    if desc.has_reader:
        out.append(_var(ComponentKey("TokenReader"), "Enabled", "boolean", "true", mutability=ro))
    return out


def build_station_model(
    store: SettingsStore,
    desc: StationDescription,
    live: LiveValues | None = None,
    first_boot: Mapping[str, Mapping[str, Any]] | None = None,
) -> DeviceModel:
    """The station's DeviceModel on ``store`` (values set earlier are loaded from it), with
    the built-in guard on BasicAuthPassword. ``first_boot``: the configuration's
    ``[ocpp.<Component>]`` tables, in place of the defaults (raises FirstBootValueError)."""
    variables = station_variables(desc, live or LiveValues())
    values = first_boot_values(variables, first_boot) if first_boot else None
    model = DeviceModel(store, variables, values)
    model.add_guard("SecurityCtrlr", "BasicAuthPassword", _password)
    return model


__all__ = [
    "EvseDescription",
    "LiveValues",
    "StationDescription",
    "build_station_model",
    "describe",
    "station_variables",
]
