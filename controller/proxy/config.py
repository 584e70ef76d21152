"""The proxy's TOML configuration: where it listens, which chargers may connect, and the
backends each charger is relayed to (checked with core.ownership per charger)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.core.ownership import (
    BackendRights,
    Ownership,
    OwnershipError,
    Role,
    ownership,
    parse_commands,
)


class ProxyConfigError(ValueError):
    """The configuration cannot be used; the text says where and why."""


@dataclass(frozen=True)
class BackendConfig:
    """One backend (CSMS) every charger of the proxy (or those that list it) is relayed to."""

    name: str
    url: str  # the charger identity is appended as the last path segment
    role: Role
    allow: frozenset[Any] = frozenset()
    password: str | None = None  # Basic auth, user = the charger identity
    passwords: Mapping[str, str] = field(default_factory=dict)  # per charger, overrides
    ca_bundle: str | None = None  # PEM roots for a wss:// URL (None: the system's)

    def password_for(self, charger_id: str) -> str | None:
        return self.passwords.get(charger_id, self.password)

    @property
    def rights(self) -> BackendRights:
        return BackendRights(self.name, self.role, self.allow)


@dataclass(frozen=True)
class ChargerConfig:
    """A charger allowed to connect: its identity, Basic password and backends."""

    id: str
    password: str | None
    backends: tuple[BackendConfig, ...]
    ownership: Ownership

    @property
    def primary(self) -> BackendConfig:
        return next(b for b in self.backends if b.role is Role.PRIMARY)

    @property
    def secondaries(self) -> tuple[BackendConfig, ...]:
        return tuple(b for b in self.backends if b.role is not Role.PRIMARY)


@dataclass(frozen=True)
class RateLimit:
    """Calls a backend may send per charger: ``burst`` at once, refilled at ``per_s``."""

    burst: int = 20
    per_s: float = 2.0


@dataclass(frozen=True)
class ProxyConfig:
    listen_host: str
    listen_port: int
    storage: str
    status_host: str
    status_port: int
    tls_cert: str | None
    tls_key: str | None
    chargers: Mapping[str, ChargerConfig]
    backends: tuple[BackendConfig, ...]
    # Any identity may connect (without a password) and gets every backend: for a closed
    # network only; listed chargers keep their passwords.
    allow_unknown: bool = False
    response_timeout_s: float = 30.0
    open_timeout_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    rate_limit: RateLimit = RateLimit()
    # A secondary's link stays up this long after its charger left, to deliver its queue
    # (closed at once when the queue is empty); 0: closed with the charger's connection.
    linger_s: float = 300.0
    # Unknown chargers (allow_unknown) get every backend: checked once at load.
    default_ownership: Ownership | None = None

    def charger(self, charger_id: str) -> ChargerConfig | None:
        """The charger's settings; None: it may not connect."""
        known = self.chargers.get(charger_id)
        if known is not None:
            return known
        if self.allow_unknown and self.default_ownership is not None:
            return ChargerConfig(charger_id, None, self.backends, self.default_ownership)
        return None


_PROXY_KEYS = {
    "listen_host",
    "listen_port",
    "storage",
    "status_host",
    "status_port",
    "tls_cert",
    "tls_key",
    "allow_unknown",
    "response_timeout_s",
    "open_timeout_s",
    "reconnect_min_s",
    "reconnect_max_s",
    "rate_limit_burst",
    "rate_limit_per_s",
    "linger_s",
}
_BACKEND_KEYS = {"name", "url", "role", "allow", "password", "passwords", "ca_bundle"}
_CHARGER_KEYS = {"id", "password", "backends"}


def load(path: str | Path) -> ProxyConfig:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ProxyConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProxyConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data)


