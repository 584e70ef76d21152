"""Device-role interfaces of the hardware abstraction layer; drivers implement these."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class VehicleState(enum.Enum):
    """IEC 61851-1 control pilot states as seen by the EVSE."""

    A = "A"  # no vehicle connected
    B = "B"  # vehicle connected, not requesting energy
    C = "C"  # vehicle requests energy
    D = "D"  # vehicle requests energy, ventilation required
    E = "E"  # pilot shorted / error (no power from EVSE side)
    F = "F"  # EVSE not available (pilot -12 V)

    @property
    def plugged(self) -> bool:
        return self is not VehicleState.A

    @property
    def requests_energy(self) -> bool:
        return self in (VehicleState.C, VehicleState.D)


class IndicatorState(enum.Enum):
    """What a status light shows; drivers map these to colours or patterns."""

    OFF = "off"
    AVAILABLE = "available"
    PREPARING = "preparing"
    CHARGING = "charging"
    SUSPENDED = "suspended"
    FINISHING = "finishing"
    RESERVED = "reserved"
    UNAVAILABLE = "unavailable"
    FAULT = "fault"
    OFFLINE = "offline"


@dataclass(frozen=True)
class MeterReading:
    """One reading of an energy meter. Per-phase tuples hold L1..L3 (or just L1)."""

    energy_wh: float  # active energy import register, monotonic
    power_w: float  # active power import, total
    voltage_v: tuple[float, ...] = field(default=())
    current_a: tuple[float, ...] = field(default=())
    frequency_hz: float | None = None
    energy_export_wh: float | None = None


class FaultKind(enum.StrEnum):
    """What is wrong with a connector's hardware, in the charger's own words.

    Drivers and the runtime name faults by kind; each protocol adapter maps a kind to its
    own vocabulary (OCPP 1.6 ChargePointErrorCode, 2.0.1 events). The values are the names
    that configuration files (``code = "GroundFailure"``) and the simulation API use.
    """

    CONNECTOR_LOCK = "ConnectorLockFailure"
    EV_COMMUNICATION = "EVCommunicationError"  # pilot / EVSE board not usable
    GROUND = "GroundFailure"  # RCD / residual current
    HIGH_TEMPERATURE = "HighTemperature"
    INTERNAL = "InternalError"
    OTHER = "OtherError"
    OVER_CURRENT = "OverCurrentFailure"
    OVER_VOLTAGE = "OverVoltage"
    METER = "PowerMeterFailure"
    POWER_SWITCH = "PowerSwitchFailure"  # contactor welded or not closing
    READER = "ReaderFailure"
    # The enclosure opened (a lid or door switch wired as the connector's fault input):
    # charging stops like for any fault, and it is a security event (TamperDetectionActivated).
    TAMPER = "Tamper"
    UNDER_VOLTAGE = "UnderVoltage"
    WEAK_SIGNAL = "WeakSignal"


FAULT_KIND_NAMES: tuple[str, ...] = tuple(k.value for k in FaultKind)

FaultCallback = Callable[[FaultKind | None], None]


class DeviceError(Exception):
    """A device did not answer or answered nonsense; the caller decides the fault policy."""


class Contactor(abc.ABC):
    """The mains contactor of one connector.

    Must implement: ``set_closed`` and ``closed``. A driver MUST start open (coil off) and
    MUST open on ``close_driver``. ``set_closed`` is synchronous and fast: it is called from
    the state-machine runtime on every safety-relevant transition.
    May implement: ``welded`` (feedback contact says closed while commanded open) and
    ``feedback_closed`` (what an auxiliary contact reads; None without one).
    """

    @abc.abstractmethod
    def set_closed(self, closed: bool) -> None: ...

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @property
    def welded(self) -> bool:
        return False

    @property
    def feedback_closed(self) -> bool | None:
        return None

    def start_monitor(self, on_fault: FaultCallback) -> None:  # noqa: B027 - optional hook
        """Report feedback faults (``PowerSwitchFailure`` for welded / failed to close, None
        when healthy again). Drivers with a feedback contact implement this; ``on_fault``
        may be called from a foreign thread."""

    def close_driver(self) -> None:
        """Release the hardware; the contactor is opened first."""
        self.set_closed(False)


class PhaseSwitch(abc.ABC):
    """The phase relay of one connector: selects one phase or all three.

    Must implement: ``set_phases`` (1 or 3; synchronous and fast) and ``phases`` (the
    position last commanded). A driver MUST start in a defined position and say it through
    ``phases``; it need not know when switching is safe: the caller switches it only while
    the contactor is open and no current is offered.
    """

    @abc.abstractmethod
    def set_phases(self, phases: int) -> None: ...

    @property
    @abc.abstractmethod
    def phases(self) -> int: ...

    def close_driver(self) -> None:  # noqa: B027 - optional hook
        """Release the hardware."""


class EnergyMeter(abc.ABC):
    """The energy meter of one connector.

    Must implement: ``read`` (async, may raise ``DeviceError``). ``energy_wh`` is the
    import register and never decreases for a healthy meter.
    """

    @abc.abstractmethod
    async def read(self) -> MeterReading: ...

    @property
    def worst_read_s(self) -> float:
        """The longest one ``read`` can take before it fails, for the watchdog's notion of a
        stuck tick; 0 for a meter that does not wait on a bus. A bus driver declares it."""
        return 0.0

    async def close_driver(self) -> None:  # noqa: B027 - optional hook
        """Release the bus or port."""


TokenCallback = Callable[[str], None]


class TokenReader(abc.ABC):
    """An identification reader (RFID card, etc.), shared by all connectors.

    Must implement: ``start(on_token)`` and ``stop``. ``on_token`` receives an upper-case
    hex idTag and MAY be called from a foreign thread: the caller hands it to asyncio.
    """

    @abc.abstractmethod
    def start(self, on_token: TokenCallback) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...


VehicleCallback = Callable[[VehicleState], None]


class VehicleInterface(abc.ABC):
    """The control pilot / EVSE board of one connector (IEC 61851 states A-F).

    Must implement: ``start(on_state)``, ``stop``, ``state`` and ``set_max_current_a``.
    ``on_state`` is called on every state change, possibly from a foreign thread.
    ``set_max_current_a(0)`` means "no energy offered" (pilot without PWM / state B hold).
    """

    @abc.abstractmethod
    def start(self, on_state: VehicleCallback) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def state(self) -> VehicleState: ...

    @abc.abstractmethod
    def set_max_current_a(self, current_a: float) -> None: ...

    @property
    def max_current_a(self) -> float:
        return 0.0

    async def wait_ready(self, timeout_s: float) -> None:  # noqa: B027 - optional hook
        """Return once ``state`` reflects the hardware (e.g. after a polled board answered
        once), or after ``timeout_s``. Called after ``start``; the default returns at once."""

    async def offer_nothing(self) -> str:
        """Without ``start``, from outside any session (``evsed safe-off``): make sure the
        board offers no current on its own, and say how that was checked. Raises
        ``DeviceError`` when it cannot. The default: an interface that offers nothing once
        evsed stops driving it."""
        return "nothing to do (offers no current alone)"

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the bus or port (after ``stop``, or instead of ``start``)."""


class ConnectorLock(abc.ABC):
    """The cable lock of one connector.

    Must implement: ``lock`` and ``unlock`` (async, return True when the feedback confirms
    the new position within the driver's timeout) and ``locked``.
    """

    @abc.abstractmethod
    async def lock(self) -> bool: ...

    @abc.abstractmethod
    async def unlock(self) -> bool: ...

    @property
    @abc.abstractmethod
    def locked(self) -> bool: ...


class Indicator(abc.ABC):
    """A status light of one connector. Must implement ``show``; it must not block."""

    @abc.abstractmethod
    def show(self, state: IndicatorState) -> None: ...


class FaultInput(abc.ABC):
    """A safety input of one connector (RCD trip, over-temperature, ...).

    Must implement: ``start(on_change)``, ``stop`` and ``active_fault``. A fault is a
    ``FaultKind`` (``GROUND``, ``HIGH_TEMPERATURE``, ...); ``None`` means no fault.
    ``on_change`` may be called from a foreign thread.
    """

    @abc.abstractmethod
    def start(self, on_change: FaultCallback) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def active_fault(self) -> FaultKind | None: ...
