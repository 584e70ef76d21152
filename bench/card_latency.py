"""Benchmark: card on the reader -> ``on_token`` through pcscd + vsmartcard-vpcd + hal/pcsc.py.

A private pcscd (socket-activated on a temporary socket, vpcd on a free port; see
tests/vpcd_card.py) serves one virtual reader; ``PcscTokenReader`` watches it. Each round a
virtual card connects to vpcd (t0 = just after the TCP connect, "card on the reader"), the
driver reports the UID (t2 = inside ``on_token``), the card disconnects and the round ends
once pcscd reports the reader empty again.

Figures (median, p99, max; never asserted):

* ``card -> on_token``: everything the user waits for. pcscd finds vpcd cards by polling
  presence every 400 ms, so this is dominated by a uniform 0-400 ms wait that a USB CCID
  reader (interrupt endpoint) does not have.
* ``pcscd event -> on_token``: from a second, independent PC/SC client being woken by
  the same card event (t1) to ``on_token`` (t2): the driver's own share (wake-up,
  SCardConnect, GET DATA round trip, SCardDisconnect, callback). Both clients wake from the
  same pcscd event, so a tiny negative value only means the watcher was scheduled last.

Usage (from the repository root)::

    .venv/bin/python bench/card_latency.py            # 100 presentations
    .venv/bin/python bench/card_latency.py --quick    # 20
    .venv/bin/python bench/card_latency.py -n 300
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from benchlib import add_repo_root_to_sys_path, median, percentile

add_repo_root_to_sys_path()

from tests.vpcd_card import PcscdProcess, VirtualCard, missing_requirements  # noqa: E402

UID = "04A1B2C3D4E5F6"
STEP_TIMEOUT_S = 5.0


def summary(name: str, values_ms: list[float]) -> str:
    s = sorted(values_ms)
    return (
        f"{name:<26} n={len(s):<4} median {median(s):7.2f} ms   "
        f"p99 {percentile(s, 99):7.2f} ms   min {s[0]:7.2f} ms   max {s[-1]:7.2f} ms"
    )


class PresenceWatcher:
    """An independent PC/SC client: timestamps when pcscd reports the card present/absent."""

    def __init__(self, reader_name: str) -> None:
        from smartcard import scard

        self.scard = scard
        self.reader_name = reader_name
        self.present = threading.Event()
        self.absent = threading.Event()
        self.present_at_ns = 0
        self._stop = threading.Event()
        rv, self.context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if rv != scard.SCARD_S_SUCCESS:
            raise RuntimeError(f"SCardEstablishContext: {scard.SCardGetErrorMessage(rv)}")
        self._thread = threading.Thread(target=self._run, name="presence-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        scard = self.scard
        state = scard.SCARD_STATE_UNAWARE
        while not self._stop.is_set():
            rv, result = scard.SCardGetStatusChange(
                self.context, scard.INFINITE, [(self.reader_name, state)]
            )
            now = time.perf_counter_ns()
            if rv != scard.SCARD_S_SUCCESS:
                return
            state = result[0][1] & ~scard.SCARD_STATE_CHANGED
            if state & scard.SCARD_STATE_PRESENT:
                if not self.present.is_set():
                    self.present_at_ns = now
                    self.absent.clear()
                    self.present.set()
            elif state & scard.SCARD_STATE_EMPTY:
                self.present.clear()
                self.absent.set()

    def close(self) -> None:
        self._stop.set()
        self.scard.SCardCancel(self.context)
        self._thread.join(2.0)
        self.scard.SCardReleaseContext(self.context)


def run(rounds: int) -> int:
    daemon = PcscdProcess()
    # Before the first PC/SC call of this process: libpcsclite reads it once.
    os.environ["PCSCLITE_CSOCK_NAME"] = str(daemon.socket_path)
    from hal.pcsc import PcscTokenReader

    daemon.start()
    reader = PcscTokenReader()
    watcher: PresenceWatcher | None = None
    card = VirtualCard(UID, daemon.port)
    token_event = threading.Event()
    token_at_ns = 0

    def on_token(uid: str) -> None:
        nonlocal token_at_ns
        token_at_ns = time.perf_counter_ns()
        token_event.set()

    total_ms: list[float] = []
    driver_ms: list[float] = []
    try:
        watcher = PresenceWatcher(daemon.reader_names[0])
        reader.start(on_token)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not reader.connected.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("driver did not connect to pcscd")
            time.sleep(0.01)
        for i in range(rounds):
            token_event.clear()
            card.insert()
            if not token_event.wait(STEP_TIMEOUT_S):
                raise RuntimeError(f"round {i}: no on_token within {STEP_TIMEOUT_S} s")
            if not watcher.present.wait(STEP_TIMEOUT_S):
                raise RuntimeError(f"round {i}: watcher never saw the card")
            assert card.inserted_at_ns is not None
            total_ms.append((token_at_ns - card.inserted_at_ns) / 1e6)
            driver_ms.append((token_at_ns - watcher.present_at_ns) / 1e6)
            card.remove()
            if not watcher.absent.wait(STEP_TIMEOUT_S):
                raise RuntimeError(f"round {i}: card removal not seen")
            # Let the driver process the removal too, then start the next round at a random
            # phase of pcscd's 400 ms presence poll.
            time.sleep(0.02 + (i * 0.037) % 0.4)
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(daemon.log_text()[-2000:], file=sys.stderr)
        return 1
    finally:
        reader.stop()
        card.remove()
        if watcher is not None:
            watcher.close()
        daemon.close()

    print(f"card on vpcd reader -> on_token, {rounds} presentations (pcsc-lite + vpcd)")
    print(summary("card -> on_token", total_ms))
    print(summary("pcscd event -> on_token", driver_ms))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=100, help="presentations")
    parser.add_argument("--quick", action="store_true", help="20 presentations")
    args = parser.parse_args()
    missing = missing_requirements()
    if missing is not None:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 1
    return run(20 if args.quick else max(1, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
