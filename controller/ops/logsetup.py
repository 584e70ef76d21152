"""Logging setup: terminal format, journald's native protocol under systemd, secrets masked."""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import IO

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "EVSED_JOURNAL_SOCKET"  # another journal socket (tests, containers)
IDENTIFIER = "evsed"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LEVEL_ENV = "EVSED_LOG_LEVEL"
TARGETS = ("auto", "journal", "stderr")
TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"

# Attributes set with ``LOG.info(..., extra={...})`` and the journal fields they become
# (`journalctl -u evsed EVSED_CONNECTOR=1`). tx_key is evsed's own transaction number,
# transaction_id the one the CSMS assigned (known only after StartTransaction.conf).
STRUCTURED_FIELDS = {
    "connector": "EVSED_CONNECTOR",
    "transaction_id": "EVSED_TRANSACTION_ID",
    "tx_key": "EVSED_TX_KEY",
    "action": "EVSED_ACTION",
}

# journald's own client raises its send buffer to 8 MiB; the kernel caps it at wmem_max.
_SNDBUF_BYTES = 8 * 1024 * 1024
# A stalled journald must not stall the event loop for long: after this the record goes to
# stderr instead (which systemd also forwards to the journal).
_SEND_TIMEOUT_S = 1.0
_MIN_SECRET_LEN = 4  # shorter "secrets" would mask ordinary words and numbers everywhere

# Our handlers carry this attribute so a second setup_logging() replaces them.
_OWNED = "_evsed_handler"


def syslog_priority(levelno: int) -> int:
    """journald PRIORITY (syslog severity) for a logging level."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


# ------------------------------------------------------------------ secrets


_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # ws://user:password@host -> ws://user:***@host
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1" + MASK + "@"),
    # Authorization: Basic xxx / 'Authorization': 'Bearer xxx'
    (
        re.compile(
            r"(authorization['\"]?\s*[:=]\s*['\"]?(?:basic|bearer|token)?\s*)[^\s'\",}]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    # A bare "Basic <base64>" (a digit, +, / or = tells a token from "Basic authentication").
    (
        re.compile(r"\b(Basic|Bearer)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/._~-]{8,}=*"),
        r"\1 ***",
    ),
    # password = "x", "password": "x", api_token=x, ?token=x
    (
        re.compile(
            r"((?:password|passwd|authorization_?key|api_?token|token|secret)['\"]?\s*[:=]\s*['\"]?)"
            r"[^\s'\",}&]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    # ChangeConfiguration.req {"key": "AuthorizationKey", "value": "..."} (either order)
    (
        re.compile(r'("key"\s*:\s*"AuthorizationKey"\s*,\s*"value"\s*:\s*")[^"]*'),
        r"\1" + MASK,
    ),
    (
        re.compile(r'("value"\s*:\s*")[^"]*("\s*,\s*"key"\s*:\s*"AuthorizationKey")'),
        r"\1" + MASK + r"\2",
    ),
]


class SecretFilter(logging.Filter):
    """Masks passwords, Authorization headers, tokens and URL credentials in every record.

    Pattern rules catch secrets by their context; ``add_secret`` / ``add_source`` also mask
    known values wherever they appear (the configured CSMS password, an AuthorizationKey the
    CSMS set at run time).
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._sources: list[Callable[[], str | None]] = []

    def add_secret(self, value: str | None) -> None:
        if value and len(value) >= _MIN_SECRET_LEN:
            self._secrets.add(value)

    def add_source(self, source: Callable[[], str | None]) -> None:
        """``source()`` is asked on every record (it must be cheap, e.g. a dict lookup)."""
        self._sources.append(source)

    def _known(self) -> list[str]:
        known = set(self._secrets)
        for source in self._sources:
            try:
                value = source()
            except Exception:  # a logging filter must never raise
                continue
            if value and len(value) >= _MIN_SECRET_LEN:
                known.add(value)
        return sorted(known, key=len, reverse=True)  # longest first: no partial leftovers

    def mask(self, text: str) -> str:
        for value in self._known():
            text = text.replace(value, MASK)
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


# ------------------------------------------------------------------ journal protocol


def _field_name_ok(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Z0-9][A-Z0-9_]{0,63}", name))


def encode_field(name: str, value: str | bytes) -> bytes:
    """One field in the native protocol: ``NAME=value\\n``, or the length-prefixed binary
    form when the value contains a newline."""
    if not _field_name_ok(name):
        raise ValueError(f"invalid journal field name {name!r}")
    data = value.encode("utf-8", "replace") if isinstance(value, str) else value
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def encode_entry(fields: Iterable[tuple[str, str | bytes]]) -> bytes:
    return b"".join(encode_field(name, value) for name, value in fields)


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when systemd connected ``fd`` to the journal ($JOURNAL_STREAM is its dev:inode).

    A shell redirection inside the service changes the inode, so redirected output stays where
    it was sent.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError):
        return False


