"""What the simulated drivers do: scripted steps from TOML or a seeded random script."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hal.base import FAULT_KIND_NAMES

LOG = logging.getLogger(__name__)

# The faults a random driver meets (a charger's everyday faults; Tamper raises a security
# event, which a load test asks for explicitly with a scripted step).
RANDOM_FAULT_CODES = (
    "GroundFailure",
    "OverCurrentFailure",
    "HighTemperature",
    "EVCommunicationError",
)
# How long a tap may take to start or stop a transaction (the CSMS answers Authorize first).
TAP_TIMEOUT_S = 60.0
# How long a station may take to be accepted again after an offline period.
ONLINE_TIMEOUT_S = 120.0
# A driver's pauses inside a session: after plugging in and before unplugging.
HANDLING_S = 2.0
STEP_KINDS = (
    "plug",
    "unplug",
    "tap",
    "charge",
    "wait",
    "fault",
    "clear",
    "offline",
    "session",
)
_STEP_KEYS = {"do", "s", "power_w", "id_tag", "code", "connector"}


@dataclass(frozen=True)
class Step:
    """One driver action. ``s``: how long (charge, wait, offline, session; a fault is
    cleared after ``s`` when given); ``power_w``: the car's on-board charger power."""

    do: str
    s: float = 0.0
    power_w: float | None = None
    id_tag: str | None = None
    code: str | None = None
    connector: int = 1


def parse_steps(raw: list[Any]) -> tuple[Step, ...]:
    """[[behaviour.steps]] tables; raises ValueError naming the step and the fix."""
    steps = []
    for index, item in enumerate(raw, start=1):
        where = f"step {index}"
        if not isinstance(item, dict):
            raise ValueError(f'{where}: must be a table, e.g. {{ do = "plug" }}')
        for name in item:
            if name not in _STEP_KEYS:
                raise ValueError(
                    f"{where}: unknown key {name!r}; allowed: {', '.join(sorted(_STEP_KEYS))}"
                )
        do = item.get("do")
        if do not in STEP_KINDS:
            raise ValueError(f"{where}: unknown step {do!r}; use one of {', '.join(STEP_KINDS)}")
        s = item.get("s", 0.0)
        if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= 7 * 86400:
            raise ValueError(f"{where}: s must be seconds between 0 and 604800")
        if do in ("charge", "wait", "offline", "session") and "s" not in item:
            raise ValueError(f'{where}: "{do}" needs s (seconds)')
        power_w = item.get("power_w")
        if power_w is not None and (
            isinstance(power_w, bool) or not isinstance(power_w, int | float) or power_w < 0
        ):
            raise ValueError(f"{where}: power_w must be a number of watts")
        code = item.get("code")
        if do == "fault" and code not in FAULT_KIND_NAMES:
            raise ValueError(
                f"{where}: fault needs code, one of {', '.join(sorted(FAULT_KIND_NAMES))}"
            )
        id_tag = item.get("id_tag")
        if id_tag is not None and not isinstance(id_tag, str):
            raise ValueError(f"{where}: id_tag must be a string (a card UID in hex)")
        connector = item.get("connector", 1)
        if isinstance(connector, bool) or not isinstance(connector, int) or connector != 1:
            raise ValueError(f"{where}: connector must be 1 (fleet stations have one connector)")
        steps.append(
            Step(
                do,
                float(s),
                None if power_w is None else float(power_w),
                id_tag,
                code,
                connector,
            )
        )
    return tuple(steps)


def random_steps(
    rng: random.Random,
    *,
    idle_s: tuple[float, float],
    session_s: tuple[float, float],
    power_w: tuple[float, float],
    fault_probability: float,
    fault_s: tuple[float, float],
    offline_probability: float,
    offline_s: tuple[float, float],
) -> Iterator[Step]:
    """An endless driver script drawn from ``rng`` (one RNG per station: the same seed gives
    the same script, whatever the other stations do)."""
    while True:
        yield Step("wait", rng.uniform(*idle_s))
        draw = rng.random()
        if draw < fault_probability:
            yield Step("fault", rng.uniform(*fault_s), code=rng.choice(RANDOM_FAULT_CODES))
        elif draw < fault_probability + offline_probability:
            yield Step("offline", rng.uniform(*offline_s))
        else:
            yield Step("session", rng.uniform(*session_s), power_w=round(rng.uniform(*power_w)))


