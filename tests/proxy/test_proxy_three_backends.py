"""Three real backends behind `evsed proxy`: the primary and a mirror are dev CSMSs, the
energy manager is the independent strict CSMS (tests/conformance/csms.js, npm ocpp-rpc: every
frame checked against its own schemas). A real evsed charger runs a session in OCPP 1.6 and
in 2.0.1; every backend sees it, in 1.6 under its own transactionId, in 2.0.1 under the
charger's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.ocpp16.test_conformance_ocpp_rpc import NodeCsms
from tests.ocpp16.test_conformance_ocpp_rpc import pytestmark as node_marks
from tests.proxy.proxyrig import Rig, accepted, backend, eventually, proxy_config, session

pytestmark = node_marks


@pytest.fixture
async def dev_pair() -> AsyncIterator[tuple[DevCsms, DevCsms]]:
    async with DevCsms(heartbeat_interval_s=3600) as billing, DevCsms() as watch:
        billing._last_transaction_id = 100
        watch._last_transaction_id = 500
        yield billing, watch


async def node(monkeypatch: pytest.MonkeyPatch, protocols: str) -> NodeCsms:
    monkeypatch.setenv("CSMS_PROTOCOLS", protocols)
    server = NodeCsms()
    await server.start()
    return server


async def start_rig(tmp_path: Path, billing: DevCsms, watch: DevCsms, em: NodeCsms) -> Rig:
    rig = Rig(
        proxy_config(
            tmp_path,
            [
                backend("billing", billing.url, "primary"),
                backend("em", em.url, "energy-manager"),
                backend("watch", watch.url, "mirror"),
            ],
        )
    )
    await rig.start()
    return rig


async def test_a_16_session_seen_by_three_backends_with_their_own_ids(
    tmp_path: Path,
    dev_pair: tuple[DevCsms, DevCsms],
    charger: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Primary 101, mirror 501, strict energy manager 1: each gets StartTransaction,
    MeterValues and StopTransaction under its own id; the strict CSMS records no schema
    violation, never two CALLs at once, no stop for a transaction it did not hand out."""
    billing, watch = dev_pair
    em = await node(monkeypatch, "ocpp1.6")
    rig = await start_rig(tmp_path, billing, watch, em)
    try:
        h = await charger(rig.as_csms, wait_accepted=False)
        await accepted(h)
        await session(h)
        await em.wait_call("StopTransaction")
        stats = await em.stats()
        assert stats["violations"] == []
        assert stats["maxOutstanding"] == 1
        assert stats["stopsForUnknownTx"] == []
        assert list(stats["transactions"]) == ["1"]
        em_ids = {
            f.payload["transactionId"]
            for f in em.received
            if f.action in ("MeterValues", "StopTransaction")
        }
        assert em_ids == {1}
        await eventually(lambda: bool(watch.frames(STATION_ID, "StopTransaction")))
        assert watch.frames(STATION_ID, "StopTransaction")[0].payload["transactionId"] == 501
        assert billing.frames(STATION_ID, "StopTransaction")[0].payload["transactionId"] == 101
        assert [f.action for f in em.received] == [f.action for f in billing.received]
        # The energy manager's profile reaches the charger; a mirror's is refused.
        profile = {
            "connectorId": 0,
            "csChargingProfiles": {
                "chargingProfileId": 3,
                "stackLevel": 0,
                "chargingProfilePurpose": "ChargePointMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8.0}],
                },
            },
        }
        assert (await em.call("SetChargingProfile", profile))["status"] == "Accepted"
        got = await watch.call_raw(STATION_ID, "SetChargingProfile", profile)
        assert got[0] == 4 and got[2] == "SecurityError"
    finally:
        await rig.stop()
        await em.close()


async def test_a_201_session_seen_by_three_backends(
    tmp_path: Path,
    dev_pair: tuple[DevCsms, DevCsms],
    charger: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OCPP 2.0.1 (the version the charger and the primary picked) to all three: the same
    TransactionEvents (Started .. Ended, seqNo 0, 1, 2, ...) under the charger's own
    transactionId at every backend (E01, E02, E06; TC_E_03_CS); the strict CSMS records no
    violation. A mirror's RequestStartTransaction is refused SecurityError naming
    'billing', its GetVariables is answered by the charger."""
    billing, watch = dev_pair
    em = await node(monkeypatch, "ocpp2.0.1")
    rig = await start_rig(tmp_path, billing, watch, em)
    try:
        h = await charger(rig.as_csms, wait_accepted=False, ocpp_version="2.0.1")
        await accepted(h)
        connected = next(e for e in em.events if e["event"] == "connected")
        assert connected["protocol"] == "ocpp2.0.1"
        h.plug()
        await h.advance(1)
        h.tap()
        await em.wait_call("TransactionEvent", lambda p: p["eventType"] == "Started")
        await h.advance(125, step_s=5)
        h.tap()
        await em.wait_call("TransactionEvent", lambda p: p["eventType"] == "Ended")
        await eventually(
            lambda: any(
                f.payload["eventType"] == "Ended"
                for f in watch.frames(STATION_ID, "TransactionEvent")
            )
        )
        for events in (
            [f.payload for f in em.received if f.action == "TransactionEvent"],
            [f.payload for f in watch.frames(STATION_ID, "TransactionEvent")],
            [f.payload for f in billing.frames(STATION_ID, "TransactionEvent")],
        ):
            assert [p["seqNo"] for p in events] == list(range(len(events)))
            assert [p["eventType"] for p in events][:: len(events) - 1] == ["Started", "Ended"]
        ids = {
            p["transactionInfo"]["transactionId"]
            for server in (watch, billing)
            for p in (f.payload for f in server.frames(STATION_ID, "TransactionEvent"))
        } | {
            f.payload["transactionInfo"]["transactionId"]
            for f in em.received
            if f.action == "TransactionEvent"
        }
        assert len(ids) == 1  # the charger's own id, everywhere
        stats = await em.stats()
        assert stats["violations"] == [] and stats["maxOutstanding"] == 1
        got = await watch.call_raw(
            STATION_ID,
            "RequestStartTransaction",
            {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}, "remoteStartId": 1},
        )
        assert got[0] == 4 and got[2] == "SecurityError" and "'billing'" in got[3]
        got = await watch.call_raw(
            STATION_ID,
            "GetVariables",
            {
                "getVariableData": [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": "HeartbeatInterval"},
                    }
                ]
            },
        )
        assert got[0] == 3 and got[2]["getVariableResult"][0]["attributeStatus"] == "Accepted"
    finally:
        await rig.stop()
        await em.close()
