"""OCPP Reset Hard reboots the board with [maintenance] hard_reset = "reboot" (1.6 5.14, errata
3.36): a fixed `systemctl reboot` (a fake `systemctl` executable on PATH records its argv),
ResetRetries tries, the fallback to restarting the service, and the polkit rule that
`evsed install --root` writes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.dev.devcsms import DevCsms
from controller.ops.install import (
    REBOOT_POLKIT_RULE,
    REBOOT_POLKIT_RULE_TEXT,
    Installer,
    Recorder,
)
from controller.ops.reboot import REBOOT_ARGV, reboot_board, request_reboot, run_command
from tests.procs import REPO, Evsed, free_port, write_config

LOGIN1_POLICY = Path("/usr/share/polkit-1/actions/org.freedesktop.login1.policy")


def fake_systemctl(bin_dir: Path, *, exit_code: int, sigterm_parent: bool = False) -> Path:
    """A real executable named systemctl: appends its argv to ``calls`` next to it; can
    act like the shutdown that follows an accepted reboot (SIGTERM to its caller)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "systemctl"
    kill = "kill -TERM $PPID\n" if sigterm_parent else ""
    path.write_text(f'#!/bin/sh\necho "$@" >> {bin_dir}/calls\n{kill}exit {exit_code}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir / "calls"


def calls(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


# ----------------------------------------------------------------------------- the command


def test_reboot_is_the_fixed_systemctl_reboot(fake_path: Path) -> None:
    log = fake_systemctl(fake_path, exit_code=0)
    assert REBOOT_ARGV == ("systemctl", "reboot")
    assert request_reboot(retries=3) is True
    assert calls(log) == ["reboot"]  # one try is enough


def test_a_refused_reboot_is_tried_reset_retries_more_times(fake_path: Path) -> None:
    """9.1.22 ResetRetries: "number of times to retry an unsuccessful reset"."""
    log = fake_systemctl(fake_path, exit_code=1)
    pauses: list[float] = []
    assert request_reboot(retries=2, sleep=pauses.append) is False
    assert calls(log) == ["reboot"] * 3
    assert len(pauses) == 2


def test_missing_systemctl_is_a_failed_reboot(tmp_path: Path) -> None:
    assert run_command([str(tmp_path / "nowhere" / "systemctl"), "reboot"]) == 127


def test_no_shutdown_after_an_accepted_reboot_falls_back(fake_path: Path) -> None:
    log = fake_systemctl(fake_path, exit_code=0)
    assert reboot_board(retries=0, sleep=lambda _s: None, shutdown_wait_s=0.01) is False
    assert calls(log) == ["reboot"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


# ----------------------------------------------------------------------------- install


def test_install_writes_the_reboot_polkit_rule_and_uninstall_removes_it(tmp_path: Path) -> None:
    """`evsed install --root` writes the rule (root-owned 0644); uninstall removes it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    out: list[str] = []
    installer = Installer(root=root, runner=Recorder(), out=out.append, warn=out.append)
    assert installer.install(executable="/opt/evsed/.venv/bin/evsed") == 0
    rule = root / REBOOT_POLKIT_RULE.lstrip("/")
    assert rule.read_text() == REBOOT_POLKIT_RULE_TEXT
    assert stat.S_IMODE(rule.stat().st_mode) == 0o644
    text = rule.read_text()
    assert 'subject.user == "evsed"' in text
    assert "ignore-inhibit" not in text  # an inhibitor lock (an update) still wins
    assert any(
        "61-evsed-reboot.rules (Reset Hard reboots the board): install" in line for line in out
    )
    assert installer.uninstall() == 0
    assert not rule.exists()


@pytest.mark.skipif(not LOGIN1_POLICY.exists(), reason="no logind polkit policy here")
def test_the_rule_names_real_logind_actions() -> None:
    actions = set(re.findall(r'action.id == "([^"]+)"', REBOOT_POLKIT_RULE_TEXT))
    policy = LOGIN1_POLICY.read_text()
    assert actions == {
        "org.freedesktop.login1.reboot",
        "org.freedesktop.login1.reboot-multiple-sessions",
    }
    for action in actions:
        assert f'<action id="{action}">' in policy


# ----------------------------------------------------------------------------- `evsed run`


class EnvEvsed(Evsed):
    """`evsed run` with extra environment (the fake systemctl first on PATH)."""

    def __init__(self, config: Path, api_port: int, log_dir: Path, env: dict[str, str]) -> None:
        super().__init__(config, api_port, log_dir)
        self.env = {**os.environ, **env}

    def start(self) -> None:
        self.runs += 1
        with open(self.log_dir / f"evsed-run{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "run", "-c", str(self.config)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.all_procs.append(self.proc)

    def log_text(self) -> str:
        return "\n".join(
            (self.log_dir / f"evsed-run{n}.log").read_text(errors="replace")
            for n in range(1, self.runs + 1)
        )


@pytest.fixture
async def procs() -> AsyncIterator[list[Evsed]]:
    started: list[Evsed] = []
    yield started
    for ev in started:
        ev.cleanup()


def reboot_config(tmp_path: Path, csms_url: str, api_port: int, station: str) -> Path:
    path = write_config(
        tmp_path, station_id=station, csms_url=csms_url, api_port=api_port, ocpp={"ResetRetries": 1}
    )
    path.write_text(path.read_text() + '\n[maintenance]\nhard_reset = "reboot"\n')
    return path


async def test_hard_reset_stops_the_transaction_then_reboots(
    tmp_path: Path, procs: list[Evsed]
) -> None:
    """The running transaction is stopped with HardReset and delivered first; then the
    fixed `systemctl reboot`; the shutdown's SIGTERM ends evsed with exit 0."""
    log = fake_systemctl(tmp_path / "bin", exit_code=0, sigterm_parent=True)
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = reboot_config(tmp_path, csms.url, api_port, "CP-REBOOT")
        ev = EnvEvsed(cfg, api_port, tmp_path, {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
        procs.append(ev)
        ev.start()
        await ev.wait_api()
        await csms.wait_connected("CP-REBOOT", timeout_s=15)
        await ev.post("/api/sim/plug", {"connector": 1})
        await ev.post("/api/sim/card", {"uid": "04A1B2C3"})
        await ev.wait_status(lambda s: s["connectors"][0]["contactor_closed"], what="charging")
        frame = await csms.call_raw("CP-REBOOT", "Reset", {"type": "Hard"})
        assert frame[2] == {"status": "Accepted"}
        stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
        assert stop.payload["reason"] == "HardReset"
        assert ev.proc is not None
        assert await asyncio.to_thread(ev.proc.wait, 30) == 0
    assert calls(log) == ["reboot"]
    assert "rebooting the board: systemctl reboot" in ev.log_text()
    assert len(csms.frames("CP-REBOOT", "BootNotification")) == 1


async def test_failed_reboot_retries_then_restarts_the_service(
    tmp_path: Path, procs: list[Evsed]
) -> None:
    """systemctl refuses (no polkit rule, say): 1 + ResetRetries tries, then the service
    restarts in place like a Soft reset (a new BootNotification), and the log says so."""
    log = fake_systemctl(tmp_path / "bin", exit_code=1)
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = reboot_config(tmp_path, csms.url, api_port, "CP-NOREBOOT")
        ev = EnvEvsed(cfg, api_port, tmp_path, {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
        procs.append(ev)
        ev.start()
        await ev.wait_api()
        await csms.wait_connected("CP-NOREBOOT", timeout_s=15)
        frame = await csms.call_raw("CP-NOREBOOT", "Reset", {"type": "Hard"})
        assert frame[2] == {"status": "Accepted"}
        await csms.wait_for(
            lambda f: (
                f.action == "BootNotification"
                and len(csms.frames("CP-NOREBOOT", "BootNotification")) >= 2
            ),
            timeout_s=30,
        )
        # A Soft reset with the same config never reboots.
        frame = await csms.call_raw("CP-NOREBOOT", "Reset", {"type": "Soft"})
        assert frame[2] == {"status": "Accepted"}
        await csms.wait_for(
            lambda f: (
                f.action == "BootNotification"
                and len(csms.frames("CP-NOREBOOT", "BootNotification")) >= 3
            ),
            timeout_s=30,
        )
    assert calls(log) == ["reboot", "reboot"]  # ResetRetries = 1
    assert "the board could not be rebooted: restarting the service instead" in ev.log_text()


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd"),
    reason="needs root with useradd (it runs confined to the temporary root)",
)
def test_evsed_install_root_writes_the_rule_and_joins_systemd_journal(tmp_path: Path) -> None:
    """`evsed install --root DIR` (the command line, real useradd/usermod --prefix and
    systemctl --root) writes the reboot rule and, since diagnostics archives hold the unit's
    journal, adds the evsed user to systemd-journal where that group exists."""
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\nsystemd-journal:x:101:\n")
    (etc / "gshadow").write_text("root:*::\nsystemd-journal:!*::\n")
    exe = "/opt/evsed/.venv/bin/evsed"
    assert main(["install", "--root", str(etc.parent), "--simulated", "--exec-path", exe]) == 0
    rule = etc / "polkit-1" / "rules.d" / "61-evsed-reboot.rules"
    assert rule.read_text() == REBOOT_POLKIT_RULE_TEXT
    members = {
        line.split(":")[0]: line.split(":")[3] for line in (etc / "group").read_text().splitlines()
    }
    assert members["systemd-journal"] == "evsed"
    again: list[str] = []
    Installer(root=etc.parent, out=again.append, warn=again.append).install(
        executable="/opt/evsed/.venv/bin/evsed"
    )
    assert "user evsed: in systemd-journal (diagnostics read its journal)" in again
