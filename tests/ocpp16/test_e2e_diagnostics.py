"""End-to-end: GetDiagnostics (OCPP 1.6 5.9, 6.17, 7.24), GetLog and LogStatusNotification
(security whitepaper N01, 5.9/5.10/5.13, 6.19) and their triggers, from the dev CSMS over a
real WebSocket to a real FTP (pyftpdlib) or HTTP (aiohttp) server; the archive is fetched
from the server, extracted and read."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.core.security import SecurityEventKind
from controller.dev.devcsms import DevCsms
from controller.maintenance.upload import UploadOutcome
from controller.ocpp16 import diagnostics as diagnostics16
from controller.ocpp16.routes import ROUTES, TRIGGERS
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.transfer_servers import FTP_READONLY, FTP_READONLY_PASSWORD, ftp_peer, http_peer

PLANT = logging.getLogger("controller.test_e2e_diagnostics")
CSMS_PASSWORD = "csms-Pass-0451-x"
API_TOKEN = "api-token-Q7x9Lm2Np4Rs6Tu8"
AUTH_KEY = "AuthKey-5f5f5f5f5f5f"


@pytest.fixture
async def diag_charger(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Like the ``charger`` fixture, with a CSMS password and an API token configured."""
    apps: list[App] = []

    async def factory(csms: DevCsms, **maintenance: Any) -> Harness:
        data = charger_config(tmp_path, csms.url, password=CSMS_PASSWORD)
        data["api"]["token"] = API_TOKEN
        if maintenance:
            data["maintenance"] = maintenance
        clock = ManualClock()
        app = App(parse(data), clock=clock, boot_id="boot-1")
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        await csms.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: app.port is not None and app.port.connection_state() == "accepted")
        await h.settle(lambda: len(h.frames("StatusNotification")) >= 2)
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


async def req(csms: DevCsms, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, action, payload, timeout_s=5)
    assert frame[0] == 3, f"expected CALLRESULT to {action}, got {frame}"
    result: dict[str, Any] = frame[2]
    return result


def statuses(h: Harness, action: str) -> list[dict[str, Any]]:
    return [f.payload for f in h.frames(action)]


async def wait_statuses(h: Harness, action: str, n: int) -> list[dict[str, Any]]:
    await h.settle(lambda: len(h.frames(action)) >= n)
    return statuses(h, action)


