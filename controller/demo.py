"""`evsed demo`: a simulated charger plays one session against the bundled dev CSMS."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.app import App
from controller.config import parse
from controller.core import connector as sm
from controller.dev.devcsms import DevCsms, Frame
from controller.runtime.clock import ManualClock

DEMO_CARD = "04A1B2C3"


OCPP_VERSIONS = ("1.6", "2.0.1")


def demo_config(
    csms_url: str, storage: str, api_port: int = 0, ocpp_version: str = "1.6"
) -> dict[str, Any]:
    return {
        "station": {"id": "EVSED-DEMO", "vendor": "evsed", "model": "demo", "storage": storage},
        "csms": {
            "url": csms_url,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "ocpp_version": ocpp_version,
        },
        "api": {"host": "127.0.0.1", "port": api_port},
        "reader": {"driver": "sim"},
        "connectors": [
            {
                "max_current_a": 16,
                "contactor": {"driver": "sim"},
                "meter": {"driver": "sim", "initial_energy_wh": 1250000},
                "vehicle": {"driver": "sim", "power_w": 11000, "phases": 3},
                "lock": {"driver": "sim"},
                "indicator": {"driver": "sim"},
                "fault": {"driver": "sim"},
            }
        ],
        # 1.6 keys (2.0.1 reads its device model: TxUpdatedInterval 60 s by default).
        "ocpp": {"MeterValueSampleInterval": 300, "HeartbeatInterval": 600},
    }


@dataclass(frozen=True)
class _Messages:
    """How the session's start and end look on the wire of one OCPP version."""

    version: str

    def is_start(self, frame: Frame) -> bool:
        if self.version == "1.6":
            return frame.action == "StartTransaction"
        return frame.action == "TransactionEvent" and frame.payload["eventType"] == "Started"

    def is_stop(self, frame: Frame) -> bool:
        if self.version == "1.6":
            return frame.action == "StopTransaction"
        return frame.action == "TransactionEvent" and frame.payload["eventType"] == "Ended"

    def summary(self, start: Frame, stop: Frame) -> dict[str, Any]:
        """transaction_id, id_tag, energy_wh, reason, started, stopped of one session."""
        if self.version == "1.6":
            return {
                "transaction_id": stop.payload["transactionId"],
                "id_tag": start.payload["idTag"],
                "energy_wh": stop.payload["meterStop"] - start.payload["meterStart"],
                "reason": stop.payload.get("reason", "Local"),
                "started": start.payload["timestamp"],
                "stopped": stop.payload["timestamp"],
            }
        begin_wh = _register_wh(start.payload, "Transaction.Begin")
        end_wh = _register_wh(stop.payload, "Transaction.End")
        info = stop.payload["transactionInfo"]
        return {
            "transaction_id": info["transactionId"],
            "id_tag": start.payload["idToken"]["idToken"],
            "energy_wh": end_wh - begin_wh,
            # E06: an Ended without stoppedReason means Local.
            "reason": info.get("stoppedReason", "Local"),
            "started": start.payload["timestamp"],
            "stopped": stop.payload["timestamp"],
        }


def _register_wh(payload: dict[str, Any], context: str) -> int:
    """The energy register of a TransactionEvent's meter value in ``context``, in Wh."""
    for meter_value in payload.get("meterValue", []):
        for sampled in meter_value["sampledValue"]:
            if (
                sampled.get("measurand", "Energy.Active.Import.Register")
                == "Energy.Active.Import.Register"
                and sampled.get("context") == context
            ):
                unit = sampled.get("unitOfMeasure", {}).get("unit", "Wh")
                factor = 1000 if unit == "kWh" else 1
                return round(float(sampled["value"]) * factor)
    raise ValueError(f"no {context} energy register in the TransactionEvent")


