"""Which backend may command what, when one charger serves several (issue 15): roles, the
single owner of every command that changes shared state, and the check of a configuration.

Pure and version-neutral: each adapter maps its protocol's actions onto ``Command``
(controller/ocpp16/commands.py, controller/ocpp201/commands.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class Command(enum.StrEnum):
    """What a CSMS request does to the charger, in the charger's words."""

    # Shared state: exactly one backend owns each (the primary unless given to another).
    TRANSACTIONS = "transactions"  # remote start / stop
    RESET = "reset"
    CONFIGURATION = "configuration"  # configuration keys, device-model variables
    AVAILABILITY = "availability"
    AUTHORIZATION = "authorization"  # local list, cache, customer data
    FIRMWARE = "firmware"
    SECURITY = "security"  # certificates, security profile, passwords, network profiles
    UNLOCK = "unlock"
    RESERVATIONS = "reservations"
    MONITORING = "monitoring"
    DISPLAY = "display"
    DATA_TRANSFER = "data-transfer"
    # Each backend's own charging profiles; the station applies the minimum of them all.
    CHARGING_PROFILES = "charging-profiles"
    # Reads nothing changes: configuration, reports, schedules, logs, triggered messages.
    READ = "read"


SHARED = frozenset(Command) - {Command.CHARGING_PROFILES, Command.READ}


class Role(enum.StrEnum):
    PRIMARY = "primary"  # authorizes; its transaction id is the charger's reference
    MIRROR = "mirror"  # every charger-to-CSMS message; reads only
    ENERGY_MANAGER = "energy-manager"  # reads, and its own charging profiles


# What each role may do without an allow list (the primary also owns every shared command
# no other backend was given).
_ROLE_RIGHTS: Mapping[Role, frozenset[Command]] = {
    Role.PRIMARY: frozenset({Command.READ, Command.CHARGING_PROFILES}),
    Role.MIRROR: frozenset({Command.READ}),
    Role.ENERGY_MANAGER: frozenset({Command.READ, Command.CHARGING_PROFILES}),
}


class OwnershipError(ValueError):
    """A configuration that gives one shared command to two backends, or has no primary."""


@dataclass(frozen=True)
class BackendRights:
    """One backend's role and the commands it is given beyond its role (``allow``)."""

    name: str
    role: Role
    allow: frozenset[Command] = frozenset()


@dataclass(frozen=True)
class Ownership:
    """The rights of every backend of a charger, checked: exactly one primary, and every
    shared command owned by exactly one backend."""

    backends: tuple[BackendRights, ...]
    owners: Mapping[Command, str]

    @property
    def primary(self) -> str:
        return next(b.name for b in self.backends if b.role is Role.PRIMARY)

    def permitted(self, backend: str, command: Command) -> bool:
        """Whether ``backend`` may send a request doing ``command``."""
        if command in SHARED:
            return self.owners.get(command) == backend
        rights = self._rights(backend)
        return rights is not None and command in (_ROLE_RIGHTS[rights.role] | rights.allow)

    def refusal(self, backend: str, action: str, command: Command) -> str | None:
        """None when ``backend`` may send ``action`` (doing ``command``); else why not, as
        the text of the SecurityError that answers it."""
        if self.permitted(backend, command):
            return None
        if command in SHARED:
            owner = self.owners.get(command, self.primary)
            return f"{action} ({command.value}) belongs to backend {owner!r}"
        rights = self._rights(backend)
        role = "unknown" if rights is None else rights.role.value
        return f"{action} ({command.value}) is not allowed for a {role} backend"

    def role_of(self, backend: str) -> Role | None:
        rights = self._rights(backend)
        return None if rights is None else rights.role

    def owned_by(self, backend: str) -> frozenset[Command]:
        return frozenset(c for c, owner in self.owners.items() if owner == backend)

    def _rights(self, backend: str) -> BackendRights | None:
        return next((b for b in self.backends if b.name == backend), None)


def ownership(backends: Sequence[BackendRights]) -> Ownership:
    """Check ``backends`` and decide the owner of each shared command: the one backend whose
    allow list names it, else the primary. Raises OwnershipError naming the backends of a
    conflict, a missing or second primary, or a repeated name."""
    names = [b.name for b in backends]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise OwnershipError(f"backend name {repeated[0]!r} is used twice")
    primaries = [b.name for b in backends if b.role is Role.PRIMARY]
    if len(primaries) != 1:
        found = ", ".join(primaries) or "none"
        raise OwnershipError(f"exactly one backend must be the primary (found: {found})")
    owners: dict[Command, str] = {}
    for command in sorted(SHARED):
        given = [b.name for b in backends if command in b.allow and b.role is not Role.PRIMARY]
        if len(given) > 1:
            raise OwnershipError(
                f"{command.value} is given to both {given[0]!r} and {given[1]!r}: a command that"
                " changes the charger has one owner"
            )
        owners[command] = given[0] if given else primaries[0]
    return Ownership(tuple(backends), owners)


def parse_commands(values: Iterable[str]) -> frozenset[Command]:
    """An allow list from configuration words; raises ValueError naming an unknown one."""
    out = set()
    for value in values:
        try:
            out.add(Command(value))
        except ValueError:
            known = ", ".join(c.value for c in Command)
            raise ValueError(f"unknown command {value!r}; known: {known}") from None
    return frozenset(out)
