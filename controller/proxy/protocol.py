"""What the proxy needs of each OCPP version: the RPC dialect, which actions each side may
send, and the neutral command of a CSMS request (for ownership)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.core.ownership import Command
from controller.csms.rpc import Dialect
from controller.ocpp16 import commands as commands16
from controller.ocpp16.rpc import DIALECT as DIALECT16
from controller.ocpp201 import commands as commands201
from controller.ocpp201.rpc import DIALECT as DIALECT201

SECURITY_ERROR = "SecurityError"  # the same in 1.6 (4.2.3) and 2.0.1 (part 4 4.3)
# Requests both sides may send.
_BOTH_WAYS = frozenset({"DataTransfer"})


@dataclass(frozen=True)
class Protocol:
    version: str
    subprotocol: str
    dialect: Dialect
    csms_actions: frozenset[str]  # requests a backend sends to the charger
    charger_actions: frozenset[str]  # requests the charger sends to its backends
    command_of: Callable[[str, dict[str, Any]], Command]
    # 1.6: the primary's transactionId is mapped per backend; 2.0.1: the charger's own id.
    maps_transaction_ids: bool


def _protocol(
    version: str,
    subprotocol: str,
    dialect: Dialect,
    commands: dict[str, Command],
    command_of: Callable[[str, dict[str, Any]], Command],
) -> Protocol:
    csms = frozenset(commands) & dialect.actions
    return Protocol(
        version,
        subprotocol,
        dialect,
        csms,
        (dialect.actions - csms) | _BOTH_WAYS,
        command_of,
        version == "1.6",
    )


PROTOCOLS: dict[str, Protocol] = {
    p.subprotocol: p
    for p in (
        _protocol("1.6", "ocpp1.6", DIALECT16, commands16.COMMANDS, commands16.command_of),
        _protocol("2.0.1", "ocpp2.0.1", DIALECT201, commands201.COMMANDS, commands201.command_of),
    )
}
# Offered to chargers in this order when the charger leaves the choice to the server.
SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
