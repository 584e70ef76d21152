"""Several backends on one charger (issue 15): a billing primary, a mirror and an energy
manager, each a real WebSocket CSMS on 127.0.0.1 (two dev CSMS instances and the strict
ocpp-rpc CSMS). Each gets every transaction with its own transactionId, exactly once and in
order, also after being down for the whole session; commands a backend does not own are
refused with SecurityError and change nothing; an energy manager's limit combines with the
primary's as the minimum."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from controller.app import App
from controller.config import ConfigError, parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.ocpp16.test_conformance_ocpp_rpc import NODE, NodeCsms

pytestmark = pytest.mark.timeout(90)


def backends_config(
    tmp_path: Path, primary: str, *others: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """A simulated charger whose [[csms]] list is the primary at ``primary`` plus
    ``others`` (each with url, name, role and anything else of a [[csms]] entry)."""
    data = charger_config(tmp_path, primary, **kwargs)
    fast = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "response_timeout_s": 2.0}
    data["csms"] = [
        {**data["csms"], "name": "billing", "role": "primary"},
        *({**fast, **o} for o in others),
    ]
    return data


@pytest.fixture
async def started() -> AsyncIterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


async def start_app(data: dict[str, Any], apps: list[App], csms: DevCsms) -> Harness:
    app = App(parse(data), clock=ManualClock(), boot_id="boot-1")
    await app.start()
    apps.append(app)
    h = Harness(app, app.clock, csms)  # type: ignore[arg-type]
    await csms.wait_connected(STATION_ID, timeout_s=5)
    await h.settle(lambda: app.port is not None and app.port.connection_state() == "accepted")
    return h


def frames(server: DevCsms, action: str) -> list[dict[str, Any]]:
    return [f.payload for f in server.received if f.action == action]


async def session(h: Harness, minutes: int = 2) -> None:
    """Plug, tap, charge ``minutes`` (a sample each MeterValueSampleInterval), unplug."""
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.advance(60 * minutes, step_s=5)
    h.unplug()
    await h.advance(2)
    await h.settle(lambda: h.connector().tx_key is None)


async def delivered(h: Harness) -> None:
    """Every backend's queue is empty."""
    await h.settle(
        lambda: all(b["queued_messages"] == 0 for b in h.app.backends_status()), timeout_s=10
    )


async def test_a_session_seen_by_three_backends_with_their_own_transaction_ids(
    tmp_path: Path, started: list[App]
) -> None:
    """A 1.6 session on a charger with a primary (dev CSMS), a mirror (a second dev CSMS)
    and an energy manager (the strict ocpp-rpc CSMS): each receives one StartTransaction,
    the MeterValues and one StopTransaction carrying its own transactionId, in order; the
    strict CSMS sees no schema violation and never two CALLs in flight; the station's
    status lists the three backends."""
    if NODE is None:
        pytest.skip("node is not installed")
    node = NodeCsms()
    await node.start()
    try:
        async with (
            DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
            DevCsms(
                host="127.0.0.1", port=0, heartbeat_interval_s=3600, first_transaction_id=5001
            ) as mirror,
        ):
            data = backends_config(
                tmp_path,
                billing.url,
                {"url": mirror.url, "name": "mirror", "role": "mirror"},
                {"url": node.url, "name": "ems", "role": "energy-manager"},
            )
            h = await start_app(data, started, billing)
            await mirror.wait_connected(STATION_ID, timeout_s=5)
            await node.wait_connected(STATION_ID)
            await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
            await session(h)
            await delivered(h)

            (start_a,) = frames(billing, "StartTransaction")
            (start_b,) = frames(mirror, "StartTransaction")
            assert start_a["idTag"] == start_b["idTag"]
            ids_a = {p["transactionId"] for p in frames(billing, "StopTransaction")}
            ids_b = {p["transactionId"] for p in frames(mirror, "StopTransaction")}
            assert ids_a == {1} and ids_b == {5001}
            assert {p["transactionId"] for p in frames(billing, "MeterValues")} == {1}
            assert {p["transactionId"] for p in frames(mirror, "MeterValues")} == {5001}
            assert len(frames(billing, "MeterValues")) == len(frames(mirror, "MeterValues")) >= 2
            assert node.count("StartTransaction") == 1 and node.count("StopTransaction") == 1
            node_id = next(
                e["result"]["transactionId"]
                for e in node.events
                if e["event"] == "reply" and e["method"] == "StartTransaction"
            )
            (node_stop,) = [f.payload for f in node.received if f.action == "StopTransaction"]
            assert node_stop["transactionId"] == node_id
            # The same energy everywhere.
            (stop_a,) = frames(billing, "StopTransaction")
            (stop_b,) = frames(mirror, "StopTransaction")
            assert stop_a["meterStop"] == stop_b["meterStop"] == node_stop["meterStop"]
            stats = await node.stats()
            assert stats["violations"] == [] and stats["maxOutstanding"] <= 1

            assert h.app.store is not None
            (tx,) = h.app.store.transactions(limit=5)
            assert tx.csms_tx_ids == {"csms": "1", "mirror": "5001", "ems": str(node_id)}
            listed = {b["name"]: b for b in h.app.backends_status()}
            assert {n: b["role"] for n, b in listed.items()} == {
                "billing": "primary",
                "mirror": "mirror",
                "ems": "energy-manager",
            }
            assert "2/2 other backends accepted" in h.app.status_line()
    finally:
        await node.close()


