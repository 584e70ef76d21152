"""Reads and validates the TOML configuration; every error names the key and the fix."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from controller.core.loadshare import DEFAULT_FALLBACK_A, SiteConfig
from controller.core.ownership import (
    BackendRights,
    Command,
    Ownership,
    OwnershipError,
    Role,
    ownership,
    parse_commands,
)
from controller.core.records import DEFAULT_BACKEND
from controller.ocpp16.settings import InvalidValue, KeyDef, core_keys, normalise

DEVICE_ROLES = ("contactor", "meter", "vehicle", "lock", "indicator", "fault", "phase_switch")
REQUIRED_ROLES = ("contactor", "meter", "vehicle")
_STATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,48}")


class ConfigError(ValueError):
    """A configuration problem: ``key`` is the dotted TOML key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class DeviceConfig:
    driver: str
    settings: dict[str, Any]
    key: str  # dotted key prefix, for driver error messages


@dataclass(frozen=True)
class ConnectorConfig:
    connector_id: int
    max_current_a: float
    devices: dict[str, DeviceConfig]
    # Phases wired to the connector and the nominal line voltage: what a charging limit in
    # W means in A (OCPP 1.6 7.12: the set voltage for the area, not the measured one).
    phases: int = 3
    nominal_voltage_v: float = 230.0
    # The supply line a single-phase connector is wired to (1..3): what [site] limits it uses
    # (with a phase switch: the line left when one phase is switched in).
    line: int = 1
    # [connectors.phase_switch] pause_s / settle_s: nothing offered and the contactor open
    # this long before the relay moves, and this long after it before offering again.
    phase_switch_pause_s: float = 3.0
    phase_switch_settle_s: float = 1.0

    @property
    def has_phase_switch(self) -> bool:
        return "phase_switch" in self.devices


@dataclass(frozen=True)
class CsmsConfig:
    url: str
    ocpp_version: str = "1.6"  # the first of ``ocpp_versions``
    # The versions in order of preference: every one is offered as a WebSocket subprotocol
    # and the charger speaks the one the CSMS picks (controller/csms/versions.py).
    ocpp_versions: tuple[str, ...] = ("1.6",)
    password: str | None = field(default=None, repr=False)
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    response_timeout_s: float = 30.0
    # Security whitepaper 2.1: 1 = Basic auth over ws://, 2 = TLS + Basic auth, 3 = mutual
    # TLS. The first-boot value; the CSMS may only raise it (SecurityProfile key, A05).
    security_profile: int = 1
    # PEM files for the first boot: the CSMS root certificate(s) (installed as
    # CentralSystemRootCertificate) and the charger's certificate chain and key (profile 3).
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    # wss:// URL for profiles 2/3 when url is ws:// (after the CSMS raised SecurityProfile);
    # None: url with wss://. A00.FR.006: a CSMS may serve each profile on its own port.
    tls_url: str | None = None
    # Several backends ([[csms]], issue 15): the backend's name (also its outbox and
    # transaction id map in the store), role and the commands given to it beyond its role.
    name: str = "csms"
    role: Role = Role.PRIMARY
    allow: frozenset[Command] = frozenset()


@dataclass(frozen=True)
class SecurityConfig:
    """[security]: where certificates and the security log live, and the log's bound."""

    dir: str = "/var/lib/evsed/security"
    log_max_kb: int = 256


@dataclass(frozen=True)
class MaintenanceConfig:
    """[maintenance]: firmware updates, diagnostics and Reset.

    ``firmware_dir``: downloads and staged versions. ``installer``: an operator's command for
    firmware that is not an evsed wheel, as an argument list where ``{file}`` is replaced by
    the downloaded file's path (never a shell, never text from the CSMS). ``venv_root``: where
    the default installer puts evsed versions side by side. ``ready_deadline_s``: how long a
    new version has to report ready before the previous one comes back. ``hard_reset``:
    "reboot" (the board, through the service manager) or "restart" (the service only).
    ``diagnostics_max_kb``: the largest diagnostics archive uploaded.
    """

    firmware_dir: str = "/var/lib/evsed/firmware"
    installer: tuple[str, ...] | None = None
    venv_root: str = "/opt/evsed"
    ready_deadline_s: float = 300.0
    hard_reset: str = "restart"
    diagnostics_max_kb: int = 4096


