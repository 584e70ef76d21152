"""`evsed install` / `evsed uninstall`: system user, directories, config and systemd units."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

USER = "evsed"
GROUP = "evsed"
# GPIO chips, serial (RS-485) adapters, USB devices. Raspberry Pi OS has all three; a plain
# Debian has no gpio group.
EXTRA_GROUPS = ("gpio", "dialout", "plugdev")
# What evsed cannot reach without the group, and how to give it access. The units do not name
# the groups (the service starts without them); only the hardware behind them is unreachable.
GROUP_HARDWARE = {
    "gpio": (
        "GPIO (/dev/gpiochip*, /dev/gpiomem: contactor relays, their feedback and pilot "
        "pins on GPIO)",
        "sudo groupadd --system gpio; give it the chips with a udev rule, e.g. "
        "/etc/udev/rules.d/60-gpio.rules: "
        'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"; '
        "sudo udevadm trigger; then run `evsed install` again",
    ),
    "dialout": (
        "serial ports (/dev/ttyUSB*, /dev/ttyAMA*, /dev/serial*: Modbus RTU meters and "
        "EVSE boards)",
        "sudo groupadd --system dialout (udev gives serial ports to dialout); then run "
        "`evsed install` again",
    ),
    "plugdev": (
        "USB devices that udev gives to plugdev",
        "sudo groupadd --system plugdev; then run `evsed install` again",
    ),
}
NOLOGIN = "/usr/sbin/nologin"

CONFIG_DIR = "/etc/evsed"
CONFIG_FILE = "/etc/evsed/evsed.toml"
STATE_DIR = "/var/lib/evsed"
LOG_DIR = "/var/log/evsed"
UNIT_DIR = "/etc/systemd/system"
# pcscd on Debian bookworm / Raspberry Pi OS asks polkit whether a client may use a reader;
# group membership does not help (hardware.md, "Running under systemd").
POLKIT_RULE = "/etc/polkit-1/rules.d/60-evsed-pcscd.rules"
POLKIT_RULE_TEXT = """// Installed by `evsed install`: evsed may use card readers via pcscd.
polkit.addRule(function (action, subject) {
    if ((action.id == "org.debian.pcsc-lite.access_pcsc" ||
         action.id == "org.debian.pcsc-lite.access_card") &&
        subject.user == "evsed") {
        return polkit.Result.YES;
    }
});
"""
# OCPP Reset Hard with [maintenance] hard_reset = "reboot": evsed runs `systemctl reboot`
# (controller/ops/reboot.py). The unit has NoNewPrivileges=yes, so no sudo rule could work;
# systemctl asks logind over D-Bus and polkit decides. Only reboot, only the evsed user, and
# not past inhibitor locks (no ...-ignore-inhibit: an update holding one wins; evsed then
# restarts the service instead).
REBOOT_POLKIT_RULE = "/etc/polkit-1/rules.d/61-evsed-reboot.rules"
REBOOT_POLKIT_RULE_TEXT = """// Installed by `evsed install`: evsed may reboot the board
// (OCPP Reset Hard with [maintenance] hard_reset = "reboot": `systemctl reboot`).
polkit.addRule(function (action, subject) {
    if ((action.id == "org.freedesktop.login1.reboot" ||
         action.id == "org.freedesktop.login1.reboot-multiple-sessions") &&
        subject.user == "evsed") {
        return polkit.Result.YES;
    }
});
"""
# Readers of the system journal (diagnostics archives hold evsed's entries).
JOURNAL_GROUP = "systemd-journal"
# Started in this order; the safe-off unit drives the outputs to a safe state around evsed.
UNITS = ("evsed-safe-off.service", "evsed.service")
MAIN_UNIT = "evsed.service"

# The units ship with this path; a venv elsewhere gets its own path substituted.
DEFAULT_VENV = "/opt/evsed/.venv"
DEFAULT_EXECUTABLE = DEFAULT_VENV + "/bin/evsed"
DEFAULT_EXAMPLE = "evsed-pi"
LAUNCHER_FILE = "evsed-launch"
SIM_EXAMPLE = "evsed"
PLACEHOLDER_PASSWORD = "CHANGE-ME"  # in the Pi example: the config still needs editing

# Paths written into unit files: no whitespace, quotes or "%" (a systemd specifier).
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]*")


class InstallError(Exception):
    """A step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str = ""


