"""The `evsed fleet` command-line options (argparse only: built with every `evsed` parser)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stations", type=int, metavar="N", help="how many chargers (default 10)")
    p.add_argument("--csms", metavar="URL", help="the CSMS, e.g. ws://127.0.0.1:9000/ocpp")
    p.add_argument("--config", metavar="FILE", help="fleet TOML ([fleet], [station], [behaviour])")
    p.add_argument("--seed", type=int, help="seed of every driver's script (default 0)")
    p.add_argument("--duration", type=float, metavar="S", help="run S seconds (default: until ^C)")
    p.add_argument("--workers", type=int, metavar="W", help="processes, stations split (default 1)")
    p.add_argument("--report", metavar="FILE", help="write the final report as JSON")
    p.add_argument("--speed", type=float, help="divide the scripts' waits by this (default 1)")
    p.add_argument("--prefix", help="identity prefix: PREFIX-0001, ... (default FLEET)")
    p.add_argument(
        "--ocpp",
        "--protocol",
        dest="protocol",
        metavar="VERSION",
        help='OCPP version of the stations: "1.6" (default) or "2.0.1"',
    )
    p.add_argument("--work-dir", metavar="DIR", help="the stations' stores (default: a temp dir)")
    p.add_argument("--summary-interval", type=float, metavar="S", help="live line every S s")
    p.add_argument(
        "--compression",
        help="WebSocket deflate per station: small (default), default or off",
    )
    p.add_argument("--log-level", help="log level of the stations (default WARNING)")
    p.add_argument(
        "--serve",
        action="store_true",
        help="no stations of its own: add/remove them by JSON lines on stdin, one JSON line "
        "per CALL on stdout (what the Locust file drives)",
    )
    p.add_argument(
        "--locustfile",
        action="store_true",
        help='print the path of the Locust file (locust -f "$(evsed fleet --locustfile)")',
    )
    # Internal: this process is worker I of W (started by a --workers parent).
    p.add_argument("--worker-slice", metavar="I/W", help=argparse.SUPPRESS)
