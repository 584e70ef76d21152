"""The `evsed` command line: run, check-config, hw-test, demo, dev-csms, status, schedule and sim
controls."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from datetime import datetime, timedelta
from typing import Any

# Light on purpose: each command imports what it runs inside its function, so `evsed status`
# or `evsed sim` load no daemon code (no asyncio, OCPP, database or drivers) and `evsed run`
# none of the other commands' (tests/ops/test_start_imports.py).
from controller.ops.logsetup import TARGETS

LOG = logging.getLogger("evsed")
DEFAULT_CONFIG = "/etc/evsed/evsed.toml"
DEFAULT_API = "http://127.0.0.1:8080"


def cmd_check_config(args: argparse.Namespace) -> int:
    from controller.config import ConfigError, load
    from controller.ops.logsetup import SecretFilter
    from hal.registry import DriverConfigError

    try:
        config = load(args.file)
        _check_drivers(config)
    except (ConfigError, DriverConfigError) as exc:
        print(f"{args.file}: error: {exc}", file=sys.stderr)
        return 2
    # Output that gets pasted into forum posts: no credentials from the URL.
    mode = f"CSMS {SecretFilter().mask(config.csms.url)}" if config.csms else "standalone (no CSMS)"
    print(
        f"{args.file}: OK – station {config.station_id}, {len(config.connectors)} "
        f"connector(s), {mode}"
    )
    if config.uses_simulation:
        print("note: simulated drivers are configured; this is not a real charger")
    return 0


def _check_drivers(config: Any) -> None:
    """Build every driver offline to validate names and settings, then release it.

    Nothing touches the hardware: GPIO drivers get mock pins (OFFLINE_KEY), Modbus ports
    are opened on the first request only and the PC/SC reader is never started.
    """
    import asyncio

    from hal.registry import (
        OFFLINE_KEY,
        DriverConfigError,
        DriverContext,
        create_driver,
        known_drivers,
    )

    shared: dict[str, Any] = {OFFLINE_KEY: True}
    created: list[Any] = []
    devices = [
        (cc.connector_id, role, dev) for cc in config.connectors for role, dev in cc.devices.items()
    ]
    if config.reader is not None:
        devices.append((0, "reader", config.reader))
    for connector_id, role, dev in devices:
        if dev.driver not in known_drivers(role):
            raise DriverConfigError(
                f"{dev.key}.driver",
                f"unknown driver {dev.driver!r}; known: {', '.join(known_drivers(role))}",
            )
        try:
            created.append(
                create_driver(
                    role,
                    dev.driver,
                    dev.settings,
                    DriverContext(connector_id, shared=shared, key_prefix=dev.key),
                )
            )
        except ImportError as exc:  # e.g. pyscard not installed: say so, settings unchecked
            print(f"note: {dev.key}: driver {dev.driver!r} unavailable here ({exc})")
    for device in reversed(created):
        close = getattr(device, "close", None) or getattr(device, "close_driver", None)
        if close is not None and not asyncio.iscoroutinefunction(close):
            close()


# What `_run` returns after an OCPP Reset: 75 (EX_TEMPFAIL) = run again in place, 76 = reboot
# the board first (Hard reset with [maintenance] hard_reset = "reboot").
RESET_RESTART = 75
RESET_REBOOT = 76
_reset_retries = 0  # the ResetRetries key when the reset was asked for


async def _run(config_path: str, log_target: str = "auto") -> int:
    global _reset_retries
    import asyncio
    import signal

    from controller.app import App
    from controller.config import load
    from controller.ops.logsetup import setup_logging
    from controller.ops.sdnotify import install_stall_hook

    config = load(config_path)
    secrets = setup_logging(config.log_level, log_target)
    secrets.add_secret(config.csms.password if config.csms else None)
    secrets.add_secret(config.api_token)
    app = App(config, api_after_boot=True)  # the API after the boot: a small board boots sooner
    # An AuthorizationKey the CSMS sets at run time is masked as well, and the previous one
    # while the new one is on probation (controller/ocpp16/secprofile.py).
    secrets.add_source(lambda: app.client.settings.get("AuthorizationKey") if app.client else None)
    secrets.add_source(lambda: app.client.security.previous_key() if app.client else None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    install_stall_hook(loop, app.notifier)  # test-only, needs $EVSED_TEST_STALL_LOOP_S
    try:
        await app.start()
    finally:
        # cmd_run turned the collector off for the start (imports, classes, the store): a
        # collection then only walks objects that live as long as the process. Frozen, later
        # collections skip them too; the few start-up cycles that were garbage stay (about
        # 1,600 objects, measured). ~6 % of the CPU to the BootNotification (issue 16).
        gc.freeze()
        gc.enable()
    try:
        await app.wait()
    finally:
        await app.stop()
    if app.reset_requested:
        if app.reboot_requested:
            _reset_retries = app.reset_retries
            return RESET_REBOOT
        LOG.warning("restarting after %s reset", app.reset_requested)
        return RESET_RESTART
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    gc.disable()  # until the charger has started: _run

    from controller.config import ConfigError
    from controller.storage.migrations import SchemaError
    from hal.registry import DriverConfigError

    try:
        code = asyncio.run(_run(args.config, args.log_target))
    except (ConfigError, DriverConfigError) as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 2
    except SchemaError:
        # open_store logged why; the database was left as it is. Exit 2 like a config
        # error: the unit's RestartPreventExitStatus=2 then stops restarting in vain.
        return 2
    if code == RESET_REBOOT and not args.no_restart:
        # Hard reset with [maintenance] hard_reset = "reboot": the station is stopped and
        # every contactor open; reboot the board, or restart the service if that fails.
        # The shutdown's SIGTERM ends this process there (exit 0); it returns on failure.
        from controller.ops.reboot import reboot_board

        reboot_board(retries=_reset_retries)
        code = RESET_RESTART
    if code == RESET_RESTART and not args.no_restart:
        # Reset.req: start afresh in the same process slot (systemd sees one service).
        path, argv = reexec_command(sys.argv, sys.executable)
        os.execv(path, argv)
    return code


def reexec_command(argv: list[str], python: str) -> tuple[str, list[str]]:
    """What to execute to run this command line again: the `evsed` script it was started
    as, so that ps, top and /proc/PID/comm still say evsed (not python3) after a Reset;
    ``python -m controller.cli`` when it was started that way (argv[0] is then this module).
    """
    # Started by the version launcher (a firmware update, controller/maintenance/launcher.py):
    # go through it again, so a new version on trial is counted and `current` is followed.
    launcher = os.environ.get("EVSED_LAUNCHER", "").split("\n")
    if len(launcher) == 2 and all(os.path.isfile(p) for p in launcher):
        return launcher[0], [*launcher, *argv[1:]]
    script = argv[0] if argv else ""
    if (
        script
        and not script.endswith(".py")
        and os.path.isfile(script)
        and os.access(script, os.X_OK)
    ):
        return script, [script, *argv[1:]]
    return python, [python, "-m", "controller.cli", *argv[1:]]


def cmd_safe_off(args: argparse.Namespace) -> int:
    from controller.ops.safeoff import main_safe_off

    return main_safe_off(args.config, timeout_s=args.timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from controller.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            run_demo(charge_minutes=args.minutes, quiet_ocpp=args.quiet, ocpp_version=args.ocpp)
        )
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    import asyncio

    from controller.ops.logsetup import setup_logging
    from controller.proxy.config import ProxyConfigError, load
    from controller.proxy.main import run_proxy

    try:
        config = load(args.config)
    except ProxyConfigError as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_target)
    asyncio.run(run_proxy(config))
    return 0


def cmd_dev_csms(args: argparse.Namespace) -> int:
    import asyncio

    from controller.dev.devcsms import run_dev_csms, server_ssl_context
    from controller.ops.logsetup import setup_logging

    setup_logging("INFO", "stderr")
    logging.getLogger("ocpp").setLevel(logging.WARNING)
    passwords = dict(p.split("=", 1) for p in args.password) if args.password else None
    tls = None
    if args.tls_cert or args.tls_key or args.tls_ca:
        if not (args.tls_cert and args.tls_key):
            print("dev-csms: --tls-cert and --tls-key come together", file=sys.stderr)
            return 2
        tls = server_ssl_context(args.tls_cert, args.tls_key, args.tls_ca)
    try:
        asyncio.run(
            run_dev_csms(
                args.host,
                args.port,
                boot_status=args.boot_status,
                passwords=passwords,
                ssl_context=tls,
                ocpp_versions=tuple(args.ocpp) if args.ocpp else None,
            )
        )
    except KeyboardInterrupt:
        pass
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    from controller.fleet.main import cmd_fleet as run_fleet  # only this command needs it

    return run_fleet(args)


def _api_base(args: argparse.Namespace) -> str:
    api = getattr(args, "api", None)
    config_path = getattr(args, "config", None)
    if api:
        return str(api).rstrip("/")
    if config_path:
        from controller.config import ConfigError, load

        try:
            config = load(config_path)
        except ConfigError as exc:
            raise SystemExit(f"evsed: {config_path}: {exc}") from None
        return f"http://{config.api_host}:{config.api_port}"
    return DEFAULT_API


def _api_token(args: argparse.Namespace) -> str | None:
    """The local API token: $EVSED_API_TOKEN, else api.token of the -c config."""
    token = os.environ.get("EVSED_API_TOKEN")
    config_path = getattr(args, "config", None)
    if token or not config_path:
        return token or None
    from controller.config import ConfigError, load

    try:
        return load(config_path).api_token
    except ConfigError as exc:
        raise SystemExit(f"evsed: {config_path}: {exc}") from None


def _request(
    base: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    import urllib.error  # the client commands only: not loaded by `evsed run`
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"  # never printed, not even on errors
    req = urllib.request.Request(
        base + path, data=data, headers=headers, method="GET" if body is None else "POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        except (ValueError, AttributeError):
            detail = f"HTTP {exc.code} {exc.reason} from {base}{path}"
        if exc.code == 401:
            detail = f"{detail} (give -c CONFIG with api.token, or set EVSED_API_TOKEN)"
        raise SystemExit(f"evsed: {detail}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"evsed: cannot reach {base} ({exc.reason}); is `evsed run` up?") from None


def cmd_status(args: argparse.Namespace) -> int:
    import urllib.error

    from controller.ops.opscli import format_status, offline_status

    try:
        data = _request(_api_base(args), "/api/status", token=_api_token(args))
    except SystemExit as exc:
        # Daemon unreachable (a URLError, not an HTTP error answer): print what the database
        # says, then fail with the same message.
        reason = exc.__context__
        if isinstance(reason, urllib.error.URLError) and not isinstance(
            reason, urllib.error.HTTPError
        ):
            offline_status(args)
        raise
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("\n".join(format_status(data)))
    return 0


def format_schedule(data: dict[str, Any]) -> list[str]:
    """The human-readable `evsed schedule` from GET /api/schedule/N."""
    cid = data.get("connector")
    unit = str(data.get("unit", "A"))
    start_text = str(data.get("start", ""))
    try:
        start: datetime | None = datetime.fromisoformat(start_text.replace("Z", "+00:00"))
    except ValueError:
        start = None
    duration_s = int(data.get("duration_s") or 0)
    what = "the station" if cid == 0 else f"connector {cid}"
    lines = [
        f"composite schedule of {what} from {start_text} for "
        f"{duration_s // 3600} h {duration_s % 3600 // 60:02d} min ({duration_s} s), in {unit}"
    ]
    lines.append(f"  {'from (UTC)':<20} {'offset':>9}  {'limit':>10}  phases")
    for period in data.get("periods", []):
        offset_s = float(period.get("start_s", 0))
        at = (
            ""
            if start is None
            else (start + timedelta(seconds=offset_s)).strftime("%Y-%m-%d %H:%M:%S")
        )
        hours, rest = divmod(int(offset_s), 3600)
        offset = f"+{hours}:{rest // 60:02d}:{rest % 60:02d}"
        limit = f"{float(period.get('limit', 0)):.1f} {unit}"
        lines.append(f"  {at:<20} {offset:>9}  {limit:>10}  {period.get('phases')}")
    if data.get("min_rate") is not None:
        lines.append(f"  minChargingRate {float(data['min_rate']):.1f} {unit}")
    return lines


def cmd_schedule(args: argparse.Namespace) -> int:
    path = f"/api/schedule/{args.connector}?duration={args.duration}&unit={args.unit}"
    data = _request(_api_base(args), path, token=_api_token(args))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(format_schedule(data)))
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    """`evsed backends replay NAME --since TIME`: the running charger queues to that backend
    the finished transactions since TIME it never had (issue 15)."""
    from urllib.parse import quote

    since = args.since if "T" in args.since else args.since + "T00:00:00Z"
    path = f"/api/backends/{quote(args.name, safe='')}/replay"
    data = _request(_api_base(args), path, {"since": since}, token=_api_token(args))
    print(
        f"backend {data['backend']}: {data['queued_transactions']} transaction(s) since"
        f" {data['since']} queued"
    )
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    base, token = _api_base(args), _api_token(args)
    if args.sim_cmd == "plug":
        _request(base, "/api/sim/plug", {"connector": args.connector}, token=token)
    elif args.sim_cmd == "unplug":
        _request(base, "/api/sim/unplug", {"connector": args.connector}, token=token)
    elif args.sim_cmd == "card":
        result = _request(base, "/api/sim/card", {"uid": args.uid}, token=token)
        if not result.get("delivered"):
            print("reader is not started", file=sys.stderr)
            return 1
    elif args.sim_cmd == "vehicle":
        body: dict[str, Any] = {"connector": args.connector, "state": args.state.upper()}
        if args.power_w is not None:
            body["power_w"] = args.power_w
        _request(base, "/api/sim/vehicle", body, token=token)
    elif args.sim_cmd == "fault":
        fault = None if args.fault.lower() in ("clear", "none") else args.fault
        _request(base, "/api/sim/fault", {"connector": args.connector, "fault": fault}, token=token)
    print("ok")
    return 0


def cmd_hw_test(args: argparse.Namespace) -> int:
    import asyncio

    from controller.config import ConfigError, load
    from controller.ops.hwtest import parse_steps, run_hw_test

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # hw-test explains bus failures itself; the retry chatter would only confuse.
    for name in ("pymodbus", "hal.modbus_bus"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        steps = parse_steps(args.only) if args.only else None
    except ValueError as exc:
        print(f"evsed hw-test: --only: {exc}", file=sys.stderr)
        return 2
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"{args.config}: error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            run_hw_test(
                config,
                card_timeout_s=args.card_timeout,
                connector=args.connector,
                steps=steps,
            )
        )
    except ValueError as exc:
        print(f"evsed hw-test: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        print("\ninterrupted; every contactor was opened", file=sys.stderr)
        return 130


# The commands build_parser defines itself; any other (sessions, queue, config, install, ...)
# comes from the ops modules, which are loaded only when such a command (or --help) is asked.
OWN_COMMANDS = frozenset(
    (
        "run",
        "safe-off",
        "check-config",
        "demo",
        "dev-csms",
        "proxy",
        "hw-test",
        "status",
        "schedule",
        "sim",
    )
)


def build_parser(with_ops: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``with_ops`` False leaves out the ops modules' commands;
    ``only`` (one of OWN_COMMANDS) defines that command alone: each ``add_argument`` makes
    a help formatter, and the whole parser cost `evsed run` ~3 ms of its start (issue 16)."""
    parser = argparse.ArgumentParser(prog="evsed", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    def wanted(command: str) -> bool:
        return only is None or command == only

    if wanted("run"):
        p = sub.add_parser("run", help="run the charge point controller")
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        p.add_argument(
            "--no-restart",
            action="store_true",
            help="exit with code 75 on Reset instead of restarting in place (76: a Hard reset "
            "that would reboot the board)",
        )
        p.add_argument(
            "--log-target",
            choices=TARGETS,
            default="auto",
            help="journal: journald's native protocol; stderr; auto (default): the journal when "
            "systemd connected stderr to it",
        )
        p.set_defaults(fn=cmd_run)

    if wanted("safe-off"):
        p = sub.add_parser(
            "safe-off",
            help="fail-safe: open every contactor and set pilot boards to 0 A, then exit",
            description="Opens every configured contactor and sets EVSE boards to 0 A using only "
            "the [[connectors]] driver sections of the config: no database, no CSMS, nothing "
            "locked. Every device is tried even if another fails. Exit code 0 when all succeeded, "
            "1 when any failed, 2 when the config cannot be read, 3 on timeout.",
        )
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        p.add_argument(
            "--timeout",
            type=float,
            default=10.0,
            metavar="S",
            help="give up after S seconds in total (default 10)",
        )
        p.set_defaults(fn=cmd_safe_off)

    if wanted("check-config"):
        p = sub.add_parser("check-config", help="validate a configuration file")
        p.add_argument("file")
        p.set_defaults(fn=cmd_check_config)

    if wanted("demo"):
        p = sub.add_parser("demo", help="simulated charger + dev CSMS, one complete session")
        p.add_argument("--minutes", type=float, default=30.0, help="simulated charging time")
        p.add_argument("--quiet", action="store_true", help="hide the OCPP messages")
        p.add_argument(
            "--ocpp",
            default="1.6",
            choices=["1.6", "2.0.1"],
            metavar="VERSION",
            help="the OCPP version the charger and its dev CSMS speak: 1.6 (default) or 2.0.1",
        )
        p.set_defaults(fn=cmd_demo)

    if wanted("dev-csms"):
        p = sub.add_parser("dev-csms", help="run the development CSMS (OCPP 1.6J and 2.0.1)")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument(
            "--ocpp",
            action="append",
            choices=["1.6", "2.0.1"],
            metavar="VERSION",
            help="speak only this OCPP version (1.6 or 2.0.1); repeat it for an order of "
            "preference; default: both, the version the station offers first",
        )
        p.add_argument("--port", type=int, default=9000)
        p.add_argument(
            "--boot-status", default="Accepted", choices=["Accepted", "Pending", "Rejected"]
        )
        p.add_argument(
            "--password",
            action="append",
            metavar="STATION=PASSWORD",
            help="require HTTP Basic auth for STATION",
        )
        p.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate chain")
        p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
        p.add_argument(
            "--tls-ca",
            metavar="PEM",
            help="require client certificates issued by this CA (security profile 3)",
        )
        p.set_defaults(fn=cmd_dev_csms)

    if wanted("proxy"):
        p = sub.add_parser(
            "proxy",
            help="relay any OCPP-J charger to several backends (primary, mirrors, energy manager)",
        )
        p.add_argument("-c", "--config", default="/etc/evsed/proxy.toml")
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        p.add_argument("--log-target", choices=TARGETS, default="auto")
        p.set_defaults(fn=cmd_proxy)

    if wanted("fleet"):
        p = sub.add_parser(
            "fleet",
            help="N simulated chargers in one process, for CSMS load tests",
            description="Runs N simulated chargers (each a full evsed station with its own "
            "store and connection) against a CSMS, prints a live summary on stderr and a final "
            "report. Exit code 0 when every station booted, 1 otherwise, 2 on a configuration "
            "error.",
        )
        _fleet_arguments(p)
        p.set_defaults(fn=cmd_fleet)

    if wanted("hw-test"):
        p = sub.add_parser(
            "hw-test",
            help="interactive hardware bring-up: meter, vehicle, reader, lock, light, contactor",
            description="Test the configured hardware step by step. The contactor is only closed "
            "after typing YES at the prompt; there is no option to skip that.",
        )
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        p.add_argument("--connector", type=int, help="test only this connector (default: all)")
        p.add_argument(
            "--only",
            metavar="STEPS",
            help="comma-separated steps to run: meter,vehicle,reader,lock,indicator,contactor",
        )
        p.add_argument(
            "--card-timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="how long to wait for a card (default 30 s)",
        )
        p.set_defaults(fn=cmd_hw_test)

    api_commands = [
        (name, fn, helptext)
        for name, fn, helptext in (
            ("status", cmd_status, "show the running charger's status"),
            ("schedule", cmd_schedule, "print a connector's composite schedule (0 = the station)"),
            ("sim", cmd_sim, "drive the simulated hardware"),
            ("backends", cmd_backends, "act on one of several backends ([[csms]])"),
        )
        if wanted(name)
    ]
    # The API options work before and after the sim sub-command (`sim plug 1 --api URL`).
    api_opts = argparse.ArgumentParser(add_help=False)
    if api_commands:
        api_opts.add_argument(
            "--api",
            default=argparse.SUPPRESS,
            help=f"API base URL (default: from -c, else {DEFAULT_API})",
        )
        api_opts.add_argument("-c", "--config", default=argparse.SUPPRESS)
    for name, fn, helptext in api_commands:
        p = sub.add_parser(name, help=helptext, parents=[api_opts])
        p.set_defaults(fn=fn)
        if name == "status":
            p.add_argument("--json", action="store_true")
        elif name == "schedule":
            p.add_argument("connector", type=int, help="connector id, 0 = the station")
            p.add_argument(
                "--duration",
                type=int,
                default=86400,
                metavar="S",
                help="seconds from now (default 86400, at most 604800)",
            )
            p.add_argument("--unit", choices=["A", "W"], default="A")
            p.add_argument("--json", action="store_true")
        elif name == "backends":
            bsub = p.add_subparsers(dest="backends_cmd", required=True)
            bp = bsub.add_parser(
                "replay",
                parents=[api_opts],
                help="send a backend the finished transactions it never had",
            )
            bp.add_argument("name", help="the backend's [[csms]] name")
            bp.add_argument(
                "--since",
                required=True,
                metavar="TIME",
                help="UTC date or ISO 8601 time: transactions started at or after it",
            )
        else:
            ssub = p.add_subparsers(dest="sim_cmd", required=True)
            for action in ("plug", "unplug"):
                sp = ssub.add_parser(action, parents=[api_opts])
                sp.add_argument("connector", type=int, nargs="?", default=1)
            sp = ssub.add_parser("card", parents=[api_opts])
            sp.add_argument("uid")
            sp = ssub.add_parser("vehicle", parents=[api_opts])
            sp.add_argument("connector", type=int)
            sp.add_argument("state", choices=list("ABCDEFabcdef"))
            sp.add_argument("--power-w", type=float)
            sp = ssub.add_parser("fault", parents=[api_opts])
            sp.add_argument("connector", type=int)
            sp.add_argument("fault", help="an OCPP error code such as GroundFailure, or clear")
    if with_ops:
        from controller.ops.opscli import add_subcommands as add_ops_subcommands

        add_ops_subcommands(sub)  # sessions, queue, config show
        from controller.ops.install import add_subcommands

        add_subcommands(sub)
    return parser


def _fleet_arguments(p: argparse.ArgumentParser) -> None:
    from controller.fleet.options import add_arguments  # argparse only: nothing loaded

    add_arguments(p)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    # The first word is the command (there are no options before it but -h/--help).
    command = args_in[0] if args_in else None
    own = command in OWN_COMMANDS
    args = build_parser(with_ops=not own, only=command if own else None).parse_args(args_in)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
