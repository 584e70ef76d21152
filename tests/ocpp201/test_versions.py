"""Version choice: csms.ocpp_version lists the versions in order of preference, every one is
offered as a subprotocol (OCPP-J 1.6 3.1.2, 2.0.1 part 4 3.1.2), the charger speaks the one
the CSMS picks and remembers it for the next start."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, parse
from controller.core.records import DEFAULT_BACKEND
from controller.csms.versions import REMEMBERED_KEY, VersionChoice
from controller.dev.devcsms import DevCsms
from controller.ocpp16.client import Ocpp16Client
from controller.ocpp201.client import Ocpp201Client
from tests.conftest import STATION_ID, Harness, charger_config


class Settings:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get_setting(self, key: str) -> str | None:
        return self.values.get(key)

    def set_setting(self, key: str, value: str) -> None:
        self.values[key] = value


@pytest.mark.parametrize(
    ("value", "versions"),
    [("1.6", ("1.6",)), ("2.0.1", ("2.0.1",)), (["2.0.1", "1.6"], ("2.0.1", "1.6"))],
)
def test_config_accepts_a_version_or_a_list(
    tmp_path: Path, value: Any, versions: tuple[str, ...]
) -> None:
    config = parse(charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version=value))
    assert config.csms is not None
    assert config.csms.ocpp_versions == versions
    assert config.csms.ocpp_version == versions[0]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2.1", "unknown OCPP version '2.1'"),
        ([], "non-empty list"),
        (["1.6", "1.6"], "listed twice"),
        ([2.0], "not a string"),
        ({"v": "1.6"}, "non-empty list"),
    ],
)
def test_config_refuses_other_versions(tmp_path: Path, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version=value))
    assert info.value.key == "csms.ocpp_version"
    assert words in str(info.value)


def test_choice_offers_all_and_remembers_the_pick() -> None:
    store = Settings()
    choice = VersionChoice(["2.0.1", "1.6"], store)
    assert choice.offered() == ["ocpp2.0.1", "ocpp1.6"]
    assert choice.first() == "2.0.1"
    assert choice.picked("ocpp2.0.1", "ocpp2.0.1") is True and choice.switch_to is None
    assert choice.picked("ocpp1.6", "ocpp2.0.1") is False and choice.switch_to == "1.6"
    assert store.values[REMEMBERED_KEY] == "1.6"
    assert VersionChoice(["2.0.1", "1.6"], store).first() == "1.6"
    # A remembered version no longer listed is not used.
    assert VersionChoice(["2.0.1"], store).first() == "2.0.1"


def test_choice_refuses_none_and_foreign_subprotocols(caplog: pytest.LogCaptureFixture) -> None:
    choice = VersionChoice(["1.6"], Settings())
    with caplog.at_level(logging.ERROR):
        assert choice.picked(None, "ocpp1.6") is False
        assert choice.picked("ocpp2.0.1", "ocpp1.6") is False  # not listed
    assert choice.switch_to is None
    assert caplog.text.count("accepted none of the offered subprotocols ocpp1.6") == 2


async def boots(h: Harness, csms: DevCsms) -> None:
    await csms.wait_connected(STATION_ID, timeout_s=5)
    await h.settle(lambda: h.app.port is not None and h.app.port.connection_state() == "accepted")


async def test_prefers_201_but_a_16_csms_gets_16_and_it_is_remembered(
    charger: Any, tmp_path: Path
) -> None:
    """List ["2.0.1", "1.6"], a CSMS that speaks 1.6 only: the 2.0.1 adapter built first
    hands over (its connection sent nothing), the charger boots on 1.6 and the next start
    builds the 1.6 adapter first."""
    async with DevCsms(ocpp_versions=("1.6",), heartbeat_interval_s=3600) as csms:
        h = await charger(csms, wait_accepted=False, ocpp_version=["2.0.1", "1.6"])
        await boots(h, csms)
        assert isinstance(h.app.adapter, Ocpp16Client)
        assert h.app.client is h.app.adapter and h.app.client201 is None
        boot = h.frames("BootNotification")
        assert len(boot) == 1 and "chargePointVendor" in boot[0].payload  # 1.6 words
        assert h.app.store is not None
        assert h.app.store.get_setting(REMEMBERED_KEY) == "1.6"
        await h.app.stop(reason=None)

        again = await charger(csms, wait_accepted=False, ocpp_version=["2.0.1", "1.6"])
        assert isinstance(again.app.adapter, Ocpp16Client)  # built before any connection
        await boots(again, csms)
        assert again.app.adapter.connects == 1


async def test_prefers_16_but_a_201_csms_gets_201(charger: Any) -> None:
    """List ["1.6", "2.0.1"], a CSMS that speaks 2.0.1 only: the charger boots on 2.0.1."""
    async with DevCsms(ocpp_versions=("2.0.1",), heartbeat_interval_s=3600) as csms:
        h = await charger(csms, wait_accepted=False, ocpp_version=["1.6", "2.0.1"])
        await boots(h, csms)
        assert isinstance(h.app.adapter, Ocpp201Client)
        assert h.app.client is None and h.app.client201 is h.app.adapter
        assert h.frames("BootNotification")[0].payload["reason"] == "PowerUp"
        assert h.app.store is not None
        assert h.app.store.get_setting(REMEMBERED_KEY) == "2.0.1"
        # The 1.6 adapter's queue (its StartupOfTheDevice security event) stays in the
        # database for when 1.6 is spoken again; nothing of it went out on 2.0.1.
        assert h.app.store.outbox_count(DEFAULT_BACKEND) >= 1
        assert "SecurityEventNotification" not in {f.action for f in csms.received}


async def test_both_offered_the_csms_preference_decides(charger: Any) -> None:
    """Both listed and both spoken: the CSMS picks (here by its own order)."""
    async with DevCsms(ocpp_versions=("2.0.1", "1.6"), heartbeat_interval_s=3600) as csms:
        h = await charger(csms, wait_accepted=False, ocpp_version=["1.6", "2.0.1"])
        await boots(h, csms)
        assert isinstance(h.app.adapter, Ocpp201Client)


async def test_a_csms_that_accepts_none_is_an_error_and_retried(
    charger: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The CSMS answers the upgrade without any of the offered subprotocols: a logged error,
    the connection closed and tried again with back-off; the charger keeps running."""
    async with DevCsms(ocpp_versions=("2.0.1",)) as csms:
        with caplog.at_level(logging.ERROR, logger="controller.csms.versions"):
            h = await charger(csms, wait_accepted=False, ocpp_version="1.6")
            await h.settle(lambda: "accepted none of the offered" in caplog.text)
            for _ in range(5):
                await h.advance(1)
            await h.settle(lambda: caplog.text.count("accepted none of the offered") >= 2)
        assert "ocpp1.6" in caplog.text and "without a subprotocol" in caplog.text
        assert h.app.adapter is not None
        assert h.app.adapter.connection_state() != "accepted"
        assert csms.received == []
        assert h.station is not None and h.station.started


