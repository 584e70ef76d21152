"""A charger loads only what its configuration uses (issue 16: start time on a Pi Zero class
board is mostly imports): no web server stack before the API starts, no Modbus, PC/SC, GPIO,
certificate, FTP or archive code for a simulated ws:// charger, none of the ocpp library's
dataclass modules, and a JSON schema compiled only for the actions sent or received (jsonschema
itself not at all while every payload passes csms/schema.py's quick check; nor what websockets
imports and a start does not use, csms/deferred.py). The light commands of the CLI load none
of the daemon."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.app import App
from controller.config import parse
from controller.csms.deferred import proxy_setting
from controller.dev.devcsms import CsmsEvent, DevCsms, FrameReceived, FrameSent
from controller.ops.sdnotify import Notifier
from controller.runtime.clock import ManualClock
from tests.conftest import charger_config
from tests.procs import REPO, free_port, write_config

# What a simulated ws:// charger must not load before its BootNotification (and not at all
# with the API off): package prefixes.
NOT_BEFORE_BOOT = (
    "aiohttp",  # the local API's web server, started after the boot
    "yarl",
    "multidict",
    "controller.web",
    "pymodbus",  # drivers: loaded by name only when configured (hal/registry.py)
    "serial",
    "smartcard",
    "gpiozero",
    "hal.modbus",
    "hal.modbus_bus",
    "hal.gpio",
    "hal.pcsc",
    "hal.evse_board",
    "cryptography",  # certificates: security profile 3 or certificates on disk
    "controller.security.certstore",
    "controller.ocpp16.certificates",
    "aioftp",  # firmware, diagnostics: on the first request
    "controller.maintenance.transfers",
    "controller.maintenance.firmware",
    "controller.maintenance.diagnostics",
    "controller.ocpp16.firmware",
    "controller.ocpp16.diagnostics",
    "tarfile",
    "zipfile_deflate64",
    "ocpp.v16",  # the library's ~150 dataclasses: rpc.py reads its schema files instead
    "ocpp.messages",
    "ocpp.charge_point",
    "controller.dev",  # the dev CSMS and the other commands of the CLI
    "controller.demo",
    "controller.ops.opscli",
    "controller.ops.install",
    "controller.ops.hwtest",
    "trustme",
    "pyftpdlib",
    # jsonschema and what it pulls in (referencing, rpds, attrs, jsonschema_specifications,
    # which reads every metaschema from disk): csms/schema.py's quick check accepts a valid
    # payload without it, jsonschema names the error of one it is not sure of.
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "rpds",
    "attr",
    "attrs",
)


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


# --------------------------------------------------------------------------- evsed run

# `evsed run` itself (controller.cli.main), with the modules and the compiled schemas noted
# the moment the first frame (the BootNotification) is handed to the WebSocket, and again at
# exit; written to argv[2] as JSON.
RUN_SCRIPT = r"""
import atexit, json, sys
from controller.csms import rpc as csms_rpc

seen = {}
send = csms_rpc.RpcConnection._send

def note(when):
    rpc16 = sys.modules.get("controller.ocpp16.rpc")
    seen[when] = {
        "modules": sorted(sys.modules),
        "validators": sorted(getattr(rpc16, "_validators", {})),
        "deferred": sorted(
            name for name, m in list(sys.modules.items()) if type(m).__name__ == "DeferredModule"
        ),
    }

async def first_send(self, frame):
    if "boot" not in seen:
        note("boot")
    await send(self, frame)

def at_exit():
    note("exit")
    with open(sys.argv[2], "w") as f:
        json.dump(seen, f)