async def test_a_backend_down_for_the_whole_session_gets_it_afterwards_exactly_once(
    tmp_path: Path, started: list[App]
) -> None:
    """The mirror refuses connections for the whole session: the primary is not delayed
    (it has the session at once); when the mirror is back it receives StartTransaction,
    every MeterValues and StopTransaction exactly once, in order, with its own id."""
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1", port=0, heartbeat_interval_s=3600, first_transaction_id=700
        ) as mirror,
    ):
        mirror.refuse_connections = True
        data = backends_config(
            tmp_path, billing.url, {"url": mirror.url, "name": "mirror", "role": "mirror"}
        )
        h = await start_app(data, started, billing)
        await session(h, minutes=3)
        await h.settle(lambda: h.app.port is not None and h.app.port.queued_messages() == 0)
        assert len(frames(billing, "StopTransaction")) == 1
        assert frames(mirror, "StartTransaction") == []
        (mirror_status,) = [b for b in h.app.backends_status() if b["name"] == "mirror"]
        assert mirror_status["queued_messages"] >= 5  # start, 3+ samples, stop

        mirror.refuse_connections = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not frames(mirror, "StopTransaction"):
            assert loop.time() < deadline, "the mirror did not get the session"
            await h.advance(0.25, step_s=0.25)
        await delivered(h)
        order = [
            f.action
            for f in mirror.received
            if f.action in ("StartTransaction", "MeterValues", "StopTransaction")
        ]
        assert order[0] == "StartTransaction" and order[-1] == "StopTransaction"
        assert order.count("StartTransaction") == 1 and order.count("StopTransaction") == 1
        assert order.count("MeterValues") == len(frames(billing, "MeterValues"))
        assert {p["transactionId"] for p in frames(mirror, "MeterValues")} == {700}
        assert frames(mirror, "StopTransaction")[0]["transactionId"] == 700
        # The primary saw each message once, not again when the mirror came back.
        assert len(frames(billing, "StartTransaction")) == 1


async def test_commands_a_backend_does_not_own_are_refused_without_effect(
    tmp_path: Path, started: list[App]
) -> None:
    """A mirror's RemoteStartTransaction, ChangeConfiguration and Reset are answered
    SecurityError (naming the owner) and start, change and reset nothing; its reads
    (GetConfiguration, TriggerMessage) are answered; the primary's commands still work."""
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as mirror,
    ):
        data = backends_config(
            tmp_path, billing.url, {"url": mirror.url, "name": "mirror", "role": "mirror"}
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        h.plug()
        await h.advance(1)
        for request in (
            call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1),
            call.ChangeConfiguration(key="HeartbeatInterval", value="10"),
            call.Reset(type="Soft"),
        ):
            with pytest.raises(OCPPError) as refused:
                await mirror.call(STATION_ID, request)
            assert refused.value.code == "SecurityError"
            assert "billing" in str(refused.value.description)
        await h.advance(2)
        assert h.connector().tx_key is None
        assert h.app.settings.get("HeartbeatInterval") != "10"
        assert h.app.reset_requested is None
        conf = await mirror.call(STATION_ID, call.GetConfiguration(key=["HeartbeatInterval"]))
        assert conf.configuration_key[0]["key"] == "HeartbeatInterval"
        trig = await mirror.call(STATION_ID, call.TriggerMessage(requested_message="Heartbeat"))
        assert trig.status == "Accepted"
        # The owner is not affected by the refusals.
        started_ = await billing.call(
            STATION_ID, call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1)
        )
        assert started_.status == "Accepted"
        await h.advance(2)
        await h.settle(lambda: h.connector().tx_key is not None)


