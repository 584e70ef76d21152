"""The default installer (evsed wheels in side-by-side venvs, switched atomically, rolled back
by the launcher) and the operator's installer, with real venvs, pip --no-index and real
processes. The launcher runs as the unit's ExecStart would, once per (re)start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from controller.maintenance import launcher
from controller.maintenance.installer import (
    InstallOutcome,
    OperatorInstaller,
    TrialState,
    WheelInstaller,
)
from tests.maintenance.wheels import make_wheel

SMOKE = ("bin/python", "-c", "import evfake")


def start(root: Path, out: Path) -> int:
    """One start of the service: the launcher with the system python, like ExecStart."""
    env = {**os.environ, "EVSED_VENV_ROOT": str(root), "EVFAKE_OUT": str(out)}
    env.pop("EVSED_LAUNCHER", None)
    proc = subprocess.run(
        [sys.executable, str(root / "evsed-launch"), "run"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    return proc.returncode


def ran(out: Path) -> list[str]:
    return out.read_text().split() if out.exists() else []


def current(root: Path) -> str | None:
    return launcher.current_target(root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "opt-evsed"
    path.mkdir()
    return path


async def install(root: Path, wheel: Path, **kw: object) -> InstallOutcome:
    inst = WheelInstaller(root, ready_deadline_s=600, **{"smoke_argv": SMOKE, **kw})  # type: ignore[arg-type]
    result = await inst.install(wheel)
    return result.outcome


async def test_switch_confirm_and_automatic_return(root: Path, tmp_path: Path) -> None:
    """A confirming version stays; one that never confirms is replaced by the previous one
    after its starts are used up; a broken one (cannot import) likewise; one past its
    deadline at once. Every earlier version directory survives (nothing installed is lost)."""
    out = tmp_path / "ran.txt"
    # Version 1 confirms itself: it becomes the known-good one.
    assert await install(root, make_wheel(tmp_path, "1.0", confirm=True)) is InstallOutcome.RESTART
    assert current(root) == "versions/1"
    start(root, out)
    assert ran(out) == ["1.0"]
    assert WheelInstaller(root, ready_deadline_s=600).trial_state() is TrialState.CONFIRMED
    assert not (root / launcher.TRIAL).exists()

    # Version 2 runs but never confirms: three starts, then version 1 again.
    assert await install(root, make_wheel(tmp_path, "2.0", confirm=False)) is InstallOutcome.RESTART
    assert current(root) == "versions/2"
    assert os.readlink(root / "previous") == "versions/1"
    for _ in range(4):
        start(root, out)
    assert ran(out)[1:] == ["2.0", "2.0", "2.0", "1.0"]
    assert current(root) == "versions/1"
    assert WheelInstaller(root, ready_deadline_s=600).trial_state() is TrialState.ROLLED_BACK

    # Version 3 cannot even import (no smoke check here, so it gets switched to): the
    # launcher, which imports nothing of any version, brings version 1 back.
    broken = make_wheel(tmp_path, "3.0", broken=True)
    assert await install(root, broken, smoke_argv=None) is InstallOutcome.RESTART
    codes = [start(root, out) for _ in range(4)]
    assert codes[:3] != [0, 0, 0] and codes[3] == 0
    assert ran(out)[-1] == "1.0" and "3.0" not in ran(out)
    assert current(root) == "versions/1"

    # Version 4 past its deadline (the clock says so) is not even started.
    late = WheelInstaller(root, ready_deadline_s=10, smoke_argv=SMOKE, wall_s=lambda: 0.0)
    assert (
        await late.install(make_wheel(tmp_path, "4.0", confirm=False))
    ).outcome is InstallOutcome.RESTART
    start(root, out)
    assert ran(out)[-1] == "1.0" and "4.0" not in ran(out)

    # Version 5 confirms: it stays current across further starts.
    assert await install(root, make_wheel(tmp_path, "5.0", confirm=True)) is InstallOutcome.RESTART
    start(root, out)
    start(root, out)
    assert ran(out)[-2:] == ["5.0", "5.0"]
    assert current(root) == "versions/5"
    assert os.readlink(root / "previous") == "versions/1"
    assert (root / "versions" / "1").is_dir()


async def test_smoke_check_refuses_a_version_that_cannot_import(root: Path, tmp_path: Path) -> None:
    """Checked before the switch: nothing changes, the running version stays current."""
    out = tmp_path / "ran.txt"
    await install(root, make_wheel(tmp_path, "1.0"))
    start(root, out)
    inst = WheelInstaller(root, ready_deadline_s=600, smoke_argv=SMOKE)
    result = await inst.install(make_wheel(tmp_path, "2.0", broken=True))
    assert result.outcome is InstallOutcome.FAILED
    assert "does not start" in result.detail
    assert current(root) == "versions/1"
    assert not (root / "versions" / "2").exists()
    assert not (root / launcher.TRIAL).exists()


async def test_not_a_wheel_and_missing_dependency_fail_cleanly(root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "firmware.bin"
    junk.write_bytes(b"\x7fELF not a wheel")
    inst = WheelInstaller(root, ready_deadline_s=600, smoke_argv=SMOKE)
    assert (await inst.install(junk)).outcome is InstallOutcome.FAILED
    # pip --no-index: a dependency that is in no bundle cannot be fetched from anywhere.
    needy = make_wheel(tmp_path, "2.0", requires=("evdep",))
    result = await inst.install(needy)
    assert result.outcome is InstallOutcome.FAILED and "pip" in result.detail
    assert current(root) is None


async def test_bundle_brings_its_dependencies(root: Path, tmp_path: Path) -> None:
    """A tar bundle of wheels: the new dependency comes along; only plain .whl members are
    taken (a path like ../x.whl is reduced to its name)."""
    dep = make_wheel(tmp_path, "1.0", name="evdep", script=False)
    top = make_wheel(tmp_path, "2.0", requires=("evdep",))
    bundle = tmp_path / "evsed-2.0.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(dep, arcname="../../evil/" + dep.name)
        tar.add(top, arcname=top.name)
    inst = WheelInstaller(
        root, ready_deadline_s=600, smoke_argv=("bin/python", "-c", "import evdep")
    )
    result = await inst.install(bundle)
    assert result.outcome is InstallOutcome.RESTART, result.detail
    assert not (tmp_path / "evil").exists()
    assert (root / "wheelhouse" / dep.name).exists()


async def test_in_process_view_of_the_trial(root: Path, tmp_path: Path) -> None:
    """What the running evsed asks (firmware.py): am I the version on trial, how long do I
    have, confirm, roll back."""
    now = [1000.0]
    await install(root, make_wheel(tmp_path, "1.0"))
    (root / launcher.TRIAL).unlink()
    inst = WheelInstaller(
        root,
        ready_deadline_s=300,
        smoke_argv=SMOKE,
        running_prefix=root / "versions" / "2",
        wall_s=lambda: now[0],
    )
    assert (await inst.install(make_wheel(tmp_path, "2.0"))).outcome is InstallOutcome.RESTART
    assert inst.trial_state() is TrialState.RUNNING
    now[0] += 100
    assert inst.trial_seconds_left() == pytest.approx(200)
    other = WheelInstaller(root, ready_deadline_s=300, running_prefix=root / "versions" / "1")
    assert other.trial_state() is TrialState.PENDING
    assert inst.rollback("not ready") is True
    assert current(root) == "versions/1"
    assert inst.trial_state() is TrialState.ROLLED_BACK


# ---------------------------------------------------------------------------- operator


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "install.py"
    path.write_text("import sys, time\n" + body)
    return [sys.executable, str(path), "--file={file}"]


async def test_operator_installer_exit_codes_and_timeout(tmp_path: Path) -> None:
    """Exit 0 = Installed, anything else = InstallationFailed; {file} is the one argument it
    gets from evsed; a hanging installer is killed after its timeout."""
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"payload")
    seen = tmp_path / "seen.txt"
    ok = OperatorInstaller(script(tmp_path, f"open({str(seen)!r}, 'w').write(sys.argv[1])\n"))
    assert (await ok.install(fw)).outcome is InstallOutcome.INSTALLED
    assert seen.read_text() == f"--file={fw}"
    bad = OperatorInstaller(script(tmp_path, "print('flash failed'); sys.exit(3)\n"))
    result = await bad.install(fw)
    assert result.outcome is InstallOutcome.FAILED and "exit 3" in result.detail
    slow = OperatorInstaller(script(tmp_path, "time.sleep(60)\n"), timeout_s=0.5)
    result = await slow.install(fw)
    assert result.outcome is InstallOutcome.FAILED and "killed" in result.detail
    missing = OperatorInstaller(["/nonexistent/installer", "{file}"])
    assert (await missing.install(fw)).outcome is InstallOutcome.FAILED


# ---------------------------------------------------------------------------- service setup


def test_unit_started_through_the_launcher() -> None:
    """`evsed install --firmware-updates`: ExecStart runs the launcher with the system python,
    the root is writable for new versions, safe-off keeps the installed venv."""
    from controller.ops.install import render_unit, unit_source, versions_unit

    unit = versions_unit(
        render_unit(unit_source("evsed.service"), "/opt/evsed/.venv/bin/evsed"), "/opt/evsed"
    )
    assert "ExecStart=/usr/bin/python3 /opt/evsed/evsed-launch run -c /etc/evsed/evsed.toml" in unit
    assert "ReadWritePaths=/opt/evsed\n" in unit
    assert "ExecStopPost=/opt/evsed/.venv/bin/evsed safe-off" in unit


def test_restart_goes_through_the_launcher(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """A Reset or a firmware restart re-executes the launcher (so a trial start is counted
    and `current` is followed), not the old version's script."""
    from controller.cli import reexec_command

    launch = WheelInstaller(root, ready_deadline_s=60).install_launcher()
    monkeypatch.setenv("EVSED_LAUNCHER", f"{sys.executable}\n{launch}")
    path, argv = reexec_command(["/opt/evsed/current/bin/evsed", "run", "-c", "x.toml"], "python")
    assert (path, argv) == (sys.executable, [sys.executable, str(launch), "run", "-c", "x.toml"])


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("systemctl"),
    reason="needs root with useradd and systemctl (they run confined to the temporary root)",
)
def test_install_with_firmware_updates_into_a_temporary_root(tmp_path: Path) -> None:
    """`evsed install --firmware-updates`: launcher, `current` -> .venv, versions/ and the
    root owned by the service, the main unit starting the launcher."""
    from controller.ops.install import Installer, unit_source

    image = tmp_path / "image"
    etc = image / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\n")
    (image / "srv/evsed/.venv/bin").mkdir(parents=True)
    lines: list[str] = []
    inst = Installer(root=image, out=lines.append, warn=lines.append, unit_loader=unit_source)
    assert inst.install(executable="/srv/evsed/.venv/bin/evsed", versions=True) == 0
    base = image / "srv/evsed"
    assert os.readlink(base / "current") == ".venv"
    assert (base / "evsed-launch").read_text() == Path(launcher.__file__).read_text()
    uid = int(
        next(r for r in (etc / "passwd").read_text().splitlines() if r.startswith("evsed:")).split(
            ":"
        )[2]
    )
    assert (base / "versions").stat().st_uid == uid and base.stat().st_uid == uid
    unit = (etc / "systemd/system/evsed.service").read_text()
    assert "ExecStart=/usr/bin/python3 /srv/evsed/evsed-launch run -c /etc/evsed/evsed.toml" in unit
    assert "ReadWritePaths=/srv/evsed\n" in unit
    # A venv not named .venv has no place for versions beside it.
    with pytest.raises(Exception, match="named .venv"):
        inst.install(executable="/srv/other/venv/bin/evsed", versions=True)
