"""`evsed proxy` as its own process (the command line the systemd unit runs): status on its
HTTP port, and kill -9 mid-session while the mirror is down; after the restart the charger
reconnects by itself and the mirror receives the session once, from the queue on disk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.procs import REPO, free_port
from tests.proxy.proxyrig import accepted, eventually, session

pytestmark = pytest.mark.timeout(90)


class ProxyProcess:
    def __init__(self, config: Path, log_dir: Path, status_port: int) -> None:
        self.config = config
        self.log_dir = log_dir
        self.status_port = status_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.log_dir / f"proxy-run{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "proxy", "-c", str(self.config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def status(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.status_port}/api/status"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return dict(json.load(resp))
        except OSError:
            return None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Any]:
    made: list[ProxyProcess] = []

    def make(primary: DevCsms, mirror: DevCsms) -> ProxyProcess:
        port, status_port = free_port(), free_port()
        config = tmp_path / "proxy.toml"
        config.write_text(
            f"""[proxy]
listen_host = "127.0.0.1"
listen_port = {port}
status_port = {status_port}
storage = "{tmp_path / "proxy.db"}"
reconnect_min_s = 0.05
reconnect_max_s = 0.2

[[chargers]]
id = "{STATION_ID}"

[[backends]]
name = "billing"
url = "{primary.url}"
role = "primary"

[[backends]]
name = "watch"
url = "{mirror.url}"
role = "mirror"
""",
            encoding="utf-8",
        )
        p = ProxyProcess(config, tmp_path, status_port)
        p.port = port  # type: ignore[attr-defined]
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


async def started(p: ProxyProcess) -> None:
    p.start()
    await eventually(lambda: p.status() is not None, timeout_s=20)


async def test_proxy_process_survives_kill9_with_a_queue_on_disk(
    proxy_process: Any, charger: Any, tmp_path: Path
) -> None:
    async with DevCsms(heartbeat_interval_s=3600) as primary, DevCsms() as mirror:
        primary._last_transaction_id = 100
        mirror._last_transaction_id = 500
        p = proxy_process(primary, mirror)
        await started(p)
        url = f"ws://127.0.0.1:{p.port}/ocpp"
        h = await charger(type("Csms", (), {"url": url})(), wait_accepted=False)
        await accepted(h)
        status = p.status()
        assert status is not None
        (entry,) = status["chargers"]
        assert entry["id"] == STATION_ID and entry["connected"]
        mirror.refuse_connections = True
        await mirror.disconnect(STATION_ID)
        await session(h)
        await eventually(lambda: bool(primary.frames(STATION_ID, "StopTransaction")))
        p.kill9()
        await started(p)
        await accepted(h)
        await asyncio.sleep(0.2)
        status = p.status()
        assert status is not None
        watch = next(b for b in status["chargers"][0]["backends"] if b["name"] == "watch")
        assert watch["queue_length"] >= 4  # statuses, start, meter values, stop
        mirror.refuse_connections = False
        await eventually(lambda: bool(mirror.frames(STATION_ID, "StopTransaction")), 20)
        assert len(mirror.frames(STATION_ID, "StartTransaction")) == 1
        assert len(mirror.frames(STATION_ID, "StopTransaction")) == 1
        assert mirror.frames(STATION_ID, "StopTransaction")[0].payload["transactionId"] == 501
