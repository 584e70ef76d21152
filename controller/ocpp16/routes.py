"""The 1.6 adapter's declared routes: a handler per CSMS action, and what TriggerMessage sends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.ocpp16 import rpc as rpc16

if TYPE_CHECKING:
    from controller.ocpp16.client import Ocpp16Client

# A handler gets the client and the validated payload and returns the CALLRESULT payload
# (or raises CallError). Feature modules (certificates, firmware, diagnostics) register their
# handlers here with @route, so the client needs no string dispatch of its own.
Handler = Callable[["Ocpp16Client", dict[str, Any]], Awaitable[dict[str, Any]]]
ROUTES: dict[str, Handler] = {}

# What TriggerMessage / ExtendedTriggerMessage can send besides the client's own messages:
# ``trigger(client, connector_id, extended)`` sends the message (``extended``: asked by
# ExtendedTriggerMessage, which wants the whitepaper's variant, e.g. the signed firmware
# status) and returns the answer's status ("Accepted", "Rejected", "NotImplemented").
Trigger = Callable[["Ocpp16Client", "int | None", bool], str]
TRIGGERS: dict[str, Trigger] = {}


def route(action: str) -> Callable[[Handler], Handler]:
    """Declare ``handler`` as the answer to the CSMS's ``action`` (an OCPP 1.6 action,
    including the security whitepaper's)."""
    if action not in rpc16.ACTIONS:
        raise ValueError(f"{action!r} is not an OCPP 1.6 action")

    def register(handler: Handler) -> Handler:
        if action in ROUTES:
            raise ValueError(f"{action} is routed twice")
        ROUTES[action] = handler
        return handler

    return register


def trigger(message: str) -> Callable[[Trigger], Trigger]:
    """Declare how TriggerMessage / ExtendedTriggerMessage sends ``message`` now."""

    def register(fn: Trigger) -> Trigger:
        TRIGGERS[message] = fn
        return fn

    return register
