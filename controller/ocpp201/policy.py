"""OCPP 2.0.1 device-model variables mapped onto the runtime's ChargingPolicy (the 2.0.1
counterpart of controller/ocpp16/policy.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.core.policy import ChargingPolicy
from controller.ocpp201.dm import ComponentKey, DeviceModel, VariableKey

LOG = logging.getLogger(__name__)

# (component, variable) of each value the policy is made of: a change makes a new policy.
POLICY_VARIABLES = frozenset(
    {
        ("SampledDataCtrlr", "TxUpdatedInterval"),
        ("SampledDataCtrlr", "Enabled"),
        ("AlignedDataCtrlr", "Interval"),
        ("AlignedDataCtrlr", "Enabled"),
        ("TxCtrlr", "EVConnectionTimeOut"),
        ("TxCtrlr", "StopTxOnEVSideDisconnect"),
        ("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"),
        ("TxCtrlr", "StopTxOnInvalidId"),
        ("TxCtrlr", "MaxEnergyOnInvalidId"),
    }
)


def policy_from(model: DeviceModel) -> ChargingPolicy:
    """The policy the device model describes. A disabled SampledDataCtrlr / AlignedDataCtrlr
    takes no samples (J01, J02); MaxEnergyOnInvalidId 0 means none (E05.FR.02)."""
    sampled = _bool(model, "SampledDataCtrlr", "Enabled", True)
    aligned = _bool(model, "AlignedDataCtrlr", "Enabled", True)
    max_energy_wh = _int(model, "TxCtrlr", "MaxEnergyOnInvalidId", 0)
    return ChargingPolicy(
        sample_interval_s=_int(model, "SampledDataCtrlr", "TxUpdatedInterval", 0) if sampled else 0,
        aligned_interval_s=_int(model, "AlignedDataCtrlr", "Interval", 0) if aligned else 0,
        connection_timeout_s=float(_int(model, "TxCtrlr", "EVConnectionTimeOut", 60)),
        stop_on_ev_disconnect=_bool(model, "TxCtrlr", "StopTxOnEVSideDisconnect", True),
        unlock_on_ev_disconnect=_bool(model, "OCPPCommCtrlr", "UnlockOnEVSideDisconnect", True),
        stop_on_invalid_id=_bool(model, "TxCtrlr", "StopTxOnInvalidId", True),
        max_energy_on_invalid_id_wh=max_energy_wh if max_energy_wh > 0 else None,
    )


def follow(model: DeviceModel, apply: Callable[[ChargingPolicy], None]) -> None:
    """Hand ``apply`` the policy now and a new one whenever one of its variables changes."""
    apply(policy_from(model))

    def on_change(component: ComponentKey, variable: VariableKey, value: str) -> None:
        if (component.name, variable.name) in POLICY_VARIABLES:
            apply(policy_from(model))

    model.on_change(on_change)


def _int(model: DeviceModel, component: str, variable: str, default: int) -> int:
    try:
        return model.get_int(component, variable)
    except (KeyError, ValueError):
        return default


def _bool(model: DeviceModel, component: str, variable: str, default: bool) -> bool:
    try:
        text = model.get(component, variable)
    except KeyError:
        return default
    return default if text is None else text == "true"
