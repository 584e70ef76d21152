"""Absolute charging schedules on an untrusted clock (issue 12 item 5), end to end over a
real WebSocket on the injected clock.

What README "Smart charging" documents: limits follow the charger's clock; until NTP or
the CSMS confirms it that is its best guess (never before the last confirmed time), and
Absolute / Recurring schedules run on it; when the time is confirmed every limit is
computed again at once on the confirmed time, without waiting for the timer armed on the
old timeline. Both ways of confirming are tested: the CSMS's currentTime (here a
triggered Heartbeat.conf) and the kernel reporting NTP synchronisation after NTP stepped
the system clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.app import App
from controller.config import parse
from controller.dev import devcsms
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock, TrustedClock
from tests.conftest import STATION_ID, Harness, charger_config
from tests.ocpp16.test_clock_trust import wait_accepted
from tests.ocpp16.test_e2e_csms_requests import req, start_session
from tests.ocpp16.test_e2e_smart_charging import offered, profile, set_profile

# The charger's guess: a plausible system time (above the build floor) that nothing has
# confirmed, two hours behind the real time.
GUESS = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
REAL_OFFSET = timedelta(hours=2)
# A CSMS whose own clock is not set yet: a currentTime before the build floor is ignored,
# so the charger stays connected on its untrusted guess.
UNSET = "2001-01-01T00:00:00+00:00"

# startSchedule 08:00; 16 A, from 08:10 10 A, from 10:00 13 A, from 12:00 7 A.
PERIODS = [(0, 16), (600, 10), (7200, 13), (14400, 7)]


class CsmsTime:
    """What the dev CSMS answers as currentTime."""

    def __init__(self) -> None:
        self.value = UNSET

    def __call__(self) -> str:
        return self.value


@pytest.fixture
def csms_time(monkeypatch: pytest.MonkeyPatch) -> CsmsTime:
    answer = CsmsTime()
    monkeypatch.setattr(devcsms, "_now_iso", answer)
    return answer


@pytest.fixture
async def untrusted(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a charger on a TrustedClock over a manual base clock at GUESS, not NTP
    synchronised (until ``ntp[0]`` is set)."""
    apps: list[App] = []

    async def factory(csms: DevCsms) -> tuple[Harness, TrustedClock, list[bool]]:
        ntp = [False]
        base = ManualClock(start=GUESS)
        clock = TrustedClock(base, ntp_synchronized=lambda: ntp[0])
        app = App(parse(charger_config(tmp_path, csms.url)), clock=clock)
        await app.start()
        apps.append(app)
        h = Harness(app, base, csms)
        await wait_accepted(h)
        return h, clock, ntp

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


def limit_a(h: Harness) -> float:
    eff = h.station.smart.limit(1)
    return float(eff.limit_a)


async def _untrusted_session(csms: DevCsms, factory: Any) -> tuple[Harness, TrustedClock, Any]:
    """Connected, untrusted, the Absolute TxDefaultProfile installed, a session running,
    and the 08:10 boundary crossed on the untrusted clock."""
    h, clock, ntp = await factory(csms)
    assert not clock.trusted
    body = profile(1, "TxDefaultProfile", PERIODS, start=GUESS, stack_level=1)
    assert await set_profile(csms, 1, body) == "Accepted"
    await start_session(h, csms)
    # Before the confirmation the limit follows the untrusted clock.
    assert clock.utc_now() < GUESS + timedelta(minutes=10)
    assert limit_a(h) == 16.0 and offered(h) == 16.0
    until_0810 = (GUESS + timedelta(minutes=10) - clock.utc_now()).total_seconds()
    await h.advance(until_0810 + 1)
    await h.settle(lambda: offered(h) == 10.0)
    assert limit_a(h) == 10.0 and not clock.trusted
    return h, clock, ntp


async def test_csms_confirmation_applies_the_confirmed_times_limit_at_once(
    csms: DevCsms, csms_time: CsmsTime, untrusted: Any
) -> None:
    """The CSMS's currentTime (Heartbeat.conf after TriggerMessage) puts the clock two hours
    ahead: the limit of 10:11 (13 A) applies at once, not when the timer armed for the
    10:00 boundary of the untrusted timeline (1 h 49 min later) fires; the next boundary
    (12:00 confirmed) follows the confirmed clock."""
    h, clock, _ = await _untrusted_session(csms, untrusted)
    real_now = clock.utc_now() + REAL_OFFSET
    csms_time.value = real_now.isoformat()
    result = await req(csms, "TriggerMessage", {"requestedMessage": "Heartbeat"})
    assert result["status"] == "Accepted"
    await h.settle(lambda: clock.trusted)
    assert clock.trust_source == "csms"
    # At once: no simulated time passes (the manual clock stands still here).
    await h.settle(lambda: offered(h) == 13.0)
    assert limit_a(h) == 13.0
    assert abs((clock.utc_now() - real_now).total_seconds()) < 2
    # The 12:00 boundary comes on the confirmed timeline.
    until_noon = (GUESS.replace(hour=12) - clock.utc_now()).total_seconds()
    await h.advance(until_noon - 30, step_s=300)
    assert offered(h) == 13.0
    await h.advance(31)
    await h.settle(lambda: offered(h) == 7.0)
    frames = [f for f in csms.received if f.action == "Heartbeat" and f.station_id == STATION_ID]
    assert frames


async def test_ntp_confirmation_applies_the_confirmed_times_limit_within_a_tick(
    csms: DevCsms, csms_time: CsmsTime, untrusted: Any
) -> None:
    """NTP steps the system clock two hours ahead and the kernel reports it synchronised:
    the next reading of the clock (the tick loop reads it every second) notices, trusts
    NTP, and the limit of the confirmed time (13 A) applies within that tick."""
    h, clock, ntp = await _untrusted_session(csms, untrusted)
    base = h.clock
    assert isinstance(base, ManualClock)
    ntp[0] = True
    base.step_wall(base.utc_now() + REAL_OFFSET)
    await h.advance(1)
    await h.settle(lambda: clock.trusted)
    assert clock.trust_source == "ntp"
    await h.settle(lambda: offered(h) == 13.0)
    assert limit_a(h) == 13.0
    assert abs((clock.utc_now() - base.utc_now()).total_seconds()) < 1e-6
