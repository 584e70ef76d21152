"""`evsed demo` (controller.demo.run_demo), run in-process on its own manual clock."""

from __future__ import annotations

from datetime import datetime

import pytest

from controller.demo import DEMO_CARD, run_demo

POWER_W = 11_000
# run_demo pauses 5 simulated seconds between StartTransaction and the "charging for N minutes"
# pause; the car already charges then. Plus up to one 1 s tick of slack and integer rounding.
PAUSE_AFTER_START_S = 5
SLACK_S = 1


def energy_bounds(charge_minutes: float) -> tuple[float, float]:
    low = POWER_W * charge_minutes * 60 / 3600
    high = POWER_W * (charge_minutes * 60 + PAUSE_AFTER_START_S + SLACK_S) / 3600 + 1
    return low, high


async def test_demo_five_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    summary = await run_demo(charge_minutes=5, quiet_ocpp=True)
    out = capsys.readouterr().out

    low, high = energy_bounds(5)  # 916.7 Wh .. 935.0 Wh
    assert low <= summary["energy_wh"] <= high, summary
    assert isinstance(summary["energy_wh"], int)
    assert summary["reason"] == "Local"
    assert summary["max_outstanding_calls"] == 1
    assert summary["transaction_id"] == 1
    assert summary["id_tag"] == DEMO_CARD
    assert summary["messages_to_csms"] >= 5  # Boot, Status..., Start, Stop
    started = datetime.fromisoformat(summary["started"])
    stopped = datetime.fromisoformat(summary["stopped"])
    assert started.utcoffset() is not None  # explicit UTC offset (README)
    elapsed_s = (stopped - started).total_seconds()
    assert 5 * 60 <= elapsed_s <= 5 * 60 + PAUSE_AFTER_START_S + SLACK_S

    assert "Session summary" in out
    summary_text = out[out.index("Session summary") :]
    assert f"transaction 1 for card {DEMO_CARD}" in summary_text
    assert f"energy delivered: {summary['energy_wh']} Wh" in summary_text
    assert f"({summary['energy_wh'] / 1000:.2f} kWh)" in summary_text
    assert "stop reason: Local" in summary_text
    assert "never more than 1 outstanding" in summary_text
    # The story: plug, card, contactor closes, charging, card again, contactor opens, unplug.
    for line in (
        "the driver plugs in the car",
        f"the driver taps card {DEMO_CARD}",
        "contactor CLOSED",
        "charging for 5 simulated minutes at 11 kW",
        "status Charging, 11000.0 W",
        "again to stop",
        "contactor open",
        "the driver unplugs",
    ):
        assert line in out, line
    assert out.index("contactor CLOSED") < out.index("contactor open")
    # quiet_ocpp hides the OCPP frames.
    assert "charger → CSMS" not in out
    assert "local API: http://127.0.0.1:" in out


async def test_demo_default_length_matches_readme(capsys: pytest.CaptureFixture[str]) -> None:
    """README: 30 simulated minutes at 11 kW, every OCPP message printed, 5.5 kWh."""
    summary = await run_demo(quiet_ocpp=False)
    out = capsys.readouterr().out
    low, high = energy_bounds(30)
    assert low <= summary["energy_wh"] <= high
    assert round(summary["energy_wh"] / 1000, 1) == 5.5
    assert summary["reason"] == "Local"
    assert summary["max_outstanding_calls"] == 1
    for action in ("BootNotification", "StatusNotification", "StartTransaction", "StopTransaction"):
        assert f"charger → CSMS  {action} " in out, action
    assert "CSMS → charger  ↳ result" in out
    assert "(5.5" in out  # "energy delivered: 55xx Wh (5.5x kWh)"
