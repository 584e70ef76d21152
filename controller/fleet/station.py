"""One simulated charger of the fleet: a full evsed App on sim drivers, played by a script."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.app import App
from controller.config import parse
from controller.core import connector as sm
from controller.fleet.behaviour import Step, random_steps, run_steps, scripted_steps
from controller.fleet.config import FleetConfig
from controller.fleet.report import FleetStats, FrameObserver
from controller.ops.sdnotify import Notifier
from controller.runtime.clock import Clock
from controller.storage.store import StoreTuning
from hal.base import VehicleState

LOG = logging.getLogger(__name__)

# The station whose task logs a record: set while a station starts (its tasks copy the
# context), read by StationLogFilter, so 1,000 stations' log lines say whose they are.
CURRENT_STATION: contextvars.ContextVar[str] = contextvars.ContextVar("station", default="-")


class StationLogFilter(logging.Filter):
    """Adds ``record.station`` (the fleet station's identity, "-" outside any station)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.station = CURRENT_STATION.get()
        return True


# What a fleet station's OCPP configuration starts with (the fleet TOML's [station.ocpp]
# overrides it): a sample a minute, and the driver's card works while the CSMS is away.
DEFAULT_OCPP: dict[str, Any] = {
    "MeterValueSampleInterval": 60,
    "HeartbeatInterval": 300,
    "LocalAuthorizeOffline": True,
    "AllowOfflineTxForUnknownId": True,
}
# The same for a 2.0.1 station, as device-model variables by component: a TransactionEvent
# Updated a minute and an unknown card starts offline (C15; the driver's card is cached
# after its first online start anyway); the heartbeat interval is the CSMS's (B01.FR.04).
DEFAULT_DEVICE_MODEL: dict[str, dict[str, Any]] = {
    "SampledDataCtrlr": {"TxUpdatedInterval": 60},
    "AuthCtrlr": {"LocalAuthorizeOffline": True, "OfflineTxForUnknownIdEnabled": True},
}
INITIAL_ENERGY_WH = 1_000_000
# How often a station waiting to be online again looks at its connection state.
POLL_S = 0.1
# Prepared statements kept per station store: what a charging session uses, not the
# migrations' one-off statements (Python's default 128 costs ~130 KiB per store).
STATEMENTS = 32


def station_id(prefix: str, index: int) -> str:
    """PREFIX-0001 for index 0: the identity in the CSMS URL."""
    return f"{prefix}-{index + 1:04d}"


def card_of(index: int) -> str:
    """The station's driver's card: a 4-byte UID in hex, unique per station."""
    return f"F1{index:06X}"


def station_rng(seed: int, index: int, purpose: str) -> random.Random:
    """A per-station RNG from the fleet seed (string seeds hash with SHA-512: stable across
    runs and Python versions), so one station's draws never depend on another's."""
    return random.Random(f"{seed}:{index}:{purpose}")


def station_config(config: FleetConfig, index: int, work_dir: Path) -> dict[str, Any]:
    sid = station_id(config.prefix, index)
    home = work_dir / sid
    return {
        "station": {
            "id": sid,
            "vendor": "evsed",
            "model": "fleet",
            "serial_number": sid,
            "storage": str(home / "evsed.db"),
        },
        "csms": {
            "url": config.csms_url,
            "ocpp_version": config.protocol,
            "reconnect_min_s": config.reconnect_min_s,
            "reconnect_max_s": max(config.reconnect_min_s, config.reconnect_max_s),
            "response_timeout_s": 30.0,
        },
        "reader": {"driver": "sim"},
        "connectors": [
            {
                "max_current_a": 32,
                "contactor": {"driver": "sim"},
                "meter": {"driver": "sim", "initial_energy_wh": INITIAL_ENERGY_WH},
                "vehicle": {"driver": "sim", "power_w": 11000, "phases": 3},
                "lock": {"driver": "sim"},
                "indicator": {"driver": "sim"},
                "fault": {"driver": "sim"},
            }
        ],
        "maintenance": {"firmware_dir": str(home / "firmware")},
        # A 2.0.1 station reads its device model instead (device_model_values).
        "ocpp": {**DEFAULT_OCPP, **config.ocpp} if config.protocol == "1.6" else {},
    }


def device_model_values(config: FleetConfig) -> dict[str, dict[str, Any]]:
    """A 2.0.1 station's device-model variables: the defaults, then [station.ocpp]'s."""
    values = {component: dict(variables) for component, variables in DEFAULT_DEVICE_MODEL.items()}
    for component, variables in config.ocpp.items():
        values.setdefault(component, {}).update(variables)
    return values


def _dm_text(value: Any) -> str:
    """A TOML value as device-model text (booleans are "true"/"false")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class FleetStation:
    """A station and its driver: ``start`` boots the App, ``run`` plays the script,
    ``stop`` ends it cleanly (sessions stopped, queue drained, connection closed)."""

    def __init__(
        self,
        index: int,
        config: FleetConfig,
        work_dir: Path,
        stats: FleetStats,
        clock: Clock,
    ) -> None:
        self.index = index
        self.fleet = config
        self.station_id = station_id(config.prefix, index)
        self.card = card_of(index)
        self.stats = stats
        self.observer: FrameObserver = stats.observer(self.station_id)
        self.app = App(
            parse(station_config(config, index, work_dir)),
            clock=clock,
            rng=station_rng(config.seed, index, "link"),
            boot_id="fleet",
            on_frame=self._on_frame,
            with_api=False,
            notifier=Notifier(None),
            watchdog_s=0,
            store_tuning=StoreTuning(
                durable=False, cache_kib=config.store_cache_kib, cached_statements=STATEMENTS
            ),
            ws_compression=config.compression,
        )
        self._power_w: float | None = None
        self._plugged = False
        self._changed = asyncio.Event()  # a command ran (session started or ended)
        self._frame = asyncio.Event()  # a frame went out or came in
        self.started = False
        self.sessions_done = 0

    # --- lifecycle

    async def start(self) -> None:
        await self.app.start()
        assert self.app.station is not None
        self._configure_device_model()
        self.app.station.add_listener(self._on_command)
        self.started = True

    def _configure_device_model(self) -> None:
        """A 2.0.1 station's variables, as its owner would set them before the first driver
        comes (the script starts after the boot); they are stored like a CSMS's changes."""
        client = self.app.client201
        if client is None or client.device_model is None:
            return
        model = client.device_model
        for component, variables in device_model_values(self.fleet).items():
            for variable, value in variables.items():
                try:
                    model.set_internal(component, variable, _dm_text(value))
                except (KeyError, ValueError) as exc:
                    raise ValueError(
                        f"[station.ocpp.{component}] {variable} = {value!r}: {exc}"
                    ) from None

    def steps(self) -> Iterator[Step]:
        cfg = self.fleet
        if cfg.mode == "scripted":
            return scripted_steps(cfg.steps, cfg.repeat)
        r = cfg.random
        return random_steps(
            station_rng(cfg.seed, self.index, "driver"),
            idle_s=(r.idle_s.lo, r.idle_s.hi),
            session_s=(r.session_s.lo, r.session_s.hi),
            power_w=(r.power_w.lo, r.power_w.hi),
            fault_probability=r.fault_probability,
            fault_s=(r.fault_s.lo, r.fault_s.hi),
            offline_probability=r.offline_probability,
            offline_s=(r.offline_s.lo, r.offline_s.hi),
        )

    async def run(self) -> None:
        """Play the script once the CSMS accepted the station (or at once if never)."""
        await run_steps(self.steps(), self, self.fleet.speed)

    def end_sessions(self, reason: sm.StopCause = sm.StopCause.LOCAL) -> int:
        """Stop running transactions (the fleet ends) and release a held connection."""
        station = self.app.station
        client = self.app.adapter
        if client is not None:
            client.release_offline()
        if station is None:
            return 0
        ended = 0
        for tx_key in station.running_transactions().values():
            if station.stop_transaction(tx_key, reason):
                ended += 1
        return ended

    async def stop(self) -> None:
        await self.app.stop(reason=sm.StopCause.OTHER)

    # --- figures

    def connection_state(self) -> str:
        client = self.app.adapter
        return "offline" if client is None else client.connection_state()

    def queued(self) -> int:
        client = self.app.adapter
        return 0 if client is None or self.app.store is None else client.queued_messages()

    def sessions_running(self) -> int:
        station = self.app.station
        return 0 if station is None else len(station.running_transactions())

    def energy_wh(self) -> float:
        """Energy the simulated meter counted since the fleet started."""
        total = 0.0
        for hw in self.app.hardware:
            total += float(getattr(hw.meter, "energy_wh", INITIAL_ENERGY_WH)) - INITIAL_ENERGY_WH
        return total

    # --- Driver (controller/fleet/behaviour.py)

    def _on_frame(self, direction: str, text: str) -> None:
        self.observer(direction, text)
        self._frame.set()

    def _on_command(self, connector_id: int, command: sm.Command) -> None:
        self._changed.set()

    def plug(self, connector_id: int) -> None:
        self._plugged = True
        self.app.sim.vehicle(connector_id, VehicleState.C, self._power_w)

    def unplug(self, connector_id: int) -> None:
        self._plugged = False
        self.app.sim.unplug(connector_id)

    def set_power(self, connector_id: int, power_w: float) -> None:
        self._power_w = power_w
        if self._plugged:
            self.app.sim.vehicle(connector_id, VehicleState.C, power_w)

    async def tap(self, id_tag: str, timeout_s: float) -> bool:
        """Present the card; True once a transaction started or stopped because of it."""
        station = self.app.station
        assert station is not None
        before = station.running_transactions()
        self._changed.clear()
        if not self.app.sim.card(id_tag):
            return False
        try:
            async with asyncio.timeout(timeout_s):
                while station.running_transactions() == before:
                    await self._changed.wait()
                    self._changed.clear()
        except TimeoutError:
            return False
        return True

    def fault(self, connector_id: int, code: str | None) -> None:
        self.app.sim.fault(connector_id, code)

    async def hold_offline(self) -> None:
        if self.app.adapter is not None:
            await self.app.adapter.hold_offline("fleet: offline period")

    def release_offline(self) -> None:
        if self.app.adapter is not None:
            self.app.adapter.release_offline()

    async def wait_ready(self) -> None:
        """Until the CSMS accepted the boot and the boot statuses (the station's and each
        connector's) went out: a script that starts earlier would have its first status
        replace a boot status not yet sent, and the CSMS's sequence would depend on timing.
        A 2.0.1 station reports each connector only (no station-wide status, B01.FR.05)."""
        wanted = len(self.app.hardware) + (1 if self.fleet.protocol == "1.6" else 0)
        while not (self.observer.booted and self.observer.statuses_sent >= wanted):
            self._frame.clear()
            await self._frame.wait()

    async def wait_online(self, timeout_s: float) -> bool:
        """Until the CSMS accepted the connection again (False: not within ``timeout_s``)."""
        client = self.app.adapter
        if client is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                # 1.6: Accepted comes before the statuses it sends, a frame follows it. A 2.0.1
                # station after a short outage sends nothing when nothing changed (no boot,
                # B04.FR.02): the state is looked at again every POLL_S as well.
                while client.connection_state() != "accepted":
                    self._frame.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._frame.wait(), POLL_S)
        except TimeoutError:
            return False
        return True

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def step_failed(self, step: Step, why: str) -> None:
        self.stats.step_failures += 1
        self.stats.error(f"{self.station_id}: {step.do}: {why}")

    def session_done(self) -> None:
        self.sessions_done += 1
        self.stats.sessions_done += 1
