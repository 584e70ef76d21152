"""The measurands of one meter sample, version-neutral: each adapter spells them as its
protocol's SampledValue (1.6 strings with a unit, 2.0.1 numbers with unitOfMeasure)."""

from __future__ import annotations

from typing import NamedTuple

from controller.core.port import Sample


class Measured(NamedTuple):
    """One value of a sample: rounded to ``decimals`` places when it is sent."""

    measurand: str
    value: float
    decimals: int
    unit: str | None
    phase: str | None = None


def measured(sample: Sample, measurands: list[str]) -> list[Measured]:
    """The values of ``sample`` for the configured ``measurands``, in their order; those the
    meter did not read are left out. ``Current.Import`` / ``Voltage`` give one value per
    phase, ``Current.Import.L2`` / ``Voltage.L2`` that phase alone."""
    r = sample.reading
    out: list[Measured] = []
    for measurand in measurands:
        if measurand == "Energy.Active.Import.Register":
            out.append(Measured(measurand, round(r.energy_wh), 0, "Wh"))
        elif measurand == "Energy.Active.Export.Register" and r.energy_export_wh is not None:
            out.append(Measured(measurand, round(r.energy_export_wh), 0, "Wh"))
        elif measurand == "Power.Active.Import":
            out.append(Measured(measurand, r.power_w, 1, "W"))
        elif measurand == "Current.Offered" and sample.offered_current_a is not None:
            out.append(Measured(measurand, sample.offered_current_a, 1, "A"))
        elif measurand == "Power.Offered" and sample.offered_power_w is not None:
            out.append(Measured(measurand, sample.offered_power_w, 1, "W"))
        elif measurand.startswith("Current.Import"):
            for index, amps in enumerate(r.current_a, start=1):
                phase = f"L{index}"
                if measurand in ("Current.Import", f"Current.Import.{phase}"):
                    out.append(Measured("Current.Import", amps, 2, "A", phase))
        elif measurand.startswith("Voltage"):
            for index, volts in enumerate(r.voltage_v, start=1):
                phase = f"L{index}"
                if measurand in ("Voltage", f"Voltage.{phase}"):
                    out.append(Measured("Voltage", volts, 1, "V", f"{phase}-N"))
        elif measurand == "Frequency" and r.frequency_hz is not None:
            out.append(Measured(measurand, r.frequency_hz, 2, "Hz"))
    return out
