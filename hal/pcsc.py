"""PC/SC contactless card reader driver (driver "pcsc", role "reader") on pcscd via pyscard.

One worker thread per reader object blocks in ``SCardGetStatusChange`` (no polling: pcscd
wakes it on card and reader events; ``stop`` interrupts it with ``SCardCancel``). When a
card arrives it sends GET DATA (``FF CA 00 00 00``, PC/SC part 3) for the UID and calls
``on_token`` with it as upper-case hex, from the worker thread.

* Only the first reader whose name matches ``reader`` is watched (all readers match when
  it is unset). If it is unplugged the next matching one is taken; while none matches the
  worker waits for pcscd's reader-list notification (and re-lists every
  ``retry_interval_s`` as a safety net for a missed notification).
* A card is reported once per presentation: pcscd's per-reader event counter tells a card
  that stayed from one that was removed and presented again, and a card whose UID equals
  the one on the reader when the pcscd connection was lost is not reported again after
  the reconnect (a second "tap" would stop a running transaction).
* Losing pcscd (restart, crash, socket gone) releases the context and re-establishes it
  every ``retry_interval_s``; the outage is logged once, the recovery once.
* Cards that do not answer GET DATA with 90 00, or that cannot be connected to, are logged
  and ignored until they are removed.

Settings: ``reader`` (name pattern: an fnmatch glob if it contains ``*?[``, else a
substring; case-insensitive), ``byte_order`` ("msb" as the reader returns it, default, or
"lsb" reversed), ``retry_interval_s`` (back-off after pcscd errors, default 1.0).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final

from smartcard import scard

from hal.base import TokenCallback, TokenReader
from hal.pcsc_diag import reader_matches
from hal.registry import (
    DriverContext,
    register_driver,
    reject_unknown,
    setting_float,
    setting_str,
)

log = logging.getLogger(__name__)

PNP_READER: Final = "\\\\?PnP?\\Notification"
GET_UID_APDU: Final = (0xFF, 0xCA, 0x00, 0x00, 0x00)
BYTE_ORDERS: Final = ("msb", "lsb")
DEFAULT_RETRY_INTERVAL_S: Final = 1.0
_STOP_JOIN_S: Final = 5.0
_CANCEL_EVERY_S: Final = 0.05

# pcsc-lite keeps an insertion/removal counter in the upper 16 bits of dwEventState.
_COUNTER_SHIFT: Final = 16
_STATE_MASK: Final = 0xFFFF


def _u32(code: int) -> int:
    """Return codes as unsigned 32-bit numbers, however the binding hands them out."""
    return int(code) & 0xFFFFFFFF


_OK: Final = _u32(scard.SCARD_S_SUCCESS)
_E_TIMEOUT: Final = _u32(scard.SCARD_E_TIMEOUT)
_E_CANCELLED: Final = _u32(scard.SCARD_E_CANCELLED)
_E_UNKNOWN_READER: Final = _u32(scard.SCARD_E_UNKNOWN_READER)
_E_NO_READERS: Final = _u32(scard.SCARD_E_NO_READERS_AVAILABLE)
# Errors that mean "this card", not "this context": the context stays.
_CARD_GONE: Final = frozenset(
    _u32(code)
    for code in (
        scard.SCARD_W_REMOVED_CARD,
        scard.SCARD_E_NO_SMARTCARD,
        scard.SCARD_W_RESET_CARD,
    )
)
_SERVICE_GONE: Final = frozenset(
    _u32(code)
    for code in (
        scard.SCARD_E_NO_SERVICE,
        scard.SCARD_E_SERVICE_STOPPED,
        scard.SCARD_F_COMM_ERROR,
        scard.SCARD_E_INVALID_HANDLE,
    )
)


def _error_text(code: int) -> str:
    try:
        text = scard.SCardGetErrorMessage(code)
    except Exception:  # pragma: no cover - pyscard's message table is best effort
        text = ""
    return f"0x{_u32(code):08X} {text}".strip()


class _ContextLost(Exception):
    """pcscd went away (or the context became invalid): re-establish it."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {_error_text(code)}")
        self.code = code