def extract(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


async def trigger_log_status(h: Harness, csms: DevCsms) -> str:
    """ExtendedTriggerMessage LogStatusNotification (whitepaper 5.5), through the CSMS when
    the certificate work's ExtendedTriggerMessage route is there, else its trigger directly."""
    if "ExtendedTriggerMessage" in ROUTES:
        result = await req(
            csms, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"}
        )
        return str(result["status"])
    return TRIGGERS["LogStatusNotification"](h.app.client, None, True)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- GetDiagnostics


async def test_get_diagnostics_uploads_the_window_over_ftp(
    csms: DevCsms, diag_charger: Any, tmp_path: Path
) -> None:
    """5.9 / errata 3.31: GetDiagnostics.conf names the file; DiagnosticsStatusNotification
    Uploading, then Uploaded; the file on the FTP server holds the logs of startTime..stopTime,
    the database summary, the masked config and the connectors' state."""
    h = await diag_charger(csms)
    start = h.clock.utc_now()
    PLANT.warning("planted before the window")
    h.clock.step_wall(start + timedelta(hours=1))
    PLANT.warning("planted inside the window")
    h.clock.step_wall(start + timedelta(hours=2))
    PLANT.warning("planted after the window")
    with ftp_peer(tmp_path / "ftp") as ftp:
        (ftp.home / "diag").mkdir()
        result = await req(
            csms,
            "GetDiagnostics",
            {
                "location": ftp.url(path="/diag/"),
                "startTime": (start + timedelta(minutes=30)).isoformat(),
                "stopTime": (start + timedelta(minutes=90)).isoformat(),
            },
        )
        name = result["fileName"]
        assert name.startswith(f"{STATION_ID}-diagnostics-") and name.endswith(".tar.gz")
        got = await wait_statuses(h, "DiagnosticsStatusNotification", 2)
        assert got == [{"status": "Uploading"}, {"status": "Uploaded"}]
        files = extract((ftp.home / "diag" / name).read_bytes())
    log = files["log.txt"].decode()
    assert "planted inside the window" in log
    assert "planted before" not in log and "planted after" not in log
    config = json.loads(files["config.json"])
    assert set(config["csms"]["password"]) == {"*"}  # masked (by name, then by pattern)
    assert config["station"]["id"] == STATION_ID
    db = json.loads(files["database.json"])
    assert db["queued_messages"] == {"csms": 0}
    state = json.loads(files["state.json"])
    assert "version" in state and state["status"]["connectors"]


async def test_get_diagnostics_retries_on_the_clock_then_upload_failed(
    csms: DevCsms, diag_charger: Any
) -> None:
    """6.25 retries / retryInterval (errata 3.50: retries after the first try) on the
    injected clock; an unreachable host ends in UploadFailed, the station keeps running."""
    h = await diag_charger(csms)
    state = diagnostics16.state_of(h.app.client)
    attempts: list[int] = []
    real = state.upload

    async def counting(*args: Any, **kwargs: Any) -> UploadOutcome:
        attempts.append(1)
        return await real(*args, **kwargs)

    state.upload = counting
    result = await req(
        csms,
        "GetDiagnostics",
        {"location": "ftp://u:p@127.0.0.1:9/diag/", "retries": 2, "retryInterval": 30},
    )
    assert "fileName" in result
    await h.settle(lambda: len(attempts) == 1)
    await asyncio.sleep(0.05)
    assert statuses(h, "DiagnosticsStatusNotification") == [{"status": "Uploading"}]
    await h.advance(30)
    await h.settle(lambda: len(attempts) == 2)
    await h.advance(30)
    got = await wait_statuses(h, "DiagnosticsStatusNotification", 2)
    assert len(attempts) == 3
    assert got == [{"status": "Uploading"}, {"status": "UploadFailed"}]
    assert h.app.client.connection_state() == "accepted"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"location": "sftp://host/dir/"}, id="bad-scheme"),
        pytest.param(
            {
                "location": "ftp://host/dir/",
                "startTime": "2026-01-02T00:00:00Z",
                "stopTime": "2026-01-01T00:00:00Z",
            },
            id="startTime-after-stopTime",
        ),
    ],
)
async def test_get_diagnostics_bad_request_no_file_upload_failed(
    csms: DevCsms, diag_charger: Any, payload: dict[str, Any]
) -> None:
    """6.26: no fileName when there is nothing to upload; one UploadFailed so the CSMS does
    not wait; no crash."""
    h = await diag_charger(csms)
    assert await req(csms, "GetDiagnostics", payload) == {}
    assert await wait_statuses(h, "DiagnosticsStatusNotification", 1) == [
        {"status": "UploadFailed"}
    ]
    assert diagnostics16.state_of(h.app.client).job is None


async def test_trigger_diagnostics_status_idle_and_uploading(
    csms: DevCsms, diag_charger: Any
) -> None:
    """5.17 TriggerMessage DiagnosticsStatusNotification (7.24: Idle only when triggered):
    Idle when nothing is uploaded, Uploading during an upload."""
    h = await diag_charger(csms)
    trig = {"requestedMessage": "DiagnosticsStatusNotification"}
    assert await req(csms, "TriggerMessage", trig) == {"status": "Accepted"}
    assert await wait_statuses(h, "DiagnosticsStatusNotification", 1) == [{"status": "Idle"}]
    async with http_peer() as peer:
        await req(csms, "GetDiagnostics", {"location": f"{peer.base_url}/slow/"})
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        assert await req(csms, "TriggerMessage", trig) == {"status": "Accepted"}
        got = await wait_statuses(h, "DiagnosticsStatusNotification", 3)
        assert got[1:] == [{"status": "Uploading"}, {"status": "Uploading"}]
        peer.release.set()
        got = await wait_statuses(h, "DiagnosticsStatusNotification", 4)
        assert got[3] == {"status": "Uploaded"}


# ----------------------------------------------------------------------------- GetLog (N01)


async def test_get_log_security_log_over_http(csms: DevCsms, diag_charger: Any) -> None:
    """N01.FR.01/02/03/07/08/09: Accepted with the filename, the security log uploaded,
    LogStatusNotification Uploading then Uploaded, each with the requestId."""
    h = await diag_charger(csms)
    assert h.app.security_log is not None
    h.app.security_log.record(SecurityEventKind.INVALID_MESSAGES, "planted security event")
    async with http_peer() as peer:
        result = await req(
            csms,
            "GetLog",
            {
                "logType": "SecurityLog",
                "requestId": 41,
                "log": {"remoteLocation": f"{peer.base_url}/put/"},
            },
        )
        assert result["status"] == "Accepted"
        name = result["filename"]
        assert "-securitylog-" in name
        got = await wait_statuses(h, "LogStatusNotification", 2)
        assert got == [
            {"status": "Uploading", "requestId": 41},
            {"status": "Uploaded", "requestId": 41},
        ]
        files = extract(peer.files[name])
    kinds = [json.loads(line)["kind"] for line in files["security-log.jsonl"].splitlines()]
    assert "StartupOfTheDevice" in kinds and "InvalidMessages" in kinds
    assert set(files) == {"manifest.json", "security-log.jsonl"}


