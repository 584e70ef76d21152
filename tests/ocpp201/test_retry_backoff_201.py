"""The 2.0.1 reconnect back-off follows OCPPCommCtrlr.RetryBackOffWaitMinimum /
RetryBackOffRepeatTimes / RetryBackOffRandomRange (Part 4 5.3 "Reconnecting", errata 2025
4.12: reset after a successful connection; TC_B_57_CS), on the manual clock; the first-boot
values come from the configuration's [ocpp.OCPPCommCtrlr] table."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from controller.config import ConfigError, parse
from controller.csms.connection import ConnectionOptions, CsmsConnection, station_url
from controller.dev.devcsms import DevCsms
from controller.ocpp201.backoff import MIN_WAIT_S, RetryBackOff
from controller.ocpp201.dm import DeviceModel, FirstBootValueError, build_station_model
from controller.ops.opscli import effective_config
from controller.runtime.clock import ManualClock
from controller.storage.store import Store
from tests.conftest import STATION_ID, Harness, charger_config
from tests.ocpp201.dm_support import description
from tests.ocpp201.test_e2e_boot import accepted, client, start
from tests.procs import free_port

COMM = "OCPPCommCtrlr"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "evsed.db")
    yield s
    s.close()


def model_with(store: Store, **values: int) -> DeviceModel:
    return build_station_model(store, description(1), first_boot={COMM: values})


# ---------------------------------------------------------------- the strategy


def test_waits_double_up_to_repeat_times(store: Store) -> None:
    """Part 4 5.3: WaitMinimum first, doubled after each failed attempt at most
    RepeatTimes times, then the last wait again; RandomRange 0: no random part."""
    model = model_with(
        store, RetryBackOffWaitMinimum=4, RetryBackOffRepeatTimes=2, RetryBackOffRandomRange=0
    )
    backoff = RetryBackOff(model, random.Random(1))
    assert [backoff(n) for n in range(6)] == [4, 8, 16, 16, 16, 16]


def test_random_part_up_to_random_range(store: Store) -> None:
    """A new random part of at most RetryBackOffRandomRange seconds on every attempt."""
    model = model_with(
        store, RetryBackOffWaitMinimum=5, RetryBackOffRepeatTimes=1, RetryBackOffRandomRange=3
    )
    backoff = RetryBackOff(model, random.Random(7))
    waits = [backoff(n) for n in range(200)]
    assert all(5 <= w <= 8 for w in waits[:1])
    assert all(10 <= w <= 13 for w in waits[1:])
    assert len({round(w, 6) for w in waits}) > 100  # really random, not a constant


def test_a_changed_variable_applies_to_the_next_attempt(store: Store) -> None:
    """SetVariables of RetryBackOff* (ReadWrite, Part 4 8.1-8.3) steers the next wait."""
    model = model_with(
        store, RetryBackOffWaitMinimum=4, RetryBackOffRepeatTimes=3, RetryBackOffRandomRange=0
    )
    backoff = RetryBackOff(model, random.Random(1))
    assert backoff(1) == 8
    model.set_internal(COMM, "RetryBackOffWaitMinimum", "1")
    model.set_internal(COMM, "RetryBackOffRepeatTimes", "0")
    assert backoff(2) == 1


def test_zero_waits_keep_a_floor(store: Store) -> None:
    """WaitMinimum and RandomRange 0 (the spec's minimum) reconnect at once, but never in a
    busy loop against a CSMS that refuses."""
    model = model_with(
        store, RetryBackOffWaitMinimum=0, RetryBackOffRepeatTimes=5, RetryBackOffRandomRange=0
    )
    backoff = RetryBackOff(model, random.Random(1))
    assert [backoff(n) for n in range(3)] == [MIN_WAIT_S] * 3


def test_defaults_without_configuration(store: Store) -> None:
    """The device model's defaults: 10 s, doubled up to 5 times, plus up to 10 s."""
    backoff = RetryBackOff(build_station_model(store, description(1)), random.Random(3))
    assert 10 <= backoff(0) <= 20
    assert 320 <= backoff(9) <= 330


# ---------------------------------------------------------------- first-boot values


def test_first_boot_values_replace_defaults_but_a_csms_value_wins(store: Store) -> None:
    """[ocpp.<Component>] values are the first-boot ones: a value the CSMS set (stored)
    survives a restart with the same configuration."""
    model = model_with(store, RetryBackOffWaitMinimum=7)
    assert model.get_int(COMM, "RetryBackOffWaitMinimum") == 7
    model.set_internal(COMM, "RetryBackOffWaitMinimum", "30")  # as a SetVariables stores it
    again = model_with(store, RetryBackOffWaitMinimum=7)
    assert again.get_int(COMM, "RetryBackOffWaitMinimum") == 30


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        ({"NoSuchCtrlr": {"X": 1}}, "ocpp.NoSuchCtrlr"),
        ({COMM: {"NoSuchVariable": 1}}, "ocpp.OCPPCommCtrlr.NoSuchVariable"),
        ({COMM: {"RetryBackOffWaitMinimum": 99999}}, "ocpp.OCPPCommCtrlr.RetryBackOffWaitMinimum"),
        ({COMM: {"RetryBackOffWaitMinimum": "soon"}}, "ocpp.OCPPCommCtrlr.RetryBackOffWaitMinimum"),
        ({"TxCtrlr": {"TxStartPoint": "Authorized"}}, "ocpp.TxCtrlr.TxStartPoint"),
    ],
)
def test_bad_first_boot_values_are_refused(
    store: Store, tables: dict[str, dict[str, Any]], key: str
) -> None:
    """Unknown components and variables, values out of range or of the wrong type and
    ReadOnly variables are refused, named as the configuration file spells them."""
    with pytest.raises(FirstBootValueError) as info:
        build_station_model(store, description(1), first_boot=tables)
    assert info.value.key == key