def _tx_default(profile_id: int, limit_a: float) -> dict[str, Any]:
    return {
        "chargingProfileId": profile_id,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_a}],
        },
    }


async def test_an_energy_manager_lowers_the_pilot_below_the_primary_limit(
    tmp_path: Path, started: list[App]
) -> None:
    """The primary allows 16 A, the energy manager 10 A: the pilot offers 10 A (the
    minimum); the energy manager clearing its profile raises it back to 16 A, and its
    ClearChargingProfile never removes the primary's. A mirror may not set a profile."""
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as ems,
    ):
        data = backends_config(
            tmp_path, billing.url, {"url": ems.url, "name": "ems", "role": "energy-manager"}
        )
        h = await start_app(data, started, billing)
        await ems.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        h.plug()
        await h.advance(1)
        h.tap()
        await h.settle(lambda: h.connector().hw.contactor.closed)
        ok = await billing.call(
            STATION_ID,
            call.SetChargingProfile(connector_id=0, cs_charging_profiles=_tx_default(1, 16)),
        )
        assert ok.status == "Accepted"
        ok = await ems.call(
            STATION_ID,
            call.SetChargingProfile(connector_id=0, cs_charging_profiles=_tx_default(1, 10)),
        )
        assert ok.status == "Accepted"
        await h.advance(1)
        await h.settle(lambda: float(h.rig().vehicle.max_current_a) == 10)
        # Each backend has its own profile 1: neither replaced the other.
        assert [p.profile_id for p in h.station.installed_profiles()] == [1]
        assert [p.profile_id for p in h.station.installed_profiles("ems")] == [1]
        cleared = await ems.call(STATION_ID, call.ClearChargingProfile(id=1))
        assert cleared.status == "Accepted"
        await h.advance(1)
        await h.settle(lambda: float(h.rig().vehicle.max_current_a) == 16)
        assert [p.profile_id for p in h.station.installed_profiles()] == [1]
        # The energy manager owns no shared command.
        with pytest.raises(OCPPError) as refused:
            await ems.call(STATION_ID, call.RemoteStopTransaction(transaction_id=1))
        assert refused.value.code == "SecurityError"


async def test_a_2_0_1_energy_manager_beside_a_1_6_primary(
    tmp_path: Path, started: list[App]
) -> None:
    """Each backend speaks its own version: the 1.6 primary gets StartTransaction /
    StopTransaction, the 2.0.1 energy manager TransactionEvent Started ... Ended with
    gap-free seqNo and the charger's own transactionId, the same energy in both."""
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1", port=0, heartbeat_interval_s=3600, ocpp_versions=("2.0.1",)
        ) as ems,
    ):
        data = backends_config(
            tmp_path,
            billing.url,
            {"url": ems.url, "name": "ems", "role": "energy-manager", "ocpp_version": "2.0.1"},
        )
        h = await start_app(data, started, billing)
        await ems.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        await session(h)
        await delivered(h)
        events = frames(ems, "TransactionEvent")
        assert [e["eventType"] for e in (events[0], events[-1])] == ["Started", "Ended"]
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
        (stop,) = frames(billing, "StopTransaction")
        ended = events[-1]
        register = [
            sv
            for mv in ended["meterValue"]
            for sv in mv["sampledValue"]
            if sv.get("measurand", "Energy.Active.Import.Register")
            == "Energy.Active.Import.Register"
            and sv.get("context") == "Transaction.End"
        ]
        assert register and round(float(register[0]["value"])) == stop["meterStop"]
        listed = {b["name"]: b["ocpp_version"] for b in h.app.backends_status()}
        assert listed == {"billing": "1.6", "ems": "2.0.1"}


