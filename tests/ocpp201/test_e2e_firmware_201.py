"""OCPP 2.0.1 firmware management over a real WebSocket with the dev CSMS (L01 secure, L02
plain update; L03/L04 not offered): files from a local aiohttp server, signatures from a test
manufacturer CA, the operator's installer as a small script (and a switch-and-restart
installer as the 1.6 tests fake it), time on a manual clock."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.core.timestamps import iso_utc
from controller.dev.devcsms import DevCsms
from controller.maintenance.firmware import JOB_KEY
from controller.maintenance.installer import (
    Installer,
    InstallOutcome,
    InstallResult,
    OperatorInstaller,
    TrialState,
)
from controller.ocpp201 import FIRMWARE_UNSENT_KEY
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.maintenance.pki import Roots, Signer, manufacturer_ca, signing_cert
from tests.maintenance.servers import FileServer
from tests.ocpp201.test_e2e_authorization import OTHER as OTHER_CARD
from tests.ocpp201.test_e2e_authorization import set_vars
from tests.ocpp201.test_e2e_availability import start_transaction

FIRMWARE = b"\x00evsed 2.0.1 firmware image\xff" * 4000


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
    """The operator's installer: writes the file's size into a log, exit 0."""
    script = tmp_path / "flash.py"
    script.write_text(
        "import os, sys\n"
        f"open({str(installer_log)!r}, 'a').write(str(os.path.getsize(sys.argv[1])) + '\\n')\n"
    )
    return OperatorInstaller([sys.executable, str(script), "{file}"])


def _size(file: Path) -> int:
    return file.stat().st_size


def files_in(directory: str) -> list[str]:
    return [p.name for p in Path(directory).iterdir()]


@dataclass
class SwitchingInstaller:
    """An A/B installer: the install switches and asks for a restart; the next process is
    the new version on trial until the CSMS accepts its boot (shared by both App
    instances of a test, as the files of the real WheelInstaller would be)."""

    trial: TrialState = TrialState.NONE
    installs: list[int] = field(default_factory=list)

    async def install(self, file: Path) -> InstallResult:
        self.installs.append(_size(file))
        self.trial = TrialState.RUNNING
        return InstallResult(InstallOutcome.RESTART, "switched", "2.0")

    def trial_state(self) -> TrialState:
        return self.trial

    def trial_seconds_left(self) -> float | None:
        return 300.0 if self.trial is TrialState.RUNNING else None

    def confirm(self) -> bool:
        self.trial = TrialState.CONFIRMED
        return True

    def rollback(self, reason: str) -> bool:
        self.trial = TrialState.ROLLED_BACK
        return True

    def forget_result(self) -> None:
        self.trial = TrialState.NONE


@pytest.fixture
async def fw201(tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: ``await fw201(csms, installer, trust=..., connectors=...)`` -> Harness of a
    2.0.1 charger whose boot was accepted and whose connectors reported."""
    apps: list[App] = []

    async def factory(
        csms: DevCsms,
        installer: Installer,
        *,
        trust: Any = None,
        connectors: int = 1,
        ocpp_version: Any = "2.0.1",
    ) -> Harness:
        clock = ManualClock()
        config = parse(
            charger_config(tmp_path, csms.url, connectors=connectors, ocpp_version=ocpp_version)
        )
        app = App(config, clock=clock, boot_id="boot-1", installer=installer, firmware_trust=trust)
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        await h.settle(
            lambda: app.adapter is not None and app.adapter.connection_state() == "accepted"
        )
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


def now(h: Harness, seconds: float = 0) -> str:
    return iso_utc(h.clock.utc_now() + timedelta(seconds=seconds))


def statuses(h: Harness) -> list[tuple[str, int | None]]:
    return [
        (f.payload["status"], f.payload.get("requestId"))
        for f in h.frames("FirmwareStatusNotification")
    ]


def names(h: Harness) -> list[str]:
    return [s for s, _ in statuses(h)]


def security_events(h: Harness) -> list[str]:
    return [f.payload["type"] for f in h.frames("SecurityEventNotification")]


def installs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def until(h: Harness, status: str, timeout_s: float = 10) -> None:
    await h.settle(lambda: status in names(h), timeout_s)


