"""First-boot device-model values from the configuration file (``[ocpp.<Component>]``).

A configured value replaces the variable's default; a value the CSMS set (stored under
``dm.``) still wins, as for the 1.6 keys of ``[ocpp]``. Only values the CSMS could set
are configurable: ReadOnly variables describe what the charger does, live ones what it
measures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controller.ocpp201.dm.types import ComponentKey, VariableDef, VariableKey
from controller.ocpp201.dm.values import InvalidValue, normalise

Address = tuple[ComponentKey, VariableKey]


class FirstBootValueError(ValueError):
    """A configured value the model cannot take; ``key`` names it as the config file does
    (``ocpp.OCPPCommCtrlr.RetryBackOffWaitMinimum``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def value_text(value: Any) -> str:
    """A TOML value as device-model text (booleans "true" / "false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def first_boot_values(
    variables: Iterable[VariableDef], tables: Mapping[str, Mapping[str, Any]]
) -> dict[Address, str]:
    """The canonical Actual values of ``tables`` (component text -> variable text -> value,
    ``EVSE@1`` and ``MessageAttempts[TransactionEvent]`` as the storage keys spell them),
    checked like a SetVariables; raises FirstBootValueError for the first bad one."""
    by_text = {(d.component.text(), d.variable.text()): d for d in variables}
    components = {component for component, _ in by_text}
    out: dict[Address, str] = {}
    for component, values in tables.items():
        if component not in components:
            raise FirstBootValueError(f"ocpp.{component}", "not a component of this charger")
        for variable, value in values.items():
            key = f"ocpp.{component}.{variable}"
            definition = by_text.get((component, variable))
            if definition is None:
                raise FirstBootValueError(key, f"not a variable of {component}")
            attribute = definition.attribute("Actual")
            if (
                attribute is None
                or attribute.mutability == "ReadOnly"
                or attribute.provider is not None
                or attribute.constant
            ):
                raise FirstBootValueError(key, "is read-only (the charger reports it)")
            if isinstance(value, dict | list):
                raise FirstBootValueError(key, "must be a number, boolean or string")
            try:
                out[(definition.component, definition.variable)] = normalise(
                    definition.characteristics, value_text(value)
                )
            except InvalidValue as exc:
                raise FirstBootValueError(key, str(exc)) from None
    return out
