"""Bad input at `evsed proxy`, from either side: malformed frames get the OCPP-J answer, a
charger with wrong credentials is refused at the upgrade, a flooding backend meets the rate
limit, a charger or the primary going away in the middle of a CALL; each leaves the other
backends and the session as they were (OCPP-J 1.6 4.2.3, 2.0.1 part 4 4.2.3)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.proxy.proxyrig import Rig, accepted, backend, eventually, proxy_config

pytestmark = pytest.mark.timeout(60)

RAW = "CP-RAW"
RAW_PASSWORD = "raw-s3cret"


def auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def pair() -> AsyncIterator[tuple[DevCsms, DevCsms]]:
    async with DevCsms(heartbeat_interval_s=3600) as billing, DevCsms() as watch:
        billing._last_transaction_id = 100
        watch._last_transaction_id = 500
        yield billing, watch


@pytest.fixture
async def rig(tmp_path: Path, pair: tuple[DevCsms, DevCsms]) -> AsyncIterator[Rig]:
    billing, watch = pair
    config = proxy_config(
        tmp_path,
        [backend("billing", billing.url, "primary"), backend("watch", watch.url, "mirror")],
        chargers=[{"id": STATION_ID}, {"id": RAW, "password": RAW_PASSWORD}],
        rate_limit_burst=5,
        rate_limit_per_s=0.5,
    )
    r = Rig(config)
    await r.start()
    yield r
    await r.stop()


async def test_malformed_frames_from_a_backend(
    rig: Rig, pair: tuple[DevCsms, DevCsms], charger: Any
) -> None:
    """The mirror sends text that is not JSON, an unknown MessageTypeId and a CALL with
    a payload against its schema: each is answered by the proxy (FormationViolation,
    FormationViolation, TypeConstraintViolation) and the primary's commands and the
    charger's messages go on."""
    billing, watch = pair
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    await watch.wait_connected(STATION_ID)
    await watch.send_text(STATION_ID, "not json at all")
    answer = await watch.next_raw_response(STATION_ID)
    assert answer[:3] == [4, "-1", "FormationViolation"]
    await watch.send_text(STATION_ID, '[7,"abc",{}]')
    answer = await watch.next_raw_response(STATION_ID)
    assert answer[0] == 4 and answer[1] == "abc" and answer[2] == "FormationViolation"
    got = await watch.call_raw(STATION_ID, "GetConfiguration", {"key": "HeartbeatInterval"})
    assert got[0] == 4 and got[2] == "TypeConstraintViolation"
    got = await billing.call_raw(STATION_ID, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert got[0] == 3
    h.plug()
    await h.advance(2)
    await eventually(
        lambda: any(
            f.action == "StatusNotification" and f.payload["status"] == "Preparing"
            for f in watch.received
        )
    )


async def test_malformed_frames_and_bad_credentials_from_a_charger(
    rig: Rig, pair: tuple[DevCsms, DevCsms]
) -> None:
    """A charger with a wrong password is refused with HTTP 401 (no backend hears of it);
    with the right one, its unreadable frame and its CSMS-only action are answered by the
    proxy, its BootNotification reaches the primary and the mirror, and a backend's CALL
    the charger leaves unanswered when it disconnects gets a CALLERROR."""
    billing, watch = pair
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await connect(
            f"{rig.url}/{RAW}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=auth(RAW, "wrong"),
        )
    assert refused.value.response.status_code == 401
    assert not billing.connected(RAW)
    ws = await connect(
        f"{rig.url}/{RAW}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=auth(RAW, RAW_PASSWORD),
    )
    try:
        assert ws.subprotocol == "ocpp1.6"
        await ws.send("{{{")
        assert json.loads(await ws.recv())[:3] == [4, "-1", "FormationViolation"]
        await ws.send(json.dumps([2, "m1", "Reset", {"type": "Soft"}]))
        assert json.loads(await ws.recv())[:3] == [4, "m1", "NotSupported"]
        boot = {"chargePointVendor": "Raw", "chargePointModel": "Socket"}
        await ws.send(json.dumps([2, "m2", "BootNotification", boot]))
        answer = json.loads(await ws.recv())
        assert answer[0] == 3 and answer[1] == "m2" and answer[2]["status"] == "Accepted"
        await eventually(lambda: len(watch.frames(RAW, "BootNotification")) == 1)
        assert [f.action for f in billing.frames(RAW)] == ["BootNotification"]
        pending = asyncio.ensure_future(watch.call_raw(RAW, "GetConfiguration", {}, timeout_s=10))
        request = json.loads(await ws.recv())
        assert request[0] == 2 and request[2] == "GetConfiguration"
    finally:
        await ws.close()
    answer = await pending
    assert answer[0] == 4 and answer[2] == "GenericError" and "disconnected" in answer[3]


async def test_a_flooding_backend_meets_the_rate_limit(
    rig: Rig, pair: tuple[DevCsms, DevCsms], charger: Any
) -> None:
    """The mirror sends 30 requests at once: 5 (the burst) reach the charger, the rest are
    answered GenericError naming the rate limit; the primary's own budget is untouched."""
    billing, watch = pair
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    await watch.wait_connected(STATION_ID)
    answers = await asyncio.gather(
        *(watch.call_raw(STATION_ID, "GetConfiguration", {}) for _ in range(30))
    )
    ok = [a for a in answers if a[0] == 3]
    limited = [a for a in answers if a[0] == 4]
    assert 5 <= len(ok) <= 6  # the bucket refills 0.5/s while the burst is served
    assert limited and all(a[2] == "GenericError" and "rate limit" in a[3] for a in limited)
    got = await billing.call_raw(STATION_ID, "GetConfiguration", {})
    assert got[0] == 3
    proxy = rig.proxy
    assert proxy is not None
    status = proxy.status()["chargers"][0]
    assert next(b for b in status["backends"] if b["name"] == "watch")["refused"] == len(limited)


async def test_primary_lost_in_the_middle_of_a_call(
    rig: Rig, pair: tuple[DevCsms, DevCsms], charger: Any
) -> None:
    """During a session the primary takes the charger's MeterValues and closes its
    connection without answering: the proxy closes the charger's connection without an
    answer, the charger reconnects and sends the MeterValues again, and the mirror receives
    that sample exactly once, under its own transaction id."""
    billing, watch = pair
    h = await charger(rig.as_csms, wait_accepted=False)
    await accepted(h)
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed, timeout_s=10)
    await eventually(lambda: any(f.action == "StartTransaction" for f in watch.received))
    billing.black_hole = True
    await h.advance(60, step_s=5)
    lost = await billing.wait_for(lambda f: f.action == "MeterValues")
    billing.black_hole = False
    await billing.disconnect(STATION_ID)
    await accepted(h)
    for _ in range(200):  # the charger's retry waits on its (manual) clock
        if len(billing.frames(STATION_ID, "MeterValues")) > 1:
            break
        await h.advance(1)
    resent = billing.frames(STATION_ID, "MeterValues")[1]
    assert resent.payload["meterValue"] == lost.payload["meterValue"]
    stamp = lost.payload["meterValue"][0]["timestamp"]

    def copies() -> list[Any]:
        return [
            f
            for f in watch.received
            if f.action == "MeterValues" and f.payload["meterValue"][0]["timestamp"] == stamp
        ]

    await eventually(lambda: len(copies()) >= 1)
    await h.advance(2)
    await asyncio.sleep(0.2)
    assert len(copies()) == 1
    assert copies()[0].payload["transactionId"] == 501
    assert lost.payload["transactionId"] == 101