async def update(csms: DevCsms, payload: dict[str, Any]) -> dict[str, Any]:
    """UpdateFirmwareResponse payload (a CALLRESULT is asserted)."""
    answer = await csms.call_raw(STATION_ID, "UpdateFirmware", payload, timeout_s=5)
    assert answer[0] == 3, answer
    result: dict[str, Any] = answer[2]
    return result


def signed(
    location: str,
    h: Harness,
    signer: Signer,
    data: bytes = FIRMWARE,
    request_id: int = 7,
    **fw: Any,
) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "retries": 0,
        "firmware": {
            "location": location,
            "retrieveDateTime": fw.pop("retrieve", now(h)),
            "signingCertificate": signer.pem,
            "signature": signer.sign(data),
            **fw,
        },
    }


def plain(location: str, h: Harness, request_id: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "firmware": {"location": location, "retrieveDateTime": extra.pop("retrieve", now(h))},
        **extra,
    }


async def trigger(h: Harness, csms: DevCsms) -> dict[str, Any]:
    """TriggerMessage(FirmwareStatusNotification): the payload of the status it sent."""
    before = len(h.frames("FirmwareStatusNotification"))
    answer = await csms.call_raw(
        STATION_ID, "TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}
    )
    assert answer[2] == {"status": "Accepted"}
    await h.settle(lambda: len(h.frames("FirmwareStatusNotification")) > before)
    payload: dict[str, Any] = h.frames("FirmwareStatusNotification")[-1].payload
    return payload


# ----------------------------------------------------------------------------- L01 secure


