"""Hard reset of the board: `systemctl reboot` (a fixed argv) that the polkit rule allows."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

LOG = logging.getLogger(__name__)

# Never built from CSMS input. The service runs with NoNewPrivileges=yes, so sudo could not
# raise privileges; systemctl asks logind over D-Bus and polkit decides (the rule
# `evsed install` writes: controller/ops/install.py, REBOOT_POLKIT_RULE).
REBOOT_ARGV = ("systemctl", "reboot")
COMMAND_TIMEOUT_S = 30.0
RETRY_PAUSE_S = 2.0
# After systemd accepted the reboot it stops every service: SIGTERM comes within seconds.
# Without it the board is not rebooting after all and the service restarts instead.
SHUTDOWN_WAIT_S = 90.0

Runner = Callable[[Sequence[str]], int]


def run_command(argv: Sequence[str]) -> int:
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        LOG.error("%s: command not found", argv[0])
        return 127
    except subprocess.TimeoutExpired:
        LOG.error("%s did not return within %.0f s", " ".join(argv), COMMAND_TIMEOUT_S)
        return 124
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip().replace("\n", " ")[:300]
        LOG.error("`%s` failed (exit %d): %s", " ".join(argv), proc.returncode, output)
    return proc.returncode


def request_reboot(
    *,
    retries: int,
    run: Runner = run_command,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Ask the service manager to reboot the board; ``retries`` more tries after a failure
    (the OCPP ResetRetries key: "number of times to retry an unsuccessful reset").
    True once a try was accepted."""
    attempts = 1 + max(0, retries)
    for attempt in range(1, attempts + 1):
        LOG.warning("rebooting the board: %s (try %d/%d)", " ".join(REBOOT_ARGV), attempt, attempts)
        if run(REBOOT_ARGV) == 0:
            return True
        if attempt < attempts:
            sleep(RETRY_PAUSE_S)
    return False


def reboot_board(
    *,
    retries: int,
    run: Runner = run_command,
    sleep: Callable[[float], None] = time.sleep,
    shutdown_wait_s: float = SHUTDOWN_WAIT_S,
) -> bool:
    """Reboot, then wait for the shutdown's SIGTERM, which ends this process cleanly
    (exit 0: the station is stopped and every contactor open). Returns False when the
    reboot was refused ``1 + retries`` times or no shutdown came: the caller restarts the
    service instead."""

    def stop(signum: int, frame: FrameType | None) -> None:
        LOG.info("stopped for the reboot")
        raise SystemExit(0)

    # Before asking: systemd may stop the service before systemctl has even returned.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if not request_reboot(retries=retries, run=run, sleep=sleep):
            LOG.error("the board could not be rebooted: restarting the service instead")
            return False
        deadline = time.monotonic() + shutdown_wait_s
        while time.monotonic() < deadline:
            sleep(0.2)
        LOG.error("the reboot was accepted but no shutdown came: restarting the service")
        return False
    finally:
        signal.signal(signal.SIGTERM, previous)
