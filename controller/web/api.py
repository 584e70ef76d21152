"""Local HTTP API and status page: status, sessions (JSON and CSV), control and simulation."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import ipaddress
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.core import connector as sm
from controller.core.charging_profiles import RateUnit
from controller.core.timestamps import iso_utc, parse_iso
from controller.storage.sessions import daily_energy, session_row, sessions_between, sessions_csv
from hal.base import FAULT_KIND_NAMES, FaultKind, VehicleState

if TYPE_CHECKING:
    from controller.app import App
    from hal.sim import SimControl

LOG = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
# Sessions a CSV export reads at most (a home charger makes a few thousand a year).
CSV_MAX_SESSIONS = 100_000
# Sessions the energy-per-day chart reads at most (30 days of a busy public charger).
DAILY_MAX_SESSIONS = 5000
DAILY_DAYS = 30
# Local limits (POST /api/limit): bounds of the body's values.
LOCAL_LIMIT_MAX_A = 1000.0
LOCAL_TIMEOUT_DEFAULT_S = 60.0
LOCAL_TIMEOUT_MAX_S = 86_400.0
# GET /api/schedule: the window, as GetCompositeSchedule's duration.
SCHEDULE_DEFAULT_S = 86_400
SCHEDULE_MAX_S = 7 * 86_400
# A refused request is logged at most this often (a LAN client guessing tokens must not
# fill the SD card with log lines).
REFUSAL_LOG_INTERVAL_S = 60.0

LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# The status page: shipped in the package, no build step, nothing from a CDN.
STATIC_FILES = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
# Scripts and styles only from this server (no inline script: an idTag that slipped into
# the markup could not run), requests only to this server, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class BadRequest(Exception):
    pass


class Conflict(Exception):
    """The request is valid but the charger is not in a state to do it (409)."""


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer")
    return value


def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float | None) -> float:
    value = body.get(name, default)
    if value is None:
        raise BadRequest(f"{name!r} is required: a number {lo:g} .. {hi:g}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"{name!r} must be a number {lo:g} .. {hi:g}")
    if not lo <= value <= hi:
        raise BadRequest(f"{name!r} is out of range: {value!r}; use {lo:g} .. {hi:g}")
    return float(value)


# ---------------------------------------------------------------------- access policy


@dataclass(frozen=True)
class Access:
    """What one request may do."""

    local: bool  # a trusted loopback client
    authenticated: bool  # sent the right token
    bad_credentials: bool  # sent an Authorization header that is not the right token
    read: bool
    control: bool


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return addr


def host_name(host_header: str | None) -> str:
    """The name part of a Host header: ``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class AccessPolicy:
    """Who may read and who may control, from the peer address and the token.

    * With ``api.token`` set, a request carrying ``Authorization: Bearer <token>`` may do
      everything (compared in constant time).
    * A *local* client — peer address in ``local_networks`` (loopback) AND a loopback Host
      header (so a web page that DNS-rebinds its own name to 127.0.0.1 is not local) — may
      read without a token, and control too when no token is configured (the owner on the
      box itself is the admin of a home charger). Once a token exists, control needs it
      everywhere, so a local process or browser tab cannot stop a session unasked.
    * Everyone else needs the token for everything.
    * A wrong token is refused even where no token would have been needed.

    The peer address is the TCP peer; X-Forwarded-For and similar headers are ignored.
    """

    def __init__(
        self,
        token: str | None,
        *,
        trust_loopback: bool = True,
        local_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (
            LOOPBACK_NETWORKS
        ),
    ) -> None:
        self._token = None if token is None else token.encode()
        self.token_configured = token is not None
        self.trust_loopback = trust_loopback
        self.local_networks = tuple(local_networks)

    def __repr__(self) -> str:  # never show the token
        return f"AccessPolicy(token={'set' if self.token_configured else 'none'})"

    def is_local(self, peer: str | None, host_header: str | None) -> bool:
        if not self.trust_loopback:
            return False
        addr = _ip(peer)
        if addr is None or not any(addr in net for net in self.local_networks):
            return False
        name = host_name(host_header)
        if name == "localhost":
            return True
        host_addr = _ip(name)
        return host_addr is not None and host_addr.is_loopback

    def check_token(self, authorization: str | None) -> bool | None:
        """None: no credentials sent; True/False: the right token or not."""
        if authorization is None:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or self._token is None:
            return False
        given = value.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token)

    def evaluate(
        self, peer: str | None, host_header: str | None, authorization: str | None
    ) -> Access:
        local = self.is_local(peer, host_header)
        token_ok = self.check_token(authorization)
        if token_ok is False:
            return Access(local, False, True, False, False)
        authed = bool(token_ok)
        read = authed or local
        control = authed or (local and not self.token_configured)
        return Access(local, authed, False, read, control)


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """A request without Origin (curl, the CLI) or from this very page is fine; a browser
    sends Origin on cross-site POSTs (a form on another site aimed at 127.0.0.1)."""
    if origin is None:
        return True
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https"):
        return False
    return rest.lower() == (host_header or "").strip().lower()