def _short(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Printer:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.t0 = clock.monotonic_s()

    def line(self, text: str) -> None:
        minutes, seconds = divmod(int(self.clock.monotonic_s() - self.t0), 60)
        print(f"[{minutes:02d}:{seconds:02d}] {text}", flush=True)

    def frame(self, direction: str, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        arrow = "charger → CSMS" if direction == "out" else "CSMS → charger"
        if frame[0] == 2:
            body = json.dumps(frame[3], separators=(",", ":"))
            self.line(f"{arrow}  {frame[2]} {_short(body)}")
        elif frame[0] == 3:
            body = json.dumps(frame[2], separators=(",", ":"))
            self.line(f"{arrow}  ↳ result {_short(body, 110)}")
        else:
            self.line(f"{arrow}  ↳ error {frame[2]} {frame[3]}")

    def command(self, connector_id: int, command: sm.Command) -> None:
        if isinstance(command, sm.SwitchContactor):
            self.line(f"connector {connector_id}: contactor {'CLOSED' if command.on else 'open'}")
        elif isinstance(command, sm.SetCurrentLimit):
            self.line(f"connector {connector_id}: pilot offers {command.current_a:g} A")


async def run_demo(
    charge_minutes: float = 30.0, quiet_ocpp: bool = False, ocpp_version: str = "1.6"
) -> dict[str, Any]:
    """Plug in, tap a card, charge for ``charge_minutes`` of simulated time, unplug; the
    charger and the dev CSMS speak ``ocpp_version`` (1.6 or 2.0.1)."""
    if ocpp_version not in OCPP_VERSIONS:
        raise ValueError(f"ocpp_version must be one of {', '.join(OCPP_VERSIONS)}")
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    clock = ManualClock(start=datetime.now(UTC))
    printer = _Printer(clock)
    messages = _Messages(ocpp_version)
    async with DevCsms(
        host="127.0.0.1", port=0, heartbeat_interval_s=600, ocpp_versions=(ocpp_version,)
    ) as csms:
        with tempfile.TemporaryDirectory(prefix="evsed-demo-") as tmp:
            config = parse(
                demo_config(csms.url, str(Path(tmp) / "evsed.db"), ocpp_version=ocpp_version)
            )
            app = App(
                config,
                clock=clock,
                on_frame=None if quiet_ocpp else printer.frame,
                boot_id="demo",
            )
            print(
                f"dev CSMS (OCPP {ocpp_version}) listening on {csms.url}; "
                "simulated time runs 30x faster\n"
            )
            await app.start()
            assert app.station is not None and app.api is not None
            app.station.add_listener(printer.command)
            print(f"local API: http://127.0.0.1:{app.api.port}/api/status\n")
            try:
                await csms.wait_connected(config.station_id, timeout_s=10)
                await csms.wait_for(lambda f: f.action == "StatusNotification", timeout_s=10)
                await _pause(clock, 5)
                printer.line("— the driver plugs in the car")
                app.sim.plug(1)
                await _pause(clock, 10)
                printer.line(f"— the driver taps card {DEMO_CARD}")
                app.sim.card(DEMO_CARD)
                start = await csms.wait_for(messages.is_start, timeout_s=10)
                await _pause(clock, 5)
                printer.line(f"— charging for {charge_minutes:g} simulated minutes at 11 kW")
                await _pause(clock, charge_minutes * 60, real_step_s=0.02, step_s=30)
                status = app.station.snapshot()["connectors"][0]
                printer.line(
                    f"  status {status['status']}, {status['power_w']} W, session "
                    f"{status['session_energy_wh']} Wh"
                )
                printer.line(f"— the driver taps card {DEMO_CARD} again to stop")
                app.sim.card(DEMO_CARD)
                stop = await csms.wait_for(messages.is_stop, timeout_s=10)
                await _pause(clock, 10)
                printer.line("— the driver unplugs")
                app.sim.unplug(1)
                await _pause(clock, 5)
            finally:
                await app.stop(reason=None)
    summary = {
        **messages.summary(start, stop),
        "ocpp_version": ocpp_version,
        "messages_to_csms": len(csms.received),
        "max_outstanding_calls": csms.max_outstanding_calls,
    }
    print("\nSession summary")
    print(f"  transaction {summary['transaction_id']} for card {summary['id_tag']}")
    print(f"  {summary['started']} → {summary['stopped']}")
    energy_wh = summary["energy_wh"]
    print(f"  energy delivered: {energy_wh} Wh ({energy_wh / 1000:.2f} kWh)")
    print(f"  stop reason: {summary['reason']}")
    print(
        f"  OCPP messages sent to the CSMS: {summary['messages_to_csms']}, "
        f"never more than {summary['max_outstanding_calls']} outstanding"
    )
    return summary


async def _pause(
    clock: ManualClock, seconds: float, real_step_s: float = 0.02, step_s: float = 1.0
) -> None:
    """Advance simulated time while giving the real network time to carry messages."""
    remaining = seconds
    while remaining > 0:
        step = min(step_s, remaining)
        await clock.advance(step, step_s=1.0)
        await asyncio.sleep(real_step_s)
        remaining -= step
