"""Composition root: builds drivers, store, station, CSMS port and API from a Config."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from controller import connector as sm
from controller.clock import Clock, TrustedClock, iso_utc
from controller.config import Config
from controller.ocpp16.client import ConnectionOptions, Ocpp16Client, StationIdentity
from controller.ocpp16.journal import Journal
from controller.port import CsmsPort
from controller.settings import Settings, core_keys
from controller.standalone import StandalonePort
from controller.station import ConnectorHardware, Station
from controller.store import Store, open_store
from controller.tasks import TaskGroup
from hal.registry import DriverContext, create_driver

LOG = logging.getLogger(__name__)


def read_boot_id() -> str:
    """Linux boot id: tells a process restart (same boot) from a power cycle."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


LAST_GOOD_UTC_KEY = "clock.last_good_utc"


class SettingsTimeStore:
    """The clock's last known good time in the store's settings table (``TimeStore``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load_last_good(self) -> datetime | None:
        text = self.store.get_setting(LAST_GOOD_UTC_KEY)
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            LOG.warning("ignoring unreadable %s %r", LAST_GOOD_UTC_KEY, text)
            return None
        return moment if moment.tzinfo is not None else None

    def save_last_good(self, moment: datetime) -> None:
        self.store.set_setting(LAST_GOOD_UTC_KEY, iso_utc(moment))


class App:
    """One running charger: ``start``, then ``wait`` until stopped or reset."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        boot_id: str | None = None,
        on_frame: Callable[[str, str], None] | None = None,
        with_api: bool = True,
    ) -> None:
        self.config = config
        # No RTC on a Pi: time is untrusted until NTP or the CSMS confirms it (TrustedClock).
        self.clock = clock or TrustedClock(Clock())
        self.rng = rng
        self.boot_id = read_boot_id() if boot_id is None else boot_id
        self.on_frame = on_frame
        self.with_api = with_api
        self.shared: dict[str, Any] = {}
        self.store: Store | None = None
        self.station: Station | None = None
        self.port: CsmsPort | None = None
        self.client: Ocpp16Client | None = None
        self.api: Any = None
        self.reset_requested: str | None = None
        self._stopped = asyncio.Event()
        self._tasks = TaskGroup("app")

    def _build_devices(self) -> tuple[list[ConnectorHardware], Any]:
        hardware = []
        for cc in self.config.connectors:
            devices: dict[str, Any] = {}
            for role, dev in cc.devices.items():
                ctx = DriverContext(
                    connector_id=cc.connector_id,
                    monotonic_s=self.clock.monotonic_s,
                    shared=self.shared,
                    key_prefix=dev.key,
                )
                devices[role] = create_driver(role, dev.driver, dev.settings, ctx)
            hardware.append(
                ConnectorHardware(
                    contactor=devices["contactor"],
                    meter=devices["meter"],
                    vehicle=devices["vehicle"],
                    lock=devices.get("lock"),
                    indicator=devices.get("indicator"),
                    fault=devices.get("fault"),
                    max_current_a=cc.max_current_a,
                )
            )
        reader = None
        if self.config.reader is not None:
            dev = self.config.reader
            ctx = DriverContext(0, self.clock.monotonic_s, self.shared, dev.key)
            reader = create_driver("reader", dev.driver, dev.settings, ctx)
        return hardware, reader

    async def start(self) -> None:
        cfg = self.config
        self.store = open_store(cfg.storage_path)
        if isinstance(self.clock, TrustedClock):
            self.clock.attach_store(SettingsTimeStore(self.store))
            self._tasks.spawn(self.clock.keeper(), name="clock-keeper")
        settings = Settings(self.store, core_keys(len(cfg.connectors)), cfg.ocpp_overrides)
        hardware, reader = self._build_devices()
        self.station = Station(
            connectors=hardware,
            reader=reader,
            settings=settings,
            store=self.store,
            clock=self.clock,
            boot_id=self.boot_id,
            tick_interval_s=cfg.tick_interval_s,
            resume_transactions=cfg.resume_transactions,
        )
        if cfg.csms is not None:
            self.client = Ocpp16Client(
                identity=StationIdentity(
                    cfg.station_id,
                    cfg.vendor,
                    cfg.model,
                    cfg.serial_number,
                    cfg.firmware_version,
                ),
                options=ConnectionOptions(
                    csms_url=cfg.csms.url,
                    password=cfg.csms.password,
                    reconnect_min_s=cfg.csms.reconnect_min_s,
                    reconnect_max_s=cfg.csms.reconnect_max_s,
                    response_timeout_s=cfg.csms.response_timeout_s,
                ),
                station=self.station,
                store=self.store,
                settings=settings,
                clock=self.clock,
                rng=self.rng,
                on_frame=self.on_frame,
                on_reset=self._on_reset,
            )
            self.port = self.client
        else:
            journal = Journal(self.store, settings, boot_id=self.boot_id)
            self.port = StandalonePort(journal, self.store, cfg.standalone)
        self.station.attach_port(self.port)
        await self.station.start()
        if self.client is not None:
            self._tasks.spawn(self.client.run(), name="ocpp", critical=True)
        if self.with_api:
            from controller.api import Api

            self.api = Api(self)
            await self.api.start(cfg.api_host, cfg.api_port)
        LOG.info(
            "evsed started: station %s, %d connector(s), %s",
            cfg.station_id,
            len(cfg.connectors),
            f"CSMS {cfg.csms.url}" if cfg.csms else "standalone",
        )

    def _on_reset(self, kind: str) -> None:
        self.reset_requested = kind
        self._stopped.set()

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        """Return when stopped, reset, or when a critical task died."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stopped.wait())]
        if self.station is not None:
            waiters.append(asyncio.ensure_future(self._watch_failures()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _watch_failures(self) -> None:
        while True:
            for group in (self._tasks, self.station._tasks if self.station else None):
                if group is not None and group.failed is not None:
                    raise RuntimeError("a critical task failed") from await group.failed
            await asyncio.sleep(0.5)

    async def _close_drivers(self) -> None:
        """Release the hardware: contactors open first, pilots at 0 A, ports closed."""
        assert self.station is not None
        for c in self.station.connectors.values():
            devices: list[Any] = [
                c.hw.contactor,
                c.hw.vehicle,
                c.hw.meter,
                c.hw.lock,
                c.hw.indicator,
                c.hw.fault,
            ]
            for device in devices:
                if device is None:
                    continue
                try:
                    for name in ("aclose", "close_driver", "close"):
                        method = getattr(device, name, None)
                        if method is not None:
                            result = method()
                            if asyncio.iscoroutine(result):
                                await result
                            break
                except Exception:
                    LOG.exception("closing %s failed", type(device).__name__)
        reader = self.station.reader
        close = getattr(reader, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                LOG.exception("closing the reader failed")

    async def stop(self, reason: sm.StopReason | None = sm.StopReason.REBOOT) -> None:
        """Stop charging (``reason`` None = leave transactions to crash recovery)."""
        if self.station is not None and self.station.started:
            await self.station.stop(reason)
        if self.client is not None:
            # Give just-queued StopTransactions a moment to go out.
            for _ in range(20):
                if (
                    self.client.queued_messages() == 0
                    or self.client.connection_state() != "accepted"
                ):
                    break
                await asyncio.sleep(0.1)
            await self.client.close()
        await self._tasks.cancel_all()
        if self.api is not None:
            await self.api.stop()
        if self.station is not None:
            await self._close_drivers()
        if self.store is not None:
            if isinstance(self.clock, TrustedClock):
                self.clock.persist()
                self.clock.attach_store(None)
            self.store.close()
            self.store = None
