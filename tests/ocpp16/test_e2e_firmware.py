"""End-to-end: firmware updates over a real WebSocket with the dev CSMS, files from local
aiohttp and pyftpdlib servers, signatures from a test manufacturer CA, the operator's
installer as a small script and the wheel installer into a temporary venv root. The charger
runs in-process on a manual clock (retries, install times and the trial deadline)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.maintenance.firmware import JOB_KEY
from controller.maintenance.installer import Installer, OperatorInstaller, WheelInstaller
from controller.ocpp16.routes import TRIGGERS
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.maintenance.pki import Roots, Signer, manufacturer_ca, signing_cert
from tests.maintenance.servers import FileServer, ftp_server
from tests.maintenance.wheels import make_wheel
from tests.ocpp16.test_e2e_csms_requests import req, start_session

FIRMWARE = b"\x00evsed firmware image\xff" * 5000


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with FileServer({"fw.bin": FIRMWARE}).running() as srv:
        yield srv


@pytest.fixture
def ca() -> Signer:
    return manufacturer_ca()


@pytest.fixture
def installer_log(tmp_path: Path) -> Path:
    return tmp_path / "installed.txt"


@pytest.fixture
def operator(tmp_path: Path, installer_log: Path) -> OperatorInstaller:
    """The operator's installer: copies the file's size into a log, exit 0."""
    script = tmp_path / "flash.py"
    script.write_text(
        "import os, sys\n"
        f"open({str(installer_log)!r}, 'a').write(str(os.path.getsize(sys.argv[1])) + '\\n')\n"
    )
    return OperatorInstaller([sys.executable, str(script), "{file}"])


@pytest.fixture
async def fw_charger(tmp_path: Path) -> AsyncIterator[Any]:
    apps: list[App] = []

    async def factory(
        csms: DevCsms,
        installer: Installer,
        *,
        trust: Any = None,
        connectors: int = 1,
        wait: bool = True,
        url: str | None = None,
    ) -> Harness:
        clock = ManualClock()
        config = parse(charger_config(tmp_path, url or csms.url, connectors=connectors))
        app = App(config, clock=clock, boot_id="boot-1", installer=installer, firmware_trust=trust)
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        if wait:
            await h.settle(
                lambda: app.client is not None and app.client.connection_state() == "accepted"
            )
            await h.settle(lambda: len(h.frames("StatusNotification")) >= 1 + connectors)
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


def installs(log: Path) -> list[str]:
    """What the operator's installer was given (file sizes), one line per run."""
    return log.read_text().split() if log.exists() else []


def files_in(directory: str) -> list[str]:
    return [p.name for p in Path(directory).iterdir()]


def now(h: Harness, seconds: float = 0) -> str:
    return iso_utc(h.clock.utc_now() + timedelta(seconds=seconds))


def fw_statuses(h: Harness, action: str = "FirmwareStatusNotification") -> list[str]:
    return [f.payload["status"] for f in h.frames(action)]


def signed_statuses(h: Harness) -> list[tuple[str, int | None]]:
    return [
        (f.payload["status"], f.payload.get("requestId"))
        for f in h.frames("SignedFirmwareStatusNotification")
    ]


def security_events(h: Harness) -> list[str]:
    return [f.payload["type"] for f in h.frames("SecurityEventNotification")]


async def until(h: Harness, action: str, status: str, timeout_s: float = 10) -> None:
    await h.settle(lambda: status in [f.payload["status"] for f in h.frames(action)], timeout_s)


def signed_request(
    location: str, h: Harness, signer: Signer, signature: str, request_id: int = 7, **fw: Any
) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "retries": 0,
        "firmware": {
            "location": location,
            "retrieveDateTime": fw.pop("retrieve", now(h)),
            "signingCertificate": signer.pem,
            "signature": signature,
            **fw,
        },
    }


# ----------------------------------------------------------------------------- OCPP 1.6


