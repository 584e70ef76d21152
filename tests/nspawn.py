"""A Debian bookworm container booted with systemd-nspawn: a real systemd as PID 1 for tests."""

# The root file system comes from debootstrap once and is cached (EVSED_NSPAWN_CACHE, default
# /var/cache/evsed-test); every container boots a copy of it, so nothing a test does leaks
# into the next one. Commands run inside through nsenter: with --register=no there is no
# machined to ask (no machinectl shell, no systemd-run -M).

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUITE = "bookworm"
# Part of the cache directory's name: change it when the package list changes.
ROOT_VERSION = "1"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "procps",
    "util-linux",
    "passwd",
)
MIRROR = os.environ.get("EVSED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("EVSED_NSPAWN_CACHE", "/var/cache/evsed-test"))
COMPLETE = ".evsed-root-complete"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV = "/opt/evsed/.venv"  # where the units look by default; ProtectHome= hides /home and /root
WHEELS = "/opt/evsed-wheels"
SHUTDOWN_TIMEOUT_S = 60.0


def missing_tools() -> list[str]:
    """What this machine lacks to boot a container (empty: it can)."""
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(t)]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not debootstrap into one dir
        yield


def base_root(log: Callable[[str], None] = print) -> Path:
    """The cached debootstrap root, built when missing (a minute or two, needs the mirror)."""
    final = CACHE / f"{SUITE}-{ROOT_VERSION}"
    with _locked(CACHE / ".lock"):
        if (final / COMPLETE).exists():
            return final
        building = CACHE / f"{final.name}.building"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        log(f"debootstrap {SUITE} into {building} (cached for later runs)")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(building),
                MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=1800,
        )
        # A completed build only: an interrupted debootstrap is built again next time.
        (building / COMPLETE).write_text(f"{SUITE} {ROOT_VERSION} {' '.join(PACKAGES)}\n")
        building.rename(final)
        return final


def build_wheelhouse(repo: Path, dest: Path) -> list[Path]:
    """evsed from this checkout and its pinned dependencies as wheels, for a container that
    has no network (--private-network)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), str(repo)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return sorted(dest.glob("*.whl"))


def copy_root(base: Path, dest: Path) -> None:
    """A private copy of the cached root (cp -a: owners, modes, device nodes, links)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(dest)], check=True, timeout=600)


def nspawn_run(root: Path, argv: Sequence[str], timeout_s: float = 600) -> str:
    """Run one command in the root without booting it (no network, like the boots)."""
    result = subprocess.run(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--private-network",
            f"--directory={root}",
            f"--setenv=PATH={PATH}",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{list(argv)} in {root}: exit {result.returncode}\n{result.stderr}")
    return result.stdout


class Container:
    """One booted container; ``shutdown`` (always called by the fixture) ends every process."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def boot(self, timeout_s: float = 120) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "--boot",
                    f"--directory={self.root}",
                    "--register=no",
                    "--keep-unit",
                    "--console=passive",
                    "--private-network",
                    # ntp_adjtime(): evsed's read-only probe of the clock's NTP state.
                    "--system-call-filter=@clock",
                    f"--machine=evsed-test-{os.getpid()}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a ^C of pytest reaches it through shutdown() only
            )
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=30)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"container did not boot ({state.stdout.strip()!r}):\n{self.log_text()}"
                )
            time.sleep(0.5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def leader(self) -> int:
        """The container's PID 1 (systemd) as the host sees it: nspawn's child."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        if not pids:
            raise RuntimeError("systemd-nspawn has no child (yet)")
        return pids[0]

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside (all its namespaces), with a clean environment."""
        try:
            leader = self.leader()
        except (OSError, RuntimeError) as exc:
            return subprocess.CompletedProcess(list(argv), 255, "", str(exc))
        command = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
        result = subprocess.run(
            ["nsenter", "-t", str(leader), "-a", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8"]
            + command,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, *matches: str, since_cursor: str | None = None) -> list[dict]:
        argv = ["journalctl", "-u", unit, "-o", "json", "--no-pager", *matches]
        if since_cursor:
            argv.append(f"--after-cursor={since_cursor}")
        out = self.run(argv, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def cursor(self) -> str:
        out = self.run(["journalctl", "-n", "1", "-o", "json", "--no-pager"]).stdout
        return str(json.loads(out.splitlines()[-1])["__CURSOR"])

    def wait(self, what: str, predicate: Callable[[], Any], timeout_s: float = 90) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def shutdown(self) -> None:
        """Power the container off (SIGTERM = an orderly shutdown for nspawn), SIGKILL if it
        hangs; then check that no process is left whose root is this container's."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session (start_new_session)
                proc.wait(30)
        left = processes_under(self.root)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            raise AssertionError(f"processes left in the container after shutdown: {left}")


def processes_under(root: Path) -> list[int]:
    """PIDs whose root directory is ``root`` (the container's processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "root") == str(root):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class CsmsControl:
    """The host's handle on tests/nspawn_csms.py running in the container."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def request(self, op: str, **params: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(self.socket_path))
            sock.sendall(json.dumps({"op": op, **params}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if "error" in reply:
            raise AssertionError(f"CSMS {op}: {reply['error']}")
        return reply["result"]

    def frames(self, action: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.request("frames") if action is None or f["action"] == action]
