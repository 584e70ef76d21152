"""OCPP 2.0.1 GetLog (N01) over a real WebSocket with the dev CSMS: the diagnostics and the
security log uploaded to real local HTTP and FTP servers, LogStatusNotification with the
requestId, retries on the injected clock, cancel by a second request, TriggerMessage."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.core.security import SecurityEventKind
from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.maintenance.transfers import UploadOutcome
from controller.ocpp201 import logs as logs201
from controller.ocpp201.client import Ocpp201Client
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.transfer_servers import FTP_READONLY, FTP_READONLY_PASSWORD, ftp_peer, http_peer

PLANT = logging.getLogger("controller.test_e2e_getlog_201")
CSMS_PASSWORD = "csms-Pass-0451-y"
API_TOKEN = "api-token-R8y0Mn3Oq5St7Uv9"
BASIC_AUTH = "BasicAuth-2f2f2f2f2f2f2f"


@pytest.fixture
async def log_charger(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """A 2.0.1 charger with a CSMS password and an API token, its boot accepted."""
    apps: list[App] = []

    async def factory(csms: DevCsms) -> Harness:
        data = charger_config(tmp_path, csms.url, password=CSMS_PASSWORD, ocpp_version="2.0.1")
        data["api"]["token"] = API_TOKEN
        clock = ManualClock()
        app = App(parse(data), clock=clock, boot_id="boot-1")
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        await csms.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: client(h).connection_state() == "accepted")
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


def client(h: Harness) -> Ocpp201Client:
    adapter = h.app.adapter
    assert isinstance(adapter, Ocpp201Client)
    return adapter


async def get_log(csms: DevCsms, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, "GetLog", payload, timeout_s=5)
    assert frame[0] == 3, f"expected a CALLRESULT, got {frame}"
    result: dict[str, Any] = frame[2]
    return result


def statuses(h: Harness) -> list[dict[str, Any]]:
    return [f.payload for f in h.frames("LogStatusNotification")]


async def wait_statuses(h: Harness, n: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    await h.settle(lambda: len(h.frames("LogStatusNotification")) >= n, timeout_s)
    return statuses(h)


def extract(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


async def trigger(csms: DevCsms) -> dict[str, Any]:
    frame = await csms.call_raw(
        STATION_ID, "TriggerMessage", {"requestedMessage": "LogStatusNotification"}
    )
    result: dict[str, Any] = frame[2]
    return result


async def test_diagnostics_log_over_ftp(csms: DevCsms, log_charger: Any, tmp_path: Path) -> None:
    """TC_N_25_CS (N01.FR.01/02/04/07/08/09/13): DiagnosticsLog with a time window: Accepted
    with the filename; the archive (log lines of the window, configuration, state, database
    summary) is on the FTP server; Uploading then Uploaded, each with the requestId."""
    h = await log_charger(csms)
    PLANT.warning("a line inside the window")
    window = {
        "oldestTimestamp": iso_utc(h.clock.utc_now() - timedelta(hours=1)),
        "latestTimestamp": iso_utc(h.clock.utc_now() + timedelta(hours=1)),
    }
    with ftp_peer(tmp_path / "ftp") as ftp:
        log = {"remoteLocation": ftp.url(), **window}
        result = await get_log(csms, {"logType": "DiagnosticsLog", "requestId": 25, "log": log})
        assert result["status"] == "Accepted"
        name = result["filename"]
        assert "-diagnostics-" in name
        got = await wait_statuses(h, 2)
        files = extract(read_bytes(ftp.home / name))
    assert got == [
        {"status": "Uploading", "requestId": 25},
        {"status": "Uploaded", "requestId": 25},
    ]
    assert {"manifest.json", "log.txt", "config.json", "state.json", "database.json"} <= set(files)
    assert b"a line inside the window" in files["log.txt"]
    manifest = json.loads(files["manifest.json"])
    assert manifest["window"]["oldest"] == window["oldestTimestamp"]
    database = json.loads(files["database.json"])
    assert list(database["queued_messages"]) == ["ocpp2.0.1"]


async def test_security_log_over_http(csms: DevCsms, log_charger: Any) -> None:
    """TC_N_35_CS (N01.FR.01/02/03/07/08/09): SecurityLog: the security log's events as JSON
    lines over HTTP PUT; Uploading then Uploaded with the requestId."""
    h = await log_charger(csms)
    assert h.app.security_log is not None
    h.app.security_log.record(SecurityEventKind.INVALID_MESSAGES, "planted security event")
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/put/"}
        result = await get_log(csms, {"logType": "SecurityLog", "requestId": 35, "log": log})
        assert result["status"] == "Accepted" and "-securitylog-" in result["filename"]
        got = await wait_statuses(h, 2)
        files = extract(peer.files[result["filename"]])
    assert got == [
        {"status": "Uploading", "requestId": 35},
        {"status": "Uploaded", "requestId": 35},
    ]
    kinds = [json.loads(line)["kind"] for line in files["security-log.jsonl"].splitlines()]
    assert "InvalidMessages" in kinds
    assert set(files) == {"manifest.json", "security-log.jsonl"}


async def test_upload_failure_after_the_retries(csms: DevCsms, log_charger: Any) -> None:
    """TC_N_26_CS (N01.FR.10): retries 2, retryInterval 30: three attempts 30 s apart on the
    injected clock, then UploadFailure with the requestId."""
    h = await log_charger(csms)
    logs = logs201.logs_of(client(h))
    attempts: list[bool] = []
    failed: list[UploadOutcome] = []  # attempts over: the retry waits on the clock from now
    real = logs.upload

    async def counting(*args: Any, **kwargs: Any) -> UploadOutcome:
        attempts.append(bool(kwargs.get("resume")))
        outcome = await real(*args, **kwargs)
        failed.append(outcome)
        return outcome

    logs.upload = counting
    log = {"remoteLocation": "http://127.0.0.1:9/x/"}
    payload = {
        "logType": "DiagnosticsLog",
        "requestId": 26,
        "retries": 2,
        "retryInterval": 30,
        "log": log,
    }
    assert (await get_log(csms, payload))["status"] == "Accepted"
    # Advance only once an attempt is over (and a moment for its retry timer to be set):
    # advancing while it still runs would pass the retry's start time before it waits.
    await h.settle(lambda: len(failed) == 1)
    await asyncio.sleep(0.05)
    await h.advance(30)
    await h.settle(lambda: len(failed) == 2)
    await asyncio.sleep(0.05)
    await h.advance(30)
    got = await wait_statuses(h, 2)
    assert attempts == [False, True, True]
    assert got == [
        {"status": "Uploading", "requestId": 26},
        {"status": "UploadFailure", "requestId": 26},
    ]


async def test_failures_are_told_apart(csms: DevCsms, log_charger: Any, tmp_path: Path) -> None:
    """N01.FR.10: a read-only FTP user -> PermissionDenied (not retried); HTTP 400 ->
    BadMessage; a server that takes neither PUT nor POST -> NotSupportedOperation."""
    h = await log_charger(csms)
    with ftp_peer(tmp_path / "ftp") as ftp:
        location = ftp.url(FTP_READONLY, FTP_READONLY_PASSWORD)
        payload = {
            "logType": "DiagnosticsLog",
            "requestId": 1,
            "retries": 3,
            "log": {"remoteLocation": location},
        }
        await get_log(csms, payload)
        got = await wait_statuses(h, 2)
    assert got[1] == {"status": "PermissionDenied", "requestId": 1}
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/bad/"}
        await get_log(csms, {"logType": "SecurityLog", "requestId": 2, "log": log})
        got = await wait_statuses(h, 4)
        assert got[3] == {"status": "BadMessage", "requestId": 2}
        log = {"remoteLocation": f"{peer.base_url}/nowrite/"}
        await get_log(csms, {"logType": "SecurityLog", "requestId": 3, "log": log})
        got = await wait_statuses(h, 6)
    assert got[5] == {"status": "NotSupportedOperation", "requestId": 3}


async def test_second_request_cancels_the_running_upload(csms: DevCsms, log_charger: Any) -> None:
    """TC_N_36_CS (N01.FR.12, N01.FR.20): a GetLog during an upload cancels it: answered
    AcceptedCanceled, LogStatusNotification AcceptedCanceled (for the canceled upload's
    requestId), then the new upload runs to Uploaded with its own requestId."""
    h = await log_charger(csms)
    async with http_peer() as peer:
        slow = {"remoteLocation": f"{peer.base_url}/slow/"}
        first = await get_log(csms, {"logType": "SecurityLog", "requestId": 1, "log": slow})
        assert first["status"] == "Accepted"
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        fast = {"remoteLocation": f"{peer.base_url}/put/"}
        second = await get_log(csms, {"logType": "SecurityLog", "requestId": 2, "log": fast})
        assert second["status"] == "AcceptedCanceled"
        got = await wait_statuses(h, 4)
        assert second["filename"] in peer.files
    assert got == [
        {"status": "Uploading", "requestId": 1},
        {"status": "AcceptedCanceled", "requestId": 1},
        {"status": "Uploading", "requestId": 2},
        {"status": "Uploaded", "requestId": 2},
    ]


async def test_trigger_idle_then_uploading(csms: DevCsms, log_charger: Any) -> None:
    """TC_F_15_CS / N01.FR.13 (F06.FR.15): triggered with no upload running -> Idle without a
    requestId; during an upload -> Uploading with the GetLog's requestId."""
    h = await log_charger(csms)
    assert await trigger(csms) == {"status": "Accepted"}
    assert await wait_statuses(h, 1) == [{"status": "Idle"}]
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/slow/"}
        await get_log(csms, {"logType": "DiagnosticsLog", "requestId": 9, "log": log})
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        assert await trigger(csms) == {"status": "Accepted"}
        got = await wait_statuses(h, 3)
        assert got[1:] == [
            {"status": "Uploading", "requestId": 9},
            {"status": "Uploading", "requestId": 9},
        ]
        peer.release.set()
        got = await wait_statuses(h, 4)
    assert got[3] == {"status": "Uploaded", "requestId": 9}


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        pytest.param({"remoteLocation": "gopher://host/x/"}, "InvalidURL", id="bad-scheme"),
        pytest.param({"remoteLocation": "not a url"}, "InvalidURL", id="not-a-url"),
        pytest.param(
            {
                "remoteLocation": "ftp://host/x/",
                "oldestTimestamp": "2026-01-02T00:00:00Z",
                "latestTimestamp": "2026-01-01T00:00:00Z",
            },
            "InvalidValue",
            id="oldest-after-latest",
        ),
    ],
)
async def test_bad_request_rejected(
    csms: DevCsms, log_charger: Any, log: dict[str, Any], reason: str
) -> None:
    """N01.FR.05: a log that cannot be given is Rejected with a reason code; nothing is
    uploaded, no LogStatusNotification."""
    h = await log_charger(csms)
    result = await get_log(csms, {"logType": "SecurityLog", "requestId": 3, "log": log})
    assert result["status"] == "Rejected"
    assert result["statusInfo"]["reasonCode"] == reason
    await h.advance(1)
    assert h.frames("LogStatusNotification") == []


