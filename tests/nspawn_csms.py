"""The dev CSMS inside the test container, driven by the host through a UNIX socket."""

# Runs in the container with its venv's python (evsed installed there). The container has no
# network the host can reach (--private-network), but a UNIX socket on the container's root
# file system is a file the host can connect to.

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from controller.dev.devcsms import CsmsEvent, DevCsms, StationDisconnected


async def serve(control_path: str, port: int) -> None:
    disconnects: list[dict[str, Any]] = []

    def on_event(event: CsmsEvent) -> None:
        if isinstance(event, StationDisconnected):
            disconnects.append(
                {"station": event.station_id, "code": event.code, "reason": event.reason}
            )

    async with DevCsms(
        host="127.0.0.1", port=port, heartbeat_interval_s=3600, on_event=on_event
    ) as csms:

        async def answer(request: dict[str, Any]) -> Any:
            op = request["op"]
            if op == "frames":
                return [
                    {"station": f.station_id, "action": f.action, "payload": f.payload}
                    for f in csms.received
                ]
            if op == "disconnects":
                return disconnects
            if op == "connected":
                return csms.connected(request["station"])
            if op == "call":
                response = await csms.call_raw(
                    request["station"], request["action"], request["payload"]
                )
                return response[2]
            raise ValueError(f"unknown op {op!r}")

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = json.loads(await reader.readline())
                try:
                    reply = {"result": await answer(request)}
                except Exception as exc:  # the host test shows it
                    reply = {"error": repr(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_unix_server(handle, control_path)
        async with server:
            print(f"dev CSMS on {csms.url}, control {control_path}", flush=True)
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
