"""Small wheels built in the tests: a fake `evsed` console script that records which version
ran and may confirm itself through the launcher (as the real evsed does once its boot is
accepted)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

PROGRAM = """
import importlib.machinery, os, sys
from pathlib import Path

VERSION = {version!r}
CONFIRM = {confirm!r}


def main():
    with open(os.environ["EVFAKE_OUT"], "a") as fh:
        fh.write(VERSION + "\\n")
    if CONFIRM:
        launcher = importlib.machinery.SourceFileLoader(
            "evsed_launch", os.environ["EVSED_LAUNCHER"].split("\\n")[-1]
        ).load_module()
        launcher.confirm(Path(os.environ["EVSED_VENV_ROOT"]))
    return 0
"""


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(
    directory: Path,
    version: str,
    *,
    confirm: bool = True,
    broken: bool = False,
    name: str = "evfake",
    requires: tuple[str, ...] = (),
    script: bool = True,
) -> Path:
    dist = f"{name}-{version}"
    body = (
        "raise ImportError('this build is broken')\n"
        if broken
        else PROGRAM.format(version=version, confirm=confirm)
    )
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {
        f"{name}/__init__.py": body,
        f"{dist}.dist-info/METADATA": metadata,
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    if script:
        files[f"{dist}.dist-info/entry_points.txt"] = f"[console_scripts]\nevsed = {name}:main\n"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        record = []
        for arc, text in files.items():
            data = text.encode()
            zf.writestr(arc, data)
            record.append(_record_line(arc, data))
        record.append(f"{dist}.dist-info/RECORD,,")
        zf.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return path