async def test_get_log_read_only_ftp_user_permission_denied(
    csms: DevCsms, diag_charger: Any, tmp_path: Path
) -> None:
    """N01.FR.10 (as precise as possible): a server that refuses the write -> PermissionDenied,
    not retried."""
    h = await diag_charger(csms)
    with ftp_peer(tmp_path / "ftp") as ftp:
        result = await req(
            csms,
            "GetLog",
            {
                "logType": "DiagnosticsLog",
                "requestId": 7,
                "retries": 3,
                "log": {"remoteLocation": ftp.url(FTP_READONLY, FTP_READONLY_PASSWORD)},
            },
        )
        assert result["status"] == "Accepted"
        got = await wait_statuses(h, "LogStatusNotification", 2)
    assert got == [
        {"status": "Uploading", "requestId": 7},
        {"status": "PermissionDenied", "requestId": 7},
    ]


async def test_get_log_failures_are_told_apart(
    csms: DevCsms, diag_charger: Any, tmp_path: Path
) -> None:
    """N01.FR.10 ("as precise as possible"): a refused login -> PermissionDenied; HTTP 400 ->
    BadMessage; a server that takes neither PUT nor POST -> NotSupportedOperation; an
    unreachable host -> UploadFailure."""
    h = await diag_charger(csms)
    with ftp_peer(tmp_path / "ftp") as ftp:
        log = {"remoteLocation": ftp.url(password="wrong-password")}
        await req(csms, "GetLog", {"logType": "DiagnosticsLog", "requestId": 1, "log": log})
        got = await wait_statuses(h, "LogStatusNotification", 2)
    assert got[1] == {"status": "PermissionDenied", "requestId": 1}
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/bad/"}
        await req(csms, "GetLog", {"logType": "DiagnosticsLog", "requestId": 2, "log": log})
        got = await wait_statuses(h, "LogStatusNotification", 4)
        assert got[3] == {"status": "BadMessage", "requestId": 2}
        log = {"remoteLocation": f"{peer.base_url}/nowrite/"}
        await req(csms, "GetLog", {"logType": "DiagnosticsLog", "requestId": 3, "log": log})
        got = await wait_statuses(h, "LogStatusNotification", 6)
    assert got[5] == {"status": "NotSupportedOperation", "requestId": 3}
    log = {"remoteLocation": "http://127.0.0.1:9/x/"}
    await req(
        csms, "GetLog", {"logType": "DiagnosticsLog", "requestId": 4, "retries": 0, "log": log}
    )
    got = await wait_statuses(h, "LogStatusNotification", 8)
    assert got[6:] == [
        {"status": "Uploading", "requestId": 4},
        {"status": "UploadFailure", "requestId": 4},
    ]


@pytest.mark.parametrize(
    "log",
    [
        pytest.param({"remoteLocation": "gopher://host/x/"}, id="bad-scheme"),
        pytest.param({"remoteLocation": "not a url"}, id="not-a-url"),
        pytest.param(
            {
                "remoteLocation": "ftp://host/x/",
                "oldestTimestamp": "2026-01-02T00:00:00Z",
                "latestTimestamp": "2026-01-01T00:00:00Z",
            },
            id="oldest-after-latest",
        ),
    ],
)
async def test_get_log_bad_request_rejected(
    csms: DevCsms, diag_charger: Any, log: dict[str, Any]
) -> None:
    h = await diag_charger(csms)
    result = await req(csms, "GetLog", {"logType": "SecurityLog", "requestId": 3, "log": log})
    assert result == {"status": "Rejected"}
    await h.advance(1)
    assert h.frames("LogStatusNotification") == []


async def test_second_get_log_cancels_the_running_upload(csms: DevCsms, diag_charger: Any) -> None:
    """N01.FR.11: a GetLog during an upload cancels it and is answered AcceptedCanceled; the
    new upload runs to Uploaded with its own requestId (N01.FR.07)."""
    h = await diag_charger(csms)
    async with http_peer() as peer:
        slow = {"remoteLocation": f"{peer.base_url}/slow/"}
        first = await req(csms, "GetLog", {"logType": "SecurityLog", "requestId": 1, "log": slow})
        assert first["status"] == "Accepted"
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        fast = {"remoteLocation": f"{peer.base_url}/put/"}
        second = await req(csms, "GetLog", {"logType": "SecurityLog", "requestId": 2, "log": fast})
        assert second["status"] == "AcceptedCanceled"
        got = await wait_statuses(h, "LogStatusNotification", 3)
        assert got == [
            {"status": "Uploading", "requestId": 1},
            {"status": "Uploading", "requestId": 2},
            {"status": "Uploaded", "requestId": 2},
        ]
        assert second["filename"] in peer.files


