"""Test helpers: a trustme CA, CSMS server certificates and charger client certificates as files."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trustme

from controller.dev.devcsms import DevCsms, Frame, server_ssl_context
from controller.security.log import SecurityLog

HOST = "127.0.0.1"


@dataclass
class Pki:
    """A CSMS CA with a server certificate for 127.0.0.1, a charger CA with a client
    certificate, and a CA nobody trusts; every file under ``dir``."""

    dir: Path
    csms_ca: trustme.CA
    charger_ca: trustme.CA
    rogue_ca: trustme.CA

    @classmethod
    def make(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory, trustme.CA(), trustme.CA(), trustme.CA())
        pki.csms_ca.cert_pem.write_to_path(str(pki.csms_root))
        pki.charger_ca.cert_pem.write_to_path(str(pki.charger_root))
        pki.rogue_ca.cert_pem.write_to_path(str(pki.rogue_root))
        client = pki.charger_ca.issue_cert(
            "CP-TEST", common_name="CP-TEST", organization_name="evsed"
        )
        pki.write_leaf(client, "client")
        pki.write_leaf(pki.rogue_ca.issue_cert("CP-TEST"), "rogue-client")
        return pki

    @property
    def csms_root(self) -> Path:
        return self.dir / "csms-root.pem"

    @property
    def charger_root(self) -> Path:
        return self.dir / "charger-root.pem"

    @property
    def rogue_root(self) -> Path:
        return self.dir / "rogue-root.pem"

    def write_leaf(self, leaf: trustme.LeafCert, name: str) -> tuple[str, str]:
        cert = self.dir / f"{name}.pem"
        key = self.dir / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        return str(cert), str(key)

    def client(self, rogue: bool = False) -> dict[str, str]:
        """[csms] client_cert / client_key of the charger (``rogue``: from an unknown CA)."""
        name = "rogue-client" if rogue else "client"
        return {
            "client_cert": str(self.dir / f"{name}.pem"),
            "client_key": str(self.dir / f"{name}.key"),
        }

    def server_context(
        self,
        *identities: str,
        require_client_cert: bool = False,
        ca: trustme.CA | None = None,
        **issue: Any,
    ) -> ssl.SSLContext:
        leaf = (ca or self.csms_ca).issue_cert(*(identities or (HOST,)), **issue)
        cert, key = self.write_leaf(leaf, "server")
        return server_ssl_context(
            cert, key, str(self.charger_root) if require_client_cert else None
        )

    def expired_server_context(self) -> ssl.SSLContext:
        now = datetime.now(UTC)
        return self.server_context(
            not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
        )


def logged_kinds(log: SecurityLog | None) -> list[str]:
    assert log is not None
    return [str(e["kind"]) for e in log.entries()]


class HandshakeOnlyServer:
    """A blocking TLS server in a thread: it does the handshake and nothing else. Unlike an
    asyncio server (which drops the TCP connection on a failed handshake before OpenSSL's
    alert leaves), it sends the alert, as a real CSMS front end does, so the charger can tell
    a protocol version from a cipher suite or a certificate problem."""

    def __init__(self, ctx: ssl.SSLContext, port: int = 0) -> None:
        self.ctx = ctx
        self.sock = socket.create_server((HOST, port), reuse_port=False)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.handshakes_failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)  # TLS 1.3 checks the client certificate here
            except (OSError, ssl.SSLError):
                self.handshakes_failed += 1
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


async def advance_until(h: Any, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Move the manual clock in small steps (reconnect back-off) until ``predicate`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await h.clock.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)


async def notification(csms: DevCsms, type_16: str, text: str = "") -> Frame:
    """The SecurityEventNotification of ``type_16`` (whose techInfo contains ``text``)."""
    return await csms.wait_for(
        lambda f: (
            f.action == "SecurityEventNotification"
            and f.payload["type"] == type_16
            and text in f.payload.get("techInfo", "")
        ),
        timeout_s=10,
    )


def accepted(h: Any) -> bool:
    return h.app.client.connection_state() == "accepted"