class PcscTokenReader(TokenReader):
    """A PC/SC reader watched by a worker thread; see the module docstring."""

    def __init__(
        self,
        reader: str | None = None,
        byte_order: str = "msb",
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
    ) -> None:
        if byte_order not in BYTE_ORDERS:
            raise ValueError(f"byte_order must be one of {BYTE_ORDERS}, got {byte_order!r}")
        if not retry_interval_s > 0:
            raise ValueError(f"retry_interval_s must be positive, got {retry_interval_s!r}")
        self.reader_pattern = reader
        self.byte_order = byte_order
        self.retry_interval_s = float(retry_interval_s)
        self._on_token: TokenCallback | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._context: int | None = None  # guarded by _lock, for SCardCancel from stop()
        # Survives reconnects: reader name -> UID of the card considered on it ("" for a
        # card that failed GET DATA). Cleared when the reader reports it empty or vanishes.
        self._on_reader: dict[str, str] = {}
        self._watched: str | None = None
        self._waiting_logged = False
        self.connected = threading.Event()  # set while a pcscd context is established

    # --- TokenReader ------------------------------------------------------------------

    def start(self, on_token: TokenCallback) -> None:
        if self._thread is not None:
            raise RuntimeError("PC/SC reader already started")
        self._on_token = on_token
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pcsc-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is None:
            return
        if thread is threading.current_thread():
            return  # called from on_token: the worker ends after the callback returns
        # SCardCancel only interrupts a wait that is already pending, so repeat it until the
        # worker is gone: it checks ``_stopping`` before every blocking call.
        for _ in range(int(_STOP_JOIN_S / _CANCEL_EVERY_S)):
            self._cancel_wait()
            thread.join(_CANCEL_EVERY_S)
            if not thread.is_alive():
                break
        else:
            log.warning("PC/SC reader thread did not stop within %.0f s", _STOP_JOIN_S)
        self._on_token = None

    # --- worker -------------------------------------------------------------------------

    def _cancel_wait(self) -> None:
        with self._lock:
            if self._context is not None:
                scard.SCardCancel(self._context)

    def _run(self) -> None:
        outage_logged = False
        while not self._stopping.is_set():
            rv, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
            if _u32(rv) != _OK:
                if not outage_logged:
                    log.warning(
                        "pcscd not reachable (%s); retrying every %.1f s",
                        _error_text(rv),
                        self.retry_interval_s,
                    )
                    outage_logged = True
                self._stopping.wait(self.retry_interval_s)
                continue
            with self._lock:
                self._context = context
            if outage_logged:
                log.info("connected to pcscd again")
                outage_logged = False
            else:
                log.debug("connected to pcscd")
            # Set after the log line: whoever waits for ``connected`` also sees it reported.
            self.connected.set()
            try:
                self._watch(context)
            except _ContextLost as exc:
                log.warning(
                    "lost pcscd (%s); reconnecting every %.1f s", exc, self.retry_interval_s
                )
                outage_logged = True
            except Exception:
                log.exception("PC/SC reader worker failed; restarting it")
                outage_logged = True
            finally:
                self.connected.clear()
                with self._lock:
                    self._context = None
                scard.SCardReleaseContext(context)
                self._watched = None
            if outage_logged:
                self._stopping.wait(self.retry_interval_s)

    def _list_readers(self, context: int) -> list[str]:
        rv, readers = scard.SCardListReaders(context, [])
        rv = _u32(rv)
        if rv == _E_NO_READERS:
            return []
        if rv != _OK:
            raise _ContextLost("SCardListReaders", rv)
        return list(readers)

    def _choose_reader(self, context: int) -> str | None:
        readers = self._list_readers(context)
        chosen = next((r for r in readers if reader_matches(self.reader_pattern, r)), None)
        if chosen != self._watched:
            if chosen is not None:
                log.info("watching PC/SC reader %r", chosen)
                self._waiting_logged = False
            self._watched = chosen
        if chosen is None and not self._waiting_logged:
            log.warning(
                "no PC/SC reader matching %r (readers: %s); waiting for one",
                self.reader_pattern or "*",
                ", ".join(repr(r) for r in readers) or "none",
            )
            self._waiting_logged = True
        return chosen

    def _watch(self, context: int) -> None:
        """Follow one reader until the context is lost or the driver stops."""
        reader = self._choose_reader(context)
        # None: the first state seen for this reader in this context (a card already there
        # at start or after a reconnect).
        current: int | None = None
        pnp_state = scard.SCARD_STATE_UNAWARE
        while not self._stopping.is_set():
            states: list[tuple[str, int]] = [(PNP_READER, pnp_state)]
            if reader is not None:
                states.append((reader, scard.SCARD_STATE_UNAWARE if current is None else current))
            # With a reader: wait for events only. Without one, pcscd's reader-list
            # notification wakes us, but it only covers changes during the call, so also
            # re-list now and then.
            timeout = scard.INFINITE if reader is not None else int(self.retry_interval_s * 1000)
            rv, result = scard.SCardGetStatusChange(context, timeout, states)
            rv = _u32(rv)
            if self._stopping.is_set():
                return
            if rv in (_E_TIMEOUT, _E_CANCELLED):
                reader, current = self._rechoose(context, reader, current)
                continue
            if rv == _E_UNKNOWN_READER:
                # Not expected from pcsc-lite (it flags unknown readers in the state), but
                # if it happens, do not spin on it.
                self._stopping.wait(self.retry_interval_s)
                reader, current = self._rechoose(context, reader, None)
                continue
            if rv != _OK:
                raise _ContextLost("SCardGetStatusChange", rv)
            relist = False
            for name, event_state, _atr in result:
                if name == PNP_READER:
                    pnp_state = event_state & ~scard.SCARD_STATE_CHANGED
                    relist = relist or bool(event_state & scard.SCARD_STATE_CHANGED)
                    continue
                if event_state & (scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE):
                    log.warning("PC/SC reader %r is gone", name)
                    self._on_reader.pop(name, None)
                    # Keep UNKNOWN as the current state: if the same name is listed again,
                    # pcscd wakes us when the reader is back instead of at once.
                    current = event_state & ~scard.SCARD_STATE_CHANGED
                    relist = True
                    continue
                self._reader_event(context, name, current, event_state)
                current = event_state & ~scard.SCARD_STATE_CHANGED
            if relist:
                reader, current = self._rechoose(context, reader, current)

    def _rechoose(
        self, context: int, reader: str | None, current: int | None
    ) -> tuple[str | None, int | None]:
        chosen = self._choose_reader(context)
        if chosen != reader:
            return chosen, None
        return reader, current

    def _reader_event(self, context: int, name: str, previous: int | None, state: int) -> None:
        if state & scard.SCARD_STATE_EMPTY:
            if self._on_reader.pop(name, None) is not None:
                log.debug("card removed from %r", name)
            return
        if state & scard.SCARD_STATE_MUTE:
            if name not in self._on_reader:
                log.warning("unresponsive card on %r ignored", name)
                self._on_reader[name] = ""
            return
        if not state & scard.SCARD_STATE_PRESENT:
            return  # unavailable / unaware: nothing to read
        counter = state >> _COUNTER_SHIFT
        if previous is not None:
            was_present = bool(previous & scard.SCARD_STATE_PRESENT) and not bool(
                previous & scard.SCARD_STATE_MUTE
            )
            if was_present and (previous >> _COUNTER_SHIFT) == counter:
                return  # same card, only sharing flags (INUSE, ...) changed
            # Removed and presented again between two wake-ups: a new presentation.
            self._on_reader.pop(name, None)
        uid = self._read_uid(context, name)
        known = self._on_reader.get(name)
        if uid is None:
            self._on_reader[name] = ""
            return
        self._on_reader[name] = uid
        if previous is None and known == uid:
            log.debug("card %s still on %r after reconnect; not reported again", uid, name)
            return
        callback = self._on_token
        if callback is None:
            return
        log.info("card %s on %r", uid, name)
        try:
            callback(uid)
        except Exception:
            log.exception("on_token callback failed for card %s", uid)

    def _read_uid(self, context: int, name: str) -> str | None:
        """GET DATA for the UID; None (logged) when the card does not give one."""
        rv, card, protocol = scard.SCardConnect(
            context,
            name,
            scard.SCARD_SHARE_SHARED,
            scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1,
        )
        rv = _u32(rv)
        if rv in _CARD_GONE:
            log.debug("card left %r before it could be read", name)
            return None
        if rv in _SERVICE_GONE:
            raise _ContextLost("SCardConnect", rv)
        if rv != _OK:
            log.warning("cannot connect to the card on %r (%s); ignored", name, _error_text(rv))
            return None
        try:
            apdu = list(GET_UID_APDU)
            for _attempt in range(2):
                rv, response = scard.SCardTransmit(card, protocol, apdu)
                rv = _u32(rv)
                if rv != _OK:
                    if rv in _CARD_GONE:
                        log.debug("card left %r while being read", name)
                    else:
                        log.warning(
                            "GET DATA failed on %r (%s); card ignored", name, _error_text(rv)
                        )
                    return None
                response = list(response)
                if len(response) == 2 and response[0] == 0x6C and apdu[4] == 0:
                    apdu[4] = response[1]  # "wrong Le, use this one": ask once more
                    continue
                break
            if len(response) < 2 or response[-2:] != [0x90, 0x00]:
                sw = "".join(f"{b:02X}" for b in response[-2:]) or "nothing"
                log.warning("card on %r answered GET DATA with %s; card ignored", name, sw)
                return None
            uid = bytes(response[:-2])
            if not uid:
                log.warning("card on %r returned an empty UID; card ignored", name)
                return None
            if self.byte_order == "lsb":
                uid = uid[::-1]
            return uid.hex().upper()
        finally:
            scard.SCardDisconnect(card, scard.SCARD_LEAVE_CARD)


@register_driver("reader", "pcsc")
def create_pcsc_reader(settings: Mapping[str, Any], ctx: DriverContext) -> PcscTokenReader:
    reject_unknown(settings, {"reader", "byte_order", "retry_interval_s"}, ctx)
    return PcscTokenReader(
        reader=setting_str(settings, "reader", None, ctx),
        byte_order=setting_str(settings, "byte_order", "msb", ctx, choices=BYTE_ORDERS),
        retry_interval_s=setting_float(
            settings,
            "retry_interval_s",
            DEFAULT_RETRY_INTERVAL_S,
            ctx,
            min_value=0.05,
            max_value=60.0,
        ),
    )