# ---------------------------------------------------------------------- the server


def _static(name: str) -> bytes:
    return (resources.files("controller") / "web" / name).read_bytes()


def _query_date(request: web.Request, name: str) -> date | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if not _DATE.fullmatch(text):
        raise BadRequest(f"'{name}' must be a date like 2026-01-31")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"'{name}' is not a calendar date: {text[:20]!r}") from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS = web.RequestKey("access", Access)


class Api:
    """The aiohttp application: status page, JSON API, CSV export, control, simulation."""

    def __init__(self, app: App, policy: AccessPolicy | None = None) -> None:
        self.app = app
        config = app.config
        self.policy = policy or AccessPolicy(
            config.api_token, trust_loopback=config.api_trust_loopback
        )
        self.web = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._guard])
        self.web.on_response_prepare.append(self._add_headers)
        self._static = {
            path: (_static(name), ctype) for path, (name, ctype) in STATIC_FILES.items()
        }
        routes = [web.get(path, self.static) for path in STATIC_FILES]
        routes += [
            web.get("/api/auth", self.auth),
            web.get("/api/status", self.status),
            web.get("/api/transactions", self.transactions),
            web.get("/api/sessions.csv", self.sessions_csv),
            web.post(r"/api/connectors/{connector:\d+}/stop", self.stop_session),
            web.post(r"/api/connectors/{connector:\d+}/availability", self.availability),
            web.post(r"/api/connectors/{connector:\d+}/unlock", self.unlock),
            web.get(r"/api/connectors/{connector:\d+}/history", self.history),
            web.get("/api/limit", self.get_limit),
            web.post("/api/limit", self.set_limit),
            web.delete("/api/limit", self.clear_limit),
            web.get(r"/api/schedule/{connector:\d+}", self.schedule),
            web.get("/api/energy/daily", self.energy_daily),
            web.post(r"/api/backends/{name}/replay", self.replay),
        ]
        if config.uses_simulation:
            # Simulation control exists only on a simulated charger: on real hardware these
            # paths are not routed at all (404), whatever the token.
            routes += [
                web.post("/api/sim/plug", self.sim_plug),
                web.post("/api/sim/unplug", self.sim_unplug),
                web.post("/api/sim/card", self.sim_card),
                web.post("/api/sim/vehicle", self.sim_vehicle),
                web.post("/api/sim/fault", self.sim_fault),
            ]
        self.web.add_routes(routes)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._refused = 0
        self._refusal_logged_s: float | None = None

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.web, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; needed for port 0
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        LOG.info(
            "local API and status page on http://%s:%s (token %s)",
            host,
            self.port,
            "required" if self.policy.token_configured else "not configured",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ access control

    def access(self, request: web.Request) -> Access:
        return self.policy.evaluate(
            request.remote, request.headers.get("Host"), request.headers.get("Authorization")
        )

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path == "/api/auth":
            return await handler(request)  # the page itself holds no data
        control = request.method not in ("GET", "HEAD")
        if control and not same_origin(request.headers.get("Origin"), request.headers.get("Host")):
            self._log_refusal(request, "cross-site request")
            return self._error(403, "cross-site request refused")
        access = self.access(request)
        if access.bad_credentials:
            self._log_refusal(request, "wrong token")
            return self._unauthorized("wrong token")
        if not (access.control if control else access.read):
            self._log_refusal(request, "no token")
            return self._unauthorized(
                "authentication required: send 'Authorization: Bearer <api.token>'"
            )
        request[ACCESS] = access
        return await handler(request)

    def _unauthorized(self, message: str) -> web.Response:
        response = self._error(401, message)
        response.headers["WWW-Authenticate"] = 'Bearer realm="evsed"'
        return response

    def _log_refusal(self, request: web.Request, why: str) -> None:
        """Log refused requests (never a credential), at most one line a minute."""
        self._refused += 1
        now_s = self.app.clock.monotonic_s()
        last = self._refusal_logged_s
        if last is not None and now_s - last < REFUSAL_LOG_INTERVAL_S:
            return
        self._refusal_logged_s = now_s
        LOG.warning(
            "API: refused %s %s from %s (%s; %d refused so far)",
            request.method,
            request.path[:80],
            request.remote,
            why,
            self._refused,
        )

    @staticmethod
    async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"

    # ------------------------------------------------------------------ helpers

    @staticmethod
    async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
        try:
            if optional and not await request.read():
                return {}
            body = await request.json()
        except web.HTTPException:
            raise  # e.g. 413 for a body over MAX_BODY_BYTES
        except Exception:
            raise BadRequest("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _sim(self, connector_id: int | None = None) -> SimControl:
        """The simulation driver, checking ``connector_id`` is one of the station's."""
        station = self.app.station
        if connector_id is not None and (
            station is None or connector_id not in station.connector_ids()
        ):
            raise BadRequest(f"unknown connector {connector_id}")
        return self.app.sim

    def _connector(self, request: web.Request) -> int:
        connector_id = int(request.match_info["connector"])
        assert self.app.station is not None
        if connector_id not in self.app.station.connector_ids():
            raise BadRequest(f"unknown connector {connector_id}")
        return connector_id

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _run(
        self, request: web.Request, action: Any, *, optional_body: bool = False
    ) -> web.Response:
        try:
            body = await self._body(request, optional=optional_body)
            result = action(body)
            if inspect.isawaitable(result):
                result = await result
        except web.HTTPException as exc:
            return self._error(exc.status, exc.reason)
        except BadRequest as exc:
            return self._error(400, str(exc))
        except Conflict as exc:
            return self._error(409, str(exc))
        except LookupError as exc:
            return self._error(404, str(exc))
        except ValueError as exc:
            return self._error(400, str(exc))
        return web.json_response({"ok": True, **(result or {})})

    def _audit(self, request: web.Request, what: str) -> None:
        access = request.get(ACCESS)
        who = "token" if access is not None and access.authenticated else "local"
        LOG.warning("API: %s, requested from %s (%s)", what, request.remote, who)

    # ------------------------------------------------------------------ page

    async def static(self, request: web.Request) -> web.Response:
        body, content_type = self._static[request.path]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)

    async def auth(self, request: web.Request) -> web.Response:
        """What this client may do (the page shows the login form and buttons from it)."""
        access = self.access(request)
        return web.json_response(
            {
                "token_configured": self.policy.token_configured,
                "local": access.local,
                "authenticated": access.authenticated,
                "bad_credentials": access.bad_credentials,
                "read": access.read,
                "control": access.control,
            }
        )

    # ------------------------------------------------------------------ data

    async def status(self, request: web.Request) -> web.Response:
        assert self.app.station is not None
        data = self.app.station.snapshot()
        data["station_id"] = self.app.config.station_id
        data["simulated"] = self.app.config.uses_simulation
        data["security"] = self.app.security_status()
        data["backends"] = self.app.backends_status()
        last_s = getattr(self.app.adapter, "last_message_s", None)
        age_s = None if last_s is None else max(0.0, self.app.clock.monotonic_s() - last_s)
        data["csms"]["last_message_age_s"] = None if age_s is None else round(age_s, 1)
        data["csms"]["last_message_at"] = (
            None if age_s is None else iso_utc(self.app.clock.utc_now() - timedelta(seconds=age_s))
        )
        return web.json_response(data)

    async def transactions(self, request: web.Request) -> web.Response:
        assert self.app.store is not None
        rows = self.app.store.transactions(limit=50)
        return web.json_response([session_row(t) for t in rows])

    async def sessions_csv(self, request: web.Request) -> web.Response:
        """GET /api/sessions.csv?from=YYYY-MM-DD&to=YYYY-MM-DD (UTC start dates, inclusive)."""
        assert self.app.store is not None
        try:
            first = _query_date(request, "from")
            last = _query_date(request, "to")
            if first is not None and last is not None and first > last:
                raise BadRequest("'from' must not be after 'to'")
        except BadRequest as exc:
            return self._error(400, str(exc))
        records = sessions_between(self.app.store.transactions(limit=CSV_MAX_SESSIONS), first, last)
        name = "evsed-sessions-" + self.app.config.station_id.replace(":", "_")
        if first is not None or last is not None:
            name += f"-{first or 'start'}-{last or 'now'}"
        return web.Response(
            text=sessions_csv(records),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    async def history(self, request: web.Request) -> web.Response:
        """The running session's power against its offered power (bounded, in memory)."""
        try:
            connector_id = self._connector(request)
        except BadRequest as exc:
            return self._error(400, str(exc))
        assert self.app.station is not None
        data = self.app.station.session_history(connector_id)
        return web.json_response({"connector": connector_id, "session": data})

    async def energy_daily(self, request: web.Request) -> web.Response:
        """Energy per UTC day of the last 30 days (sessions by their start day)."""
        assert self.app.store is not None
        today = self.app.clock.utc_now().date()
        records = self.app.store.transactions(limit=DAILY_MAX_SESSIONS)
        return web.json_response({"unit": "Wh", "days": daily_energy(records, today, DAILY_DAYS)})

    async def schedule(self, request: web.Request) -> web.Response:
        """GET /api/schedule/{connector}?duration=86400&unit=A: the composite schedule
        (charging profiles and the hardware maximum; connector 0 = the station) from now."""
        assert self.app.station is not None
        station = self.app.station
        connector_id = int(request.match_info["connector"])
        if connector_id != 0 and connector_id not in station.connector_ids():
            return self._error(
                404, f"unknown connector {connector_id}; use 0 .. {len(station.connector_ids())}"
            )
        text = request.query.get("duration", str(SCHEDULE_DEFAULT_S))
        if not text.isdigit() or not 1 <= int(text) <= SCHEDULE_MAX_S:
            return self._error(
                400, f"'duration' must be whole seconds 1 .. {SCHEDULE_MAX_S} (7 days)"
            )
        unit_text = request.query.get("unit", "A")
        if unit_text not in ("A", "W"):
            return self._error(400, "'unit' must be A or W")
        result = station.composite_schedule(connector_id, int(text), RateUnit(unit_text))
        return web.json_response(
            {
                "connector": connector_id,
                "start": iso_utc(result.start),
                "duration_s": result.duration_s,
                "unit": result.unit.value,
                "periods": [
                    {"start_s": p.start_s, "limit": float(p.limit), "phases": p.phases}
                    for p in result.periods
                ],
                "min_rate": None if result.min_rate is None else float(result.min_rate),
            }
        )

    # ------------------------------------------------------------------ local limit

    def _limit_target(self, body: dict[str, Any], request: web.Request) -> int:
        assert self.app.station is not None
        ids = self.app.station.connector_ids()
        if "connector" in request.query:
            text = request.query["connector"]
            if not text.isdigit():
                raise BadRequest(f"'connector' must be 0 (the station) .. {len(ids)}")
            body = {**body, "connector": int(text)}
        connector_id = body.get("connector", 0)
        if connector_id is None:
            connector_id = 0
        if (
            isinstance(connector_id, bool)
            or not isinstance(connector_id, int)
            or not (connector_id == 0 or connector_id in ids)
        ):
            raise BadRequest(f"'connector' must be 0 (the station) .. {len(ids)}")
        return int(connector_id)

    async def get_limit(self, request: web.Request) -> web.Response:
        """The local limits in force and the fallback current."""
        station = self.app.station
        assert station is not None
        return web.json_response(
            {
                "fallback_current_a": float(station.fallback_current_a),
                "limits": station.local_limits(),
            }
        )

    async def set_limit(self, request: web.Request) -> web.Response:
        """POST /api/limit {"connector": 1, "limit_a": 10.5, "timeout_s": 60}: a local limit
        that falls back to [site] fallback_current_a unless refreshed within timeout_s."""

        def act(body: dict[str, Any]) -> dict[str, Any]:
            unknown = sorted(set(body) - {"connector", "limit_a", "timeout_s"})
            if unknown:
                raise BadRequest(
                    f"unknown field {unknown[0]!r}; allowed: connector, limit_a, timeout_s"
                )
            connector_id = self._limit_target(body, request)
            limit_a = _number(body, "limit_a", 0, LOCAL_LIMIT_MAX_A, None)
            timeout_s = _number(body, "timeout_s", 1, LOCAL_TIMEOUT_MAX_S, LOCAL_TIMEOUT_DEFAULT_S)
            station = self.app.station
            assert station is not None
            amps = Decimal(str(limit_a))
            station.set_local_limit(connector_id, amps, timeout_s)
            LOG.debug("API: local limit %s A on %d for %g s", amps, connector_id, timeout_s)
            return {
                "connector": connector_id,
                "limit_a": float(amps),
                "timeout_s": timeout_s,
                "fallback_a": float(station.fallback_current_a),
            }

        return await self._run(request, act)

    async def replay(self, request: web.Request) -> web.Response:
        """POST /api/backends/NAME/replay {"since": "2026-12-01T00:00:00Z"}: queue to that
        backend the finished transactions since then that it never had (issue 15)."""
        name = request.match_info["name"]

        def act(body: dict[str, Any]) -> dict[str, Any]:
            unknown = sorted(set(body) - {"since"})
            if unknown:
                raise BadRequest(f"unknown field {unknown[0]!r}; allowed: since")
            text = body.get("since")
            since = parse_iso(text) if isinstance(text, str) else None
            if since is None:
                raise BadRequest("'since' is required: an ISO 8601 time, e.g. 2026-12-01T00:00Z")
            try:
                queued = self.app.replay(name, since)
            except KeyError:
                raise BadRequest(f"no backend named {name[:32]!r}") from None
            return {"backend": name, "since": iso_utc(since), "queued_transactions": queued}

        return await self._run(request, act)

    async def clear_limit(self, request: web.Request) -> web.Response:
        """DELETE /api/limit (body or query ``connector``, default 0): remove the local limit."""

        def act(body: dict[str, Any]) -> dict[str, Any]:
            unknown = sorted(set(body) - {"connector"})
            if unknown:
                raise BadRequest(f"unknown field {unknown[0]!r}; allowed: connector")
            connector_id = self._limit_target(body, request)
            assert self.app.station is not None
            return {
                "connector": connector_id,
                "cleared": self.app.station.clear_local_limit(connector_id),
            }

        return await self._run(request, act, optional_body=True)

    # ------------------------------------------------------------------ control

    async def stop_session(self, request: web.Request) -> web.Response:
        """Stop the connector's session (StopTransaction reason Local)."""

        def act(body: dict[str, Any]) -> dict[str, Any]:
            connector_id = self._connector(request)
            station = self.app.station
            assert station is not None
            tx_key = station.view(connector_id).tx_key
            if tx_key is None:
                raise Conflict(f"connector {connector_id} has no session to stop")
            station.stop_transaction(tx_key, sm.StopCause.LOCAL)
            self._audit(request, f"stop of transaction {tx_key} on connector {connector_id}")
            return {"transaction_key": tx_key}

        return await self._run(request, act, optional_body=True)

    async def availability(self, request: web.Request) -> web.Response:
        """Body {"type": "Operative" | "Inoperative"}; answers Accepted or Scheduled (a
        session is running: the connector goes unavailable when it ends), as OCPP 5.2."""

        def act(body: dict[str, Any]) -> dict[str, Any]:
            connector_id = self._connector(request)
            kind = body.get("type")
            if kind not in ("Operative", "Inoperative"):
                raise BadRequest('\'type\' must be "Operative" or "Inoperative"')
            assert self.app.station is not None
            status = self.app.station.change_availability(connector_id, kind == "Operative")
            self._audit(request, f"connector {connector_id} made {kind}: {status}")
            return {"status": status.value}

        return await self._run(request, act)

    async def unlock(self, request: web.Request) -> web.Response:
        """Stop the session (if any) and release the cable, as UnlockConnector (5.18)."""

        async def act(body: dict[str, Any]) -> dict[str, Any]:
            connector_id = self._connector(request)
            assert self.app.station is not None
            status = await self.app.station.unlock(connector_id)
            self._audit(request, f"unlock of connector {connector_id}: {status}")
            return {"status": status.value}

        return await self._run(request, act, optional_body=True)

    # ------------------------------------------------------------------ simulation

    async def sim_plug(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            connector_id = _int(body, "connector", 1)
            self._sim(connector_id).plug(connector_id)

        return await self._run(request, act)

    async def sim_unplug(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            connector_id = _int(body, "connector", 1)
            self._sim(connector_id).unplug(connector_id)

        return await self._run(request, act)

    async def sim_card(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> dict[str, Any]:
            uid = body.get("uid")
            if not isinstance(uid, str):
                raise BadRequest("'uid' must be a hex string such as \"04A1B2C3\"")
            return {"delivered": self._sim().card(uid)}

        return await self._run(request, act)

    async def sim_vehicle(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            connector_id = _int(body, "connector", 1)
            sim = self._sim(connector_id)
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
            sim.vehicle(connector_id, vs, None if power_w is None else float(power_w))

        return await self._run(request, act)

    async def sim_fault(self, request: web.Request) -> web.Response:
        def act(body: dict[str, Any]) -> None:
            connector_id = _int(body, "connector", 1)
            fault = body.get("fault")
            if fault is not None and (not isinstance(fault, str) or fault not in FAULT_KIND_NAMES):
                raise BadRequest(f"'fault' must be null or one of {sorted(FAULT_KIND_NAMES)}")
            if not self._sim(connector_id).fault(connector_id, fault):
                # No simulated fault input: the fault is the station's own (external).
                assert self.app.station is not None
                self.app.station.set_connector_fault(
                    connector_id, None if fault is None else FaultKind(fault)
                )

        return await self._run(request, act)
