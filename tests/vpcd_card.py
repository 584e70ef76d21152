"""A private pcscd with the vsmartcard-vpcd virtual reader, and a virtual card speaking vpcd.

Used by tests/hal/test_hal_pcsc.py and bench/card_latency.py; importing it needs neither pcscd
nor pyscard (``missing_requirements`` says what is absent).

pcscd (pcsc-lite 1.9.9 as packaged by Debian) does not honour ``PCSCLITE_CSOCK_NAME``; only
the client library does. The daemon's socket path is compiled in (/run/pcscd/pcscd.comm),
except when it is started with systemd socket activation. So ``PcscdProcess`` plays systemd:
it binds a Unix socket in a private directory, hands it to pcscd as fd 3 with
``LISTEN_FDS=1`` and ``LISTEN_PID=<pcscd's pid>`` (set by a tiny exec wrapper), and gives
pcscd its own reader.conf.d (``--config``) whose vpcd entry listens on a free TCP port, so
nothing clashes with a system pcscd or a system vpcd on 35963. Clients must set
``PCSCLITE_CSOCK_NAME`` to ``PcscdProcess.socket_path`` *before the first PC/SC call of the
process*: libpcsclite reads it once and caches it.

The equivalent shell command (fd 3 = a listening AF_UNIX stream socket at $DIR/pcscd.comm)::

    LISTEN_FDS=1 LISTEN_PID=<pid of pcscd> \
        /usr/sbin/pcscd --foreground --info --auto-exit --config $DIR/reader.conf.d

pcscd still writes /run/pcscd/pcscd.pid (it needs /run/pcscd to exist or be creatable;
root can create it, otherwise ``sudo install -d /run/pcscd`` once).

vpcd protocol (ifd-vpcd from vsmartcard): the reader driver *listens* on TCP (port =
CHANNELID / the number after ``/dev/null:`` in DEVICENAME, +1 per slot; the Debian build
offers two slots, "Virtual PCD 00 00" and "Virtual PCD 00 01"); a virtual card connects as a
client. Every message in both directions is a 2-byte big-endian length plus payload. From
the reader, a 1-byte payload is a control message: 0x00 power off, 0x01 power on, 0x02
reset (no answer), 0x04 get ATR (answer: the ATR); anything longer is a command APDU that
the card answers with a response APDU. pcscd polls card presence (every 400 ms) by asking
for the ATR, which is also when the driver accepts a waiting card; a closed connection
means the card was removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

PCSCD: Final = "/usr/sbin/pcscd"
PCSCD_PID_FILE: Final = Path("/run/pcscd/pcscd.pid")
VPCD_DRIVER: Final = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
VPCD_DEFAULT_PORT: Final = 35963  # 0x8C7B, /etc/reader.conf.d/vpcd
VPCD_SLOTS: Final = 2
READER_NAME: Final = "Virtual PCD"  # FRIENDLYNAME; pcscd appends " 00 00", " 00 01"

CTRL_OFF: Final = 0x00
CTRL_ON: Final = 0x01
CTRL_RESET: Final = 0x02
CTRL_ATR: Final = 0x04

# ATR of a MIFARE Classic 1K as a PC/SC part 3 contactless reader (ACR122U) reports it.
DEFAULT_ATR: Final = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
GET_UID_APDU: Final = bytes.fromhex("FFCA000000")
SW_OK: Final = b"\x90\x00"
SW_INS_NOT_SUPPORTED: Final = b"\x6d\x00"

# Runs between fork and pcscd: fd 3 := the listening socket, LISTEN_PID := own pid (exec
# keeps it), and SIGTERM when the parent dies so a killed test run leaves no daemon behind.
_EXEC_WRAPPER: Final = """
import ctypes, os, signal, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except Exception:
    pass
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def missing_requirements() -> str | None:
    """Why the pcscd + vpcd + pyscard stack cannot run here, or None when it can."""
    if not os.access(PCSCD, os.X_OK):
        return f"{PCSCD} not found (apt-get install pcscd)"
    if not os.path.exists(VPCD_DRIVER):
        return f"{VPCD_DRIVER} not found (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        return f"pyscard not importable ({exc}); pip install -e '.[pcsc]'"
    return None


