"""SecurityProfile and the Basic auth key (1.6 whitepaper A05/A01, 2.0.1 A00-A01): what a
connection attempt uses, guards, reconnects and fallbacks, for any OCPP version."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Protocol

from controller.core.security import SecurityEventKind
from controller.csms.connection import ConnectionOptions, basic_auth_header, station_url
from controller.runtime.clock import Clock
from controller.security.log import SecurityLog
from controller.security.material import TlsMaterial
from controller.security.tls import (
    FileTlsMaterial,
    classify,
    client_context,
    client_identity_usable,
    valid_pem_certificates,
)
from controller.storage.store import Store

LOG = logging.getLogger(__name__)


class SecuritySettings(Protocol):
    """The two values a connection's security is made of, by the neutral names
    "SecurityProfile" and "AuthorizationKey": the 1.6 configuration keys
    (controller.ocpp16.settings.Settings) or the 2.0.1 device model's
    SecurityCtrlr.SecurityProfile and SecurityCtrlr.BasicAuthPassword
    (controller/ocpp201/security.py)."""

    def get(self, name: str) -> str | None: ...

    def get_int(self, name: str) -> int: ...

    def configured(self, name: str) -> str:
        """The value the configuration file gives (the first-boot value)."""
        ...

    def set_internal(self, name: str, value: str) -> None: ...

    def add_guard(self, name: str, guard: Callable[[str, str], str | None]) -> None: ...

    def on_change(self, listener: Callable[[str, str], None]) -> None: ...


# Settings rows (besides the keys' own cfg.* rows):
# the profile connected before the CSMS raised it, while the raised one has not connected yet;
PREVIOUS_PROFILE = "sec.profile_previous"
# the TOML's [csms] security_profile at the last start (an operator's edit wins, see below);
CONFIGURED_PROFILE = "sec.profile_configured"
# the AuthorizationKey that last worked ("" = the TOML password), while the CSMS's new one
# has not been accepted at a connection yet.
PREVIOUS_KEY = "sec.authkey_previous"

# A raised profile that failed this many connection attempts in a row is given up for the
# previous one (A05.FR.08). Attempts, not time: each waits out the reconnect back-off, so
# with the defaults (1 s .. 60 s) this is a few seconds, long enough for a CSMS that is
# restarting its TLS port, short enough that a charger with a wrong CSMS root comes back.
FALLBACK_AFTER_FAILURES = 3
# AuthorizationKey: A00.FR.205, at least 16 bytes, at most 40 hexadecimal digits.
KEY_MIN_CHARS = 16


class ConnectionSecurity:
    """What the next connection attempt uses (URL, TLS context, Basic credentials) for the
    current SecurityProfile and AuthorizationKey, and what happens when the CSMS changes them.

    SecurityProfile (A05): only raised (A05.FR.01), only with its prerequisites (A05.FR.02-04);
    Accepted, the charger closes the connection normally and reconnects with the new profile
    (A05.FR.06/07). Until that profile connected once, PREVIOUS_PROFILE remembers the old one:
    FALLBACK_AFTER_FAILURES failed attempts put it back (A05.FR.08: the raise is abandoned,
    the key shows the old value again, and a ReconfigurationOfSecurityParameters event says
    so; the CSMS may raise again). Once connected, the old profile is never used again
    (A05.FR.09). A TLS profile never connects in plain text (A00.FR.311): a ws:// csms.url
    becomes ``[csms] tls_url`` or the same address with wss://.

    AuthorizationKey (A01): Accepted, stored (write-only), the change is logged as a security
    event without the key (A01.FR.11/12) and the charger reconnects with it. If the CSMS then
    refuses it (HTTP 401/403), the charger alternates between the new and the previous key on
    its attempts (back-off as usual, FailedToAuthenticateAtCsms per burst): whichever the CSMS
    accepts becomes the only key, so a CSMS that failed to store the new key does not strand
    the charger.
    """

    def __init__(
        self,
        *,
        station_id: str,
        options: ConnectionOptions,
        settings: SecuritySettings,
        store: Store,
        clock: Clock,
        material: TlsMaterial | None = None,
        security_log: SecurityLog | None = None,
        rows_of: str = "",
    ) -> None:
        self.station_id = station_id
        # The store rows of this connection's raise and key probation; a backend besides
        # the primary has its own (``rows_of`` its name, issue 15).
        suffix = f":{rows_of}" if rows_of else ""
        self._previous_profile_row = PREVIOUS_PROFILE + suffix
        self._configured_profile_row = CONFIGURED_PROFILE + suffix
        self._previous_key_row = PREVIOUS_KEY + suffix
        self.options = options
        self.settings = settings
        self.store = store
        self.clock = clock
        # No material at all: the system trust store, and no charger certificate.
        self.material: TlsMaterial = material if material is not None else FileTlsMaterial()
        self.security_log = security_log
        self.request_reconnect: Callable[[str], None] = lambda reason: None
        self._failures = 0  # failed attempts in a row with a raised, unconfirmed profile
        self._try_previous_key = False
        self._internal = False  # set_internal below: not a CSMS change
        self._raised_from: int | None = None
        self._key_before: str | None = None
        # Cached: the log's secret filter asks for it on every record.
        self._previous_key = store.get_setting(self._previous_key_row)
        self._follow_configured_profile()
        settings.add_guard("SecurityProfile", self._guard_profile)
        settings.add_guard("AuthorizationKey", self._guard_key)
        settings.on_change(self._on_change)

    # ------------------------------------------------------------------ state

    @property
    def profile(self) -> int:
        return self.settings.get_int("SecurityProfile")

    @property
    def raise_pending(self) -> bool:
        return self.store.get_setting(self._previous_profile_row) is not None

    @property
    def key_on_probation(self) -> bool:
        return self._previous_key is not None

    def previous_key(self) -> str | None:
        """The key kept while the CSMS's new one is unconfirmed (for the log's masking)."""
        return self._previous_key or None

    def _keep_previous_key(self, value: str | None) -> None:
        self._previous_key = value
        if value is None:
            self.store.delete_setting(self._previous_key_row)
        else:
            self.store.set_setting(self._previous_key_row, value)

    def _follow_configured_profile(self) -> None:
        """The TOML's security_profile is the first-boot value; a value the CSMS set is kept
        across restarts. Lowering is not done over OCPP (A00.FR.005) but by the operator: a
        TOML value that differs from the one of the previous start replaces the stored one."""
        configured = self.settings.configured("SecurityProfile")
        seen = self.store.get_setting(self._configured_profile_row)
        if (
            seen is not None
            and seen != configured
            and self.settings.get("SecurityProfile") != (configured)
        ):
            LOG.warning(
                "csms.security_profile changed in the configuration (%s -> %s): it replaces"
                " SecurityProfile %s",
                seen,
                configured,
                self.settings.get("SecurityProfile"),
            )
            self._set_internal("SecurityProfile", configured)
            self.store.delete_setting(self._previous_profile_row)
        if seen != configured:
            self.store.set_setting(self._configured_profile_row, configured)

    def _set_internal(self, name: str, value: str) -> None:
        self._internal = True
        try:
            self.settings.set_internal(name, value)
        finally:
            self._internal = False

    def _record(self, kind: SecurityEventKind, tech_info: str) -> None:
        if self.security_log is not None:
            # Each reconfiguration is on record (A01.FR.11); failures fold per burst.
            fold = kind is not SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS
            self.security_log.record(kind, tech_info, fold=fold)

    # ------------------------------------------------------------------ the next attempt

    def url(self) -> str:
        """The station URL for the current profile (A00.FR.311: TLS profiles use wss://)."""
        base = self.options.csms_url
        if self.profile >= 2 and not base.startswith("wss://"):
            base = self.options.tls_url or "wss://" + base.split("://", 1)[1]
        return station_url(base, self.station_id)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Raises controller.security.tls.TlsSetupError (the connection logs it)."""
        return client_context(self.profile, self.material)

    def _password(self) -> str | None:
        current = self.settings.get("AuthorizationKey") or self.options.password
        if self._try_previous_key:
            previous = self._previous_key
            if previous is not None:
                return previous or self.options.password
        return current

    def headers(self) -> dict[str, str]:
        """HTTP Basic for profiles 0-2 (A00.FR.202/301); profile 3 authenticates with the
        charger's certificate, so the password is not sent."""
        if self.profile >= 3:
            return {}
        return basic_auth_header(self.station_id, self._password())

    # ------------------------------------------------------------------ outcomes

    def attempt_failed(self, exc: BaseException) -> None:
        """A connection attempt failed before a session ran: the security event it is,
        the key to try next, and the raised profile's fallback."""
        profile = self.profile
        failure = classify(exc)
        if failure.kind is not None:
            self._record(failure.kind, failure.tech_info)
        if failure.tls:
            self.material.connection_failed(profile)
        if failure.credentials_refused and self.key_on_probation and profile < 3:
            self._try_previous_key = not self._try_previous_key
            LOG.warning(
                "the CSMS refused the %s AuthorizationKey; the next attempt uses the %s one",
                "previous" if not self._try_previous_key else "new",
                "previous" if self._try_previous_key else "new",
            )
        previous = self.store.get_setting(self._previous_profile_row)
        if previous is None:
            return
        self._failures += 1
        if self._failures < FALLBACK_AFTER_FAILURES:
            return
        self._failures = 0
        self.store.delete_setting(self._previous_profile_row)
        self._set_internal("SecurityProfile", previous)
        LOG.error(
            "security profile %d failed %d connection attempts: back to profile %s (A05.FR.08)",
            profile,
            FALLBACK_AFTER_FAILURES,
            previous,
        )
        self._record(
            SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
            f"SecurityProfile {profile} could not connect ({failure.tech_info});"
            f" back to {previous}",
        )

    def connected(self) -> None:
        """The WebSocket opened: a raised profile is confirmed for good (A05.FR.09), and the
        key that worked becomes the only one."""
        profile = self.profile
        self._failures = 0
        self.material.connection_succeeded(profile)
        if self.raise_pending:
            self.store.delete_setting(self._previous_profile_row)
            LOG.warning("connected with security profile %d; the previous one is retired", profile)
        if profile >= 3 or not self.key_on_probation:
            return
        if self._try_previous_key:
            previous = self._previous_key or ""
            self._set_internal("AuthorizationKey", previous)
            LOG.warning("the CSMS accepted the previous AuthorizationKey: it is the key again")
            self._record(
                SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                "AuthorizationKey: the CSMS refused the new key and accepted the previous one,"
                " which is in use again",
            )
        self._keep_previous_key(None)
        self._try_previous_key = False

    # ------------------------------------------------------------------ CSMS changes

    def _has_valid_key(self) -> bool:
        key = self.settings.get("AuthorizationKey") or self.options.password or ""
        return KEY_MIN_CHARS <= len(key) <= 40

    def _guard_profile(self, old: str, new: str) -> str | None:
        before, after = int(old), int(new)
        if after <= before:
            return f"SecurityProfile {after} is not above {before} (A05.FR.01)"
        why = self.missing_prerequisite(after)
        if why is None:
            self._raised_from = before
        return why

    def missing_prerequisite(self, after: int) -> str | None:
        """Why the charger cannot connect with profile ``after`` (A05.FR.02-04; 2.0.1 B09
        checks a new network profile with it), None when it can."""
        if after in (1, 2) and not self._has_valid_key():
            return "no AuthorizationKey or password of 16-40 characters (A05.FR.02)"
        now = self.clock.utc_now()
        if after >= 2 and not valid_pem_certificates(self.material.csms_roots_pem(), now):
            # The system trust store does not count here: the CSMS installs its root first.
            return "no valid CentralSystemRootCertificate installed (A05.FR.03)"
        if after >= 3:
            why = client_identity_usable(self.material, now)
            if why is not None:
                return f"{why} (A05.FR.04)"
        return None

    def confirmed_profile(self) -> int:
        """The profile a connection worked with: never gone below (A05.FR.09); while a raise
        is unconfirmed, the one before it."""
        previous = self.store.get_setting(self._previous_profile_row)
        return int(previous) if previous is not None else self.profile

    def use_profile(self, profile: int, why: str) -> None:
        """The charger switches to ``profile`` itself (2.0.1 B10: the network profile of the
        next connection has its own). Above the confirmed one it is a raise on probation
        (A05.FR.08/09 as for a CSMS raise, recorded as a reconfiguration); back at the
        confirmed one the probation ends; below it is refused (ValueError)."""
        current, confirmed = self.profile, self.confirmed_profile()
        if profile < confirmed:
            raise ValueError(f"SecurityProfile {profile} is below {confirmed} (A05.FR.09)")
        if profile == current:
            return
        if profile > confirmed and not self.raise_pending:
            self.store.set_setting(self._previous_profile_row, str(confirmed))
        elif profile == confirmed:
            self.store.delete_setting(self._previous_profile_row)
        self._failures = 0
        self._set_internal("SecurityProfile", str(profile))
        LOG.warning("SecurityProfile %d -> %d: %s", current, profile, why)
        self._record(
            SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
            f"SecurityProfile {current} -> {profile} ({why})",
        )

    def _guard_key(self, old: str, new: str) -> str | None:
        if len(new) < KEY_MIN_CHARS:
            return "an AuthorizationKey has 16-40 characters (A00.FR.205)"
        self._key_before = old
        return None

    def _on_change(self, name: str, value: str) -> None:
        if self._internal:
            return
        if name == "SecurityProfile" and self._raised_from is not None:
            before, self._raised_from = self._raised_from, None
            if not self.raise_pending:  # raised twice before connecting: keep the first
                self.store.set_setting(self._previous_profile_row, str(before))
            self._failures = 0
            LOG.warning("SecurityProfile raised by the CSMS: %d -> %s; reconnecting", before, value)
            self._record(
                SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                f"SecurityProfile {before} -> {value}",
            )
            self.request_reconnect(f"security profile {value}")
        elif name == "AuthorizationKey" and self._key_before is not None:
            old_key, self._key_before = self._key_before, None
            if old_key != value and not self.key_on_probation:
                self._keep_previous_key(old_key)
            self._try_previous_key = False
            LOG.warning("AuthorizationKey changed by the CSMS; reconnecting with it")
            self._record(
                SecurityEventKind.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                "AuthorizationKey changed by the CSMS",
            )
            self.request_reconnect("new AuthorizationKey")


class ConfiguredSecurity:
    """``SecuritySettings`` of a backend besides the primary (issue 15): the security
    profile and password of its [[csms]] entry. No CSMS changes them (their keys are the
    charger's, owned by one backend), so they live in memory only."""

    def __init__(self, profile: int) -> None:
        self._values = {"SecurityProfile": str(profile), "AuthorizationKey": ""}
        self._configured = dict(self._values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def get_int(self, name: str) -> int:
        return int(self._values.get(name) or 0)

    def configured(self, name: str) -> str:
        return self._configured.get(name, "")

    def set_internal(self, name: str, value: str) -> None:
        self._values[name] = value

    def add_guard(self, name: str, guard: Callable[[str, str], str | None]) -> None:
        """Nothing sets these values from outside: no guard is ever asked."""

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Nothing changes them from outside: no listener is ever told."""
