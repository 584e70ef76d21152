"""Security events survive SIGKILL and a CSMS outage and are delivered exactly once, in order
(security whitepaper A04.FR.02: "queued with a guaranteed delivery at the Central System")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import CALLRESULT, DevCsms
from tests.procs import Evsed, free_port, write_config

STATION = "CP-SECKILL"
SEN = "SecurityEventNotification"


@pytest.fixture
def evsed(tmp_path: Path) -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    yield holder
    ev = holder.get("ev")
    if ev is not None:
        ev.cleanup()


def confirmed(csms: DevCsms) -> list[dict[str, Any]]:
    ok = {r.unique_id for r in csms.sent_results if r.message_type == CALLRESULT}
    return [f.payload for f in csms.frames(STATION, SEN) if f.unique_id in ok]


async def test_security_events_exactly_once_across_kill9_and_outage(
    tmp_path: Path, evsed: dict[str, Any]
) -> None:
    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as csms:
        api_port = free_port()
        cfg = write_config(tmp_path, station_id=STATION, csms_url=csms.url, api_port=api_port)
        ev = evsed["ev"] = Evsed(cfg, api_port, tmp_path)
        ev.start()
        await ev.wait_api()
        await csms.wait_for(lambda f: f.action == SEN, timeout_s=15)
        # Confirmed and removed before the kill. (Killed between the CSMS's CALLRESULT and
        # the removal's commit, an event is sent again after the restart: at least once,
        # like a MeterValues in flight; OCPP gives the CSMS no id to drop the copy by.)
        await ev.wait_status(lambda s: s["csms"]["queued_messages"] == 0, what="confirmed")

        # Outage: two more starts, each killed, while the CSMS refuses connections.
        csms.refuse_connections = True
        await csms.disconnect(STATION)
        for _ in range(2):
            ev.kill9()
            ev.start()
            await ev.wait_api()  # the start's event is committed before the API answers
        ev.kill9()
        ev.start()
        await ev.wait_api()
        csms.refuse_connections = False

        await ev.wait_status(
            lambda s: s["csms"]["state"] == "accepted" and s["csms"]["queued_messages"] == 0,
            timeout_s=20,
            what="queue delivered",
        )
        delivered = confirmed(csms)
        # Run 1's event once; runs 2-4 queued offline, each once; none lost, none twice.
        assert [p["type"] for p in delivered] == ["StartupOfTheDevice"] * 4
        stamps = [p["timestamp"] for p in delivered]
        assert stamps == sorted(stamps) and len(set(stamps)) == 4
        sent = [(f.unique_id, f.payload["timestamp"]) for f in csms.frames(STATION, SEN)]
        assert len(sent) == 4, (sent, [r.unique_id for r in csms.sent_results])
