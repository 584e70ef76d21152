"""[csms] tls_url, the failure classification and the log masking of the keys on probation."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from controller.config import ConfigError, parse
from controller.core.security import SecurityEventKind
from controller.csms.connection import ConnectionOptions, CsmsConnection
from controller.csms.secprofile import ConnectionSecurity
from controller.ocpp16.settings import Settings, core_keys
from controller.ops.logsetup import MASK, SecretFilter
from controller.runtime.clock import ManualClock
from controller.security.tls import (
    ClosedAfterHandshake,
    HandshakeRefused,
    PlainTextRefused,
    classify,
)
from controller.storage.store import open_store
from tests.conftest import charger_config


def test_tls_url_must_be_wss(tmp_path: Path) -> None:
    """A00.FR.311: the URL used for profiles 2/3 is TLS only; A00.FR.006: it may be another
    port than the ws:// one."""
    data = charger_config(tmp_path, "ws://127.0.0.1:9000/ocpp", tls_url="ws://127.0.0.1:9001/x")
    with pytest.raises(ConfigError, match="csms.tls_url"):
        parse(data)
    data["csms"]["tls_url"] = "wss://csms.example.com:9443/ocpp"
    config = parse(data)
    assert config.csms is not None and config.csms.tls_url == "wss://csms.example.com:9443/ocpp"


@pytest.mark.parametrize(
    ("exc", "kind", "refused"),
    [
        (HandshakeRefused(401), SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS, True),
        (HandshakeRefused(403), SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS, True),
        (HandshakeRefused(404), None, False),
        (ClosedAfterHandshake(), SecurityEventKind.FAILED_TO_AUTHENTICATE_AT_CSMS, False),
        (PlainTextRefused("ws://"), SecurityEventKind.INVALID_TLS_VERSION, False),
        (ConnectionRefusedError(111, "refused"), None, False),
    ],
)
def test_classify(exc: BaseException, kind: SecurityEventKind | None, refused: bool) -> None:
    failure = classify(exc)
    assert failure.kind is kind
    assert failure.credentials_refused is refused


def test_ssl_error_found_behind_a_wrapper() -> None:
    """A library may wrap the SSLError (``raise ... from exc``): the cause decides."""
    inner = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version")
    inner.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    outer = RuntimeError("handshake failed")
    outer.__cause__ = inner
    assert classify(outer).kind is SecurityEventKind.INVALID_TLS_VERSION


def test_previous_key_is_masked_in_logs(tmp_path: Path) -> None:
    """A01.FR.12: while the CSMS's new AuthorizationKey is unconfirmed, the previous one is
    kept; the CLI registers ``security.previous_key`` with the log filter, so both keys are
    masked wherever they appear."""
    store = open_store(str(tmp_path / "evsed.db"))
    settings = Settings(store, core_keys(1))
    security = ConnectionSecurity(
        station_id="CP-TEST",
        options=ConnectionOptions(csms_url="ws://127.0.0.1:9000/ocpp"),
        settings=settings,
        store=store,
        clock=ManualClock(),
    )
    first, second = "first-key-0123456789", "second-key-0123456789"
    assert settings.change("AuthorizationKey", first) == "Accepted"
    security.connected()  # the CSMS accepted the first key: no previous one kept
    assert security.previous_key() is None
    assert settings.change("AuthorizationKey", second) == "Accepted"
    assert security.previous_key() == first
    secrets = SecretFilter()
    secrets.add_source(lambda: settings.get("AuthorizationKey"))
    secrets.add_source(security.previous_key)
    assert secrets.mask(f"keys {first} {second}") == f"keys {MASK} {MASK}"
    assert settings.change("AuthorizationKey", "short") == "Rejected"  # A00.FR.205
    store.close()


async def test_tls_context_with_ws_url_never_sends(tmp_path: Path) -> None:
    """A00.FR.311: a TLS context with a ws:// URL is refused before any byte is sent (no TCP
    connection even: the port here has a listener that would notice), logged as an error
    and reported as PlainTextRefused (InvalidTLSVersion)."""
    accepted: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    failures: list[BaseException] = []
    link = CsmsConnection(
        url=f"ws://127.0.0.1:{port}/ocpp/CP-TEST",
        subprotocol="ocpp1.6",
        options=ConnectionOptions(csms_url=f"ws://127.0.0.1:{port}/ocpp"),
        clock=ManualClock(),
        session=lambda ws: asyncio.sleep(0),
        ssl_context=lambda: ssl.create_default_context(),
        on_failure=failures.append,
    )
    task = asyncio.create_task(link.run())
    try:
        for _ in range(100):
            if failures:
                break
            await asyncio.sleep(0.01)
        assert failures and isinstance(failures[0], PlainTextRefused)
        assert classify(failures[0]).kind is SecurityEventKind.INVALID_TLS_VERSION
        assert accepted == []
    finally:
        await link.close("test over")
        task.cancel()
        server.close()
        await server.wait_closed()
