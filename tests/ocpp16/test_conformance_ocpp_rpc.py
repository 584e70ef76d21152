"""Conformance against an independent CSMS: tests/conformance/csms.js, built on the npm package
ocpp-rpc in strict mode (every frame in both directions is validated against the OCPP 1.6 JSON
schemas bundled with ocpp-rpc), not on the Python ``ocpp`` library evsed itself uses.

One end-to-end run covers boot + status, a local session with MeterValues, remote start/stop,
GetConfiguration, ChangeConfiguration, ChangeAvailability, TriggerMessage, UnlockConnector,
DataTransfer, ReserveNow and CancelReservation (a reservation used), a CSMS outage
mid-transaction (queued messages replayed), a fault and a soft Reset. At the end the CSMS's
own bookkeeping must show zero schema violations in either direction, never more than one
outstanding CALL from the station (OCPP-J 1.6 section 4.1.1), and exactly one
StartTransaction and one StopTransaction per transaction.

Needs ``node`` and ``npm ci`` in tests/conformance (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from controller.core.timestamps import iso_utc
from tests.conftest import CARD, STATION_ID
from tests.procs import free_port

CONFORMANCE_DIR = Path(__file__).resolve().parents[1] / "conformance"
CSMS_SCRIPT = CONFORMANCE_DIR / "csms.js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed"),
    pytest.mark.skipif(
        not (CONFORMANCE_DIR / "node_modules" / "ocpp-rpc").is_dir(),
        reason="ocpp-rpc not installed: run `npm ci` in tests/conformance",
    ),
    pytest.mark.timeout(90),
]


@dataclass
class Frame:
    """A CALL the CSMS received, shaped like DevCsms records (``Harness.frames`` reads them)."""

    action: str
    payload: dict[str, Any]
    message_id: str


class NodeCsms:
    """The Node.js CSMS as a subprocess, driven over newline-delimited JSON on stdin/stdout."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.events: list[dict[str, Any]] = []
        self.received: list[Frame] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def start(self) -> None:
        assert NODE is not None
        self.proc = await asyncio.create_subprocess_exec(
            NODE,
            str(CSMS_SCRIPT),
            "0",
            cwd=CONFORMANCE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=2**22,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stderr = asyncio.create_task(self.proc.stderr.read())
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=15)
        if not line:
            await self.proc.wait()
            err = (await self._stderr).decode(errors="replace")
            raise RuntimeError(f"node CSMS did not start (rc {self.proc.returncode}): {err}")
        first = json.loads(line)
        assert first["event"] == "listening", first
        self.port = int(first["port"])
        self.events.append(first)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            event = json.loads(line)
            self.events.append(event)
            if event.get("event") == "call":
                self.received.append(Frame(event["method"], event["params"], event["messageId"]))
            fut = self._waiting.pop(event["id"], None) if "id" in event else None
            if fut is not None and not fut.done():
                fut.set_result(event)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("node CSMS exited"))

    async def command(self, cmd: str, timeout_s: float = 15.0, **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        cid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        self.proc.stdin.write(json.dumps({"cmd": cmd, "id": cid, **fields}).encode() + b"\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, timeout=timeout_s)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """CSMS -> station CALL; returns the (schema-validated) CALLRESULT payload."""
        reply = await self.command("call", method=method, params=params)
        assert "error" not in reply, f"{method} {params} failed: {reply['error']}"
        result = reply["result"]
        assert isinstance(result, dict)
        return result

    async def stats(self) -> dict[str, Any]:
        return await self.command("stats")

    async def wait_connected(self, identity: str, timeout_s: float = 5.0) -> None:
        await self.wait_event(
            lambda e: e["event"] == "connected" and e["identity"] == identity, timeout_s
        )

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0, after: int = 0
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for event in self.events[after:]:
                if predicate(event):
                    return event
            if loop.time() > deadline:
                tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                raise AssertionError(f"CSMS event not seen in time; last events:\n{tail}")
            await asyncio.sleep(0.01)

    async def wait_call(
        self, method: str, where: Callable[[dict[str, Any]], bool] = lambda p: True, after: int = 0
    ) -> dict[str, Any]:
        """Wait until the station sent CALL ``method`` (the ``after``-th such CALL or a later
        one) whose payload satisfies ``where``; returns that payload."""

        def found() -> dict[str, Any] | None:
            frames = [f.payload for f in self.received if f.action == method]
            return next((p for p in frames[after:] if where(p)), None)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while (payload := found()) is None:
            if loop.time() > deadline:
                tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                raise AssertionError(f"no {method} received; last CSMS events:\n{tail}")
            await asyncio.sleep(0.01)
        return payload

    def count(self, method: str) -> int:
        return sum(1 for f in self.received if f.action == method)

    async def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd":"quit"}\n')
                await proc.stdin.drain()
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout=5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


@pytest.fixture
async def node_csms(tmp_path: Path) -> AsyncIterator[NodeCsms]:
    server = NodeCsms()
    try:
        await server.start()
        yield server
    finally:
        await server.close()
        # The CSMS's full transcript (every CALL, reply, violation) for post-mortems.
        with (tmp_path / "csms-events.jsonl").open("w") as f:
            f.writelines(json.dumps(e) + "\n" for e in server.events)


# ----------------------------------------------------------------------------- helpers


def status_of(connector_id: int, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p["connectorId"] == connector_id and p["status"] == status


async def drained(h: Any) -> None:
    await h.settle(lambda: h.app.port.queued_messages() == 0, timeout_s=10)


async def reconnect(h: Any, csms: NodeCsms) -> None:
    """Let the CSMS accept again and move the manual clock until the back-off has elapsed."""
    await csms.command("offline", on=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while h.app.port.connection_state() != "accepted":
        assert loop.time() < deadline, "charger did not reconnect"
        await h.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)


def start_replies(csms: NodeCsms) -> list[dict[str, Any]]:
    return [e for e in csms.events if e["event"] == "reply" and e["method"] == "StartTransaction"]


async def started(h: Any, csms: NodeCsms, replies_before: int) -> int:
    """Wait for the next answered StartTransaction and a closed contactor; its transactionId."""
    await h.settle(lambda: len(start_replies(csms)) > replies_before)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    return int(start_replies(csms)[replies_before]["result"]["transactionId"])


async def plug_and_tap(h: Any, csms: NodeCsms) -> int:
    """Local start: plug in, present the card; returns the CSMS's transactionId."""
    before = len(start_replies(csms))
    h.plug()
    await h.advance(2)
    h.tap()
    return await started(h, csms, before)


# ----------------------------------------------------------------------------- scenarios


async def boot_and_status(h: Any, csms: NodeCsms) -> None:
    """4.2 BootNotification, then 4.9 StatusNotification for connector 0 and connector 1."""
    assert csms.count("BootNotification") == 1
    await csms.wait_call("StatusNotification", status_of(0, "Available"))
    await csms.wait_call("StatusNotification", status_of(1, "Available"))


async def local_session(h: Any, csms: NodeCsms) -> int:
    """Plug, tap, charge 3 min with MeterValues every 60 s, tap to stop, unplug."""
    tx_id = await plug_and_tap(h, csms)
    mv = csms.count("MeterValues")
    await h.advance(180, step_s=10)
    await h.settle(lambda: csms.count("MeterValues") >= mv + 3)
    stops = csms.count("StopTransaction")
    h.tap()
    stop = await csms.wait_call("StopTransaction", after=stops)
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == "Local"
    assert stop["idTag"] == CARD
    status_n = csms.count("StatusNotification")
    h.unplug()
    await h.advance(1)
    await csms.wait_call("StatusNotification", status_of(1, "Available"), after=status_n)
    await drained(h)
    return tx_id


async def remote_start_stop(h: Any, csms: NodeCsms) -> int:
    """5.11 RemoteStartTransaction / 5.12 RemoteStopTransaction."""
    h.plug()
    await h.advance(1)
    await csms.wait_call("StatusNotification", status_of(1, "Preparing"))
    before = len(start_replies(csms))
    result = await csms.call("RemoteStartTransaction", {"connectorId": 1, "idTag": CARD})
    assert result == {"status": "Accepted"}
    tx_id = await started(h, csms, before)
    await h.advance(60, step_s=10)
    stops = csms.count("StopTransaction")
    result = await csms.call("RemoteStopTransaction", {"transactionId": tx_id})
    assert result == {"status": "Accepted"}
    stop = await csms.wait_call("StopTransaction", after=stops)
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == "Remote"
    h.unplug()
    await h.advance(1)
    await drained(h)
    return tx_id


async def configuration(h: Any, csms: NodeCsms) -> None:
    """5.8 GetConfiguration and 5.3 ChangeConfiguration."""
    everything = await csms.call("GetConfiguration", {})
    keys = {k["key"] for k in everything["configurationKey"]}
    assert {"HeartbeatInterval", "MeterValueSampleInterval"} <= keys
    some = await csms.call("GetConfiguration", {"key": ["MeterValueSampleInterval", "NoSuchKey"]})
    assert some["unknownKey"] == ["NoSuchKey"]
    assert [k["value"] for k in some["configurationKey"]] == ["60"]

    change = {"key": "MeterValueSampleInterval", "value": "30"}
    assert await csms.call("ChangeConfiguration", change) == {"status": "Accepted"}
    some = await csms.call("GetConfiguration", {"key": ["MeterValueSampleInterval"]})
    assert [k["value"] for k in some["configurationKey"]] == ["30"]
    change = {"key": "MeterValueSampleInterval", "value": "60"}
    assert await csms.call("ChangeConfiguration", change) == {"status": "Accepted"}
    unknown = {"key": "NoSuchKey", "value": "1"}
    assert await csms.call("ChangeConfiguration", unknown) == {"status": "NotSupported"}


async def availability(h: Any, csms: NodeCsms) -> None:
    """5.2 ChangeAvailability Inoperative -> Unavailable, Operative -> Available."""
    n = csms.count("StatusNotification")
    change = {"connectorId": 1, "type": "Inoperative"}
    assert await csms.call("ChangeAvailability", change) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Unavailable"), after=n)
    n = csms.count("StatusNotification")
    change = {"connectorId": 1, "type": "Operative"}
    assert await csms.call("ChangeAvailability", change) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Available"), after=n)


async def trigger_message(h: Any, csms: NodeCsms) -> None:
    """Remote Trigger 5.17: Heartbeat, StatusNotification, MeterValues; BootNotification
    after it was accepted is Rejected (errata 3.35)."""
    n = csms.count("Heartbeat")
    assert await csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
        "status": "Accepted"
    }
    await csms.wait_call("Heartbeat", after=n)

    n = csms.count("StatusNotification")
    trigger = {"requestedMessage": "StatusNotification", "connectorId": 1}
    assert await csms.call("TriggerMessage", trigger) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Available"), after=n)

    n = csms.count("MeterValues")
    trigger = {"requestedMessage": "MeterValues", "connectorId": 1}
    assert await csms.call("TriggerMessage", trigger) == {"status": "Accepted"}
    mv = await csms.wait_call("MeterValues", after=n)
    assert mv["connectorId"] == 1

    trigger = {"requestedMessage": "BootNotification"}
    assert await csms.call("TriggerMessage", trigger) == {"status": "Rejected"}
    await drained(h)


async def unlock_and_data_transfer(h: Any, csms: NodeCsms) -> None:
    """5.18 UnlockConnector and 5.6 DataTransfer (CSMS -> Charge Point)."""
    assert await csms.call("UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    result = await csms.call(
        "DataTransfer", {"vendorId": "org.example.conformance", "messageId": "ping", "data": "x"}
    )
    assert result["status"] in {"Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"}


async def certificates(h: Any, csms: NodeCsms) -> None:
    """Security whitepaper M03-M05, A02, A05 and the ExtendedTriggerMessage, every answer
    checked against the security extension's schemas by the strict CSMS."""
    root = trustme.CA().cert_pem.bytes().decode()
    install = {"certificateType": "CentralSystemRootCertificate", "certificate": root}
    assert await csms.call("InstallCertificate", install) == {"status": "Accepted"}
    ids = await csms.call(
        "GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"}
    )
    assert ids["status"] == "Accepted" and len(ids["certificateHashData"]) == 1
    none = await csms.call(
        "GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"}
    )
    assert none == {"status": "NotFound"}
    bad = {"certificateType": "ManufacturerRootCertificate", "certificate": "-----BEGIN x"}
    assert await csms.call("InstallCertificate", bad) == {"status": "Rejected"}

    change = {"key": "CpoName", "value": "Conformance CPO"}
    assert await csms.call("ChangeConfiguration", change) == {"status": "Accepted"}
    n = csms.count("SignCertificate")
    trigger = {"requestedMessage": "SignChargePointCertificate"}
    assert await csms.call("ExtendedTriggerMessage", trigger) == {"status": "Accepted"}
    csr = await csms.wait_call("SignCertificate", after=n)
    assert csr["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    signed = {"certificateChain": "-----BEGIN CERTIFICATE-----\nnot a certificate"}
    assert await csms.call("CertificateSigned", signed) == {"status": "Rejected"}

    n = csms.count("Heartbeat")
    trigger = {"requestedMessage": "Heartbeat"}
    assert await csms.call("ExtendedTriggerMessage", trigger) == {"status": "Accepted"}
    await csms.wait_call("Heartbeat", after=n)
    # A05.FR.01: never lowered over OCPP; A05.FR.03: 2 needs a valid CSMS root (there is one).
    lower = {"key": "SecurityProfile", "value": "0"}
    assert await csms.call("ChangeConfiguration", lower) == {"status": "Rejected"}

    delete = {"certificateHashData": ids["certificateHashData"][0]}
    assert await csms.call("DeleteCertificate", delete) == {"status": "Accepted"}
    assert await csms.call("DeleteCertificate", delete) == {"status": "NotFound"}
    await drained(h)


async def firmware(h: Any, csms: NodeCsms) -> None:
    """1.6 UpdateFirmware / FirmwareStatusNotification and the whitepaper's L01 signed
    variants: statuses through a failed download, triggers, a refused signing certificate."""
    n = csms.count("FirmwareStatusNotification")
    trigger = {"requestedMessage": "FirmwareStatusNotification"}
    assert await csms.call("TriggerMessage", trigger) == {"status": "Accepted"}
    assert (await csms.wait_call("FirmwareStatusNotification", after=n))["status"] == "Idle"

    # Nothing listens on this port: Downloading, then DownloadFailed (no retries).
    location = f"http://127.0.0.1:{free_port()}/evsed.whl"
    update = {"location": location, "retrieveDate": iso_utc(h.clock.utc_now()), "retries": 0}
    assert await csms.call("UpdateFirmware", update) == {}
    await csms.wait_call("FirmwareStatusNotification", lambda p: p["status"] == "DownloadFailed")

    n = csms.count("SignedFirmwareStatusNotification")
    trigger = {"requestedMessage": "FirmwareStatusNotification"}
    assert await csms.call("ExtendedTriggerMessage", trigger) == {"status": "Accepted"}
    await csms.wait_call("SignedFirmwareStatusNotification", after=n)

    signed = {
        "requestId": 7,
        "retries": 0,
        "firmware": {
            "location": location,
            "retrieveDateTime": iso_utc(h.clock.utc_now()),
            "signingCertificate": "-----BEGIN CERTIFICATE-----\nnot a certificate",
            "signature": "c2lnbmF0dXJl",
        },
    }
    # L01.FR.23/24: the signing certificate is checked before the request is accepted.
    assert await csms.call("SignedUpdateFirmware", signed) == {"status": "InvalidCertificate"}
    await drained(h)


async def reservations(h: Any, csms: NodeCsms) -> int:
    """5.13 ReserveNow (connector 1 and connector 0), 5.1 CancelReservation (known and
    unknown id), StatusNotification Reserved, and a reservation used: StartTransaction with
    its reservationId (4.8)."""
    until = iso_utc(h.clock.utc_now() + timedelta(hours=1))
    reserve = {"connectorId": 1, "expiryDate": until, "idTag": CARD, "reservationId": 71}
    n = csms.count("StatusNotification")
    assert await csms.call("ReserveNow", reserve) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Reserved"), after=n)
    assert await csms.call("CancelReservation", {"reservationId": 999}) == {"status": "Rejected"}
    n = csms.count("StatusNotification")
    assert await csms.call("CancelReservation", {"reservationId": 71}) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Available"), after=n)
    anywhere = {**reserve, "connectorId": 0, "reservationId": 72, "parentIdTag": "FLEET"}
    assert await csms.call("ReserveNow", anywhere) == {"status": "Accepted"}
    assert await csms.call("CancelReservation", {"reservationId": 72}) == {"status": "Accepted"}
    n = csms.count("StatusNotification")
    assert await csms.call("ReserveNow", {**reserve, "reservationId": 73}) == {"status": "Accepted"}
    await csms.wait_call("StatusNotification", status_of(1, "Reserved"), after=n)
    starts = csms.count("StartTransaction")
    tx_id = await plug_and_tap(h, csms)
    start = await csms.wait_call("StartTransaction", after=starts)
    assert (start["idTag"], start["reservationId"]) == (CARD, 73)
    await h.advance(10)
    stops = csms.count("StopTransaction")
    h.tap()
    await csms.wait_call("StopTransaction", after=stops)
    h.unplug()
    await h.advance(1)
    await drained(h)
    return tx_id


async def outage_mid_transaction(h: Any, csms: NodeCsms) -> int:
    """3.7: the CSMS drops the station mid-transaction and refuses it for a while; charging
    goes on, MeterValues and the local StopTransaction are queued and replayed in order."""
    tx_id = await plug_and_tap(h, csms)
    await h.advance(60, step_s=10)
    await drained(h)
    mv_online = csms.count("MeterValues")
    connections = (await csms.stats())["connections"]

    await csms.command("offline", on=True)
    await csms.command("disconnect", identity=STATION_ID)
    await h.settle(lambda: h.app.port.connection_state() != "accepted")
    await h.advance(120, step_s=10)  # reconnect attempts are refused (HTTP 503) meanwhile
    assert h.app.port.connection_state() != "accepted"
    assert h.connector().hw.contactor.closed, "charging must go on while the CSMS is away"
    queued = h.app.port.queued_messages()
    assert queued >= 2, "MeterValues were not queued while offline"
    h.tap()  # local stop while offline
    await h.settle(lambda: h.app.port.queued_messages() == queued + 1)
    assert csms.count("MeterValues") == mv_online

    stops = csms.count("StopTransaction")
    await reconnect(h, csms)
    await drained(h)
    stop = await csms.wait_call("StopTransaction", after=stops)
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == "Local"
    assert csms.count("MeterValues") >= mv_online + queued
    # Replayed in order: every queued MeterValues precedes the StopTransaction.
    tail = [f.action for f in csms.received if f.action in ("MeterValues", "StopTransaction")]
    assert tail[-1] == "StopTransaction"
    stats = await csms.stats()
    assert stats["connections"] == connections + 1
    assert stats["rejectedConnections"] >= 1
    assert csms.count("BootNotification") == 1, "no new BootNotification after a reconnect"
    h.unplug()
    await h.advance(1)
    await drained(h)
    return tx_id


async def fault(h: Any, csms: NodeCsms) -> None:
    """4.9: a fault is reported as Faulted with its error code, and cleared again."""
    n = csms.count("StatusNotification")
    h.rig(1).fault.inject("GroundFailure")
    await h.advance(1)
    faulted = await csms.wait_call("StatusNotification", status_of(1, "Faulted"), after=n)
    assert faulted["errorCode"] == "GroundFailure"
    n = csms.count("StatusNotification")
    h.rig(1).fault.clear()
    await h.advance(1)
    cleared = await csms.wait_call("StatusNotification", status_of(1, "Available"), after=n)
    assert cleared["errorCode"] == "NoError"
    await drained(h)


async def soft_reset_during_transaction(h: Any, csms: NodeCsms) -> int:
    """5.13 Reset Soft: Accepted, the running transaction stops with reason SoftReset, then
    the app asks for a restart (``reset_requested``)."""
    h.plug()
    await h.advance(1)
    before = len(start_replies(csms))
    result = await csms.call("RemoteStartTransaction", {"connectorId": 1, "idTag": CARD})
    assert result == {"status": "Accepted"}
    tx_id = await started(h, csms, before)
    await h.advance(10)
    stops = csms.count("StopTransaction")
    assert await csms.call("Reset", {"type": "Soft"}) == {"status": "Accepted"}
    stop = await csms.wait_call("StopTransaction", after=stops)
    assert stop["transactionId"] == tx_id
    assert stop["reason"] == "SoftReset"
    await h.settle(lambda: h.app.reset_requested == "Soft")
    await drained(h)
    return tx_id


async def smart_charging(h: Any, csms: NodeCsms) -> int:
    """Smart Charging 3.13 / 5.5 / 5.7 / 5.16 in a session: a TxDefaultProfile on connector 0,
    a TxProfile for the running transaction, GetCompositeSchedule in A and W (the answers are
    checked against the schemas by ocpp-rpc), ClearChargingProfile; the pilot follows."""
    tx_id = await plug_and_tap(h, csms)

    def body(profile_id: int, purpose: str, limit: float, **extra: Any) -> dict[str, Any]:
        return {
            "chargingProfileId": profile_id,
            "stackLevel": 1,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
            },
            **extra,
        }

    default = {"connectorId": 0, "csChargingProfiles": body(1, "TxDefaultProfile", 12.5)}
    assert await csms.call("SetChargingProfile", default) == {"status": "Accepted"}
    tx = {"connectorId": 1, "csChargingProfiles": body(2, "TxProfile", 8, transactionId=tx_id)}
    assert await csms.call("SetChargingProfile", tx) == {"status": "Accepted"}
    await h.settle(lambda: h.rig(1).vehicle.max_current_a == 8.0)
    for unit in ("A", "W"):
        composite = await csms.call(
            "GetCompositeSchedule", {"connectorId": 1, "duration": 600, "chargingRateUnit": unit}
        )
        assert composite["status"] == "Accepted"
        assert composite["chargingSchedule"]["chargingRateUnit"] == unit
    clear = {"chargingProfilePurpose": "TxProfile"}
    assert await csms.call("ClearChargingProfile", clear) == {"status": "Accepted"}
    await h.settle(lambda: h.rig(1).vehicle.max_current_a == 12.5)
    assert await csms.call("ClearChargingProfile", {}) == {"status": "Accepted"}
    stops = csms.count("StopTransaction")
    h.tap()
    await csms.wait_call("StopTransaction", after=stops)
    h.unplug()
    await h.advance(1)
    await drained(h)
    return tx_id


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(v, sort_keys=True) for v in violations)


