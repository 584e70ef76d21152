#!/usr/bin/python3
"""The version-independent start of evsed: runs ``<root>/current/bin/evsed`` or rolls back.

Standard library only and no import of the controller package: ``evsed install`` (or the
first firmware update) copies this file to ``<venv_root>/evsed-launch`` and the unit's
ExecStart runs it with the system python, so it works whatever state a new version is in
(even one that cannot import). Layout under the root::

    versions/<n>/   one venv per installed version     current  -> versions/<n> (or .venv)
    trial.json      a new version on probation           previous -> the one before it
    result.json     how the last probation ended (confirmed / rolled_back)

At every start while ``trial.json`` exists, its start count goes up; when the new version
was started ``max_starts`` times or its deadline passed without confirming, ``current`` is
switched back to ``previous`` (a symlink replaced with rename, so a power cut leaves either
the old or the new link) before anything of the new version runs. The new version confirms
with ``confirm(root)`` once its BootNotification was accepted; a version that runs but never
confirms is switched back by its own guard (firmware.py) or at the next start.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TRIAL = "trial.json"
RESULT = "result.json"
CURRENT = "current"
PREVIOUS = "previous"
VERSIONS = "versions"
ENV_ROOT = "EVSED_VENV_ROOT"
ENV_LAUNCHER = "EVSED_LAUNCHER"  # "<python>\n<this file>": how evsed re-executes (cli.py)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def switch(root: Path, name: str, target: str) -> None:
    """Point ``root/name`` at ``target`` (relative to root) atomically."""
    tmp = root / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, root / name)
    _sync_dir(root)


def current_target(root: Path) -> str | None:
    try:
        return os.readlink(root / CURRENT)
    except OSError:
        return None


def rollback(root: Path, reason: str) -> bool:
    """Switch ``current`` back to the version before the trial; False if none is pending."""
    trial = read_json(root / TRIAL)
    if trial is None:
        return False
    previous = str(trial.get("previous", ""))
    if previous and (root / previous).is_dir():
        switch(root, CURRENT, previous)
    result = {"outcome": "rolled_back", "version": trial.get("version"), "reason": reason}
    _write_json(root / RESULT, result)
    (root / TRIAL).unlink(missing_ok=True)
    _sync_dir(root)
    print(f"evsed-launch: rolled back to {previous}: {reason}", file=sys.stderr)
    return True


def confirm(root: Path) -> bool:
    """The running trial version reports ready: it stays ``current``."""
    trial = read_json(root / TRIAL)
    if trial is None or current_target(root) != trial.get("version"):
        return False
    _write_json(root / RESULT, {"outcome": "confirmed", "version": trial.get("version")})
    (root / TRIAL).unlink(missing_ok=True)
    _sync_dir(root)
    return True


def check(root: Path, now_s: float | None = None) -> None:
    """Count this start of a trial version; roll back when it used up its starts or time."""
    trial = read_json(root / TRIAL)
    if trial is None:
        if (root / TRIAL).exists():  # unreadable: nothing can be trusted about it
            (root / TRIAL).unlink(missing_ok=True)
        return
    if current_target(root) != trial.get("version"):
        rollback(root, "current is not the version on trial")
        return
    now_s = time.time() if now_s is None else now_s
    starts = int(trial.get("starts", 0)) + 1
    if starts > int(trial.get("max_starts", 3)):
        rollback(root, f"not ready after {starts - 1} starts")
    elif now_s > float(trial.get("deadline_s", 0)):
        rollback(root, "not ready before its deadline")
    else:
        trial["starts"] = starts
        _write_json(root / TRIAL, trial)


def main(argv: list[str]) -> int:
    root = Path(os.environ.get(ENV_ROOT) or Path(__file__).resolve().parent)
    check(root)
    exe = root / CURRENT / "bin" / "evsed"
    os.environ[ENV_LAUNCHER] = f"{sys.executable}\n{Path(__file__).absolute()}"
    os.environ[ENV_ROOT] = str(root)
    os.execv(exe, [str(exe), *argv[1:]])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
