"""Installing firmware: evsed wheels side by side with rollback, or the operator's command."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from controller.maintenance import launcher

LOG = logging.getLogger(__name__)

PIP_TIMEOUT_S = 900.0
SMOKE_TIMEOUT_S = 120.0
MAX_STARTS = 3
KEEP_VERSIONS = 3  # current, previous and one more; older version directories are removed
LAUNCHER_NAME = "evsed-launch"


class InstallOutcome(enum.Enum):
    INSTALLED = "installed"  # done; the running software is the new one (or needs nothing)
    RESTART = "restart"  # switched; the service must restart and the new version confirm
    FAILED = "failed"  # nothing changed


@dataclass(frozen=True)
class InstallResult:
    outcome: InstallOutcome
    detail: str = ""
    version: str | None = None


class TrialState(enum.Enum):
    NONE = "none"  # no probation pending or remembered
    RUNNING = "running"  # this process is the version on probation
    PENDING = "pending"  # a version is on probation, but this process is not it
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"


class Installer(Protocol):
    async def install(self, file: Path) -> InstallResult: ...

    def trial_state(self) -> TrialState:
        """How the last switch to a new version stands (after a restart)."""
        ...

    def trial_seconds_left(self) -> float | None:
        """While this process is on probation: seconds until its deadline."""
        ...

    def confirm(self) -> bool:
        """This process (the version on probation) is ready: keep it."""
        ...

    def rollback(self, reason: str) -> bool:
        """Give up the version on probation; the previous one starts next."""
        ...

    def forget_result(self) -> None: ...


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except ProcessLookupError:
        pass


async def run_argv(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run a program (never a shell); its exit code and the tail of its output. A program
    still running after ``timeout_s`` is killed (exit code -9)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        _kill(proc.pid)
        await proc.wait()
        return -9, f"killed after {timeout_s:.0f} s"
    except asyncio.CancelledError:
        _kill(proc.pid)
        raise
    text = out.decode(errors="replace").strip()
    return proc.returncode if proc.returncode is not None else -1, text[-500:]


class OperatorInstaller:
    """``[maintenance] installer``: the operator's argv with ``{file}`` replaced by the
    downloaded file's path. Exit 0 = installed; anything else (or the timeout) = failed.
    Nothing from the CSMS reaches the argv but the local file name evsed chose."""

    def __init__(self, argv: Sequence[str], *, timeout_s: float = 1800.0) -> None:
        if not argv:
            raise ValueError("installer argv is empty")
        self.argv = tuple(argv)
        self.timeout_s = timeout_s

    async def install(self, file: Path) -> InstallResult:
        argv = [a.replace("{file}", str(file)) for a in self.argv]
        LOG.info("running the operator installer %s", argv[0])
        try:
            code, out = await run_argv(argv, self.timeout_s)
        except OSError as exc:
            return InstallResult(InstallOutcome.FAILED, f"installer cannot run: {exc}")
        if code == 0:
            return InstallResult(InstallOutcome.INSTALLED, out)
        LOG.warning("operator installer exited %d: %s", code, out)
        return InstallResult(InstallOutcome.FAILED, f"installer exit {code}: {out}")

    def trial_state(self) -> TrialState:
        return TrialState.NONE

    def trial_seconds_left(self) -> float | None:
        return None

    def confirm(self) -> bool:
        return False

    def rollback(self, reason: str) -> bool:
        return False

    def forget_result(self) -> None:
        return None


_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")


class WheelInstaller:
    """evsed itself: the firmware is an evsed wheel (its dependencies must be in the
    wheelhouse already) or a tar bundle of wheels (evsed plus new dependencies). It goes
    into a fresh venv ``<root>/versions/<n>`` with ``pip --no-index`` (a charger may have no
    internet), is checked to import, and ``current`` is switched to it with a trial record
    for the launcher (launcher.py). The previous version stays untouched."""

    def __init__(
        self,
        root: Path,
        *,
        ready_deadline_s: float,
        wheelhouse: Path | None = None,
        python: str = sys.executable,
        smoke_argv: Sequence[str] | None = ("bin/python", "-c", "import controller.cli"),
        max_starts: int = MAX_STARTS,
        running_prefix: Path | None = None,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.ready_deadline_s = ready_deadline_s
        self.wheelhouse = wheelhouse or self.root / "wheelhouse"
        self.python = python
        self.smoke_argv = tuple(smoke_argv) if smoke_argv else None
        self.max_starts = max_starts
        self.running_prefix = Path(running_prefix or sys.prefix)
        self._wall_s = wall_s

    # ------------------------------------------------------------------ install

    async def install(self, file: Path) -> InstallResult:
        import tarfile  # only when an update is installed (start time)

        try:
            wheels = await asyncio.to_thread(self._collect, file)
        except (OSError, ValueError, tarfile.TarError) as exc:
            return InstallResult(InstallOutcome.FAILED, f"not an evsed wheel or bundle: {exc}")
        number = self._next_number()
        rel = f"{launcher.VERSIONS}/{number}"
        venv = self.root / rel
        try:
            result = await self._build(venv, wheels)
            if result is not None:
                shutil.rmtree(venv, ignore_errors=True)
                return result
            await asyncio.to_thread(self._switch_to, rel)
        except OSError as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return InstallResult(InstallOutcome.FAILED, f"cannot install: {exc}")
        LOG.warning("firmware: %s installed and made current; restarting into it", rel)
        return InstallResult(InstallOutcome.RESTART, version=rel)

    def _collect(self, file: Path) -> list[Path]:
        """The wheels to install, copied into the wheelhouse (kept for later installs)."""
        import tarfile

        self.wheelhouse.mkdir(parents=True, exist_ok=True)
        if zipfile_is_wheel(file):
            name = wheel_name_of(file)
            target = self.wheelhouse / name
            shutil.copyfile(file, target)
            return [target]
        if not tarfile.is_tarfile(file):
            raise ValueError("neither a wheel nor a tar bundle of wheels")
        found: list[Path] = []
        with tarfile.open(file) as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                if not member.isfile() or not _WHEEL_NAME.match(base):
                    continue  # only plain wheel files, by their base name: no paths, no links
                src = tar.extractfile(member)
                if src is None:
                    continue
                target = self.wheelhouse / base
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
                found.append(target)
        if not found:
            raise ValueError("the bundle holds no wheel")
        return found

    async def _build(self, venv: Path, wheels: list[Path]) -> InstallResult | None:
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        code, out = await run_argv(
            [self.python, "-m", "venv", "--without-pip", str(venv)], PIP_TIMEOUT_S
        )
        if code != 0:
            return InstallResult(InstallOutcome.FAILED, f"venv: {out}")
        pip = [
            self.python,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--find-links",
            str(self.wheelhouse),
            *map(str, wheels),
        ]
        code, out = await run_argv(pip, PIP_TIMEOUT_S)
        if code != 0:
            return InstallResult(InstallOutcome.FAILED, f"pip: {out}")
        if self.smoke_argv:
            argv = [str(venv / self.smoke_argv[0]), *self.smoke_argv[1:]]
            code, out = await run_argv(argv, SMOKE_TIMEOUT_S)
            if code != 0:
                return InstallResult(InstallOutcome.FAILED, f"new version does not start: {out}")
        return None

    def _next_number(self) -> int:
        found = (self.root / launcher.VERSIONS).glob("*")
        numbers = [int(p.name) for p in found if p.name.isdigit()]
        return max(numbers, default=0) + 1

    def _switch_to(self, rel: str) -> None:
        root = self.root
        previous = launcher.current_target(root)
        if previous is None and (root / ".venv").is_dir():
            previous = ".venv"  # the venv `evsed install` made, before any update
        self.install_launcher()
        trial = {
            "version": rel,
            "previous": previous or "",
            "deadline_s": self._wall_s() + self.ready_deadline_s,
            "starts": 0,
            "max_starts": self.max_starts,
        }
        (root / launcher.RESULT).unlink(missing_ok=True)
        launcher._write_json(root / launcher.TRIAL, trial)
        if previous:
            launcher.switch(root, launcher.PREVIOUS, previous)
        launcher.switch(root, launcher.CURRENT, rel)
        self._prune({rel, previous or ""})

    def install_launcher(self) -> Path:
        """(Re)write ``<root>/evsed-launch`` from this version's launcher.py."""
        target = self.root / LAUNCHER_NAME
        source = Path(launcher.__file__).read_bytes()
        if not target.exists() or target.read_bytes() != source:
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(source)
            tmp.chmod(0o755)
            os.replace(tmp, target)
        return target

    def _prune(self, keep: set[str]) -> None:
        versions = sorted(
            (p for p in (self.root / launcher.VERSIONS).glob("*") if p.name.isdigit()),
            key=lambda p: int(p.name),
        )
        for old in versions[:-KEEP_VERSIONS]:
            if f"{launcher.VERSIONS}/{old.name}" not in keep:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ probation

    def _trial(self) -> dict[str, object] | None:
        return launcher.read_json(self.root / launcher.TRIAL)

    def _is_running(self, rel: object) -> bool:
        try:
            return (self.root / str(rel)).resolve() == self.running_prefix.resolve()
        except OSError:
            return False

    def trial_state(self) -> TrialState:
        trial = self._trial()
        if trial is not None:
            running = self._is_running(trial.get("version"))
            return TrialState.RUNNING if running else TrialState.PENDING
        result = launcher.read_json(self.root / launcher.RESULT)
        if result is None:
            return TrialState.NONE
        if result.get("outcome") == "confirmed":
            return TrialState.CONFIRMED
        return TrialState.ROLLED_BACK

    def trial_seconds_left(self) -> float | None:
        trial = self._trial()
        if trial is None or not self._is_running(trial.get("version")):
            return None
        return float(str(trial.get("deadline_s", 0))) - self._wall_s()

    def confirm(self) -> bool:
        return launcher.confirm(self.root)

    def rollback(self, reason: str) -> bool:
        return launcher.rollback(self.root, reason)

    def forget_result(self) -> None:
        (self.root / launcher.RESULT).unlink(missing_ok=True)


def zipfile_is_wheel(file: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as zf:
        return any(n.endswith(".dist-info/WHEEL") for n in zf.namelist())


def wheel_name_of(file: Path) -> str:
    """The wheel's proper file name (pip insists on it) from its own metadata."""
    import zipfile

    with zipfile.ZipFile(file) as zf:
        info = next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL"))
        dist = info.split("/")[0][: -len(".dist-info")]
        text = zf.read(info).decode(errors="replace")
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    tag = tags[0] if tags else "py3-none-any"
    name = f"{dist}-{tag}.whl"
    if not _WHEEL_NAME.match(name):
        raise ValueError(f"odd wheel name {name!r}")
    return name