def test_config_tables_are_checked_by_check_config(tmp_path: Path) -> None:
    """`evsed check-config` (parse) checks [ocpp.<Component>] against the charger's model
    and wants 2.0.1 among csms.ocpp_version; the 1.6 keys of [ocpp] stay as they are."""
    good = charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version="2.0.1")
    good["ocpp"]["OCPPCommCtrlr"] = {"RetryBackOffWaitMinimum": 3}
    good["ocpp"]["AuthCtrlr"] = {"LocalAuthorizeOffline": False}
    config = parse(good)
    assert config.device_model_values[COMM]["RetryBackOffWaitMinimum"] == 3
    assert config.device_model_values["AuthCtrlr"] == {"LocalAuthorizeOffline": False}
    assert "OCPPCommCtrlr" not in config.ocpp_overrides
    assert config.ocpp_overrides["HeartbeatInterval"] == 3600
    shown = effective_config(config)["ocpp"]
    assert shown["OCPPCommCtrlr"]["RetryBackOffWaitMinimum"] == 3
    assert shown["HeartbeatInterval"] == 3600

    bad = charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version="2.0.1")
    bad["ocpp"]["OCPPCommCtrlr"] = {"RetryBackOffWaitMinimum": -1}
    with pytest.raises(ConfigError) as info:
        parse(bad)
    assert info.value.key == "ocpp.OCPPCommCtrlr.RetryBackOffWaitMinimum"

    v16 = charger_config(tmp_path, "ws://127.0.0.1:9/ocpp")
    v16["ocpp"]["OCPPCommCtrlr"] = {"RetryBackOffWaitMinimum": 3}
    with pytest.raises(ConfigError) as info:
        parse(v16)
    assert info.value.key == "ocpp.OCPPCommCtrlr" and "2.0.1" in str(info.value)


# ---------------------------------------------------------------- the connection