async def test_end_to_end_against_ocpp_rpc_strict_csms(node_csms: NodeCsms, charger: Any) -> None:
    csms = node_csms
    # The shared fixture only needs ``url``, ``wait_connected`` and ``received`` (with
    # ``action``/``payload``) from its CSMS, which NodeCsms provides.
    h = await charger(csms)

    await boot_and_status(h, csms)
    tx_ids = [await local_session(h, csms)]
    tx_ids.append(await remote_start_stop(h, csms))
    await configuration(h, csms)
    await availability(h, csms)
    await trigger_message(h, csms)
    await certificates(h, csms)
    await firmware(h, csms)
    await unlock_and_data_transfer(h, csms)
    tx_ids.append(await reservations(h, csms))
    tx_ids.append(await outage_mid_transaction(h, csms))
    await fault(h, csms)
    tx_ids.append(await smart_charging(h, csms))
    tx_ids.append(await soft_reset_during_transaction(h, csms))

    stats = await csms.stats()
    assert stats["violations"] == [], "schema/protocol violations:\n" + describe(
        stats["violations"]
    )
    assert stats["overlappingCalls"] == 0
    assert stats["maxOutstanding"] == 1
    # Every CSMS CALL was answered with a CALLRESULT that passed the schema.
    assert stats["callErrorsReceived"] == {}
    assert stats["answered"] == stats["sent"]

    assert len(set(tx_ids)) == len(tx_ids) == 6
    assert stats["received"]["StartTransaction"] == 6
    assert stats["received"]["StopTransaction"] == 6
    assert stats["received"]["BootNotification"] == 1
    # StartupOfTheDevice, ResetOrReboot (the soft reset) and the next start's, strict-checked.
    assert stats["received"]["SecurityEventNotification"] >= 2
    assert stats["duplicateStarts"] == 0
    assert stats["stopsForUnknownTx"] == []
    transactions = {int(k): v for k, v in stats["transactions"].items()}
    assert sorted(transactions) == sorted(tx_ids)
    for tx_id, tx in transactions.items():
        assert (tx["starts"], tx["stops"]) == (1, 1), f"transaction {tx_id}: {tx}"
    assert transactions[tx_ids[0]]["meterValues"] >= 3
    assert transactions[tx_ids[3]]["meterValues"] >= 3  # the outage