csms_rpc.RpcConnection._send = first_send
atexit.register(at_exit)
from controller import cli
sys.exit(cli.main(["run", "--no-restart", "-c", sys.argv[1]]))
"""


def spawn_run(cfg: Path, out: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_SCRIPT, str(cfg), str(out)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


async def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until something accepts TCP connections on 127.0.0.1:port (the local API)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        assert proc.poll() is None, "evsed exited"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < deadline, "the API did not start"
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def test_evsed_run_boots_before_it_loads_the_api_and_only_what_it_uses(
    tmp_path: Path,
) -> None:
    """A simulated ws:// charger run by `evsed run`: at its BootNotification none of
    NOT_BEFORE_BOOT is loaded and the only schema compiled is the BootNotification CALL's
    (OCPP-J 4.2.1: validated before it is sent). The API (aiohttp) starts after the boot.
    Every schema compiled by the end belongs to an action that went over the wire."""
    actions: set[str] = set()

    def on_event(event: CsmsEvent) -> None:
        if isinstance(event, (FrameReceived, FrameSent)) and getattr(event, "action", None):
            actions.add(str(event.action))

    out = tmp_path / "modules.json"
    api_port = free_port()
    async with DevCsms(host="127.0.0.1", port=0, on_event=on_event) as csms:
        cfg = write_config(tmp_path, station_id="CP-IMPORTS", csms_url=csms.url, api_port=api_port)
        proc = spawn_run(cfg, out, tmp_path / "evsed.log")
        try:
            await csms.wait_connected("CP-IMPORTS", timeout_s=30)
            await wait_listening(api_port, proc, timeout_s=30)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, (tmp_path / "evsed.log").read_text()
    seen = json.loads(out.read_text())

    boot = seen["boot"]
    assert loaded(boot["modules"], NOT_BEFORE_BOOT) == []
    if proxy_setting() is None:  # no *_proxy variable here: websockets looks up no proxy
        # What websockets imports and a start does not use (csms/deferred.py) is still a
        # placeholder, and what those two would import is not loaded.
        assert boot["deferred"] == ["importlib.metadata", "urllib.request"]
        assert loaded(boot["modules"], ("http.client", "email.parser", "email.message")) == []
    assert boot["validators"] == [[2, "BootNotification"]]

    end = seen["exit"]
    assert "aiohttp" in end["modules"] and "controller.web.api" in end["modules"]
    compiled = {action for _, action in end["validators"]}
    assert compiled <= actions, compiled - actions
    assert loaded(end["modules"], ("cryptography", "aioftp", "pymodbus", "ocpp.v16")) == []
    # Every payload of a clean session passed the quick check: no jsonschema at all.
    assert loaded(end["modules"], ("jsonschema", "referencing")) == []


# --------------------------------------------------------------------------- in process

SCRIPT = r"""
import asyncio, json, sys
from controller.app import App
from controller.config import parse
from controller.runtime.clock import ManualClock

async def main():
    config = parse({
        "station": {"id": "CP-IMPORTS", "storage": sys.argv[1]},
        # Nothing listens there: the charger builds its connection and keeps trying.
        "csms": {"url": "ws://127.0.0.1:" + sys.argv[2] + "/ocpp"},
        "reader": {"driver": "sim"},
        "connectors": [{
            "contactor": {"driver": "sim"},
            "meter": json.loads(sys.argv[3]),
            "vehicle": {"driver": "sim"},
        }],
    })
    app = App(config, clock=ManualClock(), with_api=False)
    await app.start()
    for _ in range(20):
        await asyncio.sleep(0.01)  # a few connection attempts
    await app.stop(reason=None)
    print(json.dumps(sorted(sys.modules)))

asyncio.run(main())
"""


def run_app(tmp_path: Path, meter: dict[str, object]) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path / "evsed.db"),
            str(free_port()),
            json.dumps(meter),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    modules: list[str] = json.loads(out.strip().splitlines()[-1])
    return modules


def test_a_ws_charger_with_the_api_off_loads_nothing_it_does_not_use(tmp_path: Path) -> None:
    modules = run_app(tmp_path, {"driver": "sim"})
    assert loaded(modules, NOT_BEFORE_BOOT) == []


def test_a_modbus_meter_config_loads_the_modbus_driver(tmp_path: Path) -> None:
    """What the configuration names is loaded: a Modbus TCP meter brings pymodbus (nothing
    answers on the port; the charger starts regardless, the meter read fails)."""
    meter = {
        "driver": "modbus",
        "model": "eastron_sdm630",
        "host": "127.0.0.1",
        "tcp_port": free_port(),
        "timeout_s": 0.2,
        "retries": 0,
    }
    modules = run_app(tmp_path, meter)
    assert "hal.modbus" in modules and "pymodbus" in modules
    assert loaded(modules, ("aiohttp", "smartcard", "gpiozero", "cryptography", "aioftp")) == []


# --------------------------------------------------------------------------- the CLI

CLI_SCRIPT = r"""
import json, sys
from controller import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""