@dataclass(frozen=True)
class StandaloneConfig:
    """No CSMS: which cards may charge (``free_vend`` lets anyone)."""

    id_tags: tuple[str, ...] = ()
    free_vend: bool = False


@dataclass(frozen=True)
class Config:
    station_id: str
    vendor: str
    model: str
    serial_number: str | None
    firmware_version: str | None
    storage_path: str
    csms: CsmsConfig | None  # the primary backend
    standalone: StandaloneConfig
    api_host: str
    api_port: int
    reader: DeviceConfig | None
    connectors: tuple[ConnectorConfig, ...]
    ocpp_overrides: dict[str, Any] = field(default_factory=dict)
    # OCPP 2.0.1 first-boot device-model values ([ocpp.<Component>] tables: component ->
    # variable -> value); a value the CSMS sets later wins, as for the 1.6 keys.
    device_model_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    log_level: str = "INFO"
    tick_interval_s: float = 1.0
    # Re-attach a transaction a crash or power loss left open when the vehicle is still
    # plugged in at the next start (instead of closing it with Reboot / PowerLoss).
    resume_transactions: bool = False
    # Local API secret (Authorization: Bearer); repr=False keeps it out of any log line.
    api_token: str | None = field(default=None, repr=False)
    # Loopback clients may read status (and control without a token) unauthenticated.
    api_trust_loopback: bool = True
    # Local load management: [site] (None: no site limit; local limits fall back to 6 A).
    site: SiteConfig = field(default_factory=SiteConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    # The backends besides the primary ([[csms]] entries with role mirror, energy-manager
    # or an allow list), and which backend owns which command (checked at load).
    backends: tuple[CsmsConfig, ...] = ()
    ownership: Ownership | None = None

    @property
    def uses_simulation(self) -> bool:
        devices = [d for c in self.connectors for d in c.devices.values()]
        if self.reader is not None:
            devices.append(self.reader)
        return any(d.driver == "sim" for d in devices)


def _table(data: dict[str, Any], name: str, key: str, required: bool = False) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigError(key, f"missing table; add a [{key}] section")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table ([{key}]), not {type(value).__name__}")
    return value


def _str(
    data: dict[str, Any], name: str, key: str, default: str | None = None, required: bool = False
) -> str | None:
    value = data.get(name, default)
    if value is None:
        if required:
            raise ConfigError(key, 'missing; add it as a string, e.g. name = "value"')
        return None
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string in quotes, not {type(value).__name__}")
    return value


# The OCPP versions evsed speaks (controller/csms/versions.py SUBPROTOCOLS).
OCPP_VERSIONS = ("1.6", "2.0.1")


def _ocpp_versions(value: Any) -> tuple[str, ...]:
    """csms.ocpp_version: "1.6", "2.0.1" or a list of them in order of preference."""
    key = "csms.ocpp_version"
    hint = 'use "1.6", "2.0.1" or a list in order of preference, e.g. ["2.0.1", "1.6"]'
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(key, f"must be a version string or a non-empty list; {hint}")
    versions: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(key, f"{item!r} is not a string in quotes; {hint}")
        if item not in OCPP_VERSIONS:
            raise ConfigError(key, f"unknown OCPP version {item!r}; {hint}")
        if item in versions:
            raise ConfigError(key, f"{item!r} is listed twice")
        versions.append(item)
    return tuple(versions)


def _num(data: dict[str, Any], name: str, key: str, default: float, lo: float, hi: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number between {lo} and {hi}")
    if not lo <= value <= hi:
        raise ConfigError(key, f"{value} is out of range; use {lo} .. {hi}")
    return float(value)


def _unknown(data: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for name in data:
        if name not in allowed:
            raise ConfigError(
                f"{prefix}.{name}" if prefix else name,
                f"unknown key; allowed here: {', '.join(sorted(allowed))}",
            )


def _device(data: Any, key: str) -> DeviceConfig:
    if not isinstance(data, dict):
        raise ConfigError(key, f'must be a table with a driver, e.g. [{key}] driver = "sim"')
    driver = _str(data, "driver", f"{key}.driver", required=True)
    assert driver is not None
    settings = {k: v for k, v in data.items() if k != "driver"}
    return DeviceConfig(driver, settings, key)


API_TOKEN_MIN_CHARS = 16
API_TOKEN_MAX_CHARS = 256
_API_TOKEN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces (an HTTP header)


def _api_token(api: dict[str, Any]) -> str | None:
    """[api] token: long enough not to be guessed, sendable in an Authorization header.
    Error messages never echo the value."""
    value = api.get("token")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError("api.token", "must be a string in quotes")
    if not API_TOKEN_MIN_CHARS <= len(value) <= API_TOKEN_MAX_CHARS:
        raise ConfigError(
            "api.token",
            f"must be {API_TOKEN_MIN_CHARS}-{API_TOKEN_MAX_CHARS} characters (it is "
            f"{len(value)}); generate one with "
            '`python3 -c "import secrets; print(secrets.token_urlsafe(24))"`',
        )
    if not _API_TOKEN.fullmatch(value):
        raise ConfigError(
            "api.token", "use printable ASCII characters without spaces (it is sent in a header)"
        )
    return value


SITE_MAX_A = 2000.0


def _site(data: dict[str, Any]) -> SiteConfig:
    """[site]: max_current_a (one number for every line, or [L1, L2, L3]) and
    fallback_current_a."""
    site = _table(data, "site", "site")
    _unknown(site, {"max_current_a", "fallback_current_a"}, "site")
    limits: dict[int, Decimal] | None = None
    raw = site.get("max_current_a")
    if raw is not None:
        values = raw if isinstance(raw, list) else [raw] * 3
        if len(values) != 3 or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in values
        ):
            raise ConfigError(
                "site.max_current_a",
                "must be a number of amperes per line (e.g. 32) or three, one per line "
                "(e.g. [32, 32, 25])",
            )
        for v in values:
            if not 6 <= v <= SITE_MAX_A:
                raise ConfigError(
                    "site.max_current_a", f"{v} is out of range; use 6 .. {SITE_MAX_A:g} A"
                )
        limits = {line: Decimal(str(v)) for line, v in enumerate(values, start=1)}
    fallback = _num(
        site, "fallback_current_a", "site.fallback_current_a", float(DEFAULT_FALLBACK_A), 0, 80
    )
    return SiteConfig(limits, Decimal(str(fallback)))


def parse(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document."""
    _unknown(
        data,
        {
            "station",
            "csms",
            "standalone",
            "api",
            "reader",
            "connectors",
            "ocpp",
            "logging",
            "site",
            "security",
            "maintenance",
        },
        "",
    )
    station = _table(data, "station", "station", required=True)
    _unknown(
        station,
        {
            "id",
            "vendor",
            "model",
            "serial_number",
            "firmware_version",
            "storage",
            "tick_interval_s",
            "resume_transactions",
        },
        "station",
    )
    station_id = _str(station, "id", "station.id", required=True)
    assert station_id is not None
    if not _STATION_ID.fullmatch(station_id):
        raise ConfigError(
            "station.id", "use 1-48 characters from A-Z a-z 0-9 . _ : - (it becomes a URL path)"
        )
    vendor = _str(station, "vendor", "station.vendor", "evsed") or "evsed"
    model = _str(station, "model", "station.model", "evsed-sim") or "evsed-sim"
    for name, value in (("vendor", vendor), ("model", model)):
        if not 1 <= len(value) <= 20:
            raise ConfigError(f"station.{name}", "1 to 20 characters (BootNotification limit)")
    storage = _str(station, "storage", "station.storage", "/var/lib/evsed/evsed.db")
    assert storage is not None
    tick_s = _num(station, "tick_interval_s", "station.tick_interval_s", 1.0, 0.05, 10.0)
    resume = station.get("resume_transactions", False)
    if not isinstance(resume, bool):
        raise ConfigError(
            "station.resume_transactions",
            "must be true or false (without quotes), e.g. resume_transactions = true",
        )

    csms, backends, owners = _backends(data.get("csms"))

    sa = _table(data, "standalone", "standalone")
    _unknown(sa, {"id_tags", "free_vend"}, "standalone")
    tags = sa.get("id_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 20 for t in tags):
        raise ConfigError("standalone.id_tags", 'must be a list of idTags, e.g. ["04A1B2C3"]')
    free = sa.get("free_vend", False)
    if not isinstance(free, bool):
        raise ConfigError("standalone.free_vend", "must be true or false")
    standalone = StandaloneConfig(tuple(t.upper() for t in tags), free)

    api = _table(data, "api", "api")
    _unknown(api, {"host", "port", "token", "trust_loopback"}, "api")
    api_host = _str(api, "host", "api.host", "127.0.0.1") or "127.0.0.1"
    try:
        api_loopback = ipaddress.ip_address(api_host).is_loopback
    except ValueError:
        if api_host != "localhost":
            raise ConfigError("api.host", "must be an IP address such as 127.0.0.1") from None
        api_loopback = True
    port_value = api.get("port", 8080)
    if isinstance(port_value, bool) or not isinstance(port_value, int):
        raise ConfigError("api.port", "must be a whole number 0..65535 (0 = any free port)")
    api_port = int(_num(api, "port", "api.port", 8080, 0, 65535))
    api_token = _api_token(api)
    trust_loopback = api.get("trust_loopback", True)
    if not isinstance(trust_loopback, bool):
        raise ConfigError("api.trust_loopback", "must be true or false (without quotes)")
    if api_token is None and not api_loopback:
        raise ConfigError(
            "api.token",
            f"required when api.host is {api_host} (reachable from the network): add "
            f'token = "<{API_TOKEN_MIN_CHARS}+ random characters>" to [api] '
            '(e.g. from `python3 -c "import secrets; print(secrets.token_urlsafe(24))"`), '
            'or keep host = "127.0.0.1"',
        )
    if api_token is None and not trust_loopback:
        raise ConfigError("api.token", "required when api.trust_loopback = false")

    reader = None
    if "reader" in data:
        reader = _device(data["reader"], "reader")

    raw_connectors = data.get("connectors")
    if not isinstance(raw_connectors, list) or not raw_connectors:
        raise ConfigError("connectors", "add at least one [[connectors]] table")
    if len(raw_connectors) > 8:
        raise ConfigError("connectors", "at most 8 connectors")
    connectors = []
    for index, raw in enumerate(raw_connectors, start=1):
        key = f"connectors.{index}"
        if not isinstance(raw, dict):
            raise ConfigError(key, "must be a [[connectors]] table")
        _unknown(raw, {"max_current_a", "phases", "nominal_voltage_v", "line", *DEVICE_ROLES}, key)
        devices = {}
        for role in DEVICE_ROLES:
            if role in raw:
                devices[role] = _device(raw[role], f"{key}.{role}")
            elif role in REQUIRED_ROLES:
                raise ConfigError(
                    f"{key}.{role}", f'missing; add [connectors.{role}] with driver = "..."'
                )
        max_a = _num(raw, "max_current_a", f"{key}.max_current_a", 32.0, 6.0, 80.0)
        phases = raw.get("phases", 3)
        if phases not in (1, 3) or isinstance(phases, bool):
            raise ConfigError(f"{key}.phases", "must be 1 or 3")
        voltage_v = _num(raw, "nominal_voltage_v", f"{key}.nominal_voltage_v", 230.0, 100.0, 400.0)
        line = raw.get("line", 1)
        if isinstance(line, bool) or line not in (1, 2, 3):
            raise ConfigError(f"{key}.line", "must be 1, 2 or 3 (the supply line L1..L3)")
        switch = devices.get("phase_switch")
        pause_s, settle_s = 3.0, 1.0
        if switch is not None:
            if phases != 3:
                raise ConfigError(
                    f"{key}.phase_switch",
                    "a phase switch selects 1 or 3 phases: set phases = 3 (the wired phases)",
                )
            pkey = f"{key}.phase_switch"
            pause_s = _num(switch.settings, "pause_s", f"{pkey}.pause_s", 3.0, 1.0, 60.0)
            settle_s = _num(switch.settings, "settle_s", f"{pkey}.settle_s", 1.0, 0.0, 10.0)
            driver_settings = {
                k: v for k, v in switch.settings.items() if k not in ("pause_s", "settle_s")
            }
            devices["phase_switch"] = DeviceConfig(switch.driver, driver_settings, switch.key)
        if phases == 3 and "line" in raw and switch is None:
            raise ConfigError(
                f"{key}.line",
                "only for phases = 1 or with a phase switch: a three-phase connector uses "
                "every line",
            )
        connectors.append(
            ConnectorConfig(
                index,
                max_a,
                devices,
                int(phases),
                voltage_v,
                int(line),
                phase_switch_pause_s=pause_s,
                phase_switch_settle_s=settle_s,
            )
        )

    ocpp = _table(data, "ocpp", "ocpp")
    # [ocpp.<Component>] tables: 2.0.1 device-model values; the other keys are 1.6 keys.
    components = {name: value for name, value in ocpp.items() if isinstance(value, dict)}
    ocpp = {name: value for name, value in ocpp.items() if name not in components}
    if components:
        _check_device_model_values(
            components, csms, (csms, *backends), connectors, reader is not None
        )
    keys: dict[str, KeyDef] = {k.name: k for k in core_keys(len(connectors))}
    for name, value in ocpp.items():
        kd = keys.get(name)
        if kd is None:
            raise ConfigError(f"ocpp.{name}", "not an OCPP 1.6 configuration key evsed knows")
        if kd.readonly:
            raise ConfigError(f"ocpp.{name}", "is read-only")
        if not isinstance(value, str | int | bool) or (
            kd.kind == "int" and isinstance(value, bool)
        ):
            raise ConfigError(f"ocpp.{name}", f"must be a {kd.kind}")
        try:
            normalise(kd, str(value).lower() if isinstance(value, bool) else str(value))
        except InvalidValue as exc:
            raise ConfigError(f"ocpp.{name}", str(exc)) from None

    log = _table(data, "logging", "logging")
    _unknown(log, {"level"}, "logging")
    level = (_str(log, "level", "logging.level", "INFO") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level", "use DEBUG, INFO, WARNING or ERROR")

    return Config(
        station_id=station_id,
        vendor=vendor,
        model=model,
        serial_number=_str(station, "serial_number", "station.serial_number"),
        firmware_version=_str(station, "firmware_version", "station.firmware_version"),
        storage_path=storage,
        csms=csms,
        backends=backends,
        ownership=owners,
        standalone=standalone,
        api_host=api_host,
        api_port=api_port,
        reader=reader,
        connectors=tuple(connectors),
        ocpp_overrides=dict(ocpp),
        device_model_values={name: dict(values) for name, values in components.items()},
        log_level=level,
        tick_interval_s=tick_s,
        resume_transactions=resume,
        api_token=api_token,
        api_trust_loopback=trust_loopback,
        site=_site(data),
        security=_security(data, storage),
        maintenance=_maintenance(data, storage),
    )


def _check_device_model_values(
    components: dict[str, dict[str, Any]],
    csms: CsmsConfig | None,
    backends: Sequence[CsmsConfig | None],
    connectors: Sequence[Any],  # ConnectorConfig (dm.describe reads them as a Protocol)
    has_reader: bool,
) -> None:
    """[ocpp.<Component>] tables: only when a backend may speak 2.0.1 (csms.ocpp_version),
    and each value one the charger's device model takes (checked against the model of these
    connectors)."""
    first = next(iter(components))
    speaks_201 = any(b is not None and "2.0.1" in b.ocpp_versions for b in backends)
    if csms is None or not speaks_201:
        raise ConfigError(
            f"ocpp.{first}",
            'a component table sets OCPP 2.0.1 device-model variables: add "2.0.1" to '
            "csms.ocpp_version (1.6 keys go straight into [ocpp])",
        )
    # Loaded only for a configuration that has such tables (start-up time of the others).
    from controller.ocpp201 import dm
    from controller.ocpp201.dm.station import station_variables

    description = dm.describe(
        connectors, has_reader=has_reader, security_profile=csms.security_profile
    )
    try:
        dm.first_boot_values(station_variables(description, dm.LiveValues()), components)
    except dm.FirstBootValueError as exc:
        raise ConfigError(exc.key, exc.reason) from None


def _csms(csms_t: dict[str, Any], key: str) -> CsmsConfig:
    """One backend's table ([csms] or one [[csms]] entry, ``key`` names it in errors)."""
    _unknown(
        csms_t,
        {
            "url",
            "ocpp_version",
            "password",
            "reconnect_min_s",
            "reconnect_max_s",
            "response_timeout_s",
            "security_profile",
            "ca_bundle",
            "client_cert",
            "client_key",
            "tls_url",
            "name",
            "role",
            "allow",
        },
        key,
    )
    url = _str(csms_t, "url", f"{key}.url", required=True)
    assert url is not None
    try:
        parsed = urlparse(url)
        _ = parsed.port  # raises ValueError for a port out of range
    except ValueError as exc:
        raise ConfigError(f"{key}.url", f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname:
        raise ConfigError(f"{key}.url", "must be ws://host[:port]/path or wss://...")
    versions = _ocpp_versions(csms_t.get("ocpp_version", "1.6"))
    password = _str(csms_t, "password", f"{key}.password")
    if password is not None and not 1 <= len(password) <= 40:
        raise ConfigError(f"{key}.password", "must be 1-40 characters (OCPP AuthorizationKey)")
    lo = _num(csms_t, "reconnect_min_s", f"{key}.reconnect_min_s", 1.0, 0.01, 600)
    hi = _num(csms_t, "reconnect_max_s", f"{key}.reconnect_max_s", 60.0, 0.01, 3600)
    if hi < lo:
        raise ConfigError(f"{key}.reconnect_max_s", "must be >= csms.reconnect_min_s")
    profile = _security_profile(csms_t, parsed.scheme, password)
    ca_bundle = _path(csms_t, "ca_bundle", f"{key}.ca_bundle")
    client_cert = _path(csms_t, "client_cert", f"{key}.client_cert")
    client_key = _path(csms_t, "client_key", f"{key}.client_key")
    if (client_cert is None) != (client_key is None):
        raise ConfigError(
            f"{key}.client_key" if client_key is None else f"{key}.client_cert",
            "client_cert and client_key come together (the chain and its private key)",
        )
    tls_url = _str(csms_t, "tls_url", f"{key}.tls_url")
    if tls_url is not None:
        try:
            tls_parsed = urlparse(tls_url)
            _ = tls_parsed.port
        except ValueError as exc:
            raise ConfigError(f"{key}.tls_url", f"not a valid URL ({exc})") from None
        if tls_parsed.scheme != "wss" or not tls_parsed.hostname:
            raise ConfigError(f"{key}.tls_url", "must be wss://host[:port]/path (TLS only)")
    name = _str(csms_t, "name", f"{key}.name", default="csms")
    assert name is not None
    if not _BACKEND_NAME.fullmatch(name):
        raise ConfigError(f"{key}.name", "1-32 letters, digits, '-' or '_'")
    role_text = _str(csms_t, "role", f"{key}.role", default="primary")
    try:
        role = Role(role_text or "primary")
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ConfigError(f"{key}.role", f"must be one of {known}") from None
    allow_list = csms_t.get("allow", [])
    if not isinstance(allow_list, list) or not all(isinstance(a, str) for a in allow_list):
        raise ConfigError(f"{key}.allow", 'must be a list of commands, e.g. ["reset"]')
    try:
        allow = parse_commands(allow_list)
    except ValueError as exc:
        raise ConfigError(f"{key}.allow", str(exc)) from None
    return CsmsConfig(
        name=name,
        role=role,
        allow=allow,
        url=url,
        ocpp_version=versions[0],
        ocpp_versions=versions,
        tls_url=tls_url,
        security_profile=profile,
        ca_bundle=ca_bundle,
        client_cert=client_cert,
        client_key=client_key,
        password=password or None,
        reconnect_min_s=lo,
        reconnect_max_s=hi,
        response_timeout_s=_num(
            csms_t, "response_timeout_s", f"{key}.response_timeout_s", 30.0, 0.1, 600
        ),
    )


# A backend's name: also its outbox in the store, so nothing a path or SQL would mind.
_BACKEND_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
# The store's names of the primary's outbox (1.6 and 2.0.1): not for another backend.
_RESERVED_NAMES = frozenset({DEFAULT_BACKEND, "ocpp2.0.1"})


def _backends(value: Any) -> tuple[CsmsConfig | None, tuple[CsmsConfig, ...], Ownership | None]:
    """[csms] (one backend, the primary) or [[csms]] (several: one primary, the others
    mirrors, energy managers or with an allow list): the primary, the others and who owns
    which command. A command given to two backends is an error naming both (issue 15)."""
    if value is None:
        return None, (), None
    if isinstance(value, dict):
        if not value:
            raise ConfigError("csms", 'empty table; add url = "ws://..." or remove [csms]')
        entries = [_csms(value, "csms")]
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        entries = [_csms(v, f"csms[{i}]") for i, v in enumerate(value)]
    else:
        raise ConfigError("csms", "must be a table [csms] or a list of tables [[csms]]")
    if len(entries) > 1:
        for i in range(len(entries)):
            if not isinstance(value[i].get("name"), str):
                raise ConfigError(f"csms[{i}].name", "each of several backends needs a name")
            if not isinstance(value[i].get("role"), str) and not value[i].get("allow"):
                raise ConfigError(
                    f"csms[{i}].role",
                    "each of several backends needs a role: primary, mirror or energy-manager",
                )
    try:
        owners = ownership(
            [BackendRights(e.name, e.role, e.allow) for e in entries],
        )
    except OwnershipError as exc:
        raise ConfigError("csms", str(exc)) from None
    primary = next(e for e in entries if e.role is Role.PRIMARY)
    others = tuple(e for e in entries if e is not primary)
    for i, entry in enumerate(entries):
        if entry is primary:
            continue
        if entry.name in _RESERVED_NAMES:
            raise ConfigError(
                f"csms[{i}].name", f"{entry.name!r} is the primary's outbox; pick another name"
            )
        if len(entry.ocpp_versions) != 1:
            raise ConfigError(
                f"csms[{i}].ocpp_version",
                'a backend besides the primary speaks one version ("1.6" or "2.0.1")',
            )
    return primary, others, owners if others else None


def _path(data: dict[str, Any], name: str, key: str) -> str | None:
    value = _str(data, name, key)
    if value is not None and not value.strip():
        raise ConfigError(key, "empty path; remove the key or name a file")
    return value


def _security_profile(csms_t: dict[str, Any], scheme: str, password: str | None) -> int:
    """[csms] security_profile: 1 with ws://, 2 or 3 with wss:// (A00.FR.311: no plain
    WebSocket once TLS is required); without the key, wss:// means 2 and ws:// means 1."""
    default = 2 if scheme == "wss" else 1
    value = csms_t.get("security_profile", default)
    if isinstance(value, bool) or value not in (1, 2, 3):
        raise ConfigError("csms.security_profile", "must be 1, 2 or 3 (without quotes)")
    if value >= 2 and scheme != "wss":
        raise ConfigError(
            "csms.security_profile",
            f"profile {value} needs TLS: use a wss:// URL (or profile 1 on a trusted network)",
        )
    if value == 1 and scheme == "wss":
        raise ConfigError(
            "csms.security_profile", "a wss:// URL is profile 2 or 3; profile 1 is ws://"
        )
    if value == 3 and not (csms_t.get("client_cert") and csms_t.get("client_key")):
        raise ConfigError(
            "csms.client_cert",
            "security profile 3 needs the charger's certificate: set client_cert and client_key",
        )
    return int(value)


def _security(data: dict[str, Any], storage: str) -> SecurityConfig:
    sec = _table(data, "security", "security")
    _unknown(sec, {"dir", "log_max_kb"}, "security")
    default_dir = str(Path(storage).parent / "security")
    directory = _path(sec, "dir", "security.dir") or default_dir
    log_kb = int(_num(sec, "log_max_kb", "security.log_max_kb", 256, 8, 65536))
    return SecurityConfig(dir=directory, log_max_kb=log_kb)


def _maintenance(data: dict[str, Any], storage: str) -> MaintenanceConfig:
    mt = _table(data, "maintenance", "maintenance")
    _unknown(
        mt,
        {
            "firmware_dir",
            "installer",
            "venv_root",
            "ready_deadline_s",
            "hard_reset",
            "diagnostics_max_kb",
        },
        "maintenance",
    )
    default_dir = str(Path(storage).parent / "firmware")
    installer = mt.get("installer")
    if installer is not None:
        if (
            not isinstance(installer, list)
            or not installer
            or not all(isinstance(a, str) and a for a in installer)
        ):
            raise ConfigError(
                "maintenance.installer",
                'an argument list, e.g. ["/usr/local/sbin/flash-board", "{file}"] (no shell)',
            )
        installer = tuple(installer)
    hard = _str(mt, "hard_reset", "maintenance.hard_reset", "restart")
    if hard not in ("reboot", "restart"):
        raise ConfigError("maintenance.hard_reset", 'use "reboot" or "restart"')
    return MaintenanceConfig(
        firmware_dir=_path(mt, "firmware_dir", "maintenance.firmware_dir") or default_dir,
        installer=installer,
        venv_root=_path(mt, "venv_root", "maintenance.venv_root") or "/opt/evsed",
        ready_deadline_s=_num(
            mt, "ready_deadline_s", "maintenance.ready_deadline_s", 300.0, 10.0, 3600.0
        ),
        hard_reset=hard,
        diagnostics_max_kb=int(
            _num(mt, "diagnostics_max_kb", "maintenance.diagnostics_max_kb", 4096, 64, 1 << 20)
        ),
    )


def load(path: str | Path) -> Config:
    """Read and validate a TOML file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("file", f"{path} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None
    return parse(data)