async def test_the_checker_catches_violations(node_csms: NodeCsms) -> None:
    """Negative control, so that "zero violations" above means something: a hand-written
    misbehaving station gets every kind of violation recorded by the Node CSMS."""
    from websockets.asyncio.client import connect

    csms = node_csms
    async with connect(f"{csms.url}/CP-BAD", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        await csms.wait_connected("CP-BAD")
        # Schema: StatusNotification without errorCode; it is refused with a CALLERROR.
        await ws.send(
            json.dumps([2, "m1", "StatusNotification", {"connectorId": 1, "status": "Available"}])
        )
        refused = json.loads(await ws.recv())
        assert refused[:2] == [4, "m1"]
        # Two CALLs without waiting for the first answer (answers held back so they overlap).
        await csms.command("delay", ms=300)
        await ws.send(json.dumps([2, "m2", "Heartbeat", {}]))
        await ws.send(json.dumps([2, "m3", "Heartbeat", {}]))
        assert {json.loads(await ws.recv())[1] for _ in range(2)} == {"m2", "m3"}
        await csms.command("delay", ms=0)
        # Not an OCPP-J frame at all.
        await ws.send("{not json")
        await ws.recv()

        # A CALLRESULT that breaks the schema, and a CALLERROR with a non-1.6 error code.
        async def answer(result: Any) -> dict[str, Any]:
            pending = asyncio.create_task(
                csms.command("call", identity="CP-BAD", method="Reset", params={"type": "Soft"})
            )
            frame = json.loads(await ws.recv())
            assert frame[0] == 2 and frame[2] == "Reset"
            await ws.send(json.dumps([*result[:1], frame[1], *result[1:]]))
            return await pending

        reply = await answer([3, {"status": "Maybe"}])
        assert "error" in reply, "strict mode must reject a CALLRESULT that breaks the schema"
        reply = await answer([4, "FormatViolation", "2.0.1 spelling", {}])
        assert reply["error"]["code"] == "FormatViolation"

    stats = await csms.stats()
    kinds = sorted(
        (v["kind"], v.get("direction"), v.get("messageType") or v.get("method") or "")
        for v in stats["violations"]
    )
    assert ("schema", "inbound", "CALL") in kinds
    assert ("schema", "inbound", "CALLRESULT") in kinds
    assert ("outstanding", "inbound", "") in kinds
    assert ("callerror", "inbound", "") in kinds
    assert ("badMessage", "inbound", "") in kinds
    assert stats["maxOutstanding"] == 2
    assert stats["overlappingCalls"] == 1