async def test_secure_update_to_installed(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_01_CS (L01.FR.01/04/05/10/12/20/21, L01.FR.28/31): Accepted; Downloading,
    Downloaded, SignatureVerified, Installing, Installed, each with the requestId; the
    FirmwareUpdated security event; L01.FR.25: a trigger after Installed says Idle (no
    requestId). Nothing is left of the download."""
    h = await fw201(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    assert await update(csms, signed(files.url("/f/fw.bin"), h, signer)) == {"status": "Accepted"}
    await until(h, "Installed")
    assert statuses(h) == [
        ("Downloading", 7),
        ("Downloaded", 7),
        ("SignatureVerified", 7),
        ("Installing", 7),
        ("Installed", 7),
    ]
    assert installs(installer_log) == [str(len(FIRMWARE))]
    await h.settle(lambda: "FirmwareUpdated" in security_events(h))
    assert await trigger(h, csms) == {"status": "Idle"}
    assert files_in(h.app.config.maintenance.firmware_dir) == []
    await h.settle(lambda: not h.app.store.get_setting(FIRMWARE_UNSENT_KEY))


async def test_install_scheduled_waits_for_install_date_time(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_02_CS (L01.FR.16): installDateTime in the future: InstallScheduled after
    SignatureVerified, the install at that time (injected clock); L01.FR.26: a trigger
    meanwhile repeats InstallScheduled with the requestId."""
    h = await fw201(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    request = signed(files.url("/f/fw.bin"), h, signer, installDateTime=now(h, 3600))
    assert (await update(csms, request))["status"] == "Accepted"
    await until(h, "InstallScheduled")
    assert await trigger(h, csms) == {"status": "InstallScheduled", "requestId": 7}
    await h.advance(3500, step_s=500)
    assert installs(installer_log) == []
    await h.advance(200, step_s=50)
    await until(h, "Installed")
    assert names(h)[:4] == ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled"]
    assert names(h)[-2:] == ["Installing", "Installed"]


async def test_download_scheduled_waits_for_retrieve_date_time(
    csms: DevCsms, fw201: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """TC_L_03_CS (L01.FR.13): retrieveDateTime in the future: DownloadScheduled, nothing
    fetched before that time, then the update runs to Installed."""
    h = await fw201(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    request = signed(files.url("/f/fw.bin"), h, signer, retrieve=now(h, 1800))
    assert (await update(csms, request))["status"] == "Accepted"
    await until(h, "DownloadScheduled")
    await h.advance(1700, step_s=500)
    assert files.hits == []
    await h.advance(200, step_s=50)
    await until(h, "Installed")
    assert statuses(h)[0] == ("DownloadScheduled", 7)


async def test_invalid_certificate(
    csms: DevCsms, fw201: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """TC_L_05_CS (L01.FR.21/22, L01.FR.02): a signing certificate of another manufacturer
    (and one that is no certificate): InvalidCertificate before anything is downloaded, and
    the InvalidFirmwareSigningCertificate security event."""
    h = await fw201(csms, operator, trust=Roots(ca))
    stranger = signing_cert(manufacturer_ca("Someone Else"))
    answer = await update(csms, signed(files.url("/f/fw.bin"), h, stranger))
    assert answer["status"] == "InvalidCertificate"
    await h.settle(lambda: "InvalidFirmwareSigningCertificate" in security_events(h))
    garbage = signed(files.url("/f/fw.bin"), h, signing_cert(ca), request_id=8)
    garbage["firmware"]["signingCertificate"] = (
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    assert (await update(csms, garbage))["status"] == "InvalidCertificate"
    no_certificate = signed(files.url("/f/fw.bin"), h, signing_cert(ca), request_id=9)
    del no_certificate["firmware"]["signingCertificate"]
    assert (await update(csms, no_certificate))["status"] == "InvalidCertificate"
    assert files.hits == [] and statuses(h) == []


async def test_invalid_signature(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_06_CS (L01.FR.03/04): InvalidSignature and the InvalidFirmwareSignature event;
    nothing is installed; a trigger repeats InvalidSignature (L01.FR.26)."""
    h = await fw201(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    request = signed(files.url("/f/fw.bin"), h, signer, FIRMWARE + b"tampered", request_id=11)
    assert (await update(csms, request))["status"] == "Accepted"
    await until(h, "InvalidSignature")
    assert statuses(h) == [("Downloading", 11), ("Downloaded", 11), ("InvalidSignature", 11)]
    await h.settle(lambda: "InvalidFirmwareSignature" in security_events(h))
    assert installs(installer_log) == []
    assert await trigger(h, csms) == {"status": "InvalidSignature", "requestId": 11}


async def test_download_failed_after_the_retries(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_07_CS (L01.FR.30): retries 2, retryInterval 30: three attempts 30 s apart on the
    injected clock (Downloading each time), then DownloadFailed."""
    h = await fw201(csms, operator, trust=Roots(ca))
    request = signed(files.url("/f/missing.bin"), h, signing_cert(ca))
    request.update(retries=2, retryInterval=30)
    assert (await update(csms, request))["status"] == "Accepted"
    await h.settle(lambda: len(files.hits) == 1)
    await h.advance(30)
    await h.settle(lambda: len(files.hits) == 2)
    await h.advance(30)
    await until(h, "DownloadFailed")
    assert len(files.hits) == 3
    assert names(h) == ["Downloading"] * 3 + ["DownloadFailed"]
    assert installs(installer_log) == []


async def test_installation_failed(
    csms: DevCsms, fw201: Any, files: FileServer, ca: Signer, tmp_path: Path
) -> None:
    """TC_L_08_CS (L01.FR.01): the installer fails: InstallationFailed with the requestId,
    no FirmwareUpdated event."""
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(1)\n")
    failing = OperatorInstaller([sys.executable, str(script), "{file}"])
    h = await fw201(csms, failing, trust=Roots(ca))
    assert (await update(csms, signed(files.url("/f/fw.bin"), h, signing_cert(ca))))[
        "status"
    ] == "Accepted"
    await until(h, "InstallationFailed")
    assert statuses(h)[-2:] == [("Installing", 7), ("InstallationFailed", 7)]
    assert "FirmwareUpdated" not in security_events(h)


async def test_new_request_cancels_a_scheduled_one(
    csms: DevCsms, fw201: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """TC_L_10_CS (L01.FR.24): a new UpdateFirmware while one waits for its retrieve time
    cancels it: AcceptedCanceled, and the new one runs with its own requestId."""
    h = await fw201(csms, operator, trust=Roots(ca))
    signer = signing_cert(ca)
    first = signed(files.url("/f/fw.bin"), h, signer, request_id=1, retrieve=now(h, 7200))
    assert (await update(csms, first))["status"] == "Accepted"
    await until(h, "DownloadScheduled")
    second = signed(files.url("/f/fw.bin"), h, signer, request_id=2)
    assert (await update(csms, second))["status"] == "AcceptedCanceled"
    await until(h, "Installed")
    assert statuses(h)[0] == ("DownloadScheduled", 1)
    assert all(rid == 2 for _, rid in statuses(h)[1:])
    await h.advance(7200, step_s=1800)
    assert len(files.hits) == 1  # the canceled one never downloads


async def test_install_cannot_be_canceled_nor_reset(
    csms: DevCsms, fw201: Any, files: FileServer, ca: Signer, tmp_path: Path
) -> None:
    """TC_L_11_CS (L01.FR.27): while the installer runs a new UpdateFirmware is Rejected;
    B11.FR.06: a station Reset is Rejected (FwUpdateInProgress) and nothing restarts; once
    installed both are possible again."""
    release = tmp_path / "release"
    script = tmp_path / "slow.py"
    script.write_text(
        f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
    )
    slow = OperatorInstaller([sys.executable, str(script), "{file}"])
    h = await fw201(csms, slow, trust=Roots(ca))
    signer = signing_cert(ca)
    assert (await update(csms, signed(files.url("/f/fw.bin"), h, signer)))["status"] == "Accepted"
    await until(h, "Installing")
    again = await update(csms, signed(files.url("/f/fw.bin"), h, signer, request_id=8))
    assert again["status"] == "Rejected"
    assert again["statusInfo"]["reasonCode"] == "FwUpdateInProgress"
    reset = await csms.call_raw(STATION_ID, "Reset", {"type": "Immediate"})
    assert reset[2] == {"status": "Rejected", "statusInfo": {"reasonCode": "FwUpdateInProgress"}}
    release.write_text("go")
    await until(h, "Installed")
    assert h.app.reset_requested is None
    assert all(rid == 7 for _, rid in statuses(h))
    assert (await csms.call_raw(STATION_ID, "Reset", {"type": "OnIdle"}))[2] == {
        "status": "Accepted"
    }


async def test_install_waits_for_the_transaction_to_end(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_13_CS / TC_L_15_CS (L01.FR.06/07, L01.FR.34, L02.FR.04;
    AllowNewSessionsPendingFirmwareUpdate false, its default): the transaction keeps
    charging, the install waits for it (InstallScheduled) while the free EVSE is
    Unavailable; the EVSE whose transaction ends becomes Unavailable too; after the
    install both are Available again."""
    h = await fw201(csms, operator, trust=Roots(ca), connectors=2)
    await start_transaction(h, 1)
    assert (await update(csms, signed(files.url("/f/fw.bin"), h, signing_cert(ca))))[
        "status"
    ] == "Accepted"
    await until(h, "InstallScheduled")
    await h.settle(lambda: h.connector(2).state.phase.value == "Unavailable")
    await h.advance(60, step_s=5)
    assert h.connector(1).hw.contactor.closed  # still charging
    assert installs(installer_log) == [] and "Installing" not in names(h)
    h.unplug(1)
    await h.settle(
        lambda: any(f.payload["eventType"] == "Ended" for f in h.frames("TransactionEvent"))
    )
    await h.advance(10, step_s=5)
    await until(h, "Installed")
    assert installs(installer_log) != []
    await h.settle(lambda: all(h.connector(c).state.phase.value == "Available" for c in (1, 2)))
    unavailable = {
        f.payload["evseId"]
        for f in h.frames("StatusNotification")
        if f.payload["connectorStatus"] == "Unavailable"
    }
    assert unavailable == {1, 2}


async def test_new_sessions_allowed_while_the_install_waits(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    ca: Signer,
    installer_log: Path,
) -> None:
    """TC_L_12_CS / TC_L_14_CS (L02.FR.04; Part 2 appendix 2.1.2): with
    ChargingStation.AllowNewSessionsPendingFirmwareUpdate true the free EVSE is not made
    Unavailable while the install waits, and a new session starts there. Set false while
    it waits (SetVariables), an EVSE that becomes free is made Unavailable; the install
    follows the last transaction, then both are Available."""
    h = await fw201(csms, operator, trust=Roots(ca), connectors=2)
    await set_vars(csms, {"ChargingStation.AllowNewSessionsPendingFirmwareUpdate": "true"})
    await start_transaction(h, 1)
    assert (await update(csms, signed(files.url("/f/fw.bin"), h, signing_cert(ca))))[
        "status"
    ] == "Accepted"
    await until(h, "InstallScheduled")
    await h.advance(30, step_s=5)
    assert h.connector(2).state.phase.value == "Available"
    await start_transaction(h, 2, card=OTHER_CARD)  # a new session while the install waits
    await h.advance(30, step_s=5)
    assert installs(installer_log) == [] and "Installing" not in names(h)

    await set_vars(csms, {"ChargingStation.AllowNewSessionsPendingFirmwareUpdate": "false"})
    h.unplug(1)
    await h.advance(10, step_s=5)
    await h.settle(lambda: h.connector(1).state.phase.value == "Unavailable")
    assert h.connector(2).hw.contactor.closed  # still charging
    assert installs(installer_log) == []
    h.unplug(2)
    await h.advance(10, step_s=5)
    await until(h, "Installed")
    await h.settle(lambda: all(h.connector(c).state.phase.value == "Available" for c in (1, 2)))
    unavailable = {
        f.payload["evseId"]
        for f in h.frames("StatusNotification")
        if f.payload["connectorStatus"] == "Unavailable"
    }
    assert unavailable == {1, 2}


async def test_update_spans_a_restart_with_boot_reason_firmware_update(
    csms: DevCsms, fw201: Any, files: FileServer, ca: Signer
) -> None:
    """L01.FR.15/32 a: the installer switches versions: InstallRebooting, then the restart;
    the new version boots with reason FirmwareUpdate (B01.FR.09), the CSMS accepts its boot
    (the version on trial is confirmed) and Installed goes out with the same requestId,
    with the FirmwareUpdated security event."""
    switching = SwitchingInstaller()
    h = await fw201(csms, switching, trust=Roots(ca))
    request = signed(files.url("/f/fw.bin"), h, signing_cert(ca), request_id=21)
    assert (await update(csms, request))["status"] == "Accepted"
    await until(h, "InstallRebooting")
    await h.advance(1)
    await h.settle(lambda: h.app.reset_requested == "Firmware")
    assert statuses(h)[-2:] == [("Installing", 21), ("InstallRebooting", 21)]
    await h.app.stop(reason=None)
    csms.received.clear()
    h2 = await fw201(csms, switching, trust=Roots(ca))
    await until(h2, "Installed")
    assert [f.payload["reason"] for f in h2.frames("BootNotification")] == ["FirmwareUpdate"]
    assert statuses(h2)[-1] == ("Installed", 21)
    assert switching.trial is TrialState.NONE and switching.installs == [len(FIRMWARE)]
    await h2.settle(lambda: "FirmwareUpdated" in security_events(h2))
    assert not h2.app.store.get_setting(JOB_KEY)


async def test_status_while_offline_is_sent_after_reconnecting(
    csms: DevCsms, fw201: Any, files: FileServer, operator: OperatorInstaller
) -> None:
    """L02.FR.01: the latest status the CSMS did not confirm is kept (a settings row) and
    sent once connected again."""
    h = await fw201(csms, operator)
    assert (await update(csms, plain(files.url("/f/fw.bin"), h, retrieve=now(h, 600))))[
        "status"
    ] == "Accepted"
    await until(h, "DownloadScheduled")
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.advance(600, step_s=100)
    await h.settle(lambda: h.app.firmware is not None and h.app.firmware.state.value == "installed")
    assert names(h) == ["DownloadScheduled"]
    csms.refuse_connections = False
    for _ in range(100):
        if len(names(h)) > 1:
            break
        await h.advance(1)
    await until(h, "Installed")
    assert statuses(h) == [("DownloadScheduled", 3), ("Installed", 3)]


async def test_an_update_goes_on_across_a_switch_of_ocpp_version(
    fw201: Any, files: FileServer, operator: OperatorInstaller, installer_log: Path
) -> None:
    """An update a 1.6 CSMS scheduled is resumed at the next start by the 1.6 adapter built
    first; the CSMS now speaks 2.0.1 only, the 2.0.1 adapter takes over the same updater:
    the update runs once (one download, one install) and 2.0.1 reports it."""
    async with DevCsms(ocpp_versions=("1.6",), heartbeat_interval_s=3600) as csms16:
        h = await fw201(csms16, operator, ocpp_version="1.6")
        location = files.url("/f/fw.bin")
        frame = await csms16.call_raw(
            STATION_ID, "UpdateFirmware", {"location": location, "retrieveDate": now(h, 3600)}
        )
        assert frame[0] == 3
        await h.settle(lambda: bool(h.app.store.get_setting(JOB_KEY)))
        await h.app.stop(reason=None)
    async with DevCsms(ocpp_versions=("2.0.1",), heartbeat_interval_s=3600) as csms201:
        h2 = await fw201(csms201, operator, ocpp_version=["1.6", "2.0.1"])
        assert h2.app.client201 is h2.app.adapter
        await h2.advance(3700, step_s=600)
        await until(h2, "Installed")
        assert names(h2)[-4:] == ["Downloading", "Downloaded", "Installing", "Installed"]
        assert len(files.hits) == 1 and installs(installer_log) == [str(len(FIRMWARE))]


# ----------------------------------------------------------------------------- L02 plain


async def test_plain_update_without_a_manufacturer_root(
    csms: DevCsms,
    fw201: Any,
    files: FileServer,
    operator: OperatorInstaller,
    installer_log: Path,
) -> None:
    """L02.FR.01/02/06/14/20: without a signature (and no manufacturer root installed) the
    update runs: Downloading, Downloaded, Installing, Installed with the requestId; no
    SignatureVerified. A trigger before any update says Idle (F06.FR.16)."""
    h = await fw201(csms, operator)
    assert await trigger(h, csms) == {"status": "Idle"}
    request = plain(files.url("/f/fw.bin"), h, retries=-5, retryInterval=10**9)
    assert await update(csms, request) == {"status": "Accepted"}
    await until(h, "Installed")
    assert statuses(h)[1:] == [
        ("Downloading", 3),
        ("Downloaded", 3),
        ("Installing", 3),
        ("Installed", 3),
    ]
    assert installs(installer_log) == [str(len(FIRMWARE))]


async def test_unsigned_update_refused_once_a_manufacturer_root_is_installed(
    csms: DevCsms, fw201: Any, files: FileServer, operator: OperatorInstaller, ca: Signer
) -> None:
    """TC_L_18_CS: without signingCertificate and signature a charger that supports secure
    updates answers Rejected and fetches nothing; a signature without its certificate is
    InvalidCertificate (L01.FR.22), a certificate without a signature Rejected."""
    h = await fw201(csms, operator, trust=Roots(ca))
    past = now(h, -7200)
    answer = await update(csms, plain(files.url("/f/fw.bin"), h, retrieve=past) | {"requestId": 4})
    assert answer["status"] == "Rejected"
    request = signed(files.url("/f/fw.bin"), h, signing_cert(ca))
    del request["firmware"]["signature"]
    assert (await update(csms, request))["status"] == "Rejected"
    await h.advance(5)
    assert files.hits == [] and statuses(h) == []


async def test_untrusted_requests_fail_cleanly(
    csms: DevCsms, fw201: Any, operator: OperatorInstaller, installer_log: Path
) -> None:
    """A location of another scheme: Accepted (the download fails, DownloadFailed, without
    any transfer); an unreadable dateTime: FormatViolation; the charger keeps working."""
    h = await fw201(csms, operator)
    assert (await update(csms, plain("gopher://127.0.0.1/fw.bin", h, retries=0)))[
        "status"
    ] == "Accepted"
    await until(h, "DownloadFailed")
    assert statuses(h) == [("Downloading", 3), ("DownloadFailed", 3)]
    bad = plain("http://127.0.0.1:9/fw.bin", h)
    bad["firmware"]["retrieveDateTime"] = "yesterday"
    frame = await csms.call_raw(STATION_ID, "UpdateFirmware", bad)
    assert frame[0] == 4 and frame[2] == "FormatViolation"
    assert installs(installer_log) == []
    heartbeat = await csms.call_raw(STATION_ID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert heartbeat[2] == {"status": "Accepted"}


async def test_publish_firmware_is_not_supported(
    csms: DevCsms, fw201: Any, operator: OperatorInstaller
) -> None:
    """L03 / L04 are Local Controller use cases: PublishFirmware and UnpublishFirmware get
    CALLERROR NotSupported (OCPP-J 4.3) and change nothing."""
    h = await fw201(csms, operator)
    publish = {
        "location": "http://127.0.0.1:9/fw.bin",
        "checksum": "0" * 32,
        "requestId": 5,
    }
    frame = await csms.call_raw(STATION_ID, "PublishFirmware", publish)
    assert frame[0] == 4 and frame[2] == "NotSupported"
    frame = await csms.call_raw(STATION_ID, "UnpublishFirmware", {"checksum": "0" * 32})
    assert frame[0] == 4 and frame[2] == "NotSupported"
    assert statuses(h) == []
