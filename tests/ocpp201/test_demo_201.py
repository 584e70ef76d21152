"""`evsed demo --ocpp 2.0.1` (controller.demo.run_demo): the demo charger and its dev CSMS
speak OCPP 2.0.1, one whole session told by TransactionEvents, on a manual clock."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pytest

from controller.demo import DEMO_CARD, run_demo
from tests.e2e.test_demo import PAUSE_AFTER_START_S, SLACK_S, energy_bounds
from tests.procs import REPO


async def test_demo_201_five_minutes(capsys: pytest.CaptureFixture[str]) -> None:
    """TC_E_01_CS / TC_E_07_CS flow in the demo (E01.FR.05, E01.FR.07, E06.FR.04,
    E02.FR.10): plug, card, Started with seqNo 0, Updated MeterValuePeriodic, the card
    again, Ended with stoppedReason Local; the energy from the Transaction.Begin and
    Transaction.End registers; one CALL outstanding at a time (OCPP-J 4.1.1)."""
    summary = await run_demo(charge_minutes=5, quiet_ocpp=False, ocpp_version="2.0.1")
    out = capsys.readouterr().out

    assert summary["ocpp_version"] == "2.0.1"
    low, high = energy_bounds(5)
    assert low <= summary["energy_wh"] <= high, summary
    assert isinstance(summary["energy_wh"], int)
    assert summary["reason"] == "Local"
    assert summary["max_outstanding_calls"] == 1
    assert summary["id_tag"] == DEMO_CARD
    tx_id = summary["transaction_id"]
    assert isinstance(tx_id, str) and 0 < len(tx_id) <= 36  # the charger's own id (E01.FR.08)
    started = datetime.fromisoformat(summary["started"])
    stopped = datetime.fromisoformat(summary["stopped"])
    assert started.utcoffset() is not None
    elapsed_s = (stopped - started).total_seconds()
    assert 5 * 60 <= elapsed_s <= 5 * 60 + PAUSE_AFTER_START_S + SLACK_S

    assert "dev CSMS (OCPP 2.0.1)" in out
    for action in ("BootNotification", "StatusNotification", "Authorize", "TransactionEvent"):
        assert f"charger → CSMS  {action} " in out, action
    # 1.6 messages never appear on a 2.0.1 link.
    assert "StartTransaction" not in out and "StopTransaction" not in out
    for event in ('"eventType":"Started"', '"MeterValuePeriodic"', '"eventType":"Ended"'):
        assert event in out, event
    assert out.index('"eventType":"Started"') < out.index('"eventType":"Ended"')
    assert out.index("contactor CLOSED") < out.index("contactor open")
    summary_text = out[out.index("Session summary") :]
    assert f"transaction {tx_id} for card {DEMO_CARD}" in summary_text
    assert f"energy delivered: {summary['energy_wh']} Wh" in summary_text
    assert "stop reason: Local" in summary_text
    assert "never more than 1 outstanding" in summary_text


async def test_demo_rejects_an_unknown_version() -> None:
    with pytest.raises(ValueError, match="1.6, 2.0.1"):
        await run_demo(charge_minutes=1, ocpp_version="2.1")


def test_demo_cli_speaks_201() -> None:
    """`evsed demo --ocpp 2.0.1 --minutes 1` as a user runs it: exit 0, a session."""
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "demo", "--ocpp", "2.0.1", "--minutes", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dev CSMS (OCPP 2.0.1)" in proc.stdout
    assert "TransactionEvent" in proc.stdout
    assert "stop reason: Local" in proc.stdout