class Attempts:
    """When (manual-clock seconds) each connection attempt started."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.at: list[float] = []
        self.state = "offline"

    def __call__(self, state: str) -> None:
        self.state = state
        if state == "connecting":
            self.at.append(self.clock.monotonic_s())

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.at, self.at[1:], strict=False)]


async def step_until(
    clock: ManualClock, attempts: Attempts, count: int, limit_s: float = 200
) -> None:
    """Advance the manual clock 1 s at a time, each time letting an attempt that woke run
    to its end (so the next wait starts at the right time), until ``count`` attempts."""
    loop = asyncio.get_running_loop()
    moved = 0.0
    while len(attempts.at) < count:
        assert moved < limit_s, f"only {len(attempts.at)} attempts"
        await clock.advance(1.0)
        moved += 1.0
        deadline = loop.time() + 5
        await asyncio.sleep(0.005)
        while attempts.state == "connecting":
            assert loop.time() < deadline, "an attempt did not end"
            await asyncio.sleep(0.005)


async def test_connection_waits_follow_the_variables(store: Store) -> None:
    """TC_B_57_CS against a port nobody listens on: attempts at 0, +4, +8, +16, +16 (no
    random part); a changed RetryBackOffWaitMinimum applies from the next wait on."""
    model = model_with(
        store, RetryBackOffWaitMinimum=4, RetryBackOffRepeatTimes=2, RetryBackOffRandomRange=0
    )
    clock = ManualClock()
    attempts = Attempts(clock)
    url = f"ws://127.0.0.1:{free_port()}/ocpp"

    async def session(ws: ClientConnection) -> None:
        raise AssertionError("nobody listens")

    conn = CsmsConnection(
        url=station_url(url, STATION_ID),
        subprotocol="ocpp2.0.1",
        # The [csms] back-off would be far shorter: it must not be the one used.
        options=ConnectionOptions(csms_url=url, reconnect_min_s=0.05, reconnect_max_s=0.2),
        clock=clock,
        session=session,
        on_state=attempts,
        backoff=RetryBackOff(model, random.Random(1)),
    )
    run = asyncio.ensure_future(conn.run())
    try:
        await step_until(clock, attempts, 5)
        assert attempts.gaps() == [4, 8, 16, 16]
        model.set_internal(COMM, "RetryBackOffWaitMinimum", "1")  # 1 * 2**2 from now on
        await step_until(clock, attempts, 7)
        # The wait under way when it changed was 16; the one after it follows the change.
        assert attempts.gaps()[4:] == [16, 4]
    finally:
        await conn.close("test over")
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def test_1_6_keeps_the_csms_table_back_off() -> None:
    """Without a strategy (OCPP 1.6) the [csms] reconnect_min_s / reconnect_max_s back-off
    applies: every wait within reconnect_max_s."""
    clock = ManualClock()
    attempts = Attempts(clock)
    url = f"ws://127.0.0.1:{free_port()}/ocpp"

    async def session(ws: ClientConnection) -> None:
        raise AssertionError("nobody listens")

    conn = CsmsConnection(
        url=station_url(url, STATION_ID),
        subprotocol="ocpp1.6",
        options=ConnectionOptions(csms_url=url, reconnect_min_s=2, reconnect_max_s=4),
        clock=clock,
        session=session,
        on_state=attempts,
        rng=random.Random(5),
    )
    run = asyncio.ensure_future(conn.run())
    try:
        await step_until(clock, attempts, 6)
        assert all(1 <= gap <= 4 for gap in attempts.gaps()), attempts.gaps()
    finally:
        await conn.close("test over")
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


# ---------------------------------------------------------------- end to end


async def test_station_reconnects_after_the_csms_restarts(charger: Any) -> None:
    """TC_B_57_CS end to end: a 2.0.1 `evsed` App against the dev CSMS (RetryBackOff 3 s,
    doubled twice, no random part, from [ocpp.OCPPCommCtrlr]). The CSMS closes the
    connection: the station reconnects after 3 s (not before). The CSMS goes down: attempts
    3, 6, 12, 12 s apart; it comes back: the station reconnects at its next attempt with
    no second BootNotification (Part 4 5.3), and the status that changed while offline is
    reported (B04.FR.02); after that success the wait is 3 s again (errata 4.12)."""
    csms = DevCsms(host="127.0.0.1", port=free_port(), heartbeat_interval_s=3600)
    await csms.start()
    try:
        values = {
            "RetryBackOffWaitMinimum": 3,
            "RetryBackOffRepeatTimes": 2,
            "RetryBackOffRandomRange": 0,
        }
        h: Harness = await start(charger, csms, ocpp={COMM: values})
        await accepted(h)
        attempts = Attempts(h.clock)
        client(h).on_link_state.append(attempts)
        assert client(h).device_model.get_int(COMM, "RetryBackOffWaitMinimum") == 3  # type: ignore[union-attr]

        # The CSMS closes the connection (TC_B_57_CS step 1-3).
        await csms.disconnect(STATION_ID)
        await h.settle(lambda: attempts.state == "offline")
        lost_at = h.clock.monotonic_s()
        await step_until(h.clock, attempts, 1)
        assert attempts.at[0] - lost_at == 3
        await accepted(h)

        # The CSMS goes down; the station keeps trying, waits doubling twice.
        await csms.stop()
        await h.settle(lambda: attempts.state == "offline")
        h.plug()  # a status change while offline
        await step_until(h.clock, attempts, 5)
        assert attempts.gaps()[1:] == [6, 12, 12]
        await csms.start()  # back on the same port
        await step_until(h.clock, attempts, 6)
        await accepted(h)
        assert attempts.gaps()[-1] == 12
        await h.settle(
            lambda: any(
                f.payload["connectorStatus"] == "Occupied" for f in h.frames("StatusNotification")
            )
        )
        assert len(h.frames("BootNotification")) == 1

        # Reset after the success: the next loss waits WaitMinimum again.
        await csms.disconnect(STATION_ID)
        await h.settle(lambda: attempts.state == "offline")
        lost_at = h.clock.monotonic_s()
        await step_until(h.clock, attempts, 7)
        assert attempts.at[-1] - lost_at == 3
        await accepted(h)
    finally:
        await csms.stop()
