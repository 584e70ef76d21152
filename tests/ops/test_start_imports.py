"""A charger loads only what its configuration uses: no certificate, FTP or TLS code for a
plain ws:// CSMS (start time on a Pi Zero class board is mostly imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import REPO, free_port

SCRIPT = r"""
import asyncio, json, sys
from controller.app import App
from controller.config import parse
from controller.runtime.clock import ManualClock

async def main():
    config = parse({
        "station": {"id": "CP-IMPORTS", "storage": sys.argv[1]},
        # Nothing listens there: the charger builds its connection and keeps trying.
        "csms": {"url": "ws://127.0.0.1:" + sys.argv[2] + "/ocpp"},
        "reader": {"driver": "sim"},
        "connectors": [{
            "contactor": {"driver": "sim"},
            "meter": {"driver": "sim"},
            "vehicle": {"driver": "sim"},
        }],
    })
    app = App(config, clock=ManualClock(), with_api=False)
    await app.start()
    for _ in range(20):
        await asyncio.sleep(0.01)  # a few connection attempts
    await app.stop(reason=None)
    print(json.dumps(sorted(sys.modules)))

asyncio.run(main())
"""

NOT_FOR_PROFILE_1 = ("cryptography", "aioftp", "trustme", "pyftpdlib")


def test_a_ws_charger_loads_no_certificate_or_ftp_code(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "evsed.db"), str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in NOT_FOR_PROFILE_1]
    assert heavy == [], heavy