def parse(data: Mapping[str, Any]) -> ProxyConfig:
    """Check ``data`` (a parsed TOML document) and build the configuration."""
    unknown = set(data) - {"proxy", "backends", "chargers"}
    if unknown:
        raise ProxyConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    proxy = _table(data.get("proxy", {}), "[proxy]", _PROXY_KEYS)
    backends = tuple(
        _backend(b, i) for i, b in enumerate(_list(data.get("backends"), "[[backends]]"))
    )
    if not backends:
        raise ProxyConfigError("[[backends]]: at least one backend (the primary) is needed")
    names = [b.name for b in backends]
    by_name = {b.name: b for b in backends}
    chargers: dict[str, ChargerConfig] = {}
    for i, raw in enumerate(_list(data.get("chargers", []), "[[chargers]]")):
        c = _table(raw, f"[[chargers]] #{i + 1}", _CHARGER_KEYS)
        cid = _str(c, "id", f"[[chargers]] #{i + 1}")
        if cid in chargers:
            raise ProxyConfigError(f"[[chargers]]: charger {cid!r} is listed twice")
        if "/" in cid or not cid.isprintable():
            raise ProxyConfigError(f"[[chargers]]: {cid!r} is not a usable charger identity")
        chosen = c.get("backends", names)
        if not isinstance(chosen, list) or not all(isinstance(n, str) for n in chosen):
            raise ProxyConfigError(f"charger {cid!r}: backends must be a list of backend names")
        missing = [n for n in chosen if n not in by_name]
        if missing:
            raise ProxyConfigError(f"charger {cid!r}: unknown backend {missing[0]!r}")
        own = tuple(by_name[n] for n in chosen)
        chargers[cid] = ChargerConfig(
            cid, _opt_str(c, "password", cid), own, _checked(own, f"charger {cid!r}")
        )
    allow_unknown = bool(proxy.get("allow_unknown", False))
    default = _checked(backends, "[[backends]]") if allow_unknown or not chargers else None
    if not chargers and not allow_unknown:
        raise ProxyConfigError("no [[chargers]] and allow_unknown is false: nobody may connect")
    tls_cert = _opt_str(proxy, "tls_cert", "[proxy]")
    tls_key = _opt_str(proxy, "tls_key", "[proxy]")
    if (tls_cert is None) != (tls_key is None):
        raise ProxyConfigError("[proxy]: tls_cert and tls_key come together")
    return ProxyConfig(
        listen_host=str(proxy.get("listen_host", "0.0.0.0")),
        listen_port=_int(proxy, "listen_port", 9000),
        storage=str(proxy.get("storage", "/var/lib/evsed-proxy/proxy.db")),
        status_host=str(proxy.get("status_host", "127.0.0.1")),
        status_port=_int(proxy, "status_port", 9001),
        tls_cert=tls_cert,
        tls_key=tls_key,
        chargers=chargers,
        backends=backends,
        allow_unknown=allow_unknown,
        response_timeout_s=_positive(proxy, "response_timeout_s", 30.0),
        open_timeout_s=_positive(proxy, "open_timeout_s", 10.0),
        reconnect_min_s=_positive(proxy, "reconnect_min_s", 1.0),
        reconnect_max_s=_positive(proxy, "reconnect_max_s", 60.0),
        rate_limit=RateLimit(
            burst=_int(proxy, "rate_limit_burst", 20),
            per_s=_positive(proxy, "rate_limit_per_s", 2.0),
        ),
        linger_s=_non_negative(proxy, "linger_s", 300.0),
        default_ownership=default,
    )


def _checked(backends: Sequence[BackendConfig], where: str) -> Ownership:
    try:
        return ownership([b.rights for b in backends])
    except OwnershipError as exc:
        raise ProxyConfigError(f"{where}: {exc}") from None


def _backend(raw: Any, index: int) -> BackendConfig:
    where = f"[[backends]] #{index + 1}"
    b = _table(raw, where, _BACKEND_KEYS)
    name = _str(b, "name", where)
    where = f"backend {name!r}"
    url = _str(b, "url", where)
    if not url.startswith(("ws://", "wss://")):
        raise ProxyConfigError(f"{where}: url must start with ws:// or wss://")
    try:
        role = Role(b.get("role", "mirror"))
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ProxyConfigError(f"{where}: unknown role {b.get('role')!r}; known: {known}") from None
    allow = b.get("allow", [])
    if not isinstance(allow, list):
        raise ProxyConfigError(f"{where}: allow must be a list")
    try:
        commands = parse_commands(allow)
    except ValueError as exc:
        raise ProxyConfigError(f"{where}: {exc}") from None
    passwords = b.get("passwords", {})
    if not isinstance(passwords, dict) or not all(isinstance(v, str) for v in passwords.values()):
        raise ProxyConfigError(f"{where}: passwords must be a table of charger = password")
    return BackendConfig(
        name=name,
        url=url,
        role=role,
        allow=commands,
        password=_opt_str(b, "password", where),
        passwords=dict(passwords),
        ca_bundle=_opt_str(b, "ca_bundle", where),
    )


def _table(raw: Any, where: str, keys: set[str]) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise ProxyConfigError(f"{where} must be a table")
    unknown = set(raw) - keys
    if unknown:
        raise ProxyConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ProxyConfigError(f"{where} must be an array of tables")
    return raw


def _str(t: Mapping[str, Any], key: str, where: str) -> str:
    value = t.get(key)
    if not isinstance(value, str) or not value:
        raise ProxyConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _opt_str(t: Mapping[str, Any], key: str, where: str) -> str | None:
    return _str(t, key, where) if key in t else None


def _int(t: Mapping[str, Any], key: str, default: int) -> int:
    value = t.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProxyConfigError(f"[proxy]: {key} must be a whole number >= 0")
    return value


def _positive(t: Mapping[str, Any], key: str, default: float) -> float:
    value = t.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProxyConfigError(f"[proxy]: {key} must be a number > 0")
    return float(value)


def _non_negative(t: Mapping[str, Any], key: str, default: float) -> float:
    value = t.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e9:
        raise ProxyConfigError(f"[proxy]: {key} must be a number >= 0")
    return float(value)
