"""One connector at runtime: its devices and the mutable data around its pure state."""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.core import connector as sm
from controller.core.port import Sample
from hal.base import (
    ConnectorLock,
    Contactor,
    EnergyMeter,
    FaultInput,
    FaultKind,
    Indicator,
    MeterReading,
    PhaseSwitch,
    VehicleInterface,
)


@dataclass
class ConnectorHardware:
    """The devices of one connector; lock, indicator, fault input and phase switch are
    optional."""

    contactor: Contactor
    meter: EnergyMeter
    vehicle: VehicleInterface
    lock: ConnectorLock | None = None
    indicator: Indicator | None = None
    fault: FaultInput | None = None
    max_current_a: float = 32.0
    phases: int = 3  # wired phases: converts a power limit into current per phase
    nominal_voltage_v: float = 230.0
    line: int = 1  # the supply line a single-phase connector is wired to ([site] limits)
    phase_switch: PhaseSwitch | None = None  # a 1p/3p relay (phases = 3 wired)
    phase_switch_pause_s: float = 3.0
    phase_switch_settle_s: float = 1.0

    @property
    def lines(self) -> frozenset[int]:
        """The supply lines the connector is wired to."""
        return frozenset({1, 2, 3}) if self.phases == 3 else frozenset({self.line})


@dataclass
class ConnectorRuntime:
    """Mutable runtime data around the pure state of one connector."""

    connector_id: int
    hw: ConnectorHardware
    state: sm.ConnectorState
    tx_key: int | None = None
    tx_id_tag: str | None = None
    tx_meter_start_wh: int = 0
    tx_started_s: float = 0.0
    last_sample_s: float = 0.0
    last_persist_s: float = 0.0
    persisted_wh: int = 0  # register value known to be durable for the open transaction
    deauth_marked: bool = False  # the invalidation marker is stored for the open transaction
    samples: list[Sample] = field(default_factory=list)
    reading: MeterReading | None = None  # the last good reading (kept through an outage)
    reading_at: str | None = None  # when ``reading`` was taken (UTC, ISO 8601)
    meter_failures: int = 0  # failed reads since the last good one
    polled_s: float | None = None  # monotonic time of the last meter read (good or not)
    faults: dict[str, FaultKind] = field(default_factory=dict)  # source -> fault
    status_since_s: float = 0.0

    @property
    def phases(self) -> int:
        """The phases switched in now: the wired ones, or where the phase switch is."""
        return self.state.phases

    @property
    def lines(self) -> frozenset[int]:
        """The supply lines the connector draws from now (one with one phase switched in)."""
        return frozenset({1, 2, 3}) if self.phases == 3 else frozenset({self.hw.line})

    @property
    def offered_power_w(self) -> float:
        """Power.Offered: the offered current on every phase switched in, at the nominal
        voltage."""
        return self.state.offered_current_a * self.phases * self.hw.nominal_voltage_v

    @property
    def live_reading(self) -> MeterReading | None:
        """The reading of the latest poll; None while the meter does not answer, so that
        no sample repeats an old register with a fresh timestamp."""
        return self.reading if self.meter_failures == 0 else None

    def attach_tx(
        self,
        tx_key: int,
        id_tag: str,
        meter_start_wh: int,
        *,
        persisted_wh: int,
        now_s: float,
        samples: list[Sample],
        deauth_marked: bool,
    ) -> None:
        """A recorded transaction (new or resumed) runs on this connector from now on."""
        self.tx_key = tx_key
        self.tx_id_tag = id_tag
        self.tx_meter_start_wh = meter_start_wh
        # Sampling and persisting count from the start, not from the last transaction.
        self.tx_started_s = self.last_sample_s = self.last_persist_s = now_s
        self.persisted_wh = persisted_wh
        self.deauth_marked = deauth_marked
        self.samples = samples
