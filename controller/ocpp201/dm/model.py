"""The device model: variables by address, their values, guards and change listeners.

Values are live (read from a provider), durable (the Store) or in memory.

Values are canonical text (dm.values). A persistent attribute is stored under
``dm.<component>/<variable>/<attributeType>`` in the Store settings (``dm.EVSE@1/Power/Actual``,
``dm.OCPPCommCtrlr/MessageAttempts[TransactionEvent]/Actual``); a stored value that no longer
fits the variable (after an update changed its characteristics) is ignored with a warning and
the default applies. ``write`` puts all values of one SetVariables request in one commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Protocol

from controller.ocpp201.dm.types import AttributeDef, ComponentKey, VariableDef, VariableKey
from controller.ocpp201.dm.values import InvalidValue, normalise

LOG = logging.getLogger(__name__)

PREFIX = "dm."

# guard(old, new) -> why the CSMS may not make this change, or None to allow it.
Guard = Callable[["str | None", str], "str | None"]
Listener = Callable[[ComponentKey, VariableKey, str], None]
_Slot = tuple[ComponentKey, VariableKey, str]


class SettingsStore(Protocol):
    """What the model needs of controller.storage.store.Store."""

    def settings_with_prefix(self, prefix: str) -> dict[str, str]: ...

    def set_settings(self, values: Mapping[str, str]) -> None: ...


def storage_key(component: ComponentKey, variable: VariableKey, attribute_type: str) -> str:
    return f"{PREFIX}{component.text()}/{variable.text()}/{attribute_type}"


def _component(component: ComponentKey | str) -> ComponentKey:
    return ComponentKey(component) if isinstance(component, str) else component


def _variable(variable: VariableKey | str) -> VariableKey:
    return VariableKey(variable) if isinstance(variable, str) else variable


class DeviceModel:
    """The station's components and variables. Reads for the charger: ``get``/``get_int``/
    ``get_bool``/``get_decimal``/``get_list``; follow changes with ``on_change``; restrict
    CSMS writes with ``add_guard``; values the charger itself learns go in with
    ``set_internal``. SetVariables/GetVariables/reports are in dm.access and dm.reports."""

    def __init__(
        self,
        store: SettingsStore,
        variables: Iterable[VariableDef],
        first_boot: Mapping[tuple[ComponentKey, VariableKey], str] | None = None,
    ) -> None:
        """``first_boot``: Actual values that replace the defaults (the configuration's,
        checked by dm.firstboot); a stored value still wins."""
        self._store = store
        self._defs: dict[tuple[ComponentKey, VariableKey], VariableDef] = {}
        for definition in variables:
            address = (definition.component, definition.variable)
            if address in self._defs:
                raise ValueError(
                    f"{definition.component.text()}/{definition.variable.text()} twice"
                )
            self._defs[address] = definition
        self._components = {component for component, _ in self._defs}
        self._values: dict[_Slot, str | None] = {}
        self._listeners: list[tuple[str, Listener]] = []
        self._guards: dict[tuple[ComponentKey, VariableKey], list[Guard]] = {}
        stored = store.settings_with_prefix(PREFIX)
        for definition in self._defs.values():
            for attribute in definition.attributes:
                if attribute.provider is not None:
                    continue
                slot = (definition.component, definition.variable, attribute.type)
                value = attribute.default
                if attribute.type == "Actual" and first_boot is not None:
                    value = first_boot.get((definition.component, definition.variable), value)
                text = stored.get(storage_key(*slot)) if attribute.persistent else None
                if text is not None and not attribute.constant:
                    try:
                        value = normalise(definition.characteristics, text)
                    except InvalidValue:
                        LOG.warning("ignoring the stored value of %s", storage_key(*slot))
                self._values[slot] = value

    # ------------------------------------------------------------------ lookup

    def variables(self) -> list[VariableDef]:
        """Every variable, in the order the station model declared them."""
        return list(self._defs.values())

    def has_component(self, component: ComponentKey) -> bool:
        return component in self._components

    def find(
        self, component: ComponentKey | str, variable: VariableKey | str
    ) -> VariableDef | None:
        return self._defs.get((_component(component), _variable(variable)))

    def _def(self, component: ComponentKey | str, variable: VariableKey | str) -> VariableDef:
        definition = self.find(component, variable)
        if definition is None:
            raise KeyError(f"{_component(component).text()}/{_variable(variable).text()}")
        return definition

    # ------------------------------------------------------------------ values

    def read(self, definition: VariableDef, attribute: AttributeDef) -> str | None:
        """The attribute's current value (None: unset). A provider's error propagates."""
        if attribute.provider is not None:
            return attribute.provider()
        return self._values[(definition.component, definition.variable, attribute.type)]

    def get(
        self,
        component: ComponentKey | str,
        variable: VariableKey | str,
        attribute_type: str = "Actual",
    ) -> str | None:
        definition = self._def(component, variable)
        attribute = definition.attribute(attribute_type)
        if attribute is None:
            raise KeyError(f"{definition.variable.text()} has no {attribute_type} attribute")
        return self.read(definition, attribute)

    def get_int(self, component: ComponentKey | str, variable: VariableKey | str) -> int:
        return int(self.get(component, variable) or 0)

    def get_bool(self, component: ComponentKey | str, variable: VariableKey | str) -> bool:
        return self.get(component, variable) == "true"

    def get_decimal(self, component: ComponentKey | str, variable: VariableKey | str) -> Decimal:
        return Decimal(self.get(component, variable) or "0")

    def get_list(self, component: ComponentKey | str, variable: VariableKey | str) -> list[str]:
        text = self.get(component, variable) or ""
        return [item for item in text.split(",") if item]

    # ------------------------------------------------------------------ changes

    def on_change(self, listener: Listener, attribute_type: str = "Actual") -> None:
        """``listener(component, variable, value)`` after a value of ``attribute_type``
        changed (by SetVariables or set_internal), once the new value is stored."""
        self._listeners.append((attribute_type, listener))

    def add_guard(
        self, component: ComponentKey | str, variable: VariableKey | str, guard: Guard
    ) -> None:
        """``guard(old, new)`` decides a CSMS change beyond type and range: it returns why
        the change is Rejected, or None to accept it (SecurityProfile only raised,
        NetworkConfigurationPriority only naming configured slots, ...). Several guards of
        one variable must all accept, in the order they were added."""
        definition = self._def(component, variable)
        self._guards.setdefault((definition.component, definition.variable), []).append(guard)

    def guard_reason(self, definition: VariableDef, old: str | None, new: str) -> str | None:
        for guard in self._guards.get((definition.component, definition.variable), ()):
            reason = guard(old, new)
            if reason is not None:
                return reason
        return None

    def write(self, changes: Iterable[tuple[VariableDef, str, str]]) -> None:
        """Store canonical values ``(definition, attribute type, value)`` in one commit, then
        tell the listeners of each value that changed. Raises StoreError when nothing could
        be written (then nothing changed)."""
        batch = [(d, t, v) for d, t, v in changes]
        durable = {
            storage_key(d.component, d.variable, t): v
            for d, t, v in batch
            if (a := d.attribute(t)) is not None and a.persistent
        }
        if durable:
            self._store.set_settings(durable)
        changed: list[tuple[VariableDef, str, str]] = []
        for definition, attribute_type, value in batch:
            slot = (definition.component, definition.variable, attribute_type)
            if self._values.get(slot) != value:
                changed.append((definition, attribute_type, value))
            self._values[slot] = value
        for definition, attribute_type, value in changed:
            self._notify(definition, attribute_type, value)

    def set_internal(
        self,
        component: ComponentKey | str,
        variable: VariableKey | str,
        value: str,
        attribute_type: str = "Actual",
    ) -> str:
        """Set a value the charger itself learned (the interval from BootNotification, the
        security profile after a reconnect), also of a ReadOnly attribute; checked against
        the characteristics like a CSMS write (raises InvalidValue). Returns the canonical
        text."""
        definition = self._def(component, variable)
        attribute = definition.attribute(attribute_type)
        if attribute is None or attribute.provider is not None or attribute.constant:
            raise KeyError(f"{definition.variable.text()}: no settable {attribute_type}")
        canonical = normalise(definition.characteristics, value)
        self.write([(definition, attribute_type, canonical)])
        return canonical

    def _notify(self, definition: VariableDef, attribute_type: str, value: str) -> None:
        for wanted, listener in self._listeners:
            if wanted != attribute_type:
                continue
            try:
                listener(definition.component, definition.variable, value)
            except Exception:
                # A listener's bug must not undo a stored change nor fail the CSMS request.
                LOG.exception(
                    "listener for %s/%s failed",
                    definition.component.text(),
                    definition.variable.text(),
                )