@pytest.mark.parametrize(
    ("others", "message"),
    [
        (
            [
                {"url": "ws://127.0.0.1:1/a", "name": "a", "role": "mirror", "allow": ["reset"]},
                {"url": "ws://127.0.0.1:1/b", "name": "b", "role": "mirror", "allow": ["reset"]},
            ],
            "reset is given to both 'a' and 'b'",
        ),
        (
            [{"url": "ws://127.0.0.1:1/a", "name": "a", "role": "primary"}],
            "exactly one backend must be the primary",
        ),
        ([{"url": "ws://127.0.0.1:1/a", "role": "mirror"}], "needs a name"),
        ([{"url": "ws://127.0.0.1:1/a", "name": "a"}], "needs a role"),
        (
            [{"url": "ws://127.0.0.1:1/a", "name": "csms", "role": "mirror"}],
            "is the primary's outbox",
        ),
        (
            [{"url": "ws://127.0.0.1:1/a", "name": "billing", "role": "mirror"}],
            "used twice",
        ),
        (
            [{"url": "ws://127.0.0.1:1/a", "name": "a", "role": "mirror", "allow": ["fly"]}],
            "unknown command 'fly'",
        ),
        (
            [{"url": "ws://127.0.0.1:1/a", "name": "a", "role": "boss"}],
            "must be one of primary, mirror, energy-manager",
        ),
        (
            [
                {
                    "url": "ws://127.0.0.1:1/a",
                    "name": "a",
                    "role": "mirror",
                    "ocpp_version": ["2.0.1", "1.6"],
                }
            ],
            "speaks one version",
        ),
    ],
)
def test_conflicting_or_incomplete_backends_are_config_errors(
    tmp_path: Path, others: list[dict[str, Any]], message: str
) -> None:
    """A command given to two backends is an error naming both; so is a second primary, a
    backend without a name or role, a name taken by the primary's outbox, an unknown command
    or role, and a version list for a backend besides the primary."""
    data = backends_config(tmp_path, "ws://127.0.0.1:1/ocpp", *others)
    with pytest.raises(ConfigError) as error:
        parse(data)
    assert message in str(error.value)


def test_an_allow_list_gives_a_command_to_another_backend(tmp_path: Path) -> None:
    """A mirror given "firmware" owns it; the primary then does not; the config check is
    the one the adapters apply at run time."""
    data = backends_config(
        tmp_path,
        "ws://127.0.0.1:1/ocpp",
        {"url": "ws://127.0.0.1:1/m", "name": "oem", "role": "mirror", "allow": ["firmware"]},
    )
    config = parse(data)
    assert config.ownership is not None
    from controller.core.ownership import Command

    assert config.ownership.owners[Command.FIRMWARE] == "oem"
    assert not config.ownership.permitted("billing", Command.FIRMWARE)
    assert config.ownership.permitted("billing", Command.RESET)
    assert [b.name for b in config.backends] == ["oem"]