async def test_update_firmware_http_to_installed(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    installer_log: Path,
) -> None:
    """1.6 5.19/4.5 and errata 3.47: Downloading, Downloaded, Installing, Installed; the
    operator's installer got the downloaded file; FirmwareUpdated is a security event."""
    h = await fw_charger(csms, operator)
    assert (
        await req(
            csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h)}
        )
        == {}
    )
    await until(h, "FirmwareStatusNotification", "Installed")
    assert fw_statuses(h) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert installs(installer_log) == [str(len(FIRMWARE))]
    await h.settle(lambda: "FirmwareUpdated" in security_events(h))
    # TriggerMessage: not busy any more, so Idle (1.6 4.5).
    assert (await req(csms, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}))[
        "status"
    ] == "Accepted"
    await h.settle(lambda: fw_statuses(h)[-1:] == ["Idle"])
    # Nothing is left of the download.
    assert files_in(h.app.config.maintenance.firmware_dir) == []


async def test_update_firmware_retries_then_download_failed(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    installer_log: Path,
) -> None:
    """retries and retryInterval (5.19): three attempts 30 s apart on the injected clock,
    then DownloadFailed; the installer never runs."""
    h = await fw_charger(csms, operator)
    await req(
        csms,
        "UpdateFirmware",
        {
            "location": files.url("/f/missing.bin"),
            "retrieveDate": now(h),
            "retries": 2,
            "retryInterval": 30,
        },
    )
    await h.settle(lambda: len(files.hits) == 1)
    await h.advance(30)
    await h.settle(lambda: len(files.hits) == 2)
    await h.advance(30)
    await until(h, "FirmwareStatusNotification", "DownloadFailed")
    assert len(files.hits) == 3
    assert fw_statuses(h) == ["Downloading", "Downloading", "Downloading", "DownloadFailed"]
    assert installs(installer_log) == []


async def test_retrieve_date_in_the_future_waits_on_the_clock(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller
) -> None:
    """Errata 3.63: retrieveDate is when the download is allowed to start (a timer)."""
    h = await fw_charger(csms, operator)
    await req(
        csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h, 3600)}
    )
    await h.advance(3590, step_s=600)
    assert files.hits == [] and fw_statuses(h) == []
    await h.advance(20, step_s=10)
    await until(h, "FirmwareStatusNotification", "Installed")


async def test_ftp_good_and_login_refused(
    csms: DevCsms, fw_charger: Any, operator: OperatorInstaller, tmp_path: Path, installer_log: Path
) -> None:
    served = tmp_path / "ftp"
    served.mkdir()
    (served / "fw.bin").write_bytes(FIRMWARE)
    h = await fw_charger(csms, operator)
    with ftp_server(served) as port:
        await req(
            csms,
            "UpdateFirmware",
            {"location": f"ftp://fw:wrong@127.0.0.1:{port}/fw.bin", "retrieveDate": now(h)},
        )
        await until(h, "FirmwareStatusNotification", "DownloadFailed")
        await req(
            csms,
            "UpdateFirmware",
            {"location": f"ftp://fw:secret@127.0.0.1:{port}/fw.bin", "retrieveDate": now(h)},
        )
        await until(h, "FirmwareStatusNotification", "Installed")
    assert installs(installer_log) == [str(len(FIRMWARE))]


async def test_operator_installer_failure(
    csms: DevCsms, fw_charger: Any, files: FileServer, tmp_path: Path
) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(1)\n")
    h = await fw_charger(csms, OperatorInstaller([sys.executable, str(script), "{file}"]))
    await req(csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h)})
    await until(h, "FirmwareStatusNotification", "InstallationFailed")
    assert fw_statuses(h) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert "FirmwareUpdated" not in security_events(h)


# ----------------------------------------------------------------------------- signed (L01)


