"""Shared fixtures: a real dev CSMS on 127.0.0.1 and an in-process charger on a manual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from tests.procs import FAST_RETRY_BACKOFF_201

STATION_ID = "CP-TEST"
CARD = "04A1B2C3"


def charger_config(
    tmp_path: Path,
    csms_url: str | None,
    *,
    connectors: int = 1,
    ocpp: dict[str, Any] | None = None,
    password: str | None = None,
    site: dict[str, Any] | None = None,
    connector_extra: dict[str, Any] | None = None,
    **csms_extra: Any,
) -> dict[str, Any]:
    """A complete simulated-charger configuration dict (parse() it to get a Config);
    ``connector_extra`` is merged into every connector."""
    data: dict[str, Any] = {
        "station": {"id": STATION_ID, "storage": str(tmp_path / "evsed.db")},
        "api": {"host": "127.0.0.1", "port": 0},
        "reader": {"driver": "sim"},
        "connectors": [
            {
                "max_current_a": 16,
                "contactor": {"driver": "sim"},
                "meter": {"driver": "sim", "initial_energy_wh": 1000},
                "vehicle": {"driver": "sim", "power_w": 11000},
                "lock": {"driver": "sim"},
                "indicator": {"driver": "sim"},
                "fault": {"driver": "sim"},
                **(connector_extra or {}),
            }
            for _ in range(connectors)
        ],
        "ocpp": {"MeterValueSampleInterval": 60, "HeartbeatInterval": 3600, **(ocpp or {})},
    }
    versions = csms_extra.get("ocpp_version", "1.6")
    if "2.0.1" in ([versions] if isinstance(versions, str) else versions):
        # A 2.0.1 charger reconnects after RetryBackOff* (Part 4 5.3), 10-20 s by default:
        # at once here (the back-off's 0.1 s floor), like the [csms] back-off above for 1.6.
        comm = data["ocpp"].get("OCPPCommCtrlr", {})
        data["ocpp"]["OCPPCommCtrlr"] = {**FAST_RETRY_BACKOFF_201, **comm}
    if site is not None:
        data["site"] = site
    if csms_url is not None:
        data["csms"] = {
            "url": csms_url,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "response_timeout_s": 2.0,
            **csms_extra,
        }
        if password:
            data["csms"]["password"] = password
    return data


class Harness:
    """A running charger (App) plus helpers to act on its simulated hardware."""

    def __init__(self, app: App, clock: ManualClock, csms: DevCsms | None) -> None:
        self.app = app
        self.clock = clock
        self.csms = csms

    @property
    def station(self) -> Any:
        return self.app.station

    def rig(self, connector_id: int = 1) -> Any:
        return self.app.shared[f"sim.rig.{connector_id}"]

    def plug(self, connector_id: int = 1) -> None:
        self.rig(connector_id).vehicle.plug()

    def unplug(self, connector_id: int = 1) -> None:
        self.rig(connector_id).vehicle.unplug()

    def tap(self, uid: str = CARD) -> None:
        assert self.app.shared["sim.reader"].present(uid)

    def connector(self, connector_id: int = 1) -> Any:
        return self.app.station.connectors[connector_id]

    async def advance(self, seconds: float, step_s: float = 1.0) -> None:
        """Move simulated time, yielding real time so WebSocket frames get through."""
        remaining = seconds
        while remaining > 0:
            step = min(step_s, remaining)
            await self.clock.advance(step, step_s=step)
            await asyncio.sleep(0.005)
            remaining -= step

    async def settle(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait (real time) until ``predicate`` holds; time on the manual clock stays put."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)

    def frames(self, action: str) -> list[Any]:
        assert self.csms is not None
        return [f for f in self.csms.received if f.action == action]


@pytest.fixture
async def csms() -> AsyncIterator[DevCsms]:
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as server:
        yield server


@pytest.fixture
async def charger(tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: ``await charger(csms, **config_kwargs)`` -> Harness; apps stop at teardown."""
    apps: list[App] = []

    async def factory(
        csms: DevCsms | None,
        *,
        wait_accepted: bool = True,
        boot_id: str = "boot-1",
        **kwargs: Any,
    ) -> Harness:
        clock = ManualClock()
        config = parse(charger_config(tmp_path, csms.url if csms else None, **kwargs))
        app = App(config, clock=clock, boot_id=boot_id)
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        if csms is not None and wait_accepted:
            await csms.wait_connected(STATION_ID, timeout_s=5)
            await h.settle(
                lambda: app.port is not None and app.port.connection_state() == "accepted"
            )
            # Initial StatusNotifications for connector 0 and every connector.
            n = 1 + kwargs.get("connectors", 1)
            await h.settle(lambda: len(h.frames("StatusNotification")) >= n)
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)