async def test_a_flooding_backend_is_refused_and_the_others_go_on(
    tmp_path: Path, started: list[App], caplog: pytest.LogCaptureFixture
) -> None:
    """A runaway mirror sends 200 CALLs at once: the first burst is answered, the rest get
    GenericError ("too many requests") at once without reaching a handler, logged once for
    the burst; the primary's remote start meanwhile works and its session goes through."""
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as mirror,
    ):
        data = backends_config(
            tmp_path, billing.url, {"url": mirror.url, "name": "mirror", "role": "mirror"}
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        h.plug()
        await h.advance(1)
        flood = [
            mirror.call_raw(STATION_ID, "GetConfiguration", {"key": ["HeartbeatInterval"]})
            for _ in range(200)
        ]
        remote = billing.call(
            STATION_ID, call.RemoteStartTransaction(id_tag="04A1B2C3", connector_id=1)
        )
        *answers, started_ = await asyncio.gather(*flood, remote)
        assert started_.status == "Accepted"
        ok = [a for a in answers if a[0] == 3]
        refused = [a for a in answers if a[0] == 4]
        assert len(ok) + len(refused) == 200
        assert 50 <= len(ok) < 200
        assert {a[2] for a in refused} == {"GenericError"}
        warnings = [r for r in caplog.records if "CALLs at once" in r.getMessage()]
        assert len(warnings) == 1
        await h.advance(2)
        await h.settle(lambda: h.connector().tx_key is not None)
        await h.settle(lambda: len(frames(billing, "StartTransaction")) == 1)
        await h.settle(lambda: len(frames(mirror, "StartTransaction")) == 1)


async def test_a_backend_added_later_gets_history_only_when_asked(
    tmp_path: Path, started: list[App]
) -> None:
    """A session runs with the primary alone; the mirror added to the configuration later
    receives nothing of it at its first connection. `POST /api/backends/mirror/replay`
    (what `evsed backends replay mirror --since` sends) queues the finished transaction to
    it: one StartTransaction (its own transactionId) and one StopTransaction with the billed
    energy; asking again queues nothing twice, and an unknown backend is a 400."""
    import aiohttp

    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1", port=0, heartbeat_interval_s=3600, first_transaction_id=42
        ) as mirror,
    ):
        alone = charger_config(tmp_path, billing.url)
        h = await start_app(alone, started, billing)
        await session(h)
        await h.settle(lambda: h.app.port is not None and h.app.port.queued_messages() == 0)
        (stop_a,) = frames(billing, "StopTransaction")
        await h.app.stop(reason=None)

        data = backends_config(
            tmp_path, billing.url, {"url": mirror.url, "name": "mirror", "role": "mirror"}
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        await h.advance(2)
        assert frames(mirror, "StartTransaction") == []
        assert h.app.api is not None
        base = f"http://127.0.0.1:{h.app.api.port}"
        async with aiohttp.ClientSession() as http:
            url = f"{base}/api/backends/mirror/replay"
            async with http.post(url, json={"since": "2000-01-01T00:00:00Z"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["queued_transactions"] == 1
            await h.settle(lambda: len(frames(mirror, "StopTransaction")) == 1)
            async with http.post(url, json={"since": "2000-01-01T00:00:00Z"}) as resp:
                assert (await resp.json())["queued_transactions"] == 0
            async with http.post(
                f"{base}/api/backends/nobody/replay", json={"since": "2000-01-01"}
            ) as resp:
                assert resp.status == 400
        (start_b,) = frames(mirror, "StartTransaction")
        (stop_b,) = frames(mirror, "StopTransaction")
        assert stop_b["transactionId"] == 42
        assert stop_b["meterStop"] == stop_a["meterStop"]
        assert start_b["meterStart"] == frames(billing, "StartTransaction")[0]["meterStart"]
        await delivered(h)
        assert len(frames(billing, "StartTransaction")) == 1  # the primary got nothing again


async def test_another_backends_answers_and_ids_change_nothing(
    tmp_path: Path, started: list[App]
) -> None:
    """The mirror answers StartTransaction with idTagInfo Invalid: the session goes on (only
    the primary's answer deauthorizes, 1.6 3.5.1 StopTransactionOnInvalidId) and the card
    stays Accepted in the cache; the primary naming the mirror's transactionId in a
    RemoteStopTransaction is Rejected (each backend's ids are its own)."""
    from tests.conftest import CARD

    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1",
            port=0,
            heartbeat_interval_s=3600,
            first_transaction_id=5001,
            invalid_id_tags={CARD},
        ) as mirror,
    ):
        data = backends_config(
            tmp_path,
            billing.url,
            {"url": mirror.url, "name": "mirror", "role": "mirror"},
            ocpp={"StopTransactionOnInvalidId": True},
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        h.plug()
        await h.advance(1)
        h.tap()
        await h.settle(lambda: h.connector().hw.contactor.closed)
        await delivered(h)
        assert len(frames(mirror, "StartTransaction")) == 1
        await h.advance(5)
        assert h.connector().hw.contactor.closed and h.connector().tx_key is not None
        assert h.app.store is not None
        cached = h.app.store.cache_get(CARD)
        assert cached is not None and cached[0] == "Accepted"
        stop = await billing.call(STATION_ID, call.RemoteStopTransaction(transaction_id=5001))
        assert stop.status == "Rejected"
        await h.advance(2)
        assert h.connector().tx_key is not None
        stop = await billing.call(STATION_ID, call.RemoteStopTransaction(transaction_id=1))
        assert stop.status == "Accepted"
        await h.advance(2)
        await h.settle(lambda: h.connector().tx_key is None)


async def test_each_backend_has_its_own_security_profile(
    tmp_path: Path, started: list[App]
) -> None:
    """The primary on ws:// with Basic auth (profile 1), the mirror on wss:// with mutual
    TLS (profile 3: the charger certificate of its [[csms]] entry, its own CSMS root): both
    accepted, the session reaches both; the primary's security keys are not touched."""
    from tests.security.tlskit import Pki

    pki = Pki.make(tmp_path / "pki")
    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1",
            port=0,
            heartbeat_interval_s=3600,
            ssl_context=pki.server_context(require_client_cert=True),
        ) as mirror,
    ):
        tls_url = mirror.url.replace("ws://", "wss://")
        data = backends_config(
            tmp_path,
            billing.url,
            {
                "url": tls_url,
                "name": "mirror",
                "role": "mirror",
                "security_profile": 3,
                "ca_bundle": str(pki.csms_root),
                **pki.client(),
            },
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: all(b["state"] == "accepted" for b in h.app.backends_status()))
        await session(h, minutes=1)
        await delivered(h)
        assert len(frames(mirror, "StopTransaction")) == 1
        assert len(frames(billing, "StopTransaction")) == 1
        assert h.app.settings.get_int("SecurityProfile") == 1
        listed = {b["name"]: b["url"] for b in h.app.backends_status()}
        assert listed["mirror"].startswith("wss://")