def scripted_steps(steps: tuple[Step, ...], repeat: bool) -> Iterator[Step]:
    while True:
        yield from steps
        if not repeat or not steps:
            return


class Driver(Protocol):
    """What a script acts on: one simulated station (controller/fleet/station.py)."""

    card: str

    def plug(self, connector_id: int) -> None: ...
    def unplug(self, connector_id: int) -> None: ...
    def set_power(self, connector_id: int, power_w: float) -> None: ...
    async def tap(self, id_tag: str, timeout_s: float) -> bool: ...
    def fault(self, connector_id: int, code: str | None) -> None: ...
    async def hold_offline(self) -> None: ...
    def release_offline(self) -> None: ...
    async def wait_online(self, timeout_s: float) -> bool: ...
    async def sleep(self, seconds: float) -> None: ...
    def step_failed(self, step: Step, why: str) -> None: ...
    def session_done(self) -> None: ...


async def run_steps(steps: Iterable[Step], driver: Driver, speed: float) -> None:
    """Play ``steps`` on ``driver``; waits are divided by ``speed``. A step that does not
    have its effect (a tap that starts nothing) is reported and the script goes on."""
    for step in steps:
        await run_step(step, driver, speed)


async def run_step(step: Step, driver: Driver, speed: float) -> None:
    cid = step.connector
    wait_s = step.s / speed
    if step.do == "plug":
        driver.plug(cid)
    elif step.do == "unplug":
        driver.unplug(cid)
    elif step.do == "tap":
        if not await driver.tap(step.id_tag or driver.card, TAP_TIMEOUT_S):
            driver.step_failed(step, "the tap started or stopped no transaction")
    elif step.do == "charge":
        if step.power_w is not None:
            driver.set_power(cid, step.power_w)
        await driver.sleep(wait_s)
    elif step.do == "wait":
        await driver.sleep(wait_s)
    elif step.do == "fault":
        driver.fault(cid, step.code)
        if step.s > 0:
            await driver.sleep(wait_s)
            driver.fault(cid, None)
    elif step.do == "clear":
        driver.fault(cid, None)
    elif step.do == "offline":
        await driver.hold_offline()
        try:
            await driver.sleep(wait_s)
        finally:
            driver.release_offline()
        # The next step waits for the connection: what the CSMS sees after an offline
        # period does not depend on how fast the reconnection was.
        if not await driver.wait_online(ONLINE_TIMEOUT_S):
            driver.step_failed(step, "the CSMS did not accept the station again")
    elif step.do == "session":
        await _session(step, driver, speed)
    else:  # parse_steps admits only STEP_KINDS
        raise ValueError(f"unknown step {step.do!r}")


async def _session(step: Step, driver: Driver, speed: float) -> None:
    """Plug, tap, charge for ``s``, tap, unplug: one charging session."""
    cid = step.connector
    card = step.id_tag or driver.card
    if step.power_w is not None:
        driver.set_power(cid, step.power_w)
    driver.plug(cid)
    await driver.sleep(HANDLING_S / speed)
    if not await driver.tap(card, TAP_TIMEOUT_S):
        driver.step_failed(step, "the tap started no transaction")
        driver.unplug(cid)
        return
    await driver.sleep(step.s / speed)
    if not await driver.tap(card, TAP_TIMEOUT_S):
        driver.step_failed(step, "the tap stopped no transaction")
    else:
        driver.session_done()
    await driver.sleep(HANDLING_S / speed)
    driver.unplug(cid)
