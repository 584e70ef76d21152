"""`evsed install` / `uninstall` into a temporary root: real useradd/systemctl, host untouched."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import parse
from controller.ops.install import (
    DEFAULT_EXECUTABLE,
    UNITS,
    Installer,
    InstallError,
    Recorder,
    config_from_example,
    find_executable,
    render_unit,
    run_command,
    unit_source,
)

EXE = "/srv/chargers/venv/bin/evsed"  # not the default: the units must be rewritten
GPIO_MISSING = "group gpio does not exist here; evsed is not added to it."

# The real useradd --prefix / systemctl --root need root (they edit files and lock them).
real_commands = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("systemctl"),
    reason="needs root with useradd and systemctl (they run confined to the temporary root)",
)

PLACEHOLDER_UNIT = """[Unit]
Description=placeholder for {name} (controller/units/ not written yet)

[Service]
ExecStart=/opt/evsed/.venv/bin/evsed run -c /etc/evsed/evsed.toml
Environment=PYTHON=/opt/evsed/.venv/bin/python

[Install]
WantedBy=multi-user.target
"""


def load_unit(name: str) -> str:
    """The unit as shipped in controller/units/."""
    return unit_source(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A minimal Debian-like /etc: dialout and plugdev exist, gpio does not (not a Pi)."""
    etc = tmp_path / "root" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\nplugdev:x:46:\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\nplugdev:*::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    return tmp_path / "root"


class Console:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def installer(root: Path, console: Console, **kwargs: object) -> Installer:
    return Installer(
        root=root,
        out=console.lines.append,
        warn=console.warnings.append,
        unit_loader=load_unit,
        **kwargs,  # type: ignore[arg-type]
    )


def passwd(root: Path) -> dict[str, list[str]]:
    rows = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()]
    return {r[0]: r for r in rows}


