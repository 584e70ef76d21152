"""The 1.6 adapter's declared routes: a handler per CSMS action, and what TriggerMessage sends."""

from __future__ import annotations

import importlib
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


# Feature modules imported on their first request, not at start: their code and libraries
# (archives, firmware installers, certificates) cost start time on a small board, and most
# chargers never get these requests. Each entry names the actions it routes and the messages
# it can trigger; tests/ocpp16/test_routes.py checks that importing the module registers
# exactly these.
LAZY_FEATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "controller.ocpp16.certificates": (
        (
            "CertificateSigned",
            "DeleteCertificate",
            "ExtendedTriggerMessage",
            "GetInstalledCertificateIds",
            "InstallCertificate",
        ),
        ("SignChargePointCertificate",),
    ),
    "controller.ocpp16.diagnostics": (
        ("GetDiagnostics", "GetLog"),
        ("DiagnosticsStatusNotification", "LogStatusNotification"),
    ),
    "controller.ocpp16.firmware": (
        ("SignedUpdateFirmware", "UpdateFirmware"),
        ("FirmwareStatusNotification",),
    ),
}
_LAZY_ACTIONS = {a: m for m, (actions, _) in LAZY_FEATURES.items() for a in actions}
_LAZY_TRIGGERS = {t: m for m, (_, triggers) in LAZY_FEATURES.items() for t in triggers}


def handler(action: str) -> Handler:
    """The handler of ``action``, importing its feature module on first use (KeyError for
    an action nobody routes: the RPC layer answers those before asking)."""
    found = ROUTES.get(action)
    if found is None and action in _LAZY_ACTIONS:
        importlib.import_module(_LAZY_ACTIONS[action])
        found = ROUTES.get(action)
    if found is None:
        raise KeyError(action)
    return found


def trigger_for(message: str) -> Trigger | None:
    """How (Extended)TriggerMessage sends ``message`` (None: not implemented)."""
    found = TRIGGERS.get(message)
    if found is None and message in _LAZY_TRIGGERS:
        importlib.import_module(_LAZY_TRIGGERS[message])
        found = TRIGGERS.get(message)
    return found


def supported_actions() -> frozenset[str]:
    """Every routed action, loaded or not."""
    return frozenset(ROUTES) | frozenset(_LAZY_ACTIONS)
