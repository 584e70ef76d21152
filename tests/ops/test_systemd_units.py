"""The shipped systemd units: `systemd-analyze verify` and the settings the issue requires.

`systemd-analyze verify` needs no running systemd. It refuses an ExecStart= binary that does
not exist (the units name /opt/evsed/.venv/bin/evsed, which `evsed install` replaces), so
the units are checked as installed: pointing at this venv's real `evsed` script. It does not
check that User= or the groups exist. Unknown keys, sections and bad values are only
warnings for systemd (exit code 0), so a verified unit must also produce no output at all;
the negative cases prove that the check catches them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from controller.cli import build_parser
from tests.procs import REPO

UNITS = ("evsed.service", "evsed-safe-off.service")
SHIPPED_EXE = "/opt/evsed/.venv/bin/evsed"
SHIPPED_CONFIG = "/etc/evsed/evsed.toml"
ANALYZE = shutil.which("systemd-analyze")
# tests/run-all.sh installs it and sets EVSED_REQUIRE_SYSTEMD_ANALYZE: there it must not skip.
needs_analyze = pytest.mark.skipif(
    ANALYZE is None and not os.environ.get("EVSED_REQUIRE_SYSTEMD_ANALYZE"),
    reason="systemd-analyze missing (apt-get install systemd)",
)


def unit_text(name: str) -> str:
    return resources.files("controller").joinpath("units", name).read_text(encoding="utf-8")


def local_exe() -> str:
    exe = Path(sys.executable).parent / "evsed"
    assert exe.exists(), f"{exe}: run `pip install -e .` in the venv"
    return str(exe)


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; repeated keys stay separate, as systemd reads them."""
    section = ""
    found: list[tuple[str, str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(text: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(text) if s == section and k == key]


def one(text: str, section: str, key: str) -> str:
    found = values(text, section, key)
    assert len(found) == 1, f"[{section}] {key}: {found}"
    return found[0]


def verify(directory: Path, texts: dict[str, str]) -> tuple[int, str]:
    """Write the units with this venv's evsed and run `systemd-analyze verify` on them."""
    paths = []
    for name, text in texts.items():
        path = directory / name
        path.write_text(text.replace(SHIPPED_EXE, local_exe()), encoding="utf-8")
        paths.append(str(path))
    assert ANALYZE is not None, "systemd-analyze missing (apt-get install systemd)"
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


# --------------------------------------------------------------------------- verify


@needs_analyze
def test_units_verify_without_any_complaint(tmp_path: Path) -> None:
    code, output = verify(tmp_path, {name: unit_text(name) for name in UNITS})
    assert (code, output) == (0, "")


BROKEN = [
    ("unknown key", "ProtectSystem=strict", "ProtectSystm=strict", "Unknown key"),
    ("bad value", "Type=notify", "Type=notfy", "Failed to parse service type"),
    ("bad time", "WatchdogSec=30", "WatchdogSec=thirty", "Failed to parse sec value"),
    ("bad section", "[Service]", "[Servce]", "Unknown section"),
    (
        "bad system call",
        "SystemCallFilter=adjtimex ",
        "SystemCallFilter=adjtimexx ",
        "Failed to parse system call",
    ),
]


@needs_analyze
@pytest.mark.parametrize(("case", "good", "bad", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_verify_catches_a_broken_unit(
    tmp_path: Path, case: str, good: str, bad: str, message: str
) -> None:
    text = unit_text("evsed.service")
    assert good in text
    code, output = verify(tmp_path, {"evsed.service": text.replace(good, bad, 1)})
    assert (code, output) != (0, "")
    assert message in output


@needs_analyze
def test_verify_refuses_a_missing_executable(tmp_path: Path) -> None:
    text = unit_text("evsed.service").replace(SHIPPED_EXE, "/nonexistent/bin/evsed")
    path = tmp_path / "evsed.service"
    path.write_text(text, encoding="utf-8")
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "is not executable" in result.stderr


# --------------------------------------------------------------------------- contents


def test_main_unit_is_a_notify_service_with_watchdog_and_fail_safe() -> None:
    text = unit_text("evsed.service")
    assert one(text, "Service", "Type") == "notify"
    assert one(text, "Service", "NotifyAccess") == "main"
    assert int(one(text, "Service", "WatchdogSec")) > 0
    assert one(text, "Service", "Restart") == "always"
    assert int(one(text, "Unit", "StartLimitBurst")) > 1
    assert int(one(text, "Unit", "StartLimitIntervalSec")) > 0
    assert one(text, "Service", "ExecStart") == f"{SHIPPED_EXE} run -c {SHIPPED_CONFIG}"
    assert one(text, "Service", "ExecStopPost") == f"{SHIPPED_EXE} safe-off -c {SHIPPED_CONFIG}"
    assert "evsed-safe-off.service" in one(text, "Unit", "After").split()
    assert "evsed-safe-off.service" in one(text, "Unit", "Wants").split()
    for key in (
        "StateDirectory",
        "ConfigurationDirectory",
        "LogsDirectory",
        "RuntimeDirectory",
        "User",
        "Group",
    ):
        assert one(text, "Service", key) == "evsed"
    assert one(text, "Service", "RuntimeDirectoryPreserve") == "yes"  # the store's spill file
    # A missing group named there fails every start and ExecStopPost= (status=216/GROUP);
    # evsed's own memberships (made by `evsed install`) apply without it.
    assert "SupplementaryGroups" not in {k for _, k, _ in directives(text)}


def test_directory_modes_are_the_ones_evsed_install_creates() -> None:
    """systemd logs "already exists but the mode is different" at every start (and every
    ExecStopPost=) when a *DirectoryMode= differs from the directory's real mode."""
    from controller.ops.install import CONFIG_DIR, LOG_DIR, STATE_DIR, Installer, Recorder

    created: dict[str, int] = {}
    inst = Installer(root=Path("/"), runner=Recorder(), dry_run=True, out=lambda _: None)
    inst.ensure_dir = lambda absolute, user, group, mode: created.__setitem__(absolute, mode)  # type: ignore[method-assign]
    inst.ensure_config = lambda example: False  # type: ignore[method-assign]
    inst.install(executable=local_exe())
    text = unit_text("evsed.service")
    for key, path in (
        ("ConfigurationDirectory", CONFIG_DIR),
        ("StateDirectory", STATE_DIR),
        ("LogsDirectory", LOG_DIR),
    ):
        assert int(one(text, "Service", f"{key}Mode"), 8) == created[path], key


def test_main_unit_hardening_keeps_gpio_serial_and_pcsc_reachable() -> None:
    text = unit_text("evsed.service")
    for key, value in (
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("SystemCallArchitectures", "native"),
        ("PrivateDevices", "no"),  # /dev/gpiochip*, /dev/gpiomem, /dev/ttyUSB* ...
    ):
        assert one(text, "Service", key) == value, key
    families = one(text, "Service", "RestrictAddressFamilies").split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(families)  # pcscd socket, CSMS, API
    keys = {k for _, k, _ in directives(text)}
    # Each would break a device or a feature (see the comments in the unit).
    for absent in ("DeviceAllow", "DevicePolicy", "ProcSubset", "ProtectClock", "PrivateUsers"):
        assert absent not in keys, absent
    assert "MemoryDenyWriteExecute" not in keys
    # ntp_adjtime() (TrustedClock) stays allowed after the syscall filter.
    filters = values(text, "Service", "SystemCallFilter")
    assert filters[0] == "@system-service"
    assert "adjtimex" in filters[-1].split()


def test_boot_unit_runs_safe_off_early_and_once() -> None:
    text = unit_text("evsed-safe-off.service")
    assert one(text, "Unit", "DefaultDependencies") == "no"
    assert "local-fs.target" in one(text, "Unit", "After").split()
    assert "evsed.service" in one(text, "Unit", "Before").split()
    assert one(text, "Service", "Type") == "oneshot"
    assert one(text, "Service", "RemainAfterExit") == "yes"
    assert one(text, "Service", "ExecStart") == f"{SHIPPED_EXE} safe-off -c {SHIPPED_CONFIG}"
    assert one(text, "Service", "CapabilityBoundingSet") == ""
    assert one(text, "Install", "WantedBy") == "multi-user.target"


def environment(text: str) -> dict[str, str]:
    """The [Service] Environment= assignments (several per line; a later one wins)."""
    env: dict[str, str] = {}
    for line in values(text, "Service", "Environment"):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return env


@pytest.mark.parametrize("name", UNITS)
def test_lgpio_gets_a_writable_directory_for_its_fifos(name: str) -> None:
    """gpiozero's pin library lgpio creates a notification FIFO as soon as it is imported, in
    $LG_WD or else in the working directory: "/" for a service, read-only under
    ProtectSystem=strict (and not the evsed user's anyway). There `import lgpio` fails
    ("No such file or directory: '.lgd-nfy-3'") and on a Pi 5 no gpio contactor can be
    driven, not even by safe-off. Each unit points LG_WD at a directory it makes writable."""
    text = unit_text(name)
    assert one(text, "Service", "ProtectSystem") == "strict"
    lg_wd = environment(text).get("LG_WD")
    assert lg_wd, "LG_WD is not set"
    writable = {f"/run/{d}" for v in values(text, "Service", "RuntimeDirectory") for d in v.split()}
    if values(text, "Service", "PrivateTmp") == ["yes"]:
        writable.add("/tmp")  # the unit's own /tmp
    assert lg_wd in writable, (lg_wd, writable)


def test_lgpio_imports_from_a_read_only_working_directory_with_lg_wd(tmp_path: Path) -> None:
    """What the LG_WD lines are for, with the real library (the `pi` extra)."""
    pytest.importorskip("lgpio")
    probe = [sys.executable, "-c", "import lgpio"]
    env = {k: v for k, v in os.environ.items() if k != "LG_WD"}
    # /proc: a working directory nobody may create files in, not even root.
    bare = subprocess.run(probe, cwd="/proc", env=env, capture_output=True, text=True)
    assert bare.returncode != 0 and ".lgd-nfy" in bare.stderr
    ok = subprocess.run(
        probe, cwd="/proc", env={**env, "LG_WD": str(tmp_path)}, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr


def test_unit_command_lines_parse_with_the_real_cli() -> None:
    parser = build_parser()
    for name in UNITS:
        text = unit_text(name)
        for key in ("ExecStart", "ExecStopPost"):
            for line in values(text, "Service", key):
                exe, *argv = line.split()
                assert exe == SHIPPED_EXE
                args = parser.parse_args(argv)
                assert args.config == SHIPPED_CONFIG
                assert args.cmd in ("run", "safe-off")


def test_units_are_package_data_and_systemd_dir_links_to_them() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "units/*.service" in pyproject["tool"]["setuptools"]["package-data"]["controller"]
    link = REPO / "systemd"
    assert link.is_symlink() and link.readlink() == Path("controller/units")
    # evsed-proxy.service ships too but is not the charger's: `evsed install` leaves it out
    # (tests/proxy/test_proxy_unit.py checks it).
    assert sorted(p.name for p in link.iterdir()) == sorted((*UNITS, "evsed-proxy.service"))
