"""A charger loads only what its configuration uses: no certificate, FTP or TLS code for a
plain ws:// CSMS (start time on a Pi Zero class board is mostly imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import REPO

SCRIPT = r"""
import asyncio, json, sys
from controller.app import App
from controller.config import parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock

async def main():
    csms = DevCsms(host="127.0.0.1", port=0)
    await csms.start()
    before = set(sys.modules)
    config = parse({
        "station": {"id": "CP-IMPORTS", "storage": sys.argv[1]},
        "csms": {"url": csms.url},
        "reader": {"driver": "sim"},
        "connectors": [{
            "contactor": {"driver": "sim"},
            "meter": {"driver": "sim"},
            "vehicle": {"driver": "sim"},
        }],
    })
    app = App(config, clock=ManualClock(), with_api=False)
    await app.start()
    await csms.wait_connected("CP-IMPORTS", timeout_s=10)
    loaded = sorted(set(sys.modules) - before)
    await app.stop(reason=None)
    await csms.stop()
    print(json.dumps(loaded))

asyncio.run(main())
"""

# The dev CSMS (loaded before the snapshot) already brings websockets, ocpp and asyncio.
NOT_FOR_PROFILE_1 = ("cryptography", "aioftp", "trustme", "pyftpdlib")


def test_a_ws_charger_loads_no_certificate_or_ftp_code(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "evsed.db")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in NOT_FOR_PROFILE_1]
    assert heavy == [], heavy
