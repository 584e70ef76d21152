"""The 2.0.1 device model's SecurityCtrlr as the connection's security settings
(controller.csms.secprofile.SecuritySettings): SecurityProfile and BasicAuthPassword."""

from __future__ import annotations

from collections.abc import Callable

from controller.ocpp201.dm import ComponentKey, DeviceModel, VariableKey

COMPONENT = "SecurityCtrlr"
# The neutral names of csms/secprofile.py -> SecurityCtrlr variables.
VARIABLES = {"SecurityProfile": "SecurityProfile", "AuthorizationKey": "BasicAuthPassword"}
_NAMES = {variable: name for name, variable in VARIABLES.items()}


class DeviceModelSecurity:
    """SecurityProfile (ReadOnly in the model: raised by the CSMS only through a new network
    profile, B09/B10, controller/ocpp201/network.py) and BasicAuthPassword (WriteOnly:
    SetVariables changes it, A01, and the connection reconnects with it, falling back to the
    previous password if the CSMS refuses the new one). ``configured_profile``: the TOML's
    security_profile."""

    def __init__(self, model: DeviceModel, configured_profile: int) -> None:
        self._model = model
        self._configured = str(configured_profile)

    def get(self, name: str) -> str | None:
        return self._model.get(COMPONENT, VARIABLES[name])

    def get_int(self, name: str) -> int:
        text = self.get(name)
        return int(text) if text else 0

    def configured(self, name: str) -> str:
        if name != "SecurityProfile":
            raise KeyError(name)
        return self._configured

    def set_internal(self, name: str, value: str) -> None:
        self._model.set_internal(COMPONENT, VARIABLES[name], value)

    def add_guard(self, name: str, guard: Callable[[str, str], str | None]) -> None:
        # A WriteOnly password has no old value the first time: "" stands for none.
        self._model.add_guard(COMPONENT, VARIABLES[name], lambda old, new: guard(old or "", new))

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        def changed(component: ComponentKey, variable: VariableKey, value: str) -> None:
            name = _NAMES.get(variable.name)
            if component.name == COMPONENT and name is not None:
                listener(name, value)

        self._model.on_change(changed)
