"""Composition root: builds drivers, store, station, CSMS port and API from a Config."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.config import Config, CsmsConfig
from controller.core import connector as sm
from controller.core.ownership import Command
from controller.core.policy import ChargingPolicy
from controller.core.port import CsmsPort
from controller.core.security import SecurityEventKind
from controller.core.timestamps import iso_utc, parse_iso
from controller.csms.connection import ConnectionOptions
from controller.csms.hub import BackendHub
from controller.csms.versions import VersionChoice
from controller.maintenance import FIRMWARE_JOB_KEY
from controller.ocpp16 import FIRMWARE_UNSENT_KEY
from controller.ocpp16 import policy as policy16
from controller.ocpp16.client import Ocpp16Client, StationIdentity
from controller.ocpp16.settings import Settings, core_keys
from controller.ocpp201 import FIRMWARE_UNSENT_KEY as FIRMWARE_UNSENT_KEY_201
from controller.ops import logsetup
from controller.ops.sdnotify import Notifier, run_status, run_watchdog, watchdog_timeout_s
from controller.runtime.clock import Clock, TrustedClock
from controller.runtime.station import ConnectorHardware, Station
from controller.runtime.tasks import TaskGroup
from controller.security.certtypes import CertStoreHandle
from controller.security.log import SecurityLog

if TYPE_CHECKING:
    from controller.maintenance.diagnostics import DiagnosticsSources
    from controller.maintenance.firmware import FirmwareUpdater
    from controller.maintenance.installer import Installer
    from controller.ocpp201.client import Ocpp201Client
    from controller.security.certstore import CertStore
from controller.security.material import FirmwareTrust, TlsMaterial
from controller.security.tls import FileTlsMaterial, StoreTlsMaterial
from controller.standalone import StandalonePort
from controller.storage.journal import TxJournal
from controller.storage.store import Store, StoreTuning, open_store
from hal.base import FaultKind
from hal.registry import DriverContext, create_driver
from hal.sim import SimControl

LOG = logging.getLogger(__name__)


def read_boot_id() -> str:
    """Linux boot id: tells a process restart (same boot) from a power cycle."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


LAST_GOOD_UTC_KEY = "clock.last_good_utc"
# Whose journal entries a diagnostics archive holds (the unit `evsed install` writes).
JOURNAL_UNIT = "evsed.service"


def evsed_version() -> str:
    # Read on request (status, diagnostics), never at start: the metadata lookup scans
    # sys.path (a few ms of CPU on a Pi Zero class board).
    import importlib.metadata

    try:
        return importlib.metadata.version("evsed")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


