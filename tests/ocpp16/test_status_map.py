"""The 1.6 words for the core's phases, fault kinds and stop causes (controller/ocpp16/status.py):
every value the core or the HAL can produce has a mapping, and every mapping is a value the
official 1.6 schemas allow (StatusNotification 7.7 / 7.6, StopTransaction 7.40)."""

from __future__ import annotations

from ocpp.messages import MessageType, get_validator

from controller.core.connector import Phase, StopCause
from controller.ocpp16 import status as status16
from hal.base import FaultKind


def _enum(action: str, field: str) -> set[str]:
    schema = get_validator(MessageType.Call, action, "1.6").schema
    return set(schema["properties"][field]["enum"])


def test_every_phase_is_a_1_6_status() -> None:
    allowed = _enum("StatusNotification", "status")
    assert set(status16.STATUS) == set(Phase)
    assert set(status16.STATUS.values()) == allowed  # and every 1.6 status is reachable


def test_every_fault_kind_is_a_1_6_error_code() -> None:
    allowed = _enum("StatusNotification", "errorCode")
    assert set(status16.ERROR_CODE) == set(FaultKind)
    assert set(status16.ERROR_CODE.values()) <= allowed
    # The adapter's own codes: NoError, LocalListConflict (3.5.2), ResetFailure (unused).
    assert allowed - set(status16.ERROR_CODE.values()) == {
        "NoError",
        "LocalListConflict",
        "ResetFailure",
    }
    assert status16.status_of(Phase.AVAILABLE, None) == ("Available", "NoError")
    assert status16.status_of(Phase.SUSPENDED_EVSE, FaultKind.EV_COMMUNICATION) == (
        "SuspendedEVSE",
        "EVCommunicationError",
    )


def test_every_stop_cause_is_a_1_6_reason() -> None:
    allowed = _enum("StopTransaction", "reason")
    assert set(status16.STOP_REASON) == set(StopCause)
    assert set(status16.STOP_REASON.values()) == allowed