class JournalHandler(logging.Handler):
    """Sends records to journald as native-protocol datagrams (no libsystemd needed).

    Records too large for one datagram travel in a sealed memfd. When journald cannot be
    reached, the record goes to ``fallback`` (stderr) instead of being lost.
    """

    def __init__(
        self,
        socket_path: str = JOURNAL_SOCKET,
        *,
        identifier: str = IDENTIFIER,
        fallback: logging.Handler | None = None,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.socket_path = socket_path
        self.identifier = identifier
        self.fallback = fallback
        self.setFormatter(logging.Formatter("%(message)s"))  # journald keeps time and level
        self._sock: socket.socket | None = None

    # -- socket

    def connect(self) -> None:
        """Connect to the journal socket; raises OSError when there is no journald."""
        self._close_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF_BYTES)
            except OSError:
                pass
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self.acquire()
        try:
            self._close_socket()
        finally:
            self.release()
        super().close()

    def send(self, data: bytes) -> None:
        """One entry; reconnects once (journald restarted) and uses a memfd when too big."""
        for attempt in range(2):
            if self._sock is None:
                self.connect()
            assert self._sock is not None
            try:
                self._sock.send(data)
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self._send_memfd(data)
                    return
                if attempt == 0 and exc.errno in (
                    errno.ECONNREFUSED,
                    errno.ENOTCONN,
                    errno.ENOENT,
                    errno.EPIPE,
                ):
                    self._close_socket()
                    continue
                raise

    def _send_memfd(self, data: bytes) -> None:
        # Protocol: an empty datagram carrying exactly one sealed memfd with the entry.
        assert self._sock is not None
        fd = os.memfd_create("evsed-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(
                fd,
                fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
            )
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        finally:
            os.close(fd)

    # -- records

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        fields = [
            ("MESSAGE", self.format(record)),
            ("PRIORITY", str(syslog_priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
        ]
        for attr, name in STRUCTURED_FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None:
                fields.append((name, str(value)))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode_entry(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self.send(data)
        except OSError:
            if self.fallback is not None:
                self.fallback.handle(record)
            else:
                self.handleError(record)


# ------------------------------------------------------------------ in-memory ring

# What a diagnostics archive holds when there is no journal to ask: the newest records, in
# RAM only (evsed writes no log files). 2000 lines of at most 1000 characters: < 2 MB at
# worst, typically ~300 kB.
RING_MAX_RECORDS = 2000
RING_MAX_LINE_CHARS = 1000


class RingHandler(logging.Handler):
    """Keeps the newest log records (masked by the same SecretFilter as the journal) with
    the time they were logged; ``now`` is the daemon's clock (corrected wall time)."""

    def __init__(self, capacity: int = RING_MAX_RECORDS) -> None:
        super().__init__()
        self._records: deque[tuple[datetime, str]] = deque(maxlen=capacity)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)[:RING_MAX_LINE_CHARS]
            self._records.append((self.now(), line))
        except Exception:  # a log record must never break the daemon
            return

    def lines(self, since: datetime | None = None, until: datetime | None = None) -> list[str]:
        """The kept records logged within [since, until], oldest first, each prefixed
        with its UTC time."""
        out = []
        for at, line in list(self._records):
            if (since is None or at >= since) and (until is None or at <= until):
                out.append(f"{at.astimezone(UTC).isoformat(timespec='milliseconds')} {line}")
        return out

    def clear(self) -> None:
        self._records.clear()


_RING: RingHandler | None = None


def ring_handler() -> RingHandler:
    """The process's ring of recent records, attached to the root logger (again, should
    something have removed it)."""
    global _RING
    if _RING is None:
        _RING = RingHandler()
    root = logging.getLogger()
    if _RING not in root.handlers:
        root.addHandler(_RING)
    return _RING


# ------------------------------------------------------------------ setup


def resolve_level(config_level: str | None, environ: Mapping[str, str] | None = None) -> str:
    """$EVSED_LOG_LEVEL wins over the config's [logging] level; unknown values are ignored."""
    env = (os.environ if environ is None else environ).get(LEVEL_ENV, "").strip().upper()
    if env in LEVELS:
        return env
    level = (config_level or "INFO").upper()
    return level if level in LEVELS else "INFO"


def _quiet_libraries() -> None:
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def setup_logging(
    level: str | None = "INFO",
    target: str = "auto",
    *,
    journal_socket: str | None = None,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecretFilter:
    """Configure the root logger for the daemon; returns the secret filter to register
    known secrets with. Never writes a log file: journald (under systemd) or stderr.

    ``target``: "journal" forces the native protocol, "stderr" the terminal format, "auto"
    picks the journal when systemd connected stderr to it ($JOURNAL_STREAM).
    """
    if target not in TARGETS:
        raise ValueError(f"log target must be one of {', '.join(TARGETS)}")
    env = os.environ if environ is None else environ
    journal_socket = journal_socket or env.get(SOCKET_ENV) or JOURNAL_SOCKET
    name = resolve_level(level, env)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OWNED, False)]:
        root.removeHandler(old)
        old.close()

    secrets = SecretFilter()
    terminal = logging.StreamHandler(stream if stream is not None else sys.stderr)
    terminal.setFormatter(logging.Formatter(TERMINAL_FORMAT))
    terminal.addFilter(secrets)

    handler: logging.Handler = terminal
    problem: str | None = None
    if target == "journal" or (target == "auto" and stderr_is_journal(env)):
        journal = JournalHandler(journal_socket, fallback=terminal)
        try:
            journal.connect()
        except OSError as exc:
            problem = f"journal socket {journal_socket} unavailable ({exc}); logging to stderr"
        else:
            journal.addFilter(secrets)
            handler = journal
    setattr(handler, _OWNED, True)
    root.addHandler(handler)
    ring = ring_handler()
    for old_filter in list(ring.filters):
        ring.removeFilter(old_filter)
    ring.addFilter(secrets)
    root.setLevel(getattr(logging, name))
    _quiet_libraries()
    if problem:
        logging.getLogger("evsed").warning("%s", problem)
    env_level = env.get(LEVEL_ENV, "").strip()
    if env_level and env_level.upper() not in LEVELS:
        logging.getLogger("evsed").warning(
            "ignoring %s=%r; use one of %s", LEVEL_ENV, env_level, ", ".join(LEVELS)
        )
    return secrets
