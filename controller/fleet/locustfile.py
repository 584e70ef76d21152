"""Locust load test of a CSMS: every Locust user is one simulated evsed charging station.

Run it with ``locust -f "$(evsed fleet --locustfile)" --host ws://csms.example:9000/ocpp``
(the web UI), or headless / distributed with Locust's own options (``--headless -u 1000 -r 50
-t 10m``, ``--master`` / ``--worker``). Each user added by Locust's ramp-up is a full station
(state machine, journal, outbox, connection, identity) running its seeded driver script;
Locust's statistics show every OCPP call the stations send with the CSMS's response time
per action (BootNotification, StartTransaction, MeterValues, ...) and failures (CALLERROR,
timeouts), with its charts and CSV/HTML reports.

How Locust (gevent) and evsed (asyncio) meet: each Locust process (the local runner or each
worker) starts one ``evsed fleet --serve`` child process and drives it over a pipe: "add
station N" / "remove station N" on stdin, one JSON line per finished CALL on stdout, which a
greenlet turns into Locust request events. Why not a thread with an asyncio loop inside the
Locust process: Locust monkey-patches the socket, select and threading modules for gevent at
import, under asyncio's feet; a child process keeps the stations exactly the code ``evsed
fleet`` runs, unpatched, and gives them a core of their own (one worker per core, as Locust
recommends). The pipe costs one short line per OCPP call.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from typing import Any

import gevent
from gevent import subprocess
from gevent.lock import Semaphore
from locust import User, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

LOG = logging.getLogger(__name__)
# How long a quitting Locust process waits for its stations to stop cleanly (sessions
# stopped, queues drained: the fleet's own drain bound is 60 s).
DRAIN_WAIT_S = 90.0


class OcppCallError(Exception):
    """A CALL the CSMS answered with a CALLERROR, or did not answer in time."""


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--station-prefix", default="LOCUST", help="station ids: PREFIX-W<worker>-<n>"
    )
    parser.add_argument("--fleet-seed", type=int, default=1, help="seed of the driver scripts")
    parser.add_argument(
        "--fleet-config", default="", help="an evsed fleet TOML (behaviour, sessions, timing)"
    )


class FleetProcess:
    """The asyncio fleet (``evsed fleet --serve``) one Locust process drives."""

    _by_env: dict[int, FleetProcess] = {}

    @classmethod
    def of(cls, environment: Environment) -> FleetProcess:
        """This Locust process's fleet, started by the first user that asks: registered
        before anything yields, so users starting together share one (greenlets switch in
        the middle of a Popen)."""
        fleet = cls._by_env.get(id(environment))
        if fleet is None:
            fleet = cls(environment)
            cls._by_env[id(environment)] = fleet
            fleet.start()
        return fleet

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.numbers = itertools.count(1)
        self.lock = Semaphore()  # one command line at a time on the pipe
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader: gevent.Greenlet | None = None

    def start(self) -> None:
        environment = self.environment
        options = environment.parsed_options
        runner = environment.runner
        worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        self.prefix = f"{getattr(options, 'station_prefix', 'LOCUST')}-W{worker}"
        argv = [
            sys.executable,
            "-m",
            "controller.cli",
            "fleet",
            "--serve",
            "--csms",
            environment.host or "",
            "--prefix",
            self.prefix,
            # Every worker its own seed stream, so two workers do not script alike.
            "--seed",
            str(getattr(options, "fleet_seed", 1) * 1000 + worker),
        ]
        config = getattr(options, "fleet_config", "")
        if config:
            argv += ["--config", config]
        with self.lock:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy()
            )
        self.reader = gevent.spawn(self._read, self.proc)

    def send(self, **message: Any) -> None:
        with self.lock:  # also waits for start() to have made the process
            assert self.proc is not None and self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        stdout = proc.stdout
        assert stdout is not None
        fire = self.environment.events.request.fire
        for line in stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("ev") != "call":
                continue
            error = msg.get("error")
            ms = msg.get("ms")
            fire(
                request_type="OCPP",
                name=msg["action"],
                # A lost CALL (no answer at all) has no response time: 0 with its error.
                response_time=0.0 if ms is None else ms,
                response_length=msg.get("bytes", 0),
                exception=OcppCallError(error) if error else None,
                context={"station": msg.get("station")},
            )

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                self.send(op="quit")
                proc.wait(timeout=DRAIN_WAIT_S)
            except Exception:
                LOG.warning("the fleet process did not stop in time: killed")
                proc.kill()
        if self.reader is not None:
            self.reader.kill()


@events.quitting.add_listener
def _quit(environment: Environment, **_kwargs: Any) -> None:
    fleet = FleetProcess._by_env.pop(id(environment), None)
    if fleet is not None:
        fleet.stop()


class ChargingStation(User):
    """One evsed station: added to the fleet when Locust starts the user, stopped cleanly
    (open session ended, connection closed) when Locust stops it."""

    # The station runs on its own in the fleet process; the task only keeps the user alive.
    wait_time = constant(5)

    def on_start(self) -> None:
        self.fleet = FleetProcess.of(self.environment)
        self.number = next(self.fleet.numbers)
        self.fleet.send(op="add", number=self.number)

    def on_stop(self) -> None:
        self.fleet.send(op="remove", number=self.number)

    @task
    def charge(self) -> None:
        """Nothing to do here: the fleet drives the station's sessions."""