Runner = Callable[[Sequence[str]], Result]


def run_command(argv: Sequence[str]) -> Result:
    """The real runner: execute ``argv``, capture its output."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return Result(127, f"{argv[0]}: command not found")
    return Result(proc.returncode, (proc.stdout + proc.stderr).strip())


@dataclass
class Recorder:
    """A runner that records commands instead of executing them (always succeeds)."""

    commands: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> Result:
        self.commands.append(list(argv))
        return Result(0)


# ------------------------------------------------------------------ account database


def _read_db(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


@dataclass(frozen=True)
class Accounts:
    """Users and groups as the files under ``root``/etc say (what useradd --prefix edits)."""

    users: dict[str, int]
    groups: dict[str, tuple[int, tuple[str, ...]]]  # name -> (gid, members)

    @classmethod
    def read(cls, root: Path) -> Accounts:
        users = {r[0]: int(r[2]) for r in _read_db(root / "etc/passwd") if len(r) >= 4}
        groups = {
            r[0]: (int(r[2]), tuple(m for m in r[3].split(",") if m))
            for r in _read_db(root / "etc/group")
            if len(r) >= 4
        }
        return cls(users, groups)


# ------------------------------------------------------------------ package data


def examples() -> dict[str, Traversable]:
    """Example configs shipped in the package, by name without ``.toml``."""
    folder = resources.files("controller").joinpath("examples")
    return {
        entry.name.removesuffix(".toml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def unit_source(name: str) -> str:
    """A unit file shipped in controller/units/."""
    try:
        return resources.files("controller.units").joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        raise InstallError(
            f"unit {name} is missing from the installed package (controller/units/); "
            "reinstall evsed"
        ) from None


def render_unit(text: str, executable: str) -> str:
    """Point the unit at ``executable`` (the running venv's evsed) instead of /opt/evsed."""
    if not _SAFE_PATH.fullmatch(executable):
        raise InstallError(
            f"{executable!r} cannot go into a unit file (spaces, quotes or %); "
            "install evsed in a venv whose path has none, e.g. /opt/evsed/.venv"
        )
    if executable == DEFAULT_EXECUTABLE:
        return text
    venv = str(Path(executable).parent.parent)
    text = text.replace(DEFAULT_EXECUTABLE, executable)
    # Anything else from the default venv (its python, say) moves along with it.
    return re.sub(re.escape(DEFAULT_VENV) + r"(?=/)", lambda _: venv, text)


def versions_unit(text: str, venv_root: str) -> str:
    """The main unit started through the version launcher (controller/maintenance/
    launcher.py, copied to ``<venv_root>/evsed-launch``): it runs ``<venv_root>/current``
    and brings the previous version back when a new one does not confirm. The root becomes
    writable for the service (new versions are installed there). ExecStopPost= keeps the
    venv `evsed install` was run from: safe-off must not depend on a version on trial."""
    launch = f"/usr/bin/python3 {venv_root}/{LAUNCHER_FILE} "
    text, n = re.subn(
        r"^ExecStart=\S+/bin/evsed ", lambda _: "ExecStart=" + launch, text, flags=re.M
    )
    if n != 1:
        raise InstallError("the main unit has no ExecStart= running evsed")
    return text.replace(
        "ProtectSystem=strict\n",
        "ProtectSystem=strict\n# Firmware updates install evsed versions here.\n"
        f"ReadWritePaths={venv_root}\n",
        1,
    )


_HIDDEN_BY_PROTECT_HOME = ("/home/", "/root/", "/run/user/")


def check_reachable(units: dict[str, str], executable: str) -> None:
    """ProtectHome= hides /home, /root and /run/user from the service: a venv there would
    make every start fail with status=203/EXEC."""
    if not executable.startswith(_HIDDEN_BY_PROTECT_HOME):
        return
    for name, text in units.items():
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ProtectHome" and value.strip() not in ("no", "false", "0", ""):
                raise InstallError(
                    f"{executable} is under a home directory, which {name} hides from the "
                    f"service (ProtectHome={value.strip()}); create the venv in /opt/evsed/.venv "
                    "instead (see README.md, Install as a service)"
                )


def find_executable() -> str:
    """The `evsed` script of the running installation (absolute, symlinks kept)."""
    candidates = []
    if sys.prefix != sys.base_prefix:  # in a venv: its bin/evsed is the one to run
        candidates.append(Path(sys.prefix) / "bin" / "evsed")
    if sys.argv and Path(sys.argv[0]).name == "evsed":
        candidates.append(Path(os.path.abspath(sys.argv[0])))
    # Next to the interpreter (a venv entered through its python without activation).
    which = shutil.which("evsed", path=os.path.dirname(sys.executable))
    if which:
        candidates.append(Path(os.path.abspath(which)))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise InstallError("cannot find the evsed executable of this installation; use --exec-path")


def config_from_example(name: str, now: datetime | None = None) -> str:
    """The config text installed from example ``name``, checked by the config parser.

    Relative paths (the simulated example's "./evsed.db") are made absolute under the state
    directory: a service has no useful working directory and may only write there.
    """
    from controller.config import ConfigError, parse

    available = examples()
    if name.endswith(".toml"):
        name = name[:-5]
    if name not in available:
        raise InstallError(f"unknown example {name!r}; available: {', '.join(sorted(available))}")
    text = available[name].read_text(encoding="utf-8")
    text = re.sub(r'(=\s*)"\./([^"]*)"', lambda m: f'{m.group(1)}"{STATE_DIR}/{m.group(2)}"', text)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    text = (
        f"# Installed by `evsed install` on {stamp} from the example {name}.toml.\n"
        f"# Edit it, then check it with: sudo evsed check-config {CONFIG_FILE}\n"
        "# `evsed install` never overwrites this file.\n\n" + text
    )
    try:
        parse(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise InstallError(f"example {name} does not validate: {exc}") from None
    return text


# ------------------------------------------------------------------ the steps


@dataclass
class Installer:
    """Every path is under ``root``; every system command goes through ``runner``.

    With a root other than "/", commands that support it are confined (``useradd --prefix``,
    ``systemctl --root``) and those that would act on the running host (``systemctl
    daemon-reload/start/stop``) are skipped, so a temporary root can be installed into for
    real without touching the host.
    """

    root: Path = Path("/")
    runner: Runner = run_command
    dry_run: bool = False
    out: Callable[[str], None] = print
    # Reads a unit shipped in controller/units/ (tests may hand in their own files).
    unit_loader: Callable[[str], str] = unit_source
    warn: Callable[[str], None] = field(
        default_factory=lambda: lambda msg: print(f"warning: {msg}", file=sys.stderr)
    )

    def __post_init__(self) -> None:
        self.root = Path(os.path.abspath(self.root))  # useradd --prefix wants it absolute

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def check_privileges(self) -> None:
        if not self.root.is_dir():
            raise InstallError(f"--root {self.root}: no such directory")
        if self.live and not self.dry_run and os.geteuid() != 0:
            raise InstallError("must run as root: sudo /opt/evsed/.venv/bin/evsed ...")

    # -- reset (OCPP Reset Hard -> reboot)

    def ensure_reboot_rule(self) -> None:
        """The polkit rule that lets the evsed user reboot the board. Written whatever
        [maintenance] hard_reset says: the config may change later, the rule only allows
        what evsed does when it is set to "reboot"."""
        self.ensure_file(
            REBOOT_POLKIT_RULE,
            REBOOT_POLKIT_RULE_TEXT,
            f"polkit rule {REBOOT_POLKIT_RULE} (Reset Hard reboots the board)",
        )

    def ensure_journal_access(self) -> None:
        """Diagnostics archives (GetDiagnostics, GetLog) hold evsed's journal entries; a
        system user reads the system journal only as a member of systemd-journal (read
        access only). Without the group evsed falls back to its in-memory log."""
        accounts = Accounts.read(self.root)
        if JOURNAL_GROUP not in accounts.groups:
            self.out(f"group {JOURNAL_GROUP}: not here; diagnostics use the in-memory log")
            return
        if USER in accounts.groups[JOURNAL_GROUP][1]:
            self.out(f"user {USER}: in {JOURNAL_GROUP} (diagnostics read its journal)")
            return
        self.out(f"user {USER}: add to {JOURNAL_GROUP} (diagnostics read its journal)")
        self.run(self._account_cmd(["usermod", "--append", "--groups", JOURNAL_GROUP, USER]))

    def remove_reboot_rule(self) -> None:
        if self.path(REBOOT_POLKIT_RULE).exists():
            self.out(f"polkit rule {REBOOT_POLKIT_RULE}: remove")
            if not self.dry_run:
                self.path(REBOOT_POLKIT_RULE).unlink(missing_ok=True)

    # -- commands

    def run(self, argv: list[str], *, check: bool = True) -> Result:
        shown = shlex.join(argv)
        if self.dry_run:
            self.out(f"  would run: {shown}")
            return Result(0)
        self.out(f"  $ {shown}")
        result = self.runner(argv)
        if result.returncode != 0 and check:
            raise InstallError(f"`{shown}` failed (exit {result.returncode}): {result.output}")
        return result

    def _account_cmd(self, argv: list[str]) -> list[str]:
        return argv if self.live else [argv[0], "--prefix", str(self.root), *argv[1:]]

    def _systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *args] if self.live else ["systemctl", "--root", str(self.root), *args]

    def _host_only(self, argv: list[str], *, check: bool = True) -> None:
        if self.live:
            result = self.run(argv, check=check)
            if result.returncode != 0:
                self.warn(f"`{shlex.join(argv)}` failed: {result.output}")
        else:
            self.out(f"  skipped (not the running system): {shlex.join(argv)}")

    # -- user

    def ensure_user(self) -> None:
        accounts = Accounts.read(self.root)
        wanted = []
        for group in EXTRA_GROUPS:
            if group in accounts.groups:
                wanted.append(group)
            else:
                hardware, fix = GROUP_HARDWARE[group]
                self.warn(
                    f"group {group} does not exist here; {USER} is not added to it. The service "
                    f"starts and safe-off runs without it, but evsed cannot use {hardware}; a "
                    f"simulated or network-only setup does not need it. To use them: {fix}"
                )
        if USER not in accounts.users:
            self.out(f"user {USER}: create (system account, no login, home {STATE_DIR})")
            # A group left over from an earlier install is reused instead of failing.
            own = ["--gid", GROUP] if GROUP in accounts.groups else ["--user-group"]
            argv = ["useradd", "--system", *own, "--home-dir", STATE_DIR, "--no-create-home"]
            argv += ["--shell", NOLOGIN, "--comment", "evsed charge point controller"]
            if wanted:
                argv += ["--groups", ",".join(wanted)]
            self.run(self._account_cmd([*argv, USER]))
            return
        missing = [g for g in wanted if USER not in accounts.groups[g][1]]
        if not missing:
            self.out(f"user {USER}: exists")
            return
        self.out(f"user {USER}: exists, add to {', '.join(missing)}")
        self.run(self._account_cmd(["usermod", "--append", "--groups", ",".join(missing), USER]))

    def check_unit_groups(self, units: dict[str, str]) -> None:
        """systemd refuses to start a unit whose SupplementaryGroups= names a missing group."""
        accounts = Accounts.read(self.root)
        for name, text in units.items():
            for line in text.splitlines():
                key, _, value = line.partition("=")
                if key.strip() != "SupplementaryGroups":
                    continue
                for group in value.split():
                    if group not in accounts.groups:
                        self.warn(
                            f"{name} asks for group {group} (SupplementaryGroups=); systemd "
                            f"will not start it (status=216/GROUP) until the group exists: "
                            f"sudo groupadd --system {group}"
                        )

    # -- files

    def _owner(self, path: Path, user: str, group: str) -> None:
        accounts = Accounts.read(self.root)
        if self.live or user not in accounts.users or group not in accounts.groups:
            spec = f"{user}:{group}"  # chown looks the names up itself (dry run: not yet made)
        else:
            spec = f"{accounts.users[user]}:{accounts.groups[group][0]}"
        self.run(["chown", spec, str(path)])

    def _ids(self, user: str, group: str) -> tuple[int, int] | None:
        accounts = Accounts.read(self.root)
        if user not in accounts.users or group not in accounts.groups:
            return None
        return accounts.users[user], accounts.groups[group][0]

    def ensure_dir(self, absolute: str, user: str, group: str, mode: int) -> None:
        path = self.path(absolute)
        label = f"directory {absolute} ({user}:{group} {mode:04o})"
        if not path.is_dir():
            self.out(f"{label}: create")
            if not self.dry_run:
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(mode)
            self._owner(path, user, group)
            return
        st = path.stat()
        ids = self._ids(user, group)
        if stat.S_IMODE(st.st_mode) == mode and ids == (st.st_uid, st.st_gid):
            self.out(f"{label}: exists")
            return
        self.out(f"{label}: exists, set owner and mode")
        if not self.dry_run:
            path.chmod(mode)
        self._owner(path, user, group)

    def ensure_config(self, example: str) -> bool:
        """Install the config unless there is one; True when it was created now."""
        path = self.path(CONFIG_FILE)
        if path.exists():
            self.out(f"config {CONFIG_FILE}: exists, kept (never overwritten)")
            return False
        text = config_from_example(example)
        self.out(f"config {CONFIG_FILE}: create from example {example} (root:{GROUP} 0640)")
        if self.dry_run:
            return True
        # O_EXCL: even a file that appeared meanwhile is never overwritten.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        path.chmod(0o640)  # whatever the umask said
        self._owner(path, "root", GROUP)
        return True

    def ensure_units(self, units: dict[str, str]) -> bool:
        """Write the unit files; True when one was added or changed."""
        changed = False
        for name, text in units.items():
            changed |= self.ensure_file(f"{UNIT_DIR}/{name}", text, f"unit {UNIT_DIR}/{name}")
        return changed

    def ensure_file(self, absolute: str, text: str, label: str) -> bool:
        """Write a root-owned 0644 file atomically; True when it was added or changed."""
        path = self.path(absolute)
        name = path.name
        try:
            current: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current == text:
            self.out(f"{label}: up to date")
            return False
        self.out(f"{label}: {'install' if current is None else 'update'}")
        if not self.dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{name}.evsed-tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o644)
            os.replace(tmp, path)
        return True

    # -- commands

    def install(
        self,
        *,
        example: str = DEFAULT_EXAMPLE,
        executable: str,
        start: bool = False,
        versions: bool = False,
    ) -> int:
        self.check_privileges()
        where = "" if self.live else f" into {self.root}"
        self.out(f"evsed install{where}{' (dry run: nothing is changed)' if self.dry_run else ''}")
        self.out(f"executable: {executable}")
        # Missing units or an unusable path stop the install before anything is changed.
        units = {name: render_unit(self.unit_loader(name), executable) for name in UNITS}
        check_reachable(units, executable)
        venv_root = self._versions_root(executable) if versions else None
        if venv_root is not None:
            units[MAIN_UNIT] = versions_unit(units[MAIN_UNIT], venv_root)
        self.ensure_user()
        if not self.dry_run:
            self.check_unit_groups(units)
        self.ensure_dir(CONFIG_DIR, "root", GROUP, 0o750)
        self.ensure_dir(STATE_DIR, USER, GROUP, 0o750)
        self.ensure_dir(LOG_DIR, USER, GROUP, 0o750)
        created = self.ensure_config(example)
        if venv_root is not None:
            self.ensure_versions(venv_root)
        if self.ensure_units(units):
            self._host_only(["systemctl", "daemon-reload"])
        self.ensure_file(POLKIT_RULE, POLKIT_RULE_TEXT, f"polkit rule {POLKIT_RULE} (card readers)")
        self.ensure_reboot_rule()
        self.ensure_journal_access()
        self.run(self._systemctl("enable", *UNITS))
        if start:
            self._start(created)
        else:
            self.out("next steps:")
            self.out(f"  edit {CONFIG_FILE} (station.id, csms.url, csms.password, the pins)")
            self.out(f"  sudo {executable} check-config {CONFIG_FILE}")
            self.out(f"  sudo systemctl start {MAIN_UNIT}")
            self.out(f"  journalctl -u {MAIN_UNIT} -f")
        return 0

    @staticmethod
    def _versions_root(executable: str) -> str:
        """``/opt/evsed`` for ``/opt/evsed/.venv/bin/evsed``: the launcher's layout."""
        venv = Path(executable).parent.parent
        if venv.name != ".venv":
            raise InstallError(
                f"--firmware-updates needs evsed in a venv named .venv (e.g. {DEFAULT_VENV}), "
                f"not {venv}"
            )
        return str(venv.parent)

    def ensure_versions(self, venv_root: str) -> None:
        """The launcher, ``current`` -> ``.venv`` (the installed version until the first
        update) and the root owned by the service (new versions go beside .venv)."""
        from controller.maintenance import launcher

        self.ensure_dir(venv_root, USER, GROUP, 0o755)
        self.ensure_dir(f"{venv_root}/{launcher.VERSIONS}", USER, GROUP, 0o755)
        source = Path(launcher.__file__).read_text(encoding="utf-8")
        self.ensure_file(f"{venv_root}/{LAUNCHER_FILE}", source, "version launcher")
        current = self.path(venv_root) / launcher.CURRENT
        if not current.is_symlink():
            self.out(f"{venv_root}/{launcher.CURRENT} -> .venv: create")
            if not self.dry_run:
                launcher.switch(self.path(venv_root), launcher.CURRENT, ".venv")

    def _start(self, created: bool) -> None:
        from controller.config import ConfigError, load

        if not self.dry_run:
            path = self.path(CONFIG_FILE)
            try:
                load(str(path))
            except ConfigError as exc:
                raise InstallError(f"not started: {CONFIG_FILE}: {exc}") from None
            if PLACEHOLDER_PASSWORD in path.read_text(encoding="utf-8"):
                raise InstallError(
                    f"not started: {CONFIG_FILE} still has the example's password "
                    f"{PLACEHOLDER_PASSWORD!r}; edit it, then: sudo systemctl start {MAIN_UNIT}"
                )
        self._host_only(["systemctl", "start", MAIN_UNIT])

    def uninstall(self, *, purge: bool = False, confirm: Callable[[str], str] = input) -> int:
        self.check_privileges()
        where = "" if self.live else f" from {self.root}"
        self.out(
            f"evsed uninstall{where}{' (dry run: nothing is changed)' if self.dry_run else ''}"
        )
        if purge and not self.dry_run:
            question = (
                f"--purge deletes {CONFIG_DIR} (the config with the CSMS password), {STATE_DIR} "
                "(transactions, including any not yet delivered to the CSMS), "
                f"{LOG_DIR} and the user {USER}. Type YES to continue: "
            )
            try:
                answer = confirm(question)
            except EOFError:
                answer = ""
            if answer.strip() != "YES":
                self.out("aborted; nothing was changed")
                return 1
        installed = [n for n in UNITS if self.path(f"{UNIT_DIR}/{n}").exists()]
        if installed:
            # evsed first: stopping it opens every contactor and ends the transactions.
            self._host_only(["systemctl", "stop", *reversed(installed)], check=False)
            result = self.run(self._systemctl("disable", *installed), check=False)
            if result.returncode != 0:
                self.warn(f"systemctl disable failed: {result.output}")
            for name in installed:
                self.out(f"unit {UNIT_DIR}/{name}: remove")
                if not self.dry_run:
                    self.path(f"{UNIT_DIR}/{name}").unlink(missing_ok=True)
            self._host_only(["systemctl", "daemon-reload"])
        else:
            self.out("units: not installed")
        if self.path(POLKIT_RULE).exists():
            self.out(f"polkit rule {POLKIT_RULE}: remove")
            if not self.dry_run:
                self.path(POLKIT_RULE).unlink(missing_ok=True)
        self.remove_reboot_rule()
        if not purge:
            self.out(
                f"kept: {CONFIG_DIR}, {STATE_DIR}, {LOG_DIR}, user {USER} (--purge removes them)"
            )
            return 0
        for absolute in (CONFIG_DIR, STATE_DIR, LOG_DIR):
            path = self.path(absolute)
            if path.is_dir() and not path.is_symlink():
                self.out(f"directory {absolute}: delete")
                if not self.dry_run:
                    shutil.rmtree(path)
            else:
                self.out(f"directory {absolute}: not there")
        accounts = Accounts.read(self.root)
        if USER in accounts.users:
            self.out(f"user {USER}: delete")
            self.run(self._account_cmd(["userdel", USER]))
            accounts = Accounts.read(self.root)
        else:
            self.out(f"user {USER}: not there")
        if GROUP in accounts.groups and not self.dry_run:
            self.out(f"group {GROUP}: delete")
            self.run(self._account_cmd(["groupdel", GROUP]))
        return 0


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``install`` and ``uninstall`` sub-commands of ``evsed``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="act on the system image under DIR instead of the running system (default /)",
    )
    common.add_argument("--dry-run", action="store_true", help="show the steps, change nothing")

    p = sub.add_parser(
        "install",
        parents=[common],
        help="set up the evsed user, directories, config and systemd units (as root)",
        description=f"Create the system user {USER}, {CONFIG_DIR}, {STATE_DIR}, {LOG_DIR}, "
        f"{CONFIG_FILE} from an example (an existing config is never overwritten), install "
        f"and enable {' and '.join(UNITS)}. Safe to run again.",
    )
    p.add_argument(
        "--example",
        default=DEFAULT_EXAMPLE,
        metavar="NAME",
        help=f"example config to start from: {', '.join(sorted(examples()))} "
        f"(default {DEFAULT_EXAMPLE}, the reference Pi build)",
    )
    p.add_argument(
        "--simulated",
        action="store_true",
        help=f"simulated hardware (the example {SIM_EXAMPLE}), to try the service anywhere",
    )
    p.add_argument("--now", action="store_true", help=f"also start {MAIN_UNIT}")
    p.add_argument(
        "--firmware-updates",
        action="store_true",
        help="start evsed through the version launcher, so firmware updates (evsed wheels) "
        "are installed beside it and rolled back when not ready (README, Firmware updates)",
    )
    p.add_argument(
        "--exec-path",
        metavar="PATH",
        help="the evsed executable the units run (default: this installation's)",
    )
    p.set_defaults(fn=cmd_install)

    p = sub.add_parser(
        "uninstall",
        parents=[common],
        help="stop, disable and remove the systemd units (as root)",
        description="Config, data and the user are kept unless --purge. Safe to run again.",
    )
    p.add_argument(
        "--purge",
        action="store_true",
        help=f"also delete {CONFIG_DIR}, {STATE_DIR}, {LOG_DIR} and the user {USER}",
    )
    p.add_argument("--yes", action="store_true", help="do not ask before --purge deletes")
    p.set_defaults(fn=cmd_uninstall)


def cmd_install(args: argparse.Namespace) -> int:
    example = SIM_EXAMPLE if args.simulated else args.example
    installer = Installer(root=Path(args.root), dry_run=args.dry_run)
    try:
        executable = args.exec_path or find_executable()
        return installer.install(
            example=example,
            executable=executable,
            start=args.now,
            versions=args.firmware_updates,
        )
    except InstallError as exc:
        print(f"evsed install: {exc}", file=sys.stderr)
        return 1


def cmd_uninstall(args: argparse.Namespace) -> int:
    installer = Installer(root=Path(args.root), dry_run=args.dry_run)
    confirm: Callable[[str], str] = (lambda _question: "YES") if args.yes else input
    try:
        return installer.uninstall(purge=args.purge, confirm=confirm)
    except InstallError as exc:
        print(f"evsed uninstall: {exc}", file=sys.stderr)
        return 1
