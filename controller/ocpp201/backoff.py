"""The 2.0.1 reconnect back-off from OCPPCommCtrlr.RetryBackOff* (Part 4 5.3, errata 4.12)."""

from __future__ import annotations

import logging
import random

from controller.ocpp201.dm import DeviceModel

LOG = logging.getLogger(__name__)

COMPONENT = "OCPPCommCtrlr"
# Never sooner than this after an attempt, also with RetryBackOffWaitMinimum and
# RetryBackOffRandomRange 0: a refused attempt must not turn into a busy loop against the CSMS.
MIN_WAIT_S = 0.1
# The device model's defaults, for a variable that cannot be read.
DEFAULT_WAIT_MINIMUM_S = 10
DEFAULT_REPEAT_TIMES = 5
DEFAULT_RANDOM_RANGE_S = 10


class RetryBackOff:
    """The wait before reconnect attempt ``attempt`` (0: the first after a lost or a
    successful connection): RetryBackOffWaitMinimum doubled after each failed attempt, at
    most RetryBackOffRepeatTimes times, plus a new random part of up to
    RetryBackOffRandomRange seconds each time. The variables are read per attempt, so a
    SetVariables applies to the next one."""

    def __init__(self, model: DeviceModel, rng: random.Random) -> None:
        self._model = model
        self._rng = rng

    def _int(self, name: str, default: int) -> int:
        try:
            return max(0, self._model.get_int(COMPONENT, name))
        except (KeyError, ValueError):
            return default

    def __call__(self, attempt: int) -> float:
        wait_minimum_s = self._int("RetryBackOffWaitMinimum", DEFAULT_WAIT_MINIMUM_S)
        repeat_times = self._int("RetryBackOffRepeatTimes", DEFAULT_REPEAT_TIMES)
        random_range_s = self._int("RetryBackOffRandomRange", DEFAULT_RANDOM_RANGE_S)
        doublings = min(max(0, attempt), repeat_times)
        fixed_s = wait_minimum_s * 2**doublings
        return max(MIN_WAIT_S, fixed_s + self._rng.uniform(0, random_range_s))
