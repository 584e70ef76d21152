"""SIGKILL the real `evsed run` with two backends mid-session (issue 15): the primary is
connected, the mirror has been offline since the session started (its messages queued).
After the restart each backend gets the transaction exactly once, in order, with its own
transactionId: one StartTransaction, one StopTransaction (Reboot, 1.6 7.36), nothing
confirmed twice except possibly a MeterValues in flight at the kill."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.e2e.test_kill9 import CARD, boot, charging, check_invariants, mvs_for, wait_until
from tests.procs import Evsed, free_port, write_config

STATION = "CP-KILL9"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def evsed() -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    yield holder
    ev = holder.get("ev")
    if ev is not None:
        ev.cleanup()


def with_mirror(config: Path, mirror_url: str) -> None:
    """The single [csms] table becomes the primary of a [[csms]] list with a mirror."""
    text = config.read_text(encoding="utf-8")
    text = text.replace("[csms]\n", '[[csms]]\nname = "billing"\nrole = "primary"\n', 1)
    text += f"""
[[csms]]
name = "mirror"
role = "mirror"
url = "{mirror_url}"
reconnect_min_s = 0.05
reconnect_max_s = 0.3
response_timeout_s = 5
"""
    config.write_text(text, encoding="utf-8")


async def test_kill9_with_a_mirror_offline_delivers_to_both_exactly_once(
    tmp_path: Path, evsed: dict
) -> None:
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1", port=0, heartbeat_interval_s=3600, first_transaction_id=900
        ) as mirror,
    ):
        api_port = free_port()
        cfg = write_config(tmp_path, station_id=STATION, csms_url=billing.url, api_port=api_port)
        with_mirror(cfg, mirror.url)
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        await boot(ev, billing)
        await mirror.wait_connected(STATION, timeout_s=15)
        await ev.wait_status(
            lambda s: all(b["state"] == "accepted" for b in s["backends"]), what="both accepted"
        )
        # The mirror goes away before the session: everything for it is queued.
        mirror.refuse_connections = True
        await mirror.disconnect(STATION)
        await ev.post("/api/sim/plug", {"connector": 1})
        assert (await ev.post("/api/sim/card", {"uid": CARD}))["delivered"]
        st = await ev.wait_status(
            lambda s: charging(s) and s["connectors"][0]["transaction_id"] is not None,
            what="charging",
        )
        tx_id = st["connectors"][0]["transaction_id"]
        await wait_until(lambda: len(mvs_for(billing, tx_id)) >= 3, what="3 MeterValues")
        queued = await ev.wait_status(
            lambda s: (
                next(b for b in s["backends"] if b["name"] == "mirror")["queued_messages"] >= 3
            ),
            what="the mirror's queue",
        )
        assert queued["csms"]["state"] == "accepted"

        ev.kill9()
        await asyncio.sleep(0.1)
        assert mirror.frames(STATION, "StartTransaction") == []

        mirror.refuse_connections = False
        await boot(ev, billing)
        await billing.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
        await mirror.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
        await ev.wait_status(
            lambda s: all(b["queued_messages"] == 0 for b in s["backends"]), what="drained"
        )
        await asyncio.sleep(0.5)  # room for anything duplicated to show up

        for server, own_id in ((billing, tx_id), (mirror, 900)):
            txs = check_invariants(server, kills=1)
            assert list(txs) == [own_id]
            (stop,) = server.frames(STATION, "StopTransaction")
            assert stop.payload["reason"] == "Reboot"
            assert stop.payload["transactionId"] == own_id
        stop_a = billing.frames(STATION, "StopTransaction")[0].payload
        stop_b = mirror.frames(STATION, "StopTransaction")[0].payload
        assert stop_a["meterStop"] == stop_b["meterStop"]
        start_a = billing.frames(STATION, "StartTransaction")[0].payload
        start_b = mirror.frames(STATION, "StartTransaction")[0].payload
        assert start_a["meterStart"] == start_b["meterStart"]
        assert start_a["timestamp"] == start_b["timestamp"]
