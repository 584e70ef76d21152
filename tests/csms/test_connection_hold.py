"""CsmsConnection.hold_offline / release against the dev CSMS on 127.0.0.1: the connection
is closed normally and no attempt is made until release (a simulated charger's offline
period, evsed fleet); close() while held ends run()."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import ClientConnection

from controller.csms.connection import ConnectionOptions, CsmsConnection, station_url
from controller.dev.devcsms import DevCsms, StationConnected, StationDisconnected
from controller.runtime.clock import ManualClock

STATION = "CP-HOLD"


async def test_hold_offline_closes_and_waits_for_release() -> None:
    events: list[str] = []
    states: list[str] = []

    async def session(ws: ClientConnection) -> None:
        async for _ in ws:  # until the connection closes
            pass

    async with DevCsms(
        on_event=lambda e: (
            events.append(type(e).__name__)
            if isinstance(e, StationConnected | StationDisconnected)
            else None
        )
    ) as csms:
        conn = CsmsConnection(
            url=station_url(csms.url, STATION),
            subprotocol="ocpp1.6",
            options=ConnectionOptions(csms_url=csms.url, reconnect_min_s=0.01),
            clock=ManualClock(),  # a back-off sleep would never end: none may happen
            session=session,
            on_state=states.append,
        )
        run = asyncio.ensure_future(conn.run())
        # Held while the handshake may still be under way: the new connection closes too.
        await csms.wait_connected(STATION)
        await conn.hold_offline("offline period")
        assert conn.held_offline
        await csms.wait_disconnected(STATION)
        # Held: run() waits for release (no attempt; the manual clock never moves).
        await asyncio.sleep(0)
        assert states[-1] == "offline" and conn.connects <= 1
        conn.release()
        await csms.wait_connected(STATION)
        assert not conn.held_offline
        await conn.hold_offline("again")
        await csms.wait_disconnected(STATION)
        await conn.close("stopping")  # while held: run() returns
        await asyncio.wait_for(run, 5)
    assert events == ["StationConnected", "StationDisconnected"] * 2


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("default", "permessage-deflate"),  # the server picks (the dev CSMS: 12 bits)
        ("small", "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11"),
        ("off", None),
    ],
)
async def test_compression_modes_negotiate_what_they_say(mode: str, expected: str | None) -> None:
    """ConnectionOptions.compression (RFC 7692): "small" asks for 2 KiB windows on both
    sides (evsed fleet: less zlib state per station), "off" offers no extension."""
    negotiated: list[str | None] = []

    async def session(ws: ClientConnection) -> None:
        assert ws.response is not None
        negotiated.append(ws.response.headers.get("Sec-WebSocket-Extensions"))

    async with DevCsms() as csms:
        conn = CsmsConnection(
            url=station_url(csms.url, STATION),
            subprotocol="ocpp1.6",
            options=ConnectionOptions(csms_url=csms.url, compression=mode),
            clock=ManualClock(),
            session=session,
        )
        run = asyncio.ensure_future(conn.run())
        try:
            await csms.wait_connected(STATION)
            await csms.wait_disconnected(STATION)  # the session returned: closed
        finally:
            await conn.close("done")
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
    if mode == "default":
        assert negotiated[0] is not None and negotiated[0].startswith("permessage-deflate")
    else:
        assert negotiated[0] == expected