@pytest.mark.parametrize(
    "extra",
    [{"security_profile": 2, "url": "wss://127.0.0.1:9/ocpp"}, {"url": "wss://127.0.0.1:9/ocpp"}],
)
def test_201_configured_with_tls(tmp_path: Path, extra: dict[str, Any]) -> None:
    """2.0.1 speaks security profiles 2 and 3 (A00): a wss:// CSMS is a valid choice."""
    data = charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version=["2.0.1", "1.6"])
    data["csms"].update(extra)
    if extra.get("security_profile") == 2:
        data["csms"]["password"] = "secret-secret-1234"
    config = parse(data)
    assert config.csms is not None and config.csms.security_profile == 2
    assert config.csms.ocpp_versions == ("2.0.1", "1.6")


async def test_201_not_offered_once_a_16_csms_raised_the_profile(
    charger: Any, csms: DevCsms, caplog: pytest.LogCaptureFixture
) -> None:
    """A05: a 1.6 CSMS raised SecurityProfile to 2 above the configured 1; the 2.0.1 adapter
    connects with the configured profile (no raise over 2.0.1 yet), which would downgrade
    the link, so 2.0.1 is no longer offered (a logged error)."""
    h = await charger(csms, wait_accepted=False, ocpp_version=["1.6", "2.0.1"])
    await boots(h, csms)
    assert h.app.versions is not None and h.app.versions.offered() == ["ocpp1.6", "ocpp2.0.1"]
    h.app.settings.set_internal("SecurityProfile", "2")
    await h.app.stop(reason=None)
    with caplog.at_level(logging.ERROR, logger="controller.app"):
        again = await charger(csms, wait_accepted=False, ocpp_version=["1.6", "2.0.1"])
    assert again.app.versions is not None and again.app.versions.offered() == ["ocpp1.6"]
    assert "OCPP 2.0.1 not offered" in caplog.text


def test_config_show_writes_the_list_back(tmp_path: Path) -> None:
    """`evsed config show`: csms.ocpp_version as configured (a list stays a list)."""
    from controller.ops.opscli import effective_config

    for value, shown in ((["2.0.1", "1.6"], ["2.0.1", "1.6"]), ("2.0.1", "2.0.1")):
        config = parse(charger_config(tmp_path, "ws://127.0.0.1:9/ocpp", ocpp_version=value))
        csms = effective_config(config)["csms"]
        assert csms["ocpp_version"] == shown and "ocpp_versions" not in csms