async def test_a_full_disk_with_a_mirror_offline_loses_nothing_for_either(
    tmp_path: Path, started: list[App]
) -> None:
    """The disk is full for a whole session (the journal in memory, issue 4 item 8) and the
    mirror is offline meanwhile: the primary gets the session at once; the disk takes data
    again and is written out; then the mirror comes back and gets the session exactly once
    with its own id; both backends' ids end up in the database, nothing stays queued."""
    from controller.runtime.station import STORAGE_PROBE_INTERVAL_S
    from tests.storage.test_disk_full import FullDisk

    async with (
        DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as billing,
        DevCsms(
            host="127.0.0.1", port=0, heartbeat_interval_s=3600, first_transaction_id=77
        ) as mirror,
    ):
        data = backends_config(
            tmp_path, billing.url, {"url": mirror.url, "name": "mirror", "role": "mirror"}
        )
        h = await start_app(data, started, billing)
        await mirror.wait_connected(STATION_ID, timeout_s=5)
        store = h.app.store
        assert store is not None
        disk = FullDisk(store)
        mirror.refuse_connections = True
        await mirror.disconnect(STATION_ID)
        disk.full = True
        await session(h, minutes=3)
        await h.settle(lambda: len(frames(billing, "StopTransaction")) == 1)
        assert store.degraded and disk.failures > 0
        disk.full = False
        await h.advance(STORAGE_PROBE_INTERVAL_S + 2)
        await h.settle(lambda: not store.degraded)
        mirror.refuse_connections = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not frames(mirror, "StopTransaction"):
            assert loop.time() < deadline, "the mirror did not get the session"
            await h.advance(0.25, step_s=0.25)
        await delivered(h)
        assert len(frames(mirror, "StartTransaction")) == 1
        assert len(frames(mirror, "StopTransaction")) == 1
        assert {p["transactionId"] for p in frames(mirror, "MeterValues")} == {77}
        assert len(frames(mirror, "MeterValues")) == len(frames(billing, "MeterValues"))
        rows = store._db.execute("SELECT backend, csms_tx_id FROM tx_backend").fetchall()
        assert {(r[0], r[1]) for r in rows if r[1] is not None} == {("csms", "1"), ("mirror", "77")}
        assert store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