def groups(root: Path) -> dict[str, list[str]]:
    rows = [line.split(":") for line in (root / "etc/group").read_text().splitlines()]
    return {r[0]: r for r in rows}


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path under root with mode, owner and content hash (or link target)."""
    result = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content = "-> " + os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = "dir"
        result[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return result


def host_has_evsed_user() -> bool:
    try:
        pwd.getpwnam("evsed")
    except KeyError:
        return False
    return True


# --------------------------------------------------------------------------- pure parts


def test_render_unit_substitutes_the_venv() -> None:
    text = load_unit("evsed.service")
    assert DEFAULT_EXECUTABLE in text
    assert render_unit(text, DEFAULT_EXECUTABLE) == text
    rendered = render_unit(text, EXE)
    assert "/opt/evsed/.venv" not in rendered
    assert f"ExecStart={EXE} " in rendered
    assert render_unit(text, "/opt/evsed/.venv2/bin/evsed").count("/opt/evsed/.venv2/") == (
        text.count("/opt/evsed/.venv/")
    )
    for bad in ("/home/pi/my venv/bin/evsed", "/opt/100%/bin/evsed", "relative/bin/evsed"):
        with pytest.raises(InstallError, match="unit file"):
            render_unit(text, bad)


def test_shipped_units_run_the_default_venv() -> None:
    for name in UNITS:
        assert f"ExecStart={DEFAULT_EXECUTABLE}" in unit_source(name)


def test_simulated_example_gets_absolute_paths() -> None:
    text = config_from_example("evsed")
    data = tomllib.loads(text)
    assert data["station"]["storage"] == "/var/lib/evsed/evsed.db"
    assert data["connectors"][0]["meter"]["state_file"] == "/var/lib/evsed/sim-meter-1.json"
    assert '"./' not in text
    assert parse(data).uses_simulation
    assert text.startswith("# Installed by `evsed install`")


def test_pi_example_is_the_default_config() -> None:
    text = config_from_example("evsed-pi.toml")
    config = parse(tomllib.loads(text))
    assert not config.uses_simulation
    assert config.storage_path == "/var/lib/evsed/evsed.db"


def test_unknown_example_names_the_choices() -> None:
    with pytest.raises(InstallError, match="available: evsed, evsed-pi"):
        config_from_example("pi5")


def test_find_executable_is_this_venvs_evsed() -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("tests are not running in a venv")
    exe = find_executable()
    assert exe == str(Path(sys.prefix) / "bin" / "evsed")
    assert os.access(exe, os.X_OK)


def test_run_command_reports_a_missing_program() -> None:
    result = run_command(["evsed-no-such-program-xyz"])
    assert result.returncode == 127
    assert run_command(["true"]).returncode == 0


# --------------------------------------------------------------------------- recorded


def test_recorded_commands_are_confined_to_the_root(root: Path) -> None:
    """Without executing anything: every command names the temporary root."""
    console, recorder = Console(), Recorder()
    assert installer(root, console, runner=recorder).install(executable=EXE) == 0
    r = str(root)
    assert recorder.commands[0] == [
        "useradd",
        "--prefix",
        r,
        "--system",
        "--user-group",
        "--home-dir",
        "/var/lib/evsed",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "evsed charge point controller",
        "--groups",
        "dialout,plugdev",
        "evsed",
    ]
    assert recorder.commands[-1] == ["systemctl", "--root", r, "enable", *UNITS]
    chowned = [c[2] for c in recorder.commands if c[0] == "chown"]
    assert chowned == [
        f"{r}/etc/evsed",
        f"{r}/var/lib/evsed",
        f"{r}/var/log/evsed",
        f"{r}/etc/evsed/evsed.toml",
    ]
    # daemon-reload acts on the running manager: never run for another root.
    assert not any(c[:2] == ["systemctl", "daemon-reload"] for c in recorder.commands)
    assert "skipped (not the running system): systemctl daemon-reload" in console.text
    assert console.warnings[0].startswith(GPIO_MISSING)
    assert len(console.warnings) == 1  # the shipped units start without a gpio group
    assert stat.S_IMODE((root / "etc/evsed/evsed.toml").stat().st_mode) == 0o640


def test_a_missing_group_warning_says_what_hardware_is_unreachable_and_how_to_fix_it(
    root: Path,
) -> None:
    console = Console()
    assert installer(root, console, runner=Recorder()).install(executable=EXE) == 0
    (warning,) = console.warnings
    assert warning.startswith(GPIO_MISSING)
    assert "The service starts and safe-off runs without it" in warning
    assert "/dev/gpiochip*" in warning and "contactor relays" in warning
    assert "sudo groupadd --system gpio" in warning
    assert 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"' in warning
    assert "run `evsed install` again" in warning


def test_warns_about_groups_the_units_need(root: Path) -> None:
    """systemd refuses SupplementaryGroups= naming a missing group (status=216/GROUP)."""
    console = Console()
    inst = installer(root, console, runner=Recorder())
    inst.unit_loader = lambda name: PLACEHOLDER_UNIT.format(name=name).replace(
        "[Service]\n", "[Service]\nSupplementaryGroups=gpio dialout\n"
    )
    assert inst.install(executable=EXE) == 0
    assert console.warnings[0].startswith(GPIO_MISSING)
    assert console.warnings[1:] == [
        f"{name} asks for group gpio (SupplementaryGroups=); systemd will not start it "
        "(status=216/GROUP) until the group exists: sudo groupadd --system gpio"
        for name in UNITS
    ]


def test_a_venv_under_home_is_refused_when_the_units_hide_it(root: Path) -> None:
    console, recorder = Console(), Recorder()
    inst = installer(root, console, runner=recorder)
    inst.unit_loader = lambda name: PLACEHOLDER_UNIT.format(name=name).replace(
        "[Service]\n", "[Service]\nProtectHome=yes\n"
    )
    before = snapshot(root)
    with pytest.raises(InstallError, match="ProtectHome=yes"):
        inst.install(executable="/home/pi/evsed/.venv/bin/evsed")
    assert snapshot(root) == before and recorder.commands == []
    assert inst.install(executable="/opt/evsed/.venv/bin/evsed") == 0


def test_relative_and_missing_roots(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root.parent)
    recorder = Recorder()
    assert installer(Path(root.name), Console(), runner=recorder).install(executable=EXE) == 0
    assert recorder.commands[0][:3] == ["useradd", "--prefix", str(root)]
    with pytest.raises(InstallError, match="no such directory"):
        installer(root / "nothing", Console(), runner=Recorder()).uninstall()


def test_missing_units_stop_before_anything_changes(root: Path) -> None:
    console = Console()
    before = snapshot(root)

    def no_units(name: str) -> str:
        raise InstallError(f"unit {name} is missing")

    recorder = Recorder()
    inst = installer(root, console, runner=recorder)
    inst.unit_loader = no_units
    with pytest.raises(InstallError, match="missing"):
        inst.install(executable=EXE)
    assert snapshot(root) == before
    assert recorder.commands == []


# --------------------------------------------------------------------------- real commands


@real_commands
def test_install_into_a_temporary_root(root: Path) -> None:
    host_user = host_has_evsed_user()
    console = Console()
    assert installer(root, console).install(executable=EXE) == 0

    user = passwd(root)["evsed"]
    uid, gid = int(user[2]), int(user[3])
    assert 0 < uid < 1000  # a system account
    assert user[5:] == ["/var/lib/evsed", "/usr/sbin/nologin"]
    grp = groups(root)
    assert int(grp["evsed"][2]) == gid
    assert grp["dialout"][3] == "evsed" and grp["plugdev"][3] == "evsed"
    assert "gpio" not in grp
    assert len(console.warnings) == 1 and console.warnings[0].startswith(GPIO_MISSING)

    def owner_mode(rel: str) -> tuple[int, int, int]:
        st = (root / rel).stat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("etc/evsed") == (0, gid, 0o750)
    assert owner_mode("etc/evsed/evsed.toml") == (0, gid, 0o640)  # holds the CSMS password
    assert owner_mode("var/lib/evsed") == (uid, gid, 0o750)
    assert owner_mode("var/log/evsed") == (uid, gid, 0o750)
    assert list((root / "var/log/evsed").iterdir()) == []  # journald keeps the logs

    config = (root / "etc/evsed/evsed.toml").read_text()
    assert "from the example evsed-pi.toml" in config
    assert parse(tomllib.loads(config)).station_id == "EVSED-001"

    for name in UNITS:
        unit = root / "etc/systemd/system" / name
        assert stat.S_IMODE(unit.stat().st_mode) == 0o644
        assert unit.read_text() == render_unit(load_unit(name), EXE)
        assert f"{EXE} " in unit.read_text()
        assert "/opt/evsed/.venv" not in unit.read_text()
    rule = root / "etc/polkit-1/rules.d/60-evsed-pcscd.rules"  # pcscd asks polkit
    assert stat.S_IMODE(rule.stat().st_mode) == 0o644
    assert 'subject.user == "evsed"' in rule.read_text()
    assert "org.debian.pcsc-lite.access_card" in rule.read_text()
    enabled = run_command(["systemctl", "--root", str(root), "is-enabled", "evsed.service"])
    assert enabled.output == "enabled"
    assert "skipped (not the running system): systemctl daemon-reload" in console.text
    assert host_has_evsed_user() == host_user  # the host's own accounts are untouched


@real_commands
def test_second_install_keeps_the_config_and_changes_nothing(root: Path) -> None:
    assert installer(root, Console()).install(executable=EXE) == 0
    config = root / "etc/evsed/evsed.toml"
    config.write_text(config.read_text().replace('id = "EVSED-001"', 'id = "MY-BOX"'))
    before = snapshot(root)

    console = Console()
    assert installer(root, console).install(example="evsed", executable=EXE) == 0
    assert snapshot(root) == before
    assert 'id = "MY-BOX"' in config.read_text()
    assert "config /etc/evsed/evsed.toml: exists, kept (never overwritten)" in console.text
    assert "user evsed: exists" in console.text
    assert "useradd" not in console.text and "chown" not in console.text
    assert console.text.count(": up to date") == len(UNITS) + 2  # + polkit rules: pcscd, reboot
    assert "daemon-reload" not in console.text  # nothing changed, nothing to reload
    assert list(passwd(root)).count("evsed") == 1


@real_commands
def test_install_repairs_modes_and_joins_a_new_group(root: Path) -> None:
    assert installer(root, Console()).install(executable=EXE) == 0
    (root / "var/lib/evsed").chmod(0o755)  # e.g. systemd's StateDirectory default
    with open(root / "etc/group", "a") as f:
        f.write("gpio:x:993:\n")
    with open(root / "etc/gshadow", "a") as f:
        f.write("gpio:!::\n")

    console = Console()
    assert installer(root, console).install(executable=EXE) == 0
    assert "user evsed: exists, add to gpio" in console.text
    assert groups(root)["gpio"][3] == "evsed"
    assert groups(root)["dialout"][3] == "evsed"  # existing memberships kept
    assert stat.S_IMODE((root / "var/lib/evsed").stat().st_mode) == 0o750
    assert console.warnings == []


@real_commands
def test_updated_package_rewrites_the_units(root: Path) -> None:
    assert installer(root, Console()).install(executable=EXE) == 0
    console = Console()
    other = "/opt/evsed/.venv/bin/evsed"
    assert installer(root, console).install(executable=other) == 0
    assert console.text.count(": update") == len(UNITS)
    assert "skipped (not the running system): systemctl daemon-reload" in console.text
    text = (root / "etc/systemd/system/evsed.service").read_text()
    assert text == load_unit("evsed.service")


@real_commands
def test_dry_run_changes_nothing(root: Path) -> None:
    before = snapshot(root)
    console = Console()
    assert installer(root, console, dry_run=True).install(executable=EXE) == 0
    assert snapshot(root) == before
    assert "would run: useradd" in console.text
    assert "config /etc/evsed/evsed.toml: create from example evsed-pi" in console.text

    assert installer(root, Console()).install(executable=EXE) == 0
    before = snapshot(root)
    console = Console()
    inst = installer(root, console, dry_run=True)
    assert inst.uninstall(purge=True, confirm=lambda _q: pytest.fail("dry run asked")) == 0
    assert snapshot(root) == before
    assert "would run: userdel" in console.text
    assert "directory /var/lib/evsed: delete" in console.text


@real_commands
def test_uninstall_keeps_config_and_data(root: Path) -> None:
    assert installer(root, Console()).install(executable=EXE) == 0
    (root / "var/lib/evsed/evsed.db").write_bytes(b"transactions")
    console = Console()
    assert installer(root, console).uninstall() == 0
    for name in UNITS:
        assert not (root / "etc/systemd/system" / name).exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/evsed.service").exists()
    assert not (root / "etc/polkit-1/rules.d/60-evsed-pcscd.rules").exists()
    assert (root / "etc/evsed/evsed.toml").exists()
    assert (root / "var/lib/evsed/evsed.db").read_bytes() == b"transactions"
    assert "evsed" in passwd(root)
    assert "skipped (not the running system): systemctl stop evsed.service" in console.text
    assert "kept: /etc/evsed" in console.text

    console = Console()
    assert installer(root, console).uninstall() == 0  # again: nothing left to do
    assert "units: not installed" in console.text


@real_commands
def test_purge_asks_then_deletes_everything(root: Path) -> None:
    assert installer(root, Console()).install(executable=EXE) == 0
    before = snapshot(root)
    questions: list[str] = []

    def answer(reply: str) -> Callable[[str], str]:
        def confirm(question: str) -> str:
            questions.append(question)
            return reply

        return confirm

    console = Console()
    assert installer(root, console).uninstall(purge=True, confirm=answer("yes")) == 1
    assert snapshot(root) == before  # only YES counts
    assert "not yet delivered to the CSMS" in questions[0]
    assert "aborted" in console.text

    def eof(question: str) -> str:
        raise EOFError

    assert installer(root, Console()).uninstall(purge=True, confirm=eof) == 1
    assert snapshot(root) == before

    assert installer(root, Console()).uninstall(purge=True, confirm=answer("YES")) == 0
    for rel in ("etc/evsed", "var/lib/evsed", "var/log/evsed"):
        assert not (root / rel).exists()
    assert "evsed" not in passwd(root)
    assert "evsed" not in groups(root)
    assert groups(root)["dialout"][3] == ""
    console = Console()
    assert installer(root, console).uninstall(purge=True, confirm=answer("YES")) == 0
    assert "user evsed: not there" in console.text


@real_commands
def test_now_starts_only_a_usable_config(root: Path) -> None:
    console = Console()
    with pytest.raises(InstallError, match="CHANGE-ME"):
        installer(root, console).install(executable=EXE, start=True)
    assert "systemctl start" not in console.text

    console = Console()
    config = root / "etc/evsed/evsed.toml"
    config.write_text(config.read_text().replace("CHANGE-ME", "s3cret-from-csms"))
    assert installer(root, console).install(executable=EXE, start=True) == 0
    assert "skipped (not the running system): systemctl start evsed.service" in console.text


@real_commands
def test_cli_install_and_uninstall(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--root", str(root)]
    assert main(["install", *argv, "--simulated", "--exec-path", EXE]) == 0
    out, err = capsys.readouterr()
    assert "from example evsed" in out
    assert "warning: group gpio does not exist" in err
    config = parse(tomllib.loads((root / "etc/evsed/evsed.toml").read_text()))
    assert config.uses_simulation
    assert main(["install", *argv, "--exec-path", "/bad path/evsed"]) == 1
    assert "cannot go into a unit file" in capsys.readouterr().err
    assert main(["uninstall", *argv, "--purge", "--yes"]) == 0
    assert not (root / "etc/evsed").exists()