def _port_pair_free(port: int) -> bool:
    socks: list[socket.socket] = []
    try:
        for p in range(port, port + VPCD_SLOTS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("0.0.0.0", p))  # vpcd binds INADDR_ANY
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_vpcd_port() -> int:
    """A TCP port P with P..P+1 free (vpcd listens on one port per slot)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        if port + VPCD_SLOTS <= 65535 and _port_pair_free(port):
            return port
    raise RuntimeError("no free TCP port pair for vpcd")


class PcscdProcess:
    """A private pcscd with one vpcd reader entry; start/stop/restart it at will.

    The socket path stays the same across restarts (libpcsclite caches it per process), the
    vpcd port too (virtual cards know it).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        friendly_name: str = READER_NAME,
        with_reader: bool = True,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="evsed-pcscd-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "pcscd.comm"
        self.conf_dir = self.workdir / "reader.conf.d"
        self.log_path = self.workdir / "pcscd.log"
        self.port = port if port is not None else free_vpcd_port()
        self.friendly_name = friendly_name
        self.with_reader = with_reader
        self.process: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._log_offset = 0

    @property
    def reader_names(self) -> list[str]:
        if not self.with_reader:
            return []
        return [f"{self.friendly_name} 00 {slot:02X}" for slot in range(VPCD_SLOTS)]

    def command(self) -> list[str]:
        return [PCSCD, "--foreground", "--info", "--auto-exit", "--config", str(self.conf_dir)]

    def _write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for old in self.conf_dir.iterdir():
            old.unlink()
        if self.with_reader:
            (self.conf_dir / "vpcd").write_text(
                f'FRIENDLYNAME "{self.friendly_name}"\n'
                f"DEVICENAME   /dev/null:{self.port:#x}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    {self.port:#x}\n",
                encoding="ascii",
            )

    def start(self, timeout_s: float = 10.0) -> None:
        """Start pcscd and wait until it says "daemon ready" (readers are loaded then)."""
        if self.process is not None:
            raise RuntimeError("pcscd already running")
        self._write_config()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        os.chmod(self.socket_path, 0o777)
        self._listener = listener
        fd = listener.fileno()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self._log_offset = log.tell()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WRAPPER, str(fd), *self.command()],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")},
            )
        finally:
            log.close()
        # pcscd owns the socket now; our copy would keep it alive after pcscd died.
        listener.close()
        self._listener = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "daemon ready" in self.log_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        log_text = self.log_text()
        self.stop()
        raise RuntimeError(f"pcscd did not become ready; its log:\n{log_text}")

    def log_text(self) -> str:
        """What this pcscd run wrote so far."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL, to simulate a crash), wait, and remove the socket file."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process is not None:
            # A killed pcscd leaves its (compiled-in) pid file behind; remove it if it is ours.
            with contextlib.suppress(OSError, ValueError):
                if int(PCSCD_PID_FILE.read_text().strip("\0\n ")) == process.pid:
                    PCSCD_PID_FILE.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PcscdProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Responder = Callable[[bytes], bytes]


class VirtualCard:
    """A contactless card with a UID on a vpcd reader: ``insert`` connects, ``remove`` closes.

    Answers GET DATA (FF CA 00 00 Le) with the UID + 90 00, or with ``uid_status`` alone when
    that is not 90 00 (a card that fails the APDU); other APDUs get 6D 00. ``responder``
    replaces all of that. Every APDU received is appended to ``apdus``.
    """

    def __init__(
        self,
        uid: bytes | str,
        port: int = VPCD_DEFAULT_PORT,
        *,
        slot: int = 0,
        host: str = "127.0.0.1",
        atr: bytes = DEFAULT_ATR,
        uid_status: bytes = SW_OK,
        responder: Responder | None = None,
    ) -> None:
        self.uid = bytes.fromhex(uid) if isinstance(uid, str) else bytes(uid)
        self.address = (host, port + slot)
        self.atr = atr
        self.uid_status = uid_status
        self.responder = responder
        self.apdus: list[bytes] = []
        self.powered = False
        self.inserted_at_ns: int | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def insert(self, timeout_s: float = 5.0) -> None:
        """Connect to the reader (the TCP handshake completes even before vpcd accepts)."""
        if self._sock is not None:
            raise RuntimeError("card already inserted")
        sock = socket.create_connection(self.address, timeout=timeout_s)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inserted_at_ns = time.perf_counter_ns()
        self._sock = sock
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="vpcd-card", daemon=True
        )
        self._thread.start()

    def remove(self) -> None:
        """Disconnect; vpcd sees it at its next presence poll."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.powered = False

    def answer(self, apdu: bytes) -> bytes:
        if self.responder is not None:
            return self.responder(apdu)
        if apdu[:4] == GET_UID_APDU[:4]:
            if self.uid_status != SW_OK:
                return self.uid_status
            le = apdu[4] if len(apdu) > 4 else 0
            if le not in (0, len(self.uid)):
                return bytes((0x6C, len(self.uid)))  # wrong Le: here is the right one
            return self.uid + SW_OK
        return SW_INS_NOT_SUPPORTED

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                (length,) = struct.unpack(">H", header)
                payload = _recv_exact(sock, length) if length else b""
                if payload is None:
                    return
                if length == 1:
                    ctrl = payload[0]
                    if ctrl == CTRL_ATR:
                        _send(sock, self.atr)
                    elif ctrl in (CTRL_ON, CTRL_RESET):
                        self.powered = True
                    elif ctrl == CTRL_OFF:
                        self.powered = False
                    continue
                self.apdus.append(payload)
                _send(sock, self.answer(payload))
        except OSError:
            return

    def __enter__(self) -> VirtualCard:
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
        # vpcd writes small messages without TCP_NODELAY: with our delayed ACK, Nagle would
        # hold its next message ~40 ms. A real reader has no such TCP hop, so ACK at once.
        if _TCP_QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    return bytes(data)


_TCP_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
