"""Helpers for tests that run `evsed run` as a real child process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# First-boot OCPPCommCtrlr values of every 2.0.1 test charger ([ocpp.OCPPCommCtrlr]): it
# reconnects at once (the back-off's 0.1 s floor), not after the default 10-20 s.
FAST_RETRY_BACKOFF_201 = {
    "RetryBackOffWaitMinimum": 0,
    "RetryBackOffRandomRange": 0,
    "RetryBackOffRepeatTimes": 0,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    tmp_path: Path,
    *,
    station_id: str,
    csms_url: str | None,
    api_port: int,
    ocpp: dict[str, Any] | None = None,
    ocpp_version: str = "1.6",
) -> Path:
    """A simulated single-connector charger; the meter register survives restarts.
    ``csms_url`` None: standalone with free vend (no CSMS)."""
    backend = (
        f"""[csms]
url = "{csms_url}"
reconnect_min_s = 0.05
reconnect_max_s = 0.3
response_timeout_s = 5
ocpp_version = {json.dumps(ocpp_version)}"""
        if csms_url is not None
        else """[standalone]
free_vend = true"""
    )
    overrides = {"MeterValueSampleInterval": 1, "HeartbeatInterval": 3600, **(ocpp or {})}
    ocpp_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in overrides.items())
    if ocpp_version == "2.0.1":
        # Reconnect like the [csms] back-off above, not after 10-20 s (RetryBackOff*).
        ocpp_lines += "\n\n[ocpp.OCPPCommCtrlr]\n" + "\n".join(
            f"{k} = {v}" for k, v in FAST_RETRY_BACKOFF_201.items()
        )
    text = f"""
[station]
id = "{station_id}"
storage = "{tmp_path / "evsed.db"}"
tick_interval_s = 0.1

[api]
host = "127.0.0.1"
port = {api_port}

{backend}

[reader]
driver = "sim"

[[connectors]]
max_current_a = 16

[connectors.contactor]
driver = "sim"

[connectors.meter]
driver = "sim"
initial_energy_wh = 1000
state_file = "{tmp_path / "meter.json"}"
save_interval_s = 0

[connectors.vehicle]
driver = "sim"
power_w = 11000

[ocpp]
{ocpp_lines}

[logging]
level = "INFO"
"""
    path = tmp_path / "evsed.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Evsed:
    """One `evsed run -c CONFIG` child; restart with ``start`` after ``kill9``."""

    def __init__(self, config: Path, api_port: int, log_dir: Path) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{api_port}"
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.all_procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        log = open(self.log_dir / f"evsed-run{self.runs}.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "run", "-c", str(self.config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.all_procs.append(self.proc)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """SIGKILL: no cleanup code runs at all."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def cleanup(self) -> None:
        """Teardown: kill every child this helper started (by pid), reap them."""
        for proc in self.all_procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_dir / f"evsed-run{self.runs}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ HTTP API

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    async def get(self, path: str) -> Any:
        return await asyncio.to_thread(self._request, path)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self._request, path, body)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.get("/api/status")
        return result

    async def wait_api(self, timeout_s: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"evsed exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                await self.status()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if loop.time() > deadline:
                    raise AssertionError(f"API not up:\n{self.log_tail()}") from None
                await asyncio.sleep(0.05)

    async def wait_status(
        self, predicate: Any, timeout_s: float = 15.0, what: str = "condition"
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            st = await self.status()
            if predicate(st):
                return st
            if loop.time() > deadline:
                raise AssertionError(f"{what} not reached; last status {st}\n{self.log_tail()}")
            await asyncio.sleep(0.05)