# systemd (controller.ops.sdnotify). STATUS= once every contactor was commanded open and reads
# open, before READY=1; bench/ready_time.py and the tests look for this text.
CONTACTORS_OPEN_STATUS = "starting: every contactor verified open"
# The station's tick loop silent for longer than this (and 10 ticks) means it is stuck: the
# watchdog ping stops and systemd restarts the service. A tick reads every meter; with the
# default Modbus settings a read gives up after about 2 s. Longer configured timeouts raise
# the limit (App.tick_stall_limit_s): a silent meter holding a tick that long is no hang.
TICK_STALL_LIMIT_S = 60.0
# systemd's STATUS= follows the connectors and the CSMS state at once (events); this is how
# often it looks anyway, for what changes without an event (the queue length).
STATUS_REFRESH_S = 30.0
# `evsed run` starts the local API (aiohttp: the largest import of a start) once the first
# BootNotification went out or the first connection attempt failed, at the latest this long
# after the start (a connect that hangs until its own timeout).
API_AFTER_BOOT_MAX_WAIT_S = 10.0


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
        api_after_boot: bool = False,
        notifier: Notifier | None = None,
        watchdog_s: float | None = None,
        installer: Installer | None = None,
        firmware_trust: FirmwareTrust | None = None,
        store_tuning: StoreTuning | None = None,
        ws_compression: str = "default",
    ) -> None:
        self.config = config
        # Many stations in one process (evsed fleet) tune their stores; a charger never does.
        self.store_tuning = store_tuning
        self.ws_compression = ws_compression  # ConnectionOptions.compression
        # No RTC on a Pi: time is untrusted until NTP or the CSMS confirms it (TrustedClock).
        self.clock = clock or TrustedClock(Clock())
        self.rng = rng
        self.boot_id = read_boot_id() if boot_id is None else boot_id
        self.on_frame = on_frame
        self.with_api = with_api
        # The API after the first BootNotification (or failed attempt): `evsed run` on a
        # small board (issue 16); in-process tests want it up when start() returns.
        self.api_after_boot = api_after_boot
        self.api_started = asyncio.Event()
        self._frame_out: asyncio.Event | None = None
        self.shared: dict[str, Any] = {}
        # The local API and the demo drive simulated devices through this, not the rigs.
        self.sim = SimControl(self.shared)
        self.store: Store | None = None
        self.station: Station | None = None
        self.hardware: list[ConnectorHardware] = []
        self.port: CsmsPort | None = None
        self.client: Ocpp16Client | None = None  # the 1.6 adapter while it is the one used
        self.client201: Ocpp201Client | None = None  # the 2.0.1 adapter, likewise
        self.adapter: Ocpp16Client | Ocpp201Client | None = None  # the one in use
        # Several backends ([[csms]], issue 15): the station's one port over all of them,
        # and the adapters besides the primary's.
        self.hub: BackendHub | None = None
        self.secondaries: list[Ocpp16Client | Ocpp201Client] = []
        self._model201: Any = None  # the 2.0.1 device model, built on first use
        self._policy201_followed = False
        self.versions: VersionChoice | None = None
        self.tls_material: TlsMaterial | None = None
        self.security_log: SecurityLog | None = None
        self.certstore_handle: CertStoreHandle | None = None
        self.api: Any = None
        self.reset_requested: str | None = None
        self.reset_retries = 0
        # sd_notify: from $NOTIFY_SOCKET / $WATCHDOG_USEC unless given (tests).
        self.notifier = notifier if notifier is not None else Notifier.from_environ()
        self.watchdog_s = watchdog_s if watchdog_s is not None else watchdog_timeout_s()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._tasks = TaskGroup("app")
        # Firmware updates: the installer from [maintenance] unless given (tests); the
        # manufacturer roots from the certificate store once it is wired.
        self.installer = installer
        self.firmware_trust = firmware_trust
        self.firmware: FirmwareUpdater | None = None

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
                    phases=cc.phases,
                    nominal_voltage_v=cc.nominal_voltage_v,
                    line=cc.line,
                    phase_switch=devices.get("phase_switch"),
                    phase_switch_pause_s=cc.phase_switch_pause_s,
                    phase_switch_settle_s=cc.phase_switch_settle_s,
                )
            )
        reader = None
        if self.config.reader is not None:
            dev = self.config.reader
            ctx = DriverContext(0, self.clock.monotonic_s, self.shared, dev.key)
            reader = create_driver("reader", dev.driver, dev.settings, ctx)
        return hardware, reader

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            # A step after station.start() (the API port taken, say) can fail after a resumed
            # session closed its contactor: never leave it closed with no process watching.
            try:
                await self.stop(reason=None)  # open sessions stay for the next start
            except Exception:
                LOG.exception("cleaning up after the failed start failed")
            raise

    async def _start(self) -> None:
        cfg = self.config
        # systemd's RuntimeDirectory (tmpfs, kept across service restarts): pending writes
        # of a full disk survive a crash or watchdog restart there (controller/storage/spill.py).
        self.store = open_store(
            cfg.storage_path,
            spill_dir=os.environ.get("RUNTIME_DIRECTORY"),
            tuning=self.store_tuning,
        )
        if isinstance(self.clock, TrustedClock):
            self.clock.attach_store(SettingsTimeStore(self.store))
            self._tasks.spawn(self.clock.keeper(), name="clock-keeper")
        settings = Settings(
            self.store,
            core_keys(
                len(cfg.connectors),
                phase_switch=any(cc.has_phase_switch for cc in cfg.connectors),
                security_profile=cfg.csms.security_profile if cfg.csms else 1,
            ),
            cfg.ocpp_overrides,
        )
        self.security_log = SecurityLog(
            Path(cfg.security.dir) / "security.log",
            clock=self.clock,
            max_bytes=cfg.security.log_max_kb * 1024,
        )
        self._watch_security(self.security_log, self.store)
        self.certstore_handle = CertStoreHandle(
            lambda: self._open_certstore(settings), open_now=self._certstore_needed_now()
        )
        self.settings = settings
        hardware, reader = self._build_devices()
        self.hardware = hardware
        self._open_contactors(hardware)
        self.notifier.status(CONTACTORS_OPEN_STATUS)
        self.station = Station(
            connectors=hardware,
            reader=reader,
            policy=policy16.policy_from(settings),
            store=self.store,
            clock=self.clock,
            boot_id=self.boot_id,
            tick_interval_s=cfg.tick_interval_s,
            resume_transactions=cfg.resume_transactions,
            site=cfg.site,
        )
        policy16.follow(settings, self._apply_policy16)
        if cfg.csms is not None:
            self.tls_material = self._tls_material()
            self.versions = VersionChoice(self._usable_versions(), self.store)
            journal = TxJournal(self.store, boot_id=self.boot_id, clock=self.clock)
            self.hub = BackendHub(journal, self.station)
            self.port = self.hub
            self.station.attach_port(self.hub)
            self._build_adapter(self.versions.first())
            for backend in cfg.backends:
                self._build_backend(backend)
        else:
            journal = TxJournal(self.store, boot_id=self.boot_id, clock=self.clock)
            self.port = StandalonePort(journal, self.store, cfg.standalone)
            self.station.attach_port(self.port)
        self._watch_tamper(self.station, self.security_log)
        # Queued before anything else of this boot (the client's listener is attached).
        self.security_log.record(SecurityEventKind.STARTUP_OF_THE_DEVICE)
        await self.station.start()
        if self.adapter is not None:
            self._tasks.spawn(self._run_csms(), name="ocpp", critical=True)
        for client in self.secondaries:
            # Not critical: a backend besides the primary never stops the charger.
            self._tasks.spawn(client.run(), name=f"ocpp-{client.name}")
        if self.with_api and self.api_after_boot and self.adapter is not None:
            # READY=1 (and the watchdog) once the API is up, as without the deferral.
            self._tasks.spawn(self._start_api_after_boot(self.adapter), name="api", critical=True)
        else:
            if self.with_api:
                await self._start_api()
            self._start_notify()
        LOG.info(
            "evsed started: station %s, %d connector(s), %s",
            cfg.station_id,
            len(cfg.connectors),
            f"CSMS {cfg.csms.url}" if cfg.csms else "standalone",
        )

    def _build_client16(self) -> Ocpp16Client:
        """The OCPP 1.6 adapter, with its firmware and diagnostics wiring."""
        cfg = self.config
        assert self.store is not None and self.station is not None
        assert self.hub is not None and cfg.csms is not None
        client = Ocpp16Client(
            identity=StationIdentity(
                cfg.station_id,
                cfg.vendor,
                cfg.model,
                cfg.serial_number,
                cfg.firmware_version,
            ),
            options=self._connection_options(cfg.csms),
            station=self.station,
            store=self.store,
            settings=self.settings,
            clock=self.clock,
            rng=self.rng,
            on_frame=self._observe_frame,
            on_reset=self._on_reset,
            security_log=self.security_log,
            certstore=self.certstore_handle,
            tls_material=self.tls_material,
            versions=self.versions,
            journal=self.hub.journal,
            name=cfg.csms.name,
            ownership=cfg.ownership,
        )
        self._wire_maintenance(client)
        client.diagnostics_sources = self.diagnostics_sources
        # The ring of recent log records (diagnostics without a journal) stamps them
        # with the daemon's corrected time from now on.
        logsetup.ring_handler().now = self._log_time()
        return client

    def _usable_versions(self) -> tuple[str, ...]:
        """The configured versions, without 2.0.1 once a 1.6 CSMS raised the security
        profile above the configured one (A05): 2.0.1 keeps its own SecurityProfile (raised
        through its network profiles, B09/B10) and must not downgrade the link."""
        csms = self.config.csms
        assert csms is not None
        versions = csms.ocpp_versions
        raised = self.settings.get_int("SecurityProfile")
        if "2.0.1" in versions and raised > csms.security_profile:
            LOG.error(
                "a 1.6 CSMS raised the security profile to %d (configured %d): OCPP 2.0.1 not"
                " offered, it would connect with profile %d",
                raised,
                csms.security_profile,
                csms.security_profile,
            )
            versions = tuple(v for v in versions if v != "2.0.1") or ("1.6",)
        return versions

    def _apply_policy201(self, policy: ChargingPolicy) -> None:
        """The device model steers the station while the primary speaks 2.0.1 (``client``
        is the primary's 1.6 adapter otherwise; None also while the 2.0.1 one is built)."""
        if self.client is None and self.station is not None:
            self.station.set_policy(policy)

    def _apply_policy16(self, policy: ChargingPolicy) -> None:
        """The 1.6 keys steer the station unless the 2.0.1 adapter (its device model) does."""
        if self.client201 is None and self.station is not None:
            self.station.set_policy(policy)

    def _build_adapter(self, version: str) -> None:
        """The primary's adapter of ``version`` joins the station's port (replacing the one
        of another version), and its configuration (1.6 keys or the 2.0.1 device model)
        becomes the station's policy."""
        assert self.hub is not None
        if version == "1.6":
            self.client201 = None
            self.adapter = self.client = self._build_client16()
            if self.station is not None:
                self.station.set_policy(policy16.policy_from(self.settings))
        else:
            self.client = None
            self.adapter = self.client201 = self._build_client201()
        self.hub.attach(self.adapter, primary=True)

    def _owns(self, name: str, command: Command) -> bool:
        ownership = self.config.ownership
        return ownership is None or ownership.permitted(name, command)

    def _wire_maintenance(self, client: Ocpp16Client | Ocpp201Client) -> None:
        """Firmware (L01/L02, 1.6 firmware) on the neutral updater for the backend that owns
        it; its code loads at start only for an update in progress or a status not yet
        confirmed, otherwise on the first firmware request."""
        if not self._owns(client.name, Command.FIRMWARE):
            return
        client.firmware_factory = lambda: self._build_firmware(client)
        if self._firmware_pending():
            self._build_firmware(client)

    def _build_backend(self, backend: CsmsConfig) -> None:
        """A backend besides the primary (a mirror, an energy manager, ...): its own
        connection, boot, heartbeat and outbox in the version it speaks, with the security
        its entry gives; it joins the station's port for every transaction from now on."""
        from controller.csms.secprofile import ConfiguredSecurity

        cfg = self.config
        assert self.hub is not None and self.store is not None and self.station is not None
        common: dict[str, Any] = {
            "options": self._connection_options(backend),
            "station": self.station,
            "store": self.store,
            "clock": self.clock,
            "rng": self.rng,
            "on_frame": self._observe_frame,
            "on_reset": self._on_reset,
            "security_log": self.security_log,
            "certstore": self.certstore_handle,
            "tls_material": FileTlsMaterial(
                backend.ca_bundle, backend.client_cert, backend.client_key
            ),
            "journal": self.hub.journal,
            "primary": False,
            "name": backend.name,
            "backend": backend.name,
            "ownership": cfg.ownership,
            "security_settings": ConfiguredSecurity(backend.security_profile),
        }
        client: Ocpp16Client | Ocpp201Client
        if backend.ocpp_version == "1.6":
            identity = StationIdentity(
                cfg.station_id, cfg.vendor, cfg.model, cfg.serial_number, cfg.firmware_version
            )
            client = Ocpp16Client(identity=identity, settings=self.settings, **common)
        else:
            from controller.ocpp201.client import Identity, Ocpp201Client

            client = Ocpp201Client(
                identity=Identity(
                    cfg.station_id, cfg.vendor, cfg.model, cfg.serial_number, cfg.firmware_version
                ),
                device_model=self._device_model(),
                configured_profile=backend.security_profile,
                **common,
            )
        self._wire_maintenance(client)
        client.diagnostics_sources = self.diagnostics_sources
        if self._owns(backend.name, Command.CHARGING_PROFILES):
            self.station.add_profile_backend(backend.name)
        self.hub.attach(client)
        self.secondaries.append(client)
        LOG.info(
            "backend %s (%s, OCPP %s): %s",
            backend.name,
            backend.role.value,
            backend.ocpp_version,
            backend.url,
        )

    def _device_model(self) -> Any:
        """The charger's one 2.0.1 device model (the primary's when it speaks 2.0.1)."""
        if self._model201 is None:
            from controller.ocpp201.provisioning import station_model

            cfg = self.config
            assert cfg.csms is not None and self.store is not None and self.station is not None
            self._model201 = station_model(
                self.store,
                cfg.connectors,
                has_reader=cfg.reader is not None,
                station=self.station,
                clock=self.clock,
                security_profile=cfg.csms.security_profile,
                certificate_entries=self._certificate_entries,
                first_boot=cfg.device_model_values,
            )
        return self._model201

    def _build_client201(self) -> Ocpp201Client:
        """The OCPP 2.0.1 adapter (loaded only when a configuration uses it)."""
        from controller.ocpp201 import policy as policy201
        from controller.ocpp201.client import Identity, Ocpp201Client

        cfg = self.config
        csms = cfg.csms
        assert csms is not None and self.store is not None and self.station is not None
        assert self.hub is not None
        model = self._device_model()
        if not self._policy201_followed:  # once: the model outlives a switch of version
            self._policy201_followed = True
            policy201.follow(model, self._apply_policy201)
        else:
            self.station.set_policy(policy201.policy_from(model))
        client = Ocpp201Client(
            device_model=model,
            identity=Identity(
                cfg.station_id, cfg.vendor, cfg.model, cfg.serial_number, cfg.firmware_version
            ),
            options=self._connection_options(csms),
            station=self.station,
            store=self.store,
            clock=self.clock,
            versions=self.versions,
            rng=self.rng,
            on_frame=self._observe_frame,
            security_log=self.security_log,
            tls_material=self.tls_material,
            configured_profile=csms.security_profile,
            on_reset=self._on_reset,
            certstore=self.certstore_handle,
            journal=self.hub.journal,
            name=csms.name,
            ownership=cfg.ownership,
        )
        # Firmware (L01/L02) and GetLog (N01) on the same neutral pieces as 1.6.
        self._wire_maintenance(client)
        client.diagnostics_sources = self.diagnostics_sources
        logsetup.ring_handler().now = self._log_time()
        return client

    def _certificate_entries(self) -> int:
        """SecurityCtrlr.CertificateEntries: the installed roots. A store not opened yet has
        none on disk (it is opened at start when it has)."""
        handle = self.certstore_handle
        store = None if handle is None else handle.opened
        return 0 if store is None else store.root_count()

    def _connection_options(self, csms: CsmsConfig) -> ConnectionOptions:
        return ConnectionOptions(
            csms_url=csms.url,
            tls_url=csms.tls_url,
            password=csms.password,
            reconnect_min_s=csms.reconnect_min_s,
            reconnect_max_s=csms.reconnect_max_s,
            response_timeout_s=csms.response_timeout_s,
            compression=self.ws_compression,
        )

    async def _run_csms(self) -> None:
        """Run the CSMS adapter. When the CSMS picks another configured version than the
        adapter speaks (its connection closes and run() returns), stop that adapter (its
        queued messages stay in the database) and build the picked version's adapter on a
        fresh connection; the pick is remembered, so the next start builds it first."""
        while True:
            adapter = self.adapter
            assert adapter is not None and self.versions is not None
            await adapter.run()
            version = self.versions.switch_to
            if not adapter.handed_over or version is None or self._stopping:
                return
            self.versions.switch_to = None
            await adapter.close(f"switching to OCPP {version}")
            LOG.info("speaking OCPP %s from now on", version)
            self._build_adapter(version)

    async def _start_api(self) -> None:
        from controller.web.api import Api  # aiohttp: only once the API starts

        api = Api(self)
        self.api = api  # set first: stop() cleans up a start cancelled half-way
        await api.start(self.config.api_host, self.config.api_port)
        self.api_started.set()

    async def _start_api_after_boot(self, client: Ocpp16Client | Ocpp201Client) -> None:
        """Start the API once the first BootNotification was sent (or the first attempt
        failed): its imports then do not delay the boot on a board with little CPU. Then
        READY=1. A port that cannot be bound stops the charger, as it does at start."""
        attempt_over = asyncio.Event()

        def on_link(state: str) -> None:
            if state == "offline":  # the attempt failed or the connection closed
                attempt_over.set()

        client.on_link_state.append(on_link)
        self._frame_out = attempt_over  # the boot (or the first frame of a session) went out
        try:
            await asyncio.wait_for(attempt_over.wait(), API_AFTER_BOOT_MAX_WAIT_S)
        except TimeoutError:
            LOG.info("no CSMS answer yet: starting the local API anyway")
        finally:
            client.on_link_state.remove(on_link)
            self._frame_out = None
        await self._start_api()  # fails (port taken, say): critical, the charger stops
        self._start_notify()

    def _observe_frame(self, direction: str, text: str) -> None:
        if direction == "out" and self._frame_out is not None:
            self._frame_out.set()
        if self.on_frame is not None:
            self.on_frame(direction, text)

    def _watch_security(self, log: SecurityLog, store: Store) -> None:
        """The security events the composition root sees: the time base moved, the database
        not writable (MemoryExhaustion: data kept in RAM and the spill file)."""
        add_time_set_listener = getattr(self.clock, "add_time_set_listener", None)
        if add_time_set_listener is not None:

            def time_set(shift_s: float, source: str) -> None:
                log.record(SecurityEventKind.SETTING_SYSTEM_TIME, f"{shift_s:+.1f} s ({source})")

            add_time_set_listener(time_set)

        def storage(degraded: bool) -> None:
            if degraded:
                log.record(
                    SecurityEventKind.MEMORY_EXHAUSTION,
                    "database not writable (disk full?): data kept in memory",
                )

        store.add_listener(storage)

    def security_status(self) -> dict[str, Any]:
        """Security and maintenance at a glance (/api/status, `evsed status`, the page): the
        security profile in use, the charger certificate (only if the store is open: the
        status never loads the crypto library), the firmware update state and the latest
        security event."""
        settings = getattr(self, "settings", None)
        profile = settings.get_int("SecurityProfile") if settings is not None else None
        handle = self.certstore_handle
        store = None if handle is None else handle.opened
        event = None if self.security_log is None else self.security_log.last_event
        return {
            "profile": profile,
            "certificate": None if store is None else store.identity_summary(),
            # Not loaded: nothing pending at start and no request since, so idle.
            "firmware": (
                self.firmware.state.value
                if self.firmware is not None
                else ("idle" if self.client is not None else None)
            ),
            "last_event": None
            if event is None
            else {"kind": event.kind.value, "at": event.at, "tech_info": event.tech_info},
        }

    @property
    def certstore(self) -> CertStore | None:
        """The certificate store, opened on first use (None: unusable, or not started)."""
        handle = self.certstore_handle
        return None if handle is None else handle.get()

    @staticmethod
    def _watch_tamper(station: Station, log: SecurityLog) -> None:
        """A tamper switch (a fault input with ``code = "Tamper"``) that opens is a security
        event (TamperDetectionActivated, critical); the connector is Faulted like for any
        fault, so charging stops."""

        def on_fault(connector_id: int, kind: FaultKind, source: str) -> None:
            if kind is FaultKind.TAMPER:
                log.record(
                    SecurityEventKind.TAMPER_DETECTION_ACTIVATED,
                    f"connector {connector_id}: tamper input ({source})",
                )

        station.faults.listeners.append(on_fault)

    def _certstore_needed_now(self) -> bool:
        """Open the certificate store at start (not on first use) when the connection needs
        it (TLS, first-boot presets) or certificates are already on disk (renewal)."""
        csms = self.config.csms
        if csms is not None and (csms.security_profile >= 2 or csms.ca_bundle or csms.client_cert):
            return True
        try:
            return any(Path(self.config.security.dir, "certs").rglob("*.pem"))
        except OSError:
            return True  # let the store report what is wrong

    def _open_certstore(self, settings: Settings) -> CertStore | None:
        """The certificate store under [security] dir, with the [csms] PEM files installed
        on the first boot (CertStore.apply_presets). An unusable directory is logged, not
        fatal: the charger still charges, without certificate management."""
        from controller.security.certstore import CertStore  # cryptography: only when used

        cfg = self.config
        try:
            store = CertStore(cfg.security.dir, clock=self.clock, security_log=self.security_log)
            if cfg.csms is not None:
                store.apply_presets(
                    ca_bundle=cfg.csms.ca_bundle,
                    client_cert=cfg.csms.client_cert,
                    client_key=cfg.csms.client_key,
                    max_roots=settings.get_int("CertificateStoreMaxLength"),
                )
        except OSError as exc:
            LOG.error("certificate store %s unusable: %s", cfg.security.dir, exc)
            return None
        return store

    def _tls_material(self) -> TlsMaterial:
        """The CSMS roots and the charger's certificate for profiles 2 and 3: the certificate
        store (the TOML's files are installed there on first boot), or those files directly
        when the store cannot be used."""
        csms = self.config.csms
        assert csms is not None and self.certstore_handle is not None
        files = FileTlsMaterial(csms.ca_bundle, csms.client_cert, csms.client_key)
        return StoreTlsMaterial(self.certstore_handle, files)

    def _firmware_pending(self) -> bool:
        """An update in progress (also a new version on trial) or a firmware status the
        CSMS has not confirmed: their settings rows."""
        assert self.store is not None
        keys = (FIRMWARE_JOB_KEY, FIRMWARE_UNSENT_KEY, FIRMWARE_UNSENT_KEY_201)
        return any(self.store.get_setting(key) for key in keys)

    def _build_firmware(self, client: Ocpp16Client | Ocpp201Client) -> FirmwareUpdater:
        """The firmware updater, reported through the client of the version in use; a
        pending update (or a new version on trial) carries on."""
        from controller.maintenance.firmware import FirmwareUpdater
        from controller.maintenance.installer import OperatorInstaller, WheelInstaller

        if self.firmware is not None:
            # A switch of OCPP version: the update under way goes on (it is not started
            # twice), told by the new adapter only.
            self.firmware.clear_listeners()
            self._attach_firmware(client, self.firmware)
            return self.firmware
        mt = self.config.maintenance
        installer = self.installer
        if installer is None:
            if mt.installer:
                installer = OperatorInstaller(mt.installer)
            else:
                installer = WheelInstaller(Path(mt.venv_root), ready_deadline_s=mt.ready_deadline_s)
        assert self.store is not None and self.station is not None
        updater = FirmwareUpdater(
            store=self.store,
            clock=self.clock,
            station=self.station,
            installer=installer,
            firmware_dir=Path(mt.firmware_dir),
            restart=lambda: self._on_reset("Firmware"),
            trust=self.firmware_trust if self.firmware_trust is not None else self.certstore_handle,
            security_log=self.security_log,
        )
        self._attach_firmware(client, updater)
        self.firmware = updater
        updater.start()
        return updater

    @staticmethod
    def _attach_firmware(client: Ocpp16Client | Ocpp201Client, updater: FirmwareUpdater) -> None:
        """The client of the version in use reports the updater's states."""
        if isinstance(client, Ocpp16Client):
            from controller.ocpp16 import firmware as firmware16

            firmware16.attach(client, updater)
        else:
            from controller.ocpp201 import firmware as firmware201

            firmware201.attach(client, updater)

    def diagnostics_sources(self) -> DiagnosticsSources:
        """What GetDiagnostics / GetLog archives are made of (controller/maintenance/
        diagnostics.py): under systemd the unit's journal, else (or when the journal is not
        readable) the in-memory ring of recent records; never a secret. Built on the first
        request (the archive code is not loaded at start)."""
        from controller.maintenance.diagnostics import DiagnosticsSources, journal_lines

        cfg = self.config
        assert self.store is not None and self.station is not None
        ring = logsetup.ring_handler()
        max_bytes = cfg.maintenance.diagnostics_max_kb * 1024
        under_systemd = bool(os.environ.get("INVOCATION_ID"))
        settings = self.settings
        station = self.station

        async def log_lines(
            since: datetime | None, until: datetime | None
        ) -> tuple[str, list[str]]:
            if under_systemd:
                lines = await journal_lines(JOURNAL_UNIT, since, until, max_bytes=max_bytes)
                if lines is not None:
                    return f"journal ({JOURNAL_UNIT})", lines
            return "in-memory ring (records of this process only)", ring.lines(since, until)

        masker = logsetup.SecretFilter()

        def secrets() -> list[str | None]:
            found = [
                cfg.csms.password if cfg.csms else None,
                cfg.api_token,
                settings.get("AuthorizationKey"),
            ]
            model = self.client201.device_model if self.client201 is not None else None
            if model is not None:  # the 2.0.1 password the CSMS set (A01)
                try:
                    found.append(model.get("SecurityCtrlr", "BasicAuthPassword"))
                except KeyError:
                    pass
            return found

        def state() -> dict[str, Any]:
            return {"version": evsed_version(), "status": station.snapshot()}

        return DiagnosticsSources(
            station_id=cfg.station_id,
            clock=self.clock,
            max_bytes=max_bytes,
            log_lines=log_lines,
            store=self.store,
            security_log=self.security_log,
            config=lambda: _effective_config(cfg),
            state=state,
            backends=(self.adapter.backend,) if self.adapter else (),
            secrets=secrets,
            mask=masker.mask,
        )

    def _log_time(self) -> Callable[[], datetime]:
        """When a log record happened, in the corrected time a diagnostics window is asked
        in. Without TrustedClock.utc_now's side effects (step detection, NTP checks, its own
        log lines): it runs inside logging."""
        clock = self.clock
        if isinstance(clock, TrustedClock):
            base = clock.base
            return lambda: base.utc_now() + timedelta(seconds=clock.correction_s)
        return clock.utc_now

    @staticmethod
    def _open_contactors(hardware: list[ConnectorHardware]) -> None:
        """Command every contactor open and check that the driver reads open (before READY=1
        is sent); a driver that fails or still reads closed aborts the start."""
        for index, hw in enumerate(hardware, start=1):
            hw.contactor.set_closed(False)
            if hw.contactor.closed:
                raise RuntimeError(f"connector {index}: the contactor still reads closed")
            if hw.contactor.welded:  # reported as PowerSwitchFailure once the station runs
                LOG.error("connector %d: contactor commanded open but welded", index)

    def _start_notify(self) -> None:
        """Tell systemd the start-up is done; then keep STATUS= current and ping the watchdog."""
        self.notifier.ready(self.status_line())
        if not self.notifier.enabled:
            return
        changed = asyncio.Event()
        if self.station is not None:
            self.station.add_listener(lambda _cid, _cmd: changed.set())
            self.station.online_listeners.append(lambda _online: changed.set())
        self._tasks.spawn(
            run_status(self.notifier, self.status_line, STATUS_REFRESH_S, changed=changed),
            name="sd-status",
        )
        if self.watchdog_s:
            interval_s = self.watchdog_s / 2
            LOG.info("systemd watchdog %.1f s: pinging every %.1f s", self.watchdog_s, interval_s)
            self._tasks.spawn(
                run_watchdog(self.notifier, interval_s, self.health_problem),
                name="sd-watchdog",
            )

    def health_problem(self) -> str | None:
        """Why the watchdog must not be pinged, or None while the station runs normally."""
        station = self.station
        if self._stopping:
            return None  # stopping is bounded by TimeoutStopSec, not by the watchdog
        if station is None or not station.started:
            return "the station is not running"
        silent_s = station.tick_stalled_for_s()
        if silent_s > self.tick_stall_limit_s():
            return f"the station tick loop made no progress for {silent_s:.0f} s"
        return None

    def tick_stall_limit_s(self) -> float:
        """How long the tick loop may be silent before it counts as stuck: TICK_STALL_LIMIT_S
        and 10 ticks, or twice what the configured meter reads can take (a silent Modbus
        meter holds a tick for (retries + 1) x timeout_s per request; the other devices on
        its bus may hold the bus lock in between)."""
        station = self.station
        assert station is not None
        reads_s = sum(hw.meter.worst_read_s for hw in self.hardware)
        return max(TICK_STALL_LIMIT_S, 10 * station.tick_interval_s, 2 * reads_s)

    def status_line(self) -> str:
        """One line for `systemctl status`, e.g. "charging 1/2, CSMS accepted"."""
        station = self.station
        if self._stopping:
            return "stopping"
        if station is None or not station.started:
            return "starting"
        phases = [c.state.phase for c in station.connectors.values()]
        parts = [f"charging {phases.count(sm.Phase.CHARGING)}/{len(phases)}"]
        faulted = phases.count(sm.Phase.FAULTED)
        if faulted:
            parts.append(f"{faulted} faulted")
        if self.adapter is not None:
            csms = f"CSMS {self.adapter.connection_state()}"
            queued = self.adapter.queued_messages()
            parts.append(f"{csms} ({queued} queued)" if queued else csms)
            if self.secondaries:
                up = sum(1 for c in self.secondaries if c.connection_state() == "accepted")
                parts.append(f"{up}/{len(self.secondaries)} other backends accepted")
        else:
            parts.append("standalone")
        return ", ".join(parts)

    def backends_status(self) -> list[dict[str, Any]]:
        """Every backend with its role, version, link state, last message and queue (the
        status page, /api/status, `evsed status`)."""
        out: list[dict[str, Any]] = []
        now_s = self.clock.monotonic_s()
        for client in ([self.adapter] if self.adapter is not None else []) + self.secondaries:
            last = client.last_message_s
            out.append(
                {
                    "name": client.name,
                    "role": client.role_name(),
                    "ocpp_version": "1.6" if isinstance(client, Ocpp16Client) else "2.0.1",
                    "url": client.url,
                    "state": client.connection_state(),
                    "last_message_s_ago": None if last is None else round(now_s - last, 1),
                    "queued_messages": client.queued_messages(),
                }
            )
        return out

    def replay(self, name: str, since: datetime) -> int:
        """`evsed backends replay NAME --since`: queue to backend ``name`` every transaction
        that ended and started at or after ``since`` which it never had a message of (a
        backend added later gets no history unless asked): its start and its end with the
        billed energy, in order, each numbered like any other message of the transaction.
        Returns how many transactions were queued; raises KeyError for an unknown name."""
        from controller.core.port import TxStart, TxStop
        from controller.storage.writes import EventKind, Outgoing

        store = self.store
        assert store is not None
        adapters = ([self.adapter] if self.adapter else []) + self.secondaries
        adapter = next((a for a in adapters if a.name == name), None)
        if adapter is None:
            raise KeyError(name)
        renderer = adapter.renderer
        if renderer is None:
            return 0
        queued = 0
        for tx in sorted(store.transactions(limit=100_000), key=lambda t: t.tx_key):
            if tx.open or tx.stopped_at is None or tx.meter_stop_wh is None:
                continue
            started_at = parse_iso(tx.started_at)
            if started_at is None or started_at < since:
                continue
            if store.next_tx_seq(tx.tx_key, adapter.backend) != 0:
                continue  # it had (or has queued) messages of this transaction
            try:
                reason = sm.StopCause(tx.stop_reason or sm.StopCause.LOCAL.value)
            except ValueError:
                reason = sm.StopCause.OTHER
            start = TxStart(
                tx.connector_id, tx.id_tag, tx.meter_start_wh, tx.started_at, tx.reservation_id
            )
            stop = TxStop(tx.meter_stop_wh, tx.stopped_at, reason, tx.id_tag, stamped_now=False)
            messages = []
            for seq, (kind, rendered) in enumerate(
                (
                    (EventKind.STARTED, renderer.started(start, tx.tx_id, 0)),
                    (EventKind.ENDED, renderer.ended(stop, tx.tx_id, 1)),
                )
            ):
                if rendered is not None:
                    messages.append((kind, Outgoing(adapter.backend, *rendered, tx_seq=seq)))
            for kind, message in messages:
                store.append_tx_event(tx.tx_key, kind, [message])
            queued += 1
        if queued:
            adapter.journaled()
            LOG.info("backend %s: %d earlier transaction(s) queued (replay)", name, queued)
        return queued

    def _on_reset(self, kind: str) -> None:
        self.reset_requested = kind
        # ResetRetries (9.1.22): how often a failed reboot is tried again (cli.py).
        self.reset_retries = self.settings.get_int("ResetRetries")
        if self.client201 is not None and self.store is not None:
            # The next BootNotificationRequest says why (B01.FR.09); 1.6 has no reason.
            from controller.ocpp201.client import BOOT_REASON_KEY, boot_reason_of

            self.store.set_setting(BOOT_REASON_KEY, boot_reason_of(kind))
            model = self.client201.device_model
            if model is not None:  # 2.0.1 keeps ResetRetries in its device model
                try:
                    self.reset_retries = model.get_int("OCPPCommCtrlr", "ResetRetries")
                except (KeyError, ValueError):
                    pass
        self._stopped.set()

    @property
    def reboot_requested(self) -> bool:
        """A Hard reset reboots the board when [maintenance] hard_reset = "reboot"; a Soft
        one (and a Hard one otherwise) restarts the service."""
        return self.reset_requested == "Hard" and self.config.maintenance.hard_reset == "reboot"

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
        groups = [self._tasks] + ([self.station._tasks] if self.station else [])
        failures = [asyncio.ensure_future(group.failure()) for group in groups]
        try:
            done, _ = await asyncio.wait(failures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in failures:
                f.cancel()
        raise RuntimeError("a critical task failed") from done.pop().result()

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
                c.hw.phase_switch,
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

    async def stop(self, reason: sm.StopCause | None = sm.StopCause.REBOOT) -> None:
        """Stop charging (``reason`` None = leave transactions to crash recovery)."""
        if not self._stopping:
            self._stopping = True
            if self.reset_requested:  # cli re-executes in place: systemd waits for READY=1
                self.notifier.reloading(f"restarting after {self.reset_requested} reset")
            else:
                self.notifier.stopping("stopping: opening contactors")
        if self.station is not None and self.station.started:
            try:
                await self.station.stop(reason)
            except Exception:  # contactors were opened anyway (Station.stop's finally)
                LOG.exception("stopping the station failed; releasing the hardware anyway")
        adapter = self.adapter
        if adapter is not None:
            # Give just-queued StopTransactions a moment to go out.
            for _ in range(20):
                if adapter.queued_messages() == 0 or adapter.connection_state() != "accepted":
                    break
                await asyncio.sleep(0.1)
            # Closed normally (1000) before _tasks cancels the connection's task.
            reason_text = (
                f"{self.reset_requested} reset" if self.reset_requested else "charge point stopping"
            )
            await adapter.close(reason_text)
            for client in self.secondaries:
                await client.close(reason_text)
        if self.firmware is not None:
            await self.firmware.close()
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


def _effective_config(config: Config) -> dict[str, Any]:
    """The configuration as `evsed config show` prints it (secrets masked), for diagnostics;
    the ops CLI module is loaded only when an archive is built."""
    from controller.ops.opscli import effective_config

    return effective_config(config)