async def test_extended_trigger_log_status_idle_then_uploading(
    csms: DevCsms, diag_charger: Any
) -> None:
    """N01.FR.12: triggered with no upload running -> Idle without requestId; during an
    upload -> Uploading with the GetLog's requestId."""
    h = await diag_charger(csms)
    assert await trigger_log_status(h, csms) == "Accepted"
    assert await wait_statuses(h, "LogStatusNotification", 1) == [{"status": "Idle"}]
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/slow/"}
        await req(csms, "GetLog", {"logType": "DiagnosticsLog", "requestId": 9, "log": log})
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        assert await trigger_log_status(h, csms) == "Accepted"
        got = await wait_statuses(h, "LogStatusNotification", 3)
        assert got[2] == {"status": "Uploading", "requestId": 9}
        peer.release.set()
        got = await wait_statuses(h, "LogStatusNotification", 4)
        assert got[3] == {"status": "Uploaded", "requestId": 9}


async def test_final_status_waits_for_the_csms_after_an_outage(
    csms: DevCsms, diag_charger: Any
) -> None:
    """The CSMS connection drops during the upload: the upload goes on (it does not need
    the CSMS), and Uploaded is delivered, with its requestId, once the charger is back."""
    h = await diag_charger(csms)
    state = diagnostics16.state_of(h.app.client)
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/slow/"}
        await req(csms, "GetLog", {"logType": "SecurityLog", "requestId": 12, "log": log})
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        await wait_statuses(h, "LogStatusNotification", 1)
        await h.settle(lambda: not state.pending)  # Uploading confirmed by the CSMS
        await csms.disconnect(STATION_ID)
        await h.settle(lambda: h.app.client.connection_state() != "accepted")
        peer.release.set()
        await h.settle(lambda: state.job is None)  # uploaded while offline
        assert state.finished[-1][1] == "Uploaded"
        assert statuses(h, "LogStatusNotification") == [{"status": "Uploading", "requestId": 12}]
        await h.advance(2)  # the reconnect back-off runs on the charger's clock
        got = await wait_statuses(h, "LogStatusNotification", 2)
    assert got[1] == {"status": "Uploaded", "requestId": 12}


# ----------------------------------------------------------------------------- no secrets


async def test_no_secret_in_uploaded_archives(
    csms: DevCsms, diag_charger: Any, tmp_path: Path
) -> None:
    """The CSMS password, a CSMS-set AuthorizationKey, the API token, a private key and URL
    credentials planted in the logs, the settings and the security log: none of them is in
    the uploaded archives (both kinds), searched in the extracted bytes."""
    h = await diag_charger(csms)
    change = {"key": "AuthorizationKey", "value": AUTH_KEY}
    assert await req(csms, "ChangeConfiguration", change) == {"status": "Accepted"}
    # A01: the charger reconnects with the new key; the uploads below run on that connection.
    await h.settle(
        lambda: h.app.client.connects == 2 and h.app.client.connection_state() == "accepted"
    )
    ftp_password = "ftp-pass-7q2w"  # the FTP server's, in the location URL
    PLANT.warning("password=%s token %s key %s", CSMS_PASSWORD, API_TOKEN, AUTH_KEY)
    PLANT.warning(
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPlantedKeyBody\n-----END EC PRIVATE KEY-----"
    )
    PLANT.warning("see ftp://someone:UrlSecret-99@example.org/x")
    assert h.app.security_log is not None
    h.app.security_log.record(SecurityEventKind.INVALID_MESSAGES, f"bad {AUTH_KEY}")
    secrets = [CSMS_PASSWORD, API_TOKEN, AUTH_KEY, "PlantedKeyBody", "UrlSecret-99", ftp_password]
    with ftp_peer(tmp_path / "ftp") as ftp:
        diag = await req(csms, "GetDiagnostics", {"location": ftp.url()})
        await wait_statuses(h, "DiagnosticsStatusNotification", 2)
        log = {"remoteLocation": ftp.url()}
        sec = await req(csms, "GetLog", {"logType": "SecurityLog", "requestId": 5, "log": log})
        await wait_statuses(h, "LogStatusNotification", 2)
        blobs = {
            name: b"".join(extract((ftp.home / name).read_bytes()).values())
            for name in (diag["fileName"], sec["filename"])
        }
    assert statuses(h, "DiagnosticsStatusNotification")[-1] == {"status": "Uploaded"}
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret} is in {name}"
    assert b"AuthorizationKey" in blobs[diag["fileName"]]  # the setting is listed, masked
