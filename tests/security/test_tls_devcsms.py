"""`evsed dev-csms --tls-cert/--tls-key/--tls-ca`: the development CSMS over wss://."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

from controller.cli import main
from controller.csms.connection import basic_auth_header
from controller.security.tls import FileTlsMaterial, client_context
from tests.security.tlskit import HOST, Pki

PASSWORD = "0123456789abcdef0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def test_tls_key_without_cert_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev-csms", "--tls-key", "x.key"]) == 2
    assert "--tls-cert and --tls-key" in capsys.readouterr().err


async def test_dev_csms_serves_wss_with_client_certificates(tmp_path: Path) -> None:
    """Profile 3 against the dev CSMS command: its certificate verifies against the CSMS
    root, it requires the charger's client certificate (A00.FR.403/407) and checks the
    Basic password per station."""
    pki = Pki.make(tmp_path / "pki")
    cert, key = pki.write_leaf(pki.csms_ca.issue_cert(HOST), "devcsms")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller.cli",
        "dev-csms",
        "--port",
        str(port),
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-ca",
        str(pki.charger_root),
        "--password",
        f"CP-TEST={PASSWORD}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert f"wss://{HOST}:{port}/ocpp" in line.decode()
        url = f"wss://{HOST}:{port}/ocpp/CP-TEST"
        with_cert = client_context(3, FileTlsMaterial(str(pki.csms_root), **pki.client()))
        async with connect(
            url,
            ssl=with_cert,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=basic_auth_header("CP-TEST", PASSWORD),
        ) as ws:
            assert ws.subprotocol == "ocpp1.6"
        without = client_context(2, FileTlsMaterial(str(pki.csms_root)))
        with pytest.raises((InvalidMessage, OSError)):
            async with connect(url, ssl=without, subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
                pass
    finally:
        proc.terminate()
        await proc.wait()