async def test_final_status_waits_for_the_csms_after_an_outage(
    csms: DevCsms, log_charger: Any
) -> None:
    """The CSMS connection drops during the upload: the upload goes on, and Uploaded is
    delivered with its requestId once the charger is back."""
    h = await log_charger(csms)
    logs = logs201.logs_of(client(h))
    async with http_peer() as peer:
        log = {"remoteLocation": f"{peer.base_url}/slow/"}
        await get_log(csms, {"logType": "SecurityLog", "requestId": 12, "log": log})
        await asyncio.wait_for(peer.slow_started.wait(), 5)
        await wait_statuses(h, 1)
        await h.settle(lambda: not logs.notifications.pending)  # Uploading confirmed
        await csms.disconnect(STATION_ID)
        await h.settle(lambda: client(h).connection_state() != "accepted")
        peer.release.set()
        await h.settle(lambda: logs.job is None)  # uploaded while offline
        assert logs.finished[-1][1] == "Uploaded"
        assert statuses(h) == [{"status": "Uploading", "requestId": 12}]
        await h.advance(2)  # the reconnect back-off runs on the charger's clock
        got = await wait_statuses(h, 2)
    assert got[1] == {"status": "Uploaded", "requestId": 12}


async def test_no_secret_in_uploaded_archives(
    csms: DevCsms, log_charger: Any, tmp_path: Path
) -> None:
    """The CSMS password, the BasicAuthPassword the CSMS set (A01), the API token, a private
    key and URL credentials planted in the logs and the security log: none of them is in
    the uploaded archives (both kinds), searched in the extracted bytes."""
    h = await log_charger(csms)
    password = {
        "component": {"name": "SecurityCtrlr"},
        "variable": {"name": "BasicAuthPassword"},
        "attributeValue": BASIC_AUTH,
    }
    answer = await csms.call_raw(STATION_ID, "SetVariables", {"setVariableData": [password]})
    assert answer[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
    await h.settle(lambda: client(h).connects >= 2 and client(h).connection_state() == "accepted")
    PLANT.warning("password=%s token %s key %s", CSMS_PASSWORD, API_TOKEN, BASIC_AUTH)
    PLANT.warning(
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPlantedKeyBody\n-----END EC PRIVATE KEY-----"
    )
    PLANT.warning("see ftp://someone:UrlSecret-99@example.org/x")
    assert h.app.security_log is not None
    h.app.security_log.record(SecurityEventKind.INVALID_MESSAGES, f"bad {BASIC_AUTH}")
    secrets = [CSMS_PASSWORD, API_TOKEN, BASIC_AUTH, "PlantedKeyBody", "UrlSecret-99"]
    with ftp_peer(tmp_path / "ftp") as ftp:
        names = []
        for request_id, kind in ((1, "DiagnosticsLog"), (2, "SecurityLog")):
            log = {"remoteLocation": ftp.url()}
            result = await get_log(csms, {"logType": kind, "requestId": request_id, "log": log})
            names.append(result["filename"])
            await wait_statuses(h, 2 * request_id)
        blobs = {name: b"".join(extract(read_bytes(ftp.home / name)).values()) for name in names}
    assert statuses(h)[-1] == {"status": "Uploaded", "requestId": 2}
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret} is in {name}"


def test_status_words_cover_every_neutral_outcome() -> None:
    """Every neutral upload result and firmware state has its 2.0.1 word (the adapters key
    them by value, so their code needs the neutral modules only when used)."""
    from controller.maintenance.firmware import FirmwareState, SubmitResult
    from controller.maintenance.transfers import UploadResult
    from controller.ocpp201 import firmware as firmware201

    assert set(logs201.FINAL) == {r.value for r in UploadResult}
    assert set(firmware201.STATUS) == {s.value for s in FirmwareState}
    assert set(firmware201.SUBMIT_STATUS) == {r.name for r in SubmitResult}


def test_the_201_client_loads_no_archive_nor_firmware_code_at_start() -> None:
    """The archive, upload and firmware modules load with the first request (as for 1.6,
    tests/ops/test_start_imports.py): importing the 2.0.1 client and its routes does not."""
    script = (
        "import sys, controller.ocpp201.client\n"
        "print(' '.join(m for m in sys.modules if m.startswith('controller.maintenance.')"
        " or m in ('aioftp', 'tarfile')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["controller.maintenance.urls"]
