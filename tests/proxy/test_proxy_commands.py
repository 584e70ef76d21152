"""Commands from the backends through `evsed proxy`: the primary owns what changes the
charger, a mirror reads, an energy manager also sets charging profiles, an allow list moves
one command to another backend; what is refused is answered by the proxy (SecurityError
naming the owner) and never reaches the charger. Real evsed charger (OCPP 1.6), three dev
CSMSs on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID
from tests.proxy.proxyrig import Rig, accepted, backend, eventually, proxy_config

pytestmark = pytest.mark.timeout(60)

PROFILE = {
    "chargingProfileId": 7,
    "stackLevel": 1,
    "chargingProfilePurpose": "ChargePointMaxProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}],
    },
}


@pytest.fixture
async def csmss() -> AsyncIterator[dict[str, DevCsms]]:
    async with (
        DevCsms(heartbeat_interval_s=3600) as billing,
        DevCsms(heartbeat_interval_s=3600) as em,
        DevCsms(heartbeat_interval_s=3600) as watch,
    ):
        billing._last_transaction_id = 100
        em._last_transaction_id = 900
        yield {"billing": billing, "em": em, "watch": watch}


@pytest.fixture
async def rig_of(tmp_path: Path, csmss: dict[str, DevCsms]) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[Rig] = []

    async def make(em_allow: list[str] | None = None, **proxy: Any) -> Rig:
        config = proxy_config(
            tmp_path,
            [
                backend("billing", csmss["billing"].url, "primary"),
                backend("em", csmss["em"].url, "energy-manager", allow=em_allow or []),
                backend("watch", csmss["watch"].url, "mirror"),
            ],
            **proxy,
        )
        rig = Rig(config)
        await rig.start()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.stop()


async def connected(h: Any, csmss: dict[str, DevCsms]) -> None:
    await accepted(h)
    for server in csmss.values():
        await server.wait_connected(STATION_ID)


async def test_mirror_reads_and_is_refused_what_changes_the_charger(
    rig_of: Any, csmss: dict[str, DevCsms], charger: Any
) -> None:
    """A mirror's GetConfiguration and TriggerMessage reach the charger and the answers
    come back to it alone; its RemoteStartTransaction, ChangeConfiguration and Reset are
    answered SecurityError naming the owner 'billing', and the charger starts nothing."""
    rig = await rig_of()
    h = await charger(rig.as_csms, wait_accepted=False)
    await connected(h, csmss)
    watch = csmss["watch"]
    got = await watch.call_raw(STATION_ID, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert got[0] == 3 and got[2]["configurationKey"][0]["key"] == "HeartbeatInterval"
    got = await watch.call_raw(STATION_ID, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert got[0] == 3 and got[2]["status"] == "Accepted"
    for action, payload in (
        ("RemoteStartTransaction", {"idTag": "04A1B2C3", "connectorId": 1}),
        ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "10"}),
        ("Reset", {"type": "Soft"}),
    ):
        got = await watch.call_raw(STATION_ID, action, payload)
        assert got[0] == 4 and got[2] == "SecurityError", got
        assert "'billing'" in got[3]
    await h.advance(3)
    assert not h.connector().hw.contactor.closed
    assert not [f for f in csmss["billing"].received if f.action == "StartTransaction"]
    got = await csmss["billing"].call_raw(
        STATION_ID, "GetConfiguration", {"key": ["HeartbeatInterval"]}
    )
    assert got[2]["configurationKey"][0]["value"] == "3600"  # unchanged


async def test_energy_manager_sets_profiles_and_nothing_else(
    rig_of: Any, csmss: dict[str, DevCsms], charger: Any
) -> None:
    """The energy manager's SetChargingProfile reaches the charger (Accepted) and its
    GetCompositeSchedule shows the limit; the mirror's SetChargingProfile and the energy
    manager's RemoteStartTransaction are refused by the proxy."""
    rig = await rig_of()
    h = await charger(rig.as_csms, wait_accepted=False)
    await connected(h, csmss)
    em, watch = csmss["em"], csmss["watch"]
    payload = {"connectorId": 0, "csChargingProfiles": PROFILE}
    got = await em.call_raw(STATION_ID, "SetChargingProfile", payload)
    assert got[0] == 3 and got[2]["status"] == "Accepted", got
    got = await watch.call_raw(STATION_ID, "SetChargingProfile", payload)
    assert got[0] == 4 and got[2] == "SecurityError"
    assert "not allowed for a mirror" in got[3]
    got = await em.call_raw(STATION_ID, "RemoteStartTransaction", {"idTag": "04A1B2C3"})
    assert got[0] == 4 and got[2] == "SecurityError" and "'billing'" in got[3]
    got = await em.call_raw(STATION_ID, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    assert got[0] == 3 and got[2]["status"] == "Accepted"
    periods = got[2]["chargingSchedule"]["chargingSchedulePeriod"]
    assert periods[0]["limit"] == 10.0


async def test_allow_list_gives_a_command_to_another_backend(
    rig_of: Any, csmss: dict[str, DevCsms], charger: Any
) -> None:
    """allow = ["availability"] for the energy manager: its ChangeAvailability reaches the
    charger, the primary's is refused naming 'em' (one owner per shared command)."""
    rig = await rig_of(em_allow=["availability"])
    h = await charger(rig.as_csms, wait_accepted=False)
    await connected(h, csmss)
    payload = {"connectorId": 1, "type": "Inoperative"}
    got = await csmss["billing"].call_raw(STATION_ID, "ChangeAvailability", payload)
    assert got[0] == 4 and got[2] == "SecurityError" and "'em'" in got[3]
    got = await csmss["em"].call_raw(STATION_ID, "ChangeAvailability", payload)
    assert got[0] == 3 and got[2]["status"] == "Accepted"


async def test_transaction_ids_of_a_secondary_are_its_own(
    rig_of: Any, csmss: dict[str, DevCsms], charger: Any
) -> None:
    """During a session (primary id 101, energy manager's 901) the energy manager's
    TxProfile names 901 and reaches the charger as 101 (Accepted); naming 101, the primary's
    id, it is answered PropertyConstraintViolation by the proxy and changes nothing."""
    rig = await rig_of()
    h = await charger(rig.as_csms, wait_accepted=False)
    await connected(h, csmss)
    em = csmss["em"]
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed, timeout_s=10)
    await eventually(lambda: any(f.action == "StartTransaction" for f in em.received))
    await eventually(
        lambda: any(r.action == "StartTransaction" for r in em.sent_results), timeout_s=5
    )
    proxy = rig.proxy
    assert proxy is not None
    await eventually(lambda: proxy.store.primary_txs(STATION_ID, "em", 901) == [101])

    def tx_profile(tx: int) -> dict[str, Any]:
        profile = dict(PROFILE, chargingProfilePurpose="TxProfile", chargingProfileId=8)
        profile["transactionId"] = tx
        profile["chargingProfileKind"] = "Relative"
        return {"connectorId": 1, "csChargingProfiles": profile}

    got = await em.call_raw(STATION_ID, "SetChargingProfile", tx_profile(101))
    assert got[0] == 4 and got[2] == "PropertyConstraintViolation", got
    got = await em.call_raw(STATION_ID, "SetChargingProfile", tx_profile(901))
    assert got[0] == 3 and got[2]["status"] == "Accepted", got
