"""evsed installed with `evsed install --simulated` into Debian bookworm booted under a real
systemd (systemd-nspawn): Type=notify, watchdog, safe-off, stop, Reset, ops commands.

Once per variant: with a gpio group (Raspberry Pi OS) and without one (plain Debian, Armbian).
The container has no network (--private-network): evsed and its pinned dependencies come as
wheels built on the host, and the dev CSMS runs inside (tests/nspawn_csms.py), driven through
a UNIX socket on the container's file system. The only change to the shipped units is a
shorter WatchdogSec= (a drop-in), so that a watchdog kill takes seconds, not a minute.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.nspawn import (
    VENV,
    WHEELS,
    Container,
    CsmsControl,
    base_root,
    build_wheelhouse,
    copy_root,
    missing_tools,
    nspawn_run,
)
from tests.procs import REPO

MISSING = missing_tools()
# tests/run-all.sh sets it: there a machine that cannot boot a container fails the suite.
REQUIRED = bool(os.environ.get("EVSED_REQUIRE_NSPAWN"))
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING) and not REQUIRED,
        reason=f"needs {', '.join(MISSING)} (apt-get install systemd-container debootstrap)",
    ),
    # Building the root (first run) and booting take minutes, not the default 180 s.
    pytest.mark.timeout(1800),
]

EVSED = f"{VENV}/bin/evsed"
STATION = "EVSED-001"  # the simulated example's station id
CARD = "04A1B2C3"
CSMS_PORT = 9000  # the simulated example's csms.url
CONTROL = "/var/lib/evsed-test-csms/control.sock"
WATCHDOG_S = 6
CONFIG = "/etc/evsed/evsed.toml"
OPERATOR = "chargeops"  # a login user in the evsed group (hardware.md: usermod -aG evsed)

CSMS_UNIT = f"""[Unit]
Description=evsed dev CSMS for the tests
[Service]
ExecStart={VENV}/bin/python /opt/evsed-test/nspawn_csms.py {CONTROL} {CSMS_PORT}
StateDirectory=evsed-test-csms
[Install]
WantedBy=multi-user.target
"""
WATCHDOG_DROP_IN = f"[Service]\nWatchdogSec={WATCHDOG_S}\n"


@dataclass
class Box:
    container: Container
    csms: CsmsControl
    gpio: bool
    install: CompletedProcess[str]

    def run(self, *argv: str, user: str | None = None) -> CompletedProcess[str]:
        return self.container.run(list(argv), user=user)

    def show(self, *props: str) -> dict[str, str]:
        return self.container.show("evsed.service", *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def wait_ready(self, what: str) -> dict[str, str]:
        """Active and running (READY=1 seen) with the CSMS connection accepted."""

        def ready() -> dict[str, str] | None:
            props = self.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
            ok = (props["ActiveState"], props["SubState"]) == ("active", "running")
            return props if ok and props["StatusText"].endswith("CSMS accepted") else None

        props: dict[str, str] = self.container.wait(what, ready)
        return props

    def sim(self, *args: str) -> None:
        self.run(EVSED, "sim", "-c", CONFIG, *args)

    def messages(self, cursor: str | None = None) -> list[str]:
        return [
            str(e.get("MESSAGE", "")) for e in self.container.journal("evsed", since_cursor=cursor)
        ]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if MISSING:
        pytest.fail(f"EVSED_REQUIRE_NSPAWN is set but this machine lacks {', '.join(MISSING)}")
    dest = tmp_path_factory.mktemp("wheels")
    wheels = build_wheelhouse(REPO, dest)
    assert any(w.name.startswith("evsed-") for w in wheels), wheels
    return dest


@pytest.fixture(scope="module", params=["gpio-group", "no-gpio-group"])
def box(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> Iterator[Box]:
    gpio = request.param == "gpio-group"
    base = base_root()
    work = tmp_path_factory.mktemp(f"nspawn-{request.param}")
    root = work / "root"
    container = Container(root, work / "nspawn.log")
    try:
        copy_root(base, root)
        shutil.copytree(wheelhouse, root / WHEELS.lstrip("/"))
        test_dir = root / "opt/evsed-test"
        test_dir.mkdir(parents=True)
        shutil.copy(REPO / "tests" / "nspawn_csms.py", test_dir)
        units = root / "etc/systemd/system"
        (units / "evsed-test-csms.service").write_text(CSMS_UNIT)
        (units / "multi-user.target.wants").mkdir(exist_ok=True)
        (units / "multi-user.target.wants/evsed-test-csms.service").symlink_to(
            "/etc/systemd/system/evsed-test-csms.service"
        )
        (units / "evsed.service.d").mkdir()
        (units / "evsed.service.d/50-test-watchdog.conf").write_text(WATCHDOG_DROP_IN)
        setup = [
            f"python3 -m venv {VENV}",
            f"{VENV}/bin/pip install --quiet --no-index --find-links {WHEELS} evsed",
            f"useradd --create-home --shell /bin/sh {OPERATOR}",
        ]
        if gpio:
            setup.append("groupadd --system gpio")
        nspawn_run(root, ["/bin/sh", "-ec", " && ".join(setup)])
        container.boot()
        install = container.run([EVSED, "install", "--simulated", "--now"], check=False)
        container.run(["usermod", "--append", "--groups", "evsed", OPERATOR])
        yield Box(container, CsmsControl(root / CONTROL.lstrip("/")), gpio, install)
    finally:
        try:
            container.shutdown()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def test_install_starts_the_service_whatever_groups_exist(box: Box) -> None:
    assert box.install.returncode == 0, box.install.stdout + box.install.stderr
    props = box.wait_ready("READY=1 and CSMS accepted")
    assert props["StatusText"] == "charging 0/1, CSMS accepted"
    assert props["NRestarts"] == "0"
    gpio_warning = "warning: group gpio does not exist here; evsed is not added to it."
    if box.gpio:
        assert "gpio" in box.run("id", "-nG", "evsed").stdout.split()
        assert gpio_warning not in box.install.stderr
    else:
        assert gpio_warning in box.install.stderr
        assert "sudo groupadd --system gpio" in box.install.stderr
    # The user's groups reach the service without SupplementaryGroups= in the unit.
    status = box.run("cat", f"/proc/{props['MainPID']}/status").stdout
    gids = re.search(r"^Groups:\s*(.*)$", status, re.M)
    assert gids is not None
    expected = box.run("id", "-G", "evsed").stdout.split()
    assert set(expected) <= set(gids.group(1).split())
    text = "\n".join(box.messages())
    assert "Failed to determine supplementary groups" not in text
    assert "mode is different" not in text
    assert box.show("ExecMainStatus", "Result")["Result"] == "success"
    safe_off = box.container.show("evsed-safe-off.service", "ActiveState", "Result")
    assert safe_off == {"ActiveState": "active", "Result": "success"}


def test_a_session_against_the_dev_csms_is_in_the_journal_by_action(box: Box) -> None:
    box.wait_ready("ready")
    box.sim("plug", "1")
    box.sim("card", CARD)
    start = box.container.wait("StartTransaction", lambda: box.csms.frames("StartTransaction"))
    assert start[-1]["payload"]["idTag"] == CARD
    box.container.wait(
        "charging", lambda: box.show("StatusText")["StatusText"].startswith("charging 1/1")
    )
    box.sim("unplug", "1")
    box.container.wait("StopTransaction", lambda: box.csms.frames("StopTransaction"))
    # README: `journalctl -u evsed EVSED_ACTION=StopTransaction` at the default level.
    for action in ("StartTransaction", "StopTransaction"):
        entries = box.container.wait(
            action,
            lambda a=action: [
                e
                for e in box.container.journal("evsed", f"EVSED_ACTION={a}")
                if e["PRIORITY"] == "6"
            ],
        )
        assert entries[-1]["EVSED_TX_KEY"] and entries[-1]["EVSED_TRANSACTION_ID"]
        assert entries[-1]["SYSLOG_IDENTIFIER"] == "evsed"


def test_ops_commands_work_for_a_non_root_user_in_the_evsed_group(box: Box) -> None:
    box.wait_ready("ready")
    status = box.run(EVSED, "status", "-c", CONFIG, user=OPERATOR)
    assert STATION in status.stdout
    assert "accepted" in status.stdout
    sessions = box.run(EVSED, "sessions", "-c", CONFIG, user=OPERATOR)
    assert CARD in sessions.stdout


def charging_tx_id(box: Box) -> int:
    """Plug in and tap; the CSMS transactionId once the contactor is closed."""
    box.sim("plug", "1")
    box.sim("card", CARD)

    def tx_id() -> int | None:
        status = json.loads(box.run(EVSED, "status", "-c", CONFIG, "--json").stdout)
        connector = status["connectors"][0]
        return connector["transaction_id"] if connector["contactor_closed"] else None

    found: int = box.container.wait("charging", tx_id)
    return found


def test_watchdog_kill_runs_safe_off_and_restarts_with_one_stop_reboot(box: Box) -> None:
    before = box.wait_ready("ready")
    tx_id = charging_tx_id(box)
    cursor = box.container.cursor()
    pid = int(before["MainPID"])
    box.run("kill", "-STOP", str(pid))  # hung: no more WATCHDOG=1 pings
    box.container.wait(
        "a new main process", lambda: box.main_pid() not in (0, pid), timeout_s=WATCHDOG_S + 60
    )
    after = box.wait_ready("ready after the restart")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    text = "\n".join(box.messages(cursor))
    assert "Watchdog timeout" in text
    assert "connector 1 contactor (sim): open" in text  # ExecStopPost=evsed safe-off
    box.container.wait(
        "queue drained",
        lambda: (
            json.loads(box.run(EVSED, "status", "-c", CONFIG, "--json").stdout)["csms"][
                "queued_messages"
            ]
            == 0
        ),
    )
    stops = [
        f for f in box.csms.frames("StopTransaction") if f["payload"]["transactionId"] == tx_id
    ]
    assert [s["payload"]["reason"] for s in stops] == ["Reboot"]
    box.sim("unplug", "1")


def test_ocpp_reset_reloads_in_place_and_closes_normally(box: Box) -> None:
    before = box.wait_ready("ready")
    boots = len(box.csms.frames("BootNotification"))
    closes = len(box.csms.request("disconnects"))
    reply = box.csms.request("call", station=STATION, action="Reset", payload={"type": "Soft"})
    assert reply == {"status": "Accepted"}
    box.container.wait(
        "a new BootNotification", lambda: len(box.csms.frames("BootNotification")) > boots
    )
    after = box.wait_ready("ready after the reset")
    # Re-executed in place: same main pid, no restart, the process is still called evsed.
    assert (after["MainPID"], after["NRestarts"]) == (before["MainPID"], before["NRestarts"])
    comm = box.run("cat", f"/proc/{after['MainPID']}/comm").stdout.strip()
    assert comm == "evsed"
    closed = box.csms.request("disconnects")[closes:]
    assert [(c["code"], c["reason"]) for c in closed] == [(1000, "Soft reset")]


def test_systemctl_stop_opens_the_contactors_and_closes_normally(box: Box) -> None:
    box.wait_ready("ready")
    charging_tx_id(box)
    closes = len(box.csms.request("disconnects"))
    cursor = box.container.cursor()
    box.run("systemctl", "stop", "evsed")
    props = box.show("ActiveState", "Result")
    assert props == {"ActiveState": "inactive", "Result": "success"}
    text = "\n".join(box.messages(cursor))
    assert "connector 1 contactor (sim): open" in text  # ExecStopPost=evsed safe-off
    assert "mode is different" not in text
    stop = box.csms.frames("StopTransaction")[-1]
    assert stop["payload"]["reason"] == "Reboot"
    closed = box.csms.request("disconnects")[closes:]
    assert [(c["code"], c["reason"]) for c in closed] == [(1000, "charge point stopping")]
    box.run("systemctl", "start", "evsed")
    box.wait_ready("ready after a start")
    box.sim("unplug", "1")


def test_systemd_analyze_security_scores(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    scores = {}
    for unit in ("evsed.service", "evsed-safe-off.service"):
        out = box.run("systemd-analyze", "security", "--no-pager", unit).stdout
        found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+) (\w+)", out)
        assert found is not None, out[-500:]
        scores[unit] = (float(found.group(1)), found.group(2))
    with capsys.disabled():
        print(f"\nsystemd-analyze security ({'with' if box.gpio else 'without'} gpio): {scores}")
    # README.md and hardware.md quote these.
    assert scores == {"evsed.service": (2.0, "OK"), "evsed-safe-off.service": (2.2, "OK")}