# The daemon: what `evsed run` needs and a command talking to it over HTTP does not.
DAEMON = (
    "asyncio",
    "websockets",
    "aiohttp",
    "jsonschema",
    "ocpp",
    "controller.app",
    "controller.runtime",
    "controller.csms",
    "controller.ocpp16.client",
    "controller.ocpp16.rpc",
    "controller.security",
    "controller.maintenance",
    "controller.web",
    "hal.registry",
    "hal.sim",
    "controller.ops.install",
    "controller.ops.sdnotify",
)


def cli_modules(*argv: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    modules: list[str] = json.loads(out.strip().splitlines()[-1])
    return modules


def test_the_light_cli_commands_load_none_of_the_daemon(tmp_path: Path) -> None:
    """`evsed sim ...`, `evsed schedule` and `evsed status` talk to the running daemon's API
    (unreachable here): no asyncio, OCPP, WebSocket, schema or driver code. `status` reads
    the database when the daemon is down (its offline view), the others not even that."""
    api = f"http://127.0.0.1:{free_port()}"
    for argv in (("sim", "plug", "1"), ("sim", "card", "04A1B2C3"), ("schedule", "1")):
        modules = cli_modules(*argv, "--api", api)
        assert loaded(modules, DAEMON) == [], argv
        assert loaded(modules, ("sqlite3", "controller.storage", "controller.config")) == []
    modules = cli_modules("status", "--api", api)
    assert loaded(modules, DAEMON) == []


# --------------------------------------------------------------------------- API after the boot


class RecordingNotifier(Notifier):
    """sd_notify without a socket: remembers READY=1 and whether the API was up then."""

    def __init__(self) -> None:
        super().__init__(None)
        self.ready_with_api: list[bool] = []
        self.app: App | None = None

    def ready(self, status: str | None = None) -> bool:
        self.ready_with_api.append(self.app is not None and self.app.api_started.is_set())
        return True


def after_boot_app(tmp_path: Path, csms_url: str, api_port: int = 0) -> App:
    data = charger_config(tmp_path, csms_url)
    data["api"]["port"] = api_port
    notifier = RecordingNotifier()
    app = App(parse(data), clock=ManualClock(), api_after_boot=True, notifier=notifier)
    notifier.app = app
    return app


async def test_the_api_and_ready_follow_the_first_boot_notification(
    tmp_path: Path, csms: DevCsms
) -> None:
    """`evsed run` (api_after_boot): the BootNotification goes out before the API starts;
    READY=1 comes once the API is up (systemd's "started" still includes the API)."""
    app = after_boot_app(tmp_path, csms.url)
    api_at_first_frame: list[bool] = []
    app.on_frame = lambda direction, text: api_at_first_frame.append(app.api_started.is_set())
    try:
        await app.start()
        await asyncio.wait_for(app.api_started.wait(), 10)
        assert api_at_first_frame[0] is False  # the first frame: BootNotification
        assert any(f.action == "BootNotification" for f in csms.received)
        assert isinstance(app.notifier, RecordingNotifier)
        await wait_until(lambda: bool(app.notifier.ready_with_api))  # type: ignore[attr-defined]
        assert app.notifier.ready_with_api == [True]
    finally:
        await app.stop(reason=None)


async def test_an_unreachable_csms_does_not_keep_the_api_down(tmp_path: Path) -> None:
    """The first connection attempt fails (nothing listens): the API starts then."""
    app = after_boot_app(tmp_path, f"ws://127.0.0.1:{free_port()}/ocpp")
    try:
        await app.start()
        await asyncio.wait_for(app.api_started.wait(), 10)
        assert app.client is not None and app.client.connection_state() != "accepted"
    finally:
        await app.stop(reason=None)


async def test_an_api_port_taken_stops_the_charger_with_its_contactors_open(
    tmp_path: Path, csms: DevCsms
) -> None:
    """As when the API started before the boot, the charger does not run on without it: the
    API task is critical, so wait() returns (as for a failed CSMS task) and stop() leaves
    every contactor open."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = after_boot_app(tmp_path, csms.url, api_port=taken.getsockname()[1])
        try:
            await app.start()
            await asyncio.wait_for(app.wait(), 10)  # ends by itself: nobody asked to stop
        finally:
            await app.stop(reason=None)
    assert not app.api_started.is_set()
    assert all(not hw.contactor.closed for hw in app.hardware)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