async def test_signed_update_statuses_carry_the_request_id(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """L01.FR.01/10/04: every SignedFirmwareStatusNotification has the requestId;
    SignatureVerified after Downloaded; L01.FR.28: a trigger after Installed says Idle."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    result = await req(
        csms,
        "SignedUpdateFirmware",
        signed_request(files.url("/f/fw.bin"), h, signer, signer.sign(FIRMWARE)),
    )
    assert result == {"status": "Accepted"}
    await until(h, "SignedFirmwareStatusNotification", "Installed")
    assert signed_statuses(h) == [
        ("Downloading", 7),
        ("Downloaded", 7),
        ("SignatureVerified", 7),
        ("Installing", 7),
        ("Installed", 7),
    ]
    assert fw_statuses(h) == []  # the 1.6 message is not used for a signed update
    assert h.app.client is not None
    assert TRIGGERS["FirmwareStatusNotification"](h.app.client, None, True) == "Accepted"
    await h.settle(lambda: signed_statuses(h)[-1] == ("Idle", None))
    await h.settle(lambda: "FirmwareUpdated" in security_events(h))


async def test_wrong_signature_is_invalid_signature(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """L01.FR.03: InvalidSignature and the InvalidFirmwareSignature security event; nothing
    is installed."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    wrong = signer.sign(FIRMWARE + b"tampered")
    await req(
        csms, "SignedUpdateFirmware", signed_request(files.url("/f/fw.bin"), h, signer, wrong)
    )
    await until(h, "SignedFirmwareStatusNotification", "InvalidSignature")
    assert [s for s, _ in signed_statuses(h)] == ["Downloading", "Downloaded", "InvalidSignature"]
    await h.settle(lambda: "InvalidFirmwareSignature" in security_events(h))
    assert installs(installer_log) == []


async def test_certificate_of_another_manufacturer_is_refused(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """L01.FR.23/24 and L01.FR.02: InvalidCertificate before anything is downloaded, and the
    InvalidFirmwareSigningCertificate event."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    stranger = signing_cert(manufacturer_ca("Someone Else"))
    result = await req(
        csms,
        "SignedUpdateFirmware",
        signed_request(files.url("/f/fw.bin"), h, stranger, stranger.sign(FIRMWARE)),
    )
    assert result == {"status": "InvalidCertificate"}
    await h.settle(lambda: "InvalidFirmwareSigningCertificate" in security_events(h))
    assert files.hits == [] and signed_statuses(h) == []


async def test_unsigned_update_refused_once_a_manufacturer_root_is_installed(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """L01.FR.20: UpdateFirmware answers CALLERROR NotSupported and starts nothing."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    frame = await csms.call_raw(
        STATION_ID,
        "UpdateFirmware",
        {"location": files.url("/f/fw.bin"), "retrieveDate": now(h)},
        timeout_s=5,
    )
    assert frame[0] == 4 and frame[2] == "NotSupported"
    assert files.hits == []


async def test_new_request_cancels_a_scheduled_one(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """L01.FR.13 DownloadScheduled; L01.FR.26: a new request cancels it (AcceptedCanceled) and
    runs with its own requestId."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    first = signed_request(
        files.url("/f/fw.bin"), h, signer, signer.sign(FIRMWARE), 1, retrieve=now(h, 7200)
    )
    assert (await req(csms, "SignedUpdateFirmware", first))["status"] == "Accepted"
    await until(h, "SignedFirmwareStatusNotification", "DownloadScheduled")
    second = signed_request(files.url("/f/fw.bin"), h, signer, signer.sign(FIRMWARE), 2)
    assert (await req(csms, "SignedUpdateFirmware", second))["status"] == "AcceptedCanceled"
    await until(h, "SignedFirmwareStatusNotification", "Installed")
    assert signed_statuses(h)[0] == ("DownloadScheduled", 1)
    assert all(rid == 2 for _, rid in signed_statuses(h)[1:])
    await h.advance(7200, step_s=1800)
    assert len(files.hits) == 1  # the canceled one never downloads


async def test_install_waits_for_the_transaction_to_end(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """L01.FR.06/07: a running transaction keeps charging; the install waits for it
    (InstallScheduled) while the free connector is Unavailable; the connector whose session
    ends becomes Unavailable too; afterwards both are Available again."""
    h = await fw_charger(csms, operator, trust=Roots(ca), connectors=2)
    await start_session(h, csms, 1)
    signer = signing_cert(ca)
    await req(
        csms,
        "SignedUpdateFirmware",
        signed_request(files.url("/f/fw.bin"), h, signer, signer.sign(FIRMWARE)),
    )
    await until(h, "SignedFirmwareStatusNotification", "InstallScheduled")
    await h.settle(lambda: h.connector(2).state.phase.value == "Unavailable")
    await h.advance(60, step_s=5)
    assert h.connector(1).hw.contactor.closed  # still charging
    assert installs(installer_log) == []
    assert "Installing" not in [s for s, _ in signed_statuses(h)]
    h.unplug(1)  # the session ends
    await h.settle(lambda: len(h.frames("StopTransaction")) == 1)
    await h.advance(10, step_s=5)
    await until(h, "SignedFirmwareStatusNotification", "Installed")
    assert installs(installer_log) != []
    await h.settle(lambda: all(h.connector(c).state.phase.value == "Available" for c in (1, 2)))
    unavailable = [
        f.payload["connectorId"]
        for f in h.frames("StatusNotification")
        if f.payload["status"] == "Unavailable"
    ]
    assert sorted(set(unavailable)) == [1, 2]


# ----------------------------------------------------------------------------- new version


async def test_wheel_update_spans_a_restart_and_is_confirmed(
    csms: DevCsms, fw_charger: Any, tmp_path: Path, ca: Signer
) -> None:
    """The evsed wheel is installed beside the running version, InstallRebooting (L01.FR.15)
    goes out, the service restarts; the new version's accepted boot confirms it: Installed
    (same requestId) and FirmwareUpdated."""
    root = tmp_path / "opt"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "2.0")
    async with FileServer({wheel.name: wheel.read_bytes()}).running() as srv:
        smoke = ("bin/python", "-c", "import evfake")
        old = WheelInstaller(root, ready_deadline_s=300, smoke_argv=smoke)
        h = await fw_charger(csms, old, trust=Roots(ca))
        signer = signing_cert(ca)
        await req(
            csms,
            "SignedUpdateFirmware",
            signed_request(
                srv.url(f"/f/{wheel.name}"), h, signer, signer.sign(wheel.read_bytes()), 9
            ),
        )
        await until(h, "SignedFirmwareStatusNotification", "InstallRebooting", timeout_s=60)
        await h.advance(1)
        await h.settle(lambda: h.app.reset_requested == "Firmware")
        await h.app.stop()
        # The restarted service is the new version (the launcher started versions/1).
        new = WheelInstaller(root, ready_deadline_s=300, running_prefix=root / "versions" / "1")
        h2 = await fw_charger(csms, new, trust=Roots(ca))
        await until(h2, "SignedFirmwareStatusNotification", "Installed")
        assert signed_statuses(h2)[-2:] == [("InstallRebooting", 9), ("Installed", 9)]
        await h2.settle(lambda: "FirmwareUpdated" in security_events(h2))
        assert (root / "result.json").exists() is False  # confirmed and forgotten


async def test_new_version_never_ready_comes_back_as_installation_failed(
    csms: DevCsms, fw_charger: Any, tmp_path: Path, ca: Signer
) -> None:
    """The new version cannot reach the CSMS within ready_deadline_s: its guard switches back
    and restarts; the previous version reports InstallationFailed once connected."""
    root = tmp_path / "opt"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = make_wheel(wheels, "2.0")
    wall = [1000.0]
    async with FileServer({wheel.name: wheel.read_bytes()}).running() as srv:
        smoke = ("bin/python", "-c", "import evfake")
        h = await fw_charger(
            csms,
            WheelInstaller(root, ready_deadline_s=300, smoke_argv=smoke, wall_s=lambda: wall[0]),
            trust=Roots(ca),
        )
        signer = signing_cert(ca)
        await req(
            csms,
            "SignedUpdateFirmware",
            signed_request(
                srv.url(f"/f/{wheel.name}"), h, signer, signer.sign(wheel.read_bytes()), 4
            ),
        )
        await until(h, "SignedFirmwareStatusNotification", "InstallRebooting", timeout_s=60)
        await h.advance(1)
        await h.settle(lambda: h.app.reset_requested == "Firmware")
        await h.app.stop()
        # The new version starts but its CSMS is unreachable (a closed port).
        new = WheelInstaller(
            root,
            ready_deadline_s=300,
            running_prefix=root / "versions" / "1",
            wall_s=lambda: wall[0],
        )
        h2 = await fw_charger(csms, new, trust=Roots(ca), wait=False, url="ws://127.0.0.1:9/ocpp")
        await h2.advance(299, step_s=50)
        assert h2.app.reset_requested is None
        await h2.advance(2)
        await h2.settle(lambda: h2.app.reset_requested == "Firmware")
        await h2.app.stop()
        assert (root / "result.json").exists()
        # The previous version (not on trial) starts and reports the outcome.
        back = WheelInstaller(root, ready_deadline_s=300, running_prefix=tmp_path / "elsewhere")
        h3 = await fw_charger(csms, back, trust=Roots(ca))
        await until(h3, "SignedFirmwareStatusNotification", "InstallationFailed")
        assert signed_statuses(h3)[-1] == ("InstallationFailed", 4)
        assert "FirmwareUpdated" not in security_events(h3)


# ----------------------------------------------------------------------------- restarts


async def test_scheduled_download_survives_a_restart(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    installer_log: Path,
) -> None:
    h = await fw_charger(csms, operator)
    await req(
        csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h, 3600)}
    )
    await h.settle(lambda: bool(h.app.store.get_setting(JOB_KEY)))
    await h.app.stop()
    h2 = await fw_charger(csms, operator)
    assert files.hits == []
    await h2.advance(3600, step_s=600)
    await until(h2, "FirmwareStatusNotification", "Installed")
    assert installs(installer_log) != []
    assert not h2.app.store.get_setting(JOB_KEY)


async def test_install_cut_short_by_a_restart_is_reported_failed(
    csms: DevCsms, fw_charger: Any, files: FileServer, tmp_path: Path
) -> None:
    """The operator's installer is still running when the service stops: it is killed with
    the service, and the next start reports InstallationFailed (and never runs it twice)."""
    marker = tmp_path / "started.txt"
    script = tmp_path / "slow.py"
    script.write_text(f"import time\nopen({str(marker)!r}, 'a').write('x')\ntime.sleep(60)\n")
    slow = OperatorInstaller([sys.executable, str(script), "{file}"])
    h = await fw_charger(csms, slow)
    await req(csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h)})
    await until(h, "FirmwareStatusNotification", "Installing")
    await h.settle(lambda: marker.exists())
    await h.app.stop()
    h2 = await fw_charger(csms, slow)
    await until(h2, "FirmwareStatusNotification", "InstallationFailed")
    assert fw_statuses(h2)[-1] == "InstallationFailed"
    assert marker.read_text() == "x"


async def test_status_while_offline_is_sent_after_reconnecting(
    csms: DevCsms, fw_charger: Any, files: FileServer, operator: OperatorInstaller
) -> None:
    """The latest status the CSMS did not confirm is kept and sent once connected again."""
    h = await fw_charger(csms, operator)
    await req(
        csms, "UpdateFirmware", {"location": files.url("/f/fw.bin"), "retrieveDate": now(h, 600)}
    )
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.advance(600, step_s=100)
    await h.settle(lambda: h.app.firmware is not None and h.app.firmware.state.value == "installed")
    assert fw_statuses(h) == []
    csms.refuse_connections = False
    for _ in range(100):
        if fw_statuses(h):
            break
        await h.advance(1)
    assert fw_statuses(h) == ["Installed"]


# ----------------------------------------------------------------------------- untrusted input


async def test_untrusted_requests_fail_cleanly(
    csms: DevCsms,
    fw_charger: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """A signing certificate that is no certificate: InvalidCertificate (L01.FR.24); a
    location of another scheme: DownloadFailed without any transfer; negative retries count
    as none. The charger keeps working."""
    h = await fw_charger(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    bad = signed_request(files.url("/f/fw.bin"), h, signer, signer.sign(FIRMWARE), 3)
    bad["firmware"]["signingCertificate"] = (
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    assert (await req(csms, "SignedUpdateFirmware", bad))["status"] == "InvalidCertificate"
    gopher = signed_request("gopher://127.0.0.1/fw.bin", h, signer, signer.sign(FIRMWARE), 5)
    gopher["retries"] = -5
    assert (await req(csms, "SignedUpdateFirmware", gopher))["status"] == "Accepted"
    await until(h, "SignedFirmwareStatusNotification", "DownloadFailed")
    assert signed_statuses(h) == [("Downloading", 5), ("DownloadFailed", 5)]
    assert files.hits == [] and installs(installer_log) == []
    assert (await req(csms, "TriggerMessage", {"requestedMessage": "Heartbeat"}))[
        "status"
    ] == "Accepted"
