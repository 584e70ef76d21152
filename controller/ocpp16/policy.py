"""OCPP 1.6 configuration keys (section 9.1) mapped onto the runtime's ChargingPolicy."""

from __future__ import annotations

from collections.abc import Callable

from controller.core.policy import ChargingPolicy
from controller.ocpp16.settings import Settings

# The keys the policy is made of: a change to one of them makes a new policy.
POLICY_KEYS = frozenset(
    {
        "MeterValueSampleInterval",
        "ClockAlignedDataInterval",
        "ConnectionTimeOut",
        "StopTransactionOnEVSideDisconnect",
        "UnlockConnectorOnEVSideDisconnect",
        "StopTransactionOnInvalidId",
        "MaxEnergyOnInvalidId",
    }
)


def policy_from(settings: Settings) -> ChargingPolicy:
    """The policy the current 1.6 configuration describes."""
    return ChargingPolicy(
        sample_interval_s=settings.get_int("MeterValueSampleInterval"),
        aligned_interval_s=settings.get_int("ClockAlignedDataInterval"),
        connection_timeout_s=float(settings.get_int("ConnectionTimeOut")),
        stop_on_ev_disconnect=settings.get_bool("StopTransactionOnEVSideDisconnect"),
        unlock_on_ev_disconnect=settings.get_bool("UnlockConnectorOnEVSideDisconnect"),
        stop_on_invalid_id=settings.get_bool("StopTransactionOnInvalidId"),
        max_energy_on_invalid_id_wh=_max_energy_on_invalid_id(settings),
    )


def _max_energy_on_invalid_id(settings: Settings) -> int | None:
    """MaxEnergyOnInvalidId in Wh (optional key, 9.1.14); None when absent or 0."""
    if settings.key("MaxEnergyOnInvalidId") is None:
        return None
    value = settings.get_int("MaxEnergyOnInvalidId")
    return value if value > 0 else None


def follow(settings: Settings, apply: Callable[[ChargingPolicy], None]) -> None:
    """Hand ``apply`` the policy now and a new one whenever the CSMS changes one of its keys."""
    apply(policy_from(settings))

    def on_change(name: str, value: str) -> None:
        if name in POLICY_KEYS:
            apply(policy_from(settings))

    settings.on_change(on_change)
