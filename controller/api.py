"""Local JSON HTTP API: status, recent sessions, and simulation control for simulated drivers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.sessions import session_row
from hal.base import OCPP_FAULT_CODES, VehicleState
from hal.sim import SimRig, SimTokenReader

if TYPE_CHECKING:
    from controller.app import App

LOG = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096


class BadRequest(Exception):
    pass


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer")
    return value


class Api:
    """aiohttp application bound to 127.0.0.1 by default (it has no authentication)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.web = web.Application(client_max_size=MAX_BODY_BYTES)
        self.web.add_routes(
            [
                web.get("/api/status", self.status),
                web.get("/api/transactions", self.transactions),
                web.post("/api/sim/plug", self.sim_plug),
                web.post("/api/sim/unplug", self.sim_unplug),
                web.post("/api/sim/card", self.sim_card),
                web.post("/api/sim/vehicle", self.sim_vehicle),
                web.post("/api/sim/fault", self.sim_fault),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.web, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; needed for port 0
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        LOG.info("local API on http://%s:%s", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except web.HTTPException:
            raise  # e.g. 413 for a body over MAX_BODY_BYTES
        except Exception:
            raise BadRequest("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _rig(self, connector_id: int) -> SimRig:
        station = self.app.station
        if station is None or connector_id not in station.connectors:
            raise BadRequest(f"unknown connector {connector_id}")
        rig = self.app.shared.get(f"sim.rig.{connector_id}")
        if not isinstance(rig, SimRig) or rig.vehicle is None:
            raise LookupError(f"connector {connector_id} has no simulated vehicle")
        return rig

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _run(self, request: web.Request, action: Any) -> web.Response:
        try:
            body = await self._body(request)
            result = action(body)
        except web.HTTPException as exc:
            return self._error(exc.status, exc.reason)
        except BadRequest as exc:
            return self._error(400, str(exc))
        except LookupError as exc:
            return self._error(404, str(exc))
        except ValueError as exc:
            return self._error(400, str(exc))
        return web.json_response({"ok": True, **(result or {})})

    # ------------------------------------------------------------------ handlers

    async def status(self, request: web.Request) -> web.Response:
        assert self.app.station is not None
        data = self.app.station.snapshot()
        data["station_id"] = self.app.config.station_id
        return web.json_response(data)

    async def transactions(self, request: web.Request) -> web.Response:
        assert self.app.store is not None
        rows = self.app.store.transactions(limit=50)
        return web.json_response([session_row(t) for t in rows])

    async def sim_plug(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            vehicle = self._rig(_int(body, "connector", 1)).vehicle
            assert vehicle is not None
            vehicle.plug()

        return await self._run(request, act)

    async def sim_unplug(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            vehicle = self._rig(_int(body, "connector", 1)).vehicle
            assert vehicle is not None
            vehicle.unplug()

        return await self._run(request, act)

    async def sim_card(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> dict[str, Any]:
            uid = body.get("uid")
            if not isinstance(uid, str):
                raise BadRequest("'uid' must be a hex string such as \"04A1B2C3\"")
            reader = self.app.shared.get("sim.reader")
            if not isinstance(reader, SimTokenReader):
                raise LookupError('no simulated reader configured ([reader] driver = "sim")')
            return {"delivered": reader.present(uid)}

        return await self._run(request, act)

    async def sim_vehicle(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            vehicle = self._rig(_int(body, "connector", 1)).vehicle
            assert vehicle is not None
            state = body.get("state")
            try:
                vs = VehicleState(state)
            except ValueError:
                raise BadRequest("'state' must be one of A B C D E F") from None
            power_w = body.get("power_w")
            if power_w is not None and (
                isinstance(power_w, bool) or not isinstance(power_w, int | float)
            ):
                raise BadRequest("'power_w' must be a number")
            vehicle.set_state(vs, power_w=None if power_w is None else float(power_w))

        return await self._run(request, act)

    async def sim_fault(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            connector_id = _int(body, "connector", 1)
            fault = body.get("fault")
            if fault is not None and (not isinstance(fault, str) or fault not in OCPP_FAULT_CODES):
                raise BadRequest(f"'fault' must be null or one of {sorted(OCPP_FAULT_CODES)}")
            rig = self._rig(connector_id)
            if rig.fault is not None:
                if fault is None:
                    rig.fault.clear()
                else:
                    rig.fault.inject(fault)
            else:
                assert self.app.station is not None
                self.app.station.set_connector_fault(connector_id, fault)

        return await self._run(request, act)
