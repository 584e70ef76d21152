"""The status page in a real browser: Debian's headless Chromium, driven through chromedriver
by selenium, against a real `evsed run` child on simulated hardware and the dev CSMS.

Skipped only when Chromium or chromedriver is missing AND $EVSED_REQUIRE_BROWSER is unset
(tests/run-all.sh sets it, so CI fails instead of skipping). Screenshots go to
$EVSED_ARTIFACTS_DIR, else tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call

from controller.dev.devcsms import DevCsms
from tests.procs import REPO, Evsed, free_port, write_config

STATION = "CP-WEB"
CARD = "04A1B2C3"
TOKEN = "web-test-token-0123456789abcdef"
# An idTag as a CSMS may send it (CiString20): must show as text, never become markup.
HOSTILE_TAG = "<img src=x id=pwn>"
PHONE = (390, 844)  # CSS pixels of a common phone
DESKTOP = (1280, 1000)


def _executable(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)


CHROMIUM = _executable("chromium")
CHROMEDRIVER = _executable("chromedriver")


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium/chromedriver missing (apt-get install chromium chromium-driver)"
    return None


def need_browser() -> None:
    """Skip without a browser, unless $EVSED_REQUIRE_BROWSER says it must be there (CI)."""
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("EVSED_REQUIRE_BROWSER"):
        pytest.fail(f"EVSED_REQUIRE_BROWSER is set but {missing}")
    pytest.skip(missing)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("EVSED_ARTIFACTS_DIR") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- browser


class Page:
    """Selenium (blocking) behind asyncio.to_thread, so the dev CSMS on this event loop keeps
    answering the charger while the browser works."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, url: str) -> None:
        await self.run(self.driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, script, *args)

    async def js_async(self, script: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_async_script, script, *args)

    async def text(self, css: str) -> str:
        return str(
            await self.js(
                "const n = document.querySelector(arguments[0]); return n ? n.textContent : null;",
                css,
            )
        )

    async def value(self, css: str) -> str | None:
        result = await self.js(
            "const n = document.querySelector(arguments[0]); return n ? n.dataset.value : null;",
            css,
        )
        return None if result is None else str(result)

    async def visible(self, css: str) -> bool:
        """Rendered and not hidden (by the hidden attribute or an ancestor)."""
        return bool(
            await self.js(
                "const n = document.querySelector(arguments[0]);"
                "return !!n && n.getClientRects().length > 0;",
                css,
            )
        )

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        element = await self.run(self.driver.find_element, By.CSS_SELECTOR, css)
        await self.run(element.click)

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        element = await self.run(self.driver.find_element, By.CSS_SELECTOR, css)
        await self.run(element.clear)
        await self.run(element.send_keys, text)

    async def until(self, predicate: Callable[[], Any], what: str, timeout_s: float = 15.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            result = await predicate()
            if result:
                return result
            if loop.time() > deadline:
                shot = await self.screenshot(f"timeout-{what.replace(' ', '-')[:40]}")
                raise AssertionError(f"page never showed: {what} (screenshot {shot})")
            await asyncio.sleep(0.2)

    async def screenshot(self, name: str, size: tuple[int, int] | None = None) -> Path:
        if size is not None:
            await self.run(self.driver.set_window_size, *size)
            await asyncio.sleep(0.3)  # one layout pass
        path = artifacts_dir() / f"{name}.png"
        await self.run(self.driver.save_screenshot, str(path))
        return path

    async def console_errors(self) -> list[str]:
        logs = await self.run(self.driver.get_log, "browser")
        return [entry["message"] for entry in logs if entry.get("level") == "SEVERE"]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--lang=en-US",  # the page formats numbers in the browser's locale (11.00 kW)
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=CHROMEDRIVER, log_output=str(artifacts_dir() / "chromedriver.log")
    )
    driver = await asyncio.to_thread(webdriver.Chrome, service=service, options=options)
    try:
        yield Page(driver)
    finally:
        await asyncio.to_thread(driver.quit)


# --------------------------------------------------------------------------- charger


class Charger:
    """An `evsed run` child plus a token-aware client for its API."""

    def __init__(self, ev: Evsed, token: str | None) -> None:
        self.ev = ev
        self.base = ev.base
        self.token = token

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self._request, path, body)

    async def connector(self) -> dict[str, Any]:
        status = await asyncio.to_thread(self._request, "/api/status")
        return dict(status["connectors"][0])


@pytest.fixture
async def charger(tmp_path: Path, csms: DevCsms) -> AsyncIterator[Callable[..., Any]]:
    started: list[Evsed] = []

    async def start(token: str | None = None) -> Charger:
        port = free_port()
        config = write_config(tmp_path, station_id=STATION, csms_url=csms.url, api_port=port)
        if token is not None:
            text = config.read_text(encoding="utf-8")
            config.write_text(text.replace("[api]\n", f'[api]\ntoken = "{token}"\n'), "utf-8")
        ev = Evsed(config, port, tmp_path)
        started.append(ev)
        ev.start()
        await ev.wait_api()
        await csms.wait_connected(STATION, timeout_s=20)
        await ev.wait_status(lambda s: s["csms"]["state"] == "accepted", what="accepted")
        return Charger(ev, token)

    yield start
    for ev in started:
        ev.cleanup()


async def start_session(charger: Charger) -> None:
    """Plug, present the card, car in state C: through the simulator API."""
    await charger.post("/api/sim/plug", {"connector": 1})
    await charger.post("/api/sim/card", {"uid": CARD})
    await charger.post("/api/sim/vehicle", {"connector": 1, "state": "C"})


C1 = "#connector-1"


def _num(text: str | None) -> float:
    return float(text) if text not in (None, "") else float("nan")


# --------------------------------------------------------------------------- tests


async def test_page_shows_a_live_session(
    page: Page, charger: Callable[..., Any], csms: DevCsms
) -> None:
    ch: Charger = await charger()
    await page.get(ch.base + "/")
    await page.until(lambda: page.js("return document.body.dataset.loaded === '1'"), "loaded")
    assert await page.text("#station-id") == STATION
    assert await page.text(f"{C1} [data-field=status]") == "Available"
    assert await page.text("#csms-state") == "accepted"
    assert "ago" in await page.text("#csms-last")
    security = await page.text("#security")
    assert security.startswith("profile 1 · last event StartupOfTheDevice (")
    assert await page.visible("#sim-badge")
    # Loopback without a token configured: the owner is admin, no login form.
    assert not await page.visible("#login")
    assert await page.text("#auth-state") == "local access (no token configured)"

    await start_session(ch)
    await page.until(lambda: _eq(page.text(f"{C1} [data-field=status]"), "Charging"), "Charging")
    assert await page.text(f"{C1} [data-field=id_tag]") == CARD
    assert await page.text(f"{C1} [data-field=transaction]") == "1"
    assert await page.text(f"{C1} [data-field=offered]") == "16 A"
    assert await page.text(f"{C1} [data-field=vehicle]") == "C – charging"
    assert await page.text(f"{C1} [data-field=power]") == "11.00 kW"
    assert (await page.text(f"{C1} [data-field=session_energy]")).endswith(" kWh")

    # Energy rises on the page itself (the simulated car draws 11 kW: ~3 Wh a second).
    first = _num(await page.value(f"{C1} [data-field=session_energy]"))
    assert first >= 0

    async def rose() -> bool:
        return _num(await page.value(f"{C1} [data-field=session_energy]")) >= first + 5

    await page.until(rose, "session energy rising")
    second = _num(await page.value(f"{C1} [data-field=session_energy]"))
    api_now = (await ch.connector())["session_energy_wh"]
    assert first + 5 <= second <= api_now  # what the page showed had been measured
    # The running session is listed in the sessions table.
    await page.until(
        lambda: _eq(page.text("#sessions-body tr:first-child td:last-child"), "running"),
        "running session row",
    )
    assert await page.text("#sessions-body tr:first-child td:nth-child(3)") == CARD
    # The control buttons are there for the local admin.
    assert await page.visible(f"{C1} [data-action=stop]")
    await page.screenshot("status-page-charging-desktop")

    # A fault shows in the connector and in the fault list, then clears.
    await ch.post("/api/sim/fault", {"connector": 1, "fault": "GroundFailure"})
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=error_code]"), "GroundFailure"), "fault"
    )
    await page.until(
        lambda: _eq(page.text("#faults-body tr:first-child td:nth-child(3)"), "GroundFailure"),
        "fault row",
    )
    assert await page.text("#faults-body tr:first-child td:last-child") == "active"
    await ch.post("/api/sim/fault", {"connector": 1, "fault": None})
    await page.until(
        lambda: _ne(page.text("#faults-body tr:first-child td:last-child"), "active"),
        "fault cleared",
    )

    # Session ends: the table shows it with its energy and stop reason.
    await ch.post("/api/sim/unplug", {"connector": 1})
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=status]"), "Available"), "Available again"
    )
    await page.until(
        lambda: _ne(page.text("#sessions-body tr:first-child td:last-child"), "running"),
        "stopped session row",
    )
    energy_wh = _num(await page.value("#sessions-body tr:first-child td:nth-child(4)"))
    assert energy_wh >= second

    # A hostile idTag from the CSMS (remote start) is shown as text, never as markup.
    await ch.post("/api/sim/plug", {"connector": 1})
    result = await csms.call(
        STATION, call.RemoteStartTransaction(id_tag=HOSTILE_TAG, connector_id=1)
    )
    assert result.status == "Accepted"
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=id_tag]"), HOSTILE_TAG), "hostile idTag as text"
    )
    await page.until(
        lambda: _eq(page.text("#sessions-body tr:first-child td:nth-child(3)"), HOSTILE_TAG),
        "hostile idTag in the table",
    )
    assert await page.js("return document.getElementById('pwn') === null")
    assert await page.js("return document.querySelectorAll('main img').length") == 0

    # Phone width: everything fits (tables scroll inside their own box).
    await page.screenshot("status-page-phone", size=PHONE)
    overflow = await page.js(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"page is {overflow}px wider than a phone screen"
    assert await page.console_errors() == []


async def test_page_shows_limit_source_and_charts(
    page: Page, charger: Callable[..., Any], csms: DevCsms
) -> None:
    """Each connector's limit with its source; the running session's power against the
    offered limit (inline SVG, no library); the energy per day of the last 30 days."""
    ch: Charger = await charger()
    await page.get(ch.base + "/")
    await page.until(lambda: page.js("return document.body.dataset.loaded === '1'"), "loaded")
    await page.until(
        lambda: page.js("return document.querySelectorAll('#daily-chart svg rect').length === 30"),
        "30 daily bars",
    )
    assert not await page.visible(f"{C1} [data-field=chart]")  # no session, no chart

    await start_session(ch)
    await page.until(lambda: _eq(page.text(f"{C1} [data-field=status]"), "Charging"), "Charging")
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=limit]"), "16.0 A (hardware maximum)"),
        "hardware limit",
    )
    # A home energy manager sets 10 A: the page names the local limit as the source.
    result = await ch.post("/api/limit", {"connector": 1, "limit_a": 10, "timeout_s": 600})
    assert result["ok"] is True
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=limit]"), "10.0 A (local limit)"), "local limit"
    )
    assert await page.text(f"{C1} [data-field=offered]") == "10 A"
    assert await page.js(
        f"return document.querySelector('{C1} [data-field=limit]').dataset.source"
    ) == ("LocalLimit")

    # The chart: the offered limit as a step line and the measured power, drawn in SVG.
    async def charted() -> bool:
        return bool(
            await page.js(
                f"const s = document.querySelector('{C1} [data-field=chart] svg');"
                "return !!s && Number(s.dataset.points) >= 2"
                " && !!s.querySelector('polyline.offered-line')"
                " && !!s.querySelector('polyline.power-line');"
            )
        )

    await page.until(charted, "session chart", timeout_s=30)
    assert await page.visible(f"{C1} [data-field=chart]")
    assert "offered limit" in await page.text(f"{C1} [data-field=chart] .chart-caption")
    await page.screenshot("status-page-limit-chart")

    await ch.post("/api/sim/unplug", {"connector": 1})
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=status]"), "Available"), "Available again"
    )
    await page.until(
        lambda: page.js(f"return document.querySelector('{C1} [data-field=chart]').hidden"),
        "chart hidden after the session",
    )
    # Today's bar holds the session's energy (reloaded: the stop is recorded by then).
    await asyncio.sleep(0.5)
    await page.get(ch.base + "/")

    async def today_has_energy() -> bool:
        value = await page.js(
            "const bars = document.querySelectorAll('#daily-chart svg rect');"
            "return bars.length ? Number(bars[bars.length - 1].dataset.value) : 0;"
        )
        return bool(value and value > 0)

    await page.until(today_has_energy, "energy today")
    assert "kWh since" in await page.text("#daily-caption")
    assert await page.console_errors() == []


async def _eq(text: Any, expected: str) -> bool:
    return bool(await text == expected)


async def _ne(text: Any, unexpected: str) -> bool:
    value = await text
    return value is not None and value != "None" and value != unexpected


async def test_login_token_flow_and_stop_button(
    page: Page, charger: Callable[..., Any], csms: DevCsms, tmp_path: Path
) -> None:
    ch: Charger = await charger(token=TOKEN)
    await start_session(ch)
    await page.get(ch.base + "/")
    await page.until(lambda: page.js("return document.body.dataset.loaded === '1'"), "loaded")
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=status]"), "Charging"), "Charging (read-only)"
    )
    # Loopback may read; control needs the token: login form shown, buttons hidden.
    assert await page.visible("#login")
    assert await page.text("#auth-state") == "read-only"
    assert not await page.visible(f"{C1} [data-action=stop]")
    assert not await page.visible(f"{C1} .controls")
    # And the server refuses a stop from this page without the token.
    status = await page.js_async(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/connectors/1/stop', {method: 'POST', headers: {'Content-Type': "
        "'application/json'}, body: '{}'}).then(r => done(r.status), e => done(String(e)));"
    )
    assert status == 401
    assert (await ch.connector())["transaction_key"] is not None
    await page.screenshot("status-page-read-only", size=DESKTOP)

    # A wrong token is refused.
    await page.type("#token", "wrong-token-0123456789")
    await page.click("#login-submit")
    await page.until(lambda: _eq(page.text("#login-error"), "Wrong token."), "wrong token")
    assert not await page.visible(f"{C1} .controls")
    assert await page.js("return sessionStorage.getItem('evsed.api.token')") is None

    # The right one signs in: buttons appear, the token is kept for this tab only.
    await page.type("#token", TOKEN)
    await page.click("#login-submit")
    await page.until(lambda: page.visible(f"{C1} [data-action=stop]"), "stop button")
    assert await page.text("#auth-state") == "signed in"
    assert not await page.visible("#login")
    assert await page.js("return sessionStorage.getItem('evsed.api.token')") == TOKEN
    assert await page.js("return document.cookie") == ""

    # Stop needs a second tap to confirm.
    await page.click(f"{C1} [data-action=stop]")
    assert await page.text(f"{C1} [data-action=stop]") == "Tap again to confirm"
    assert (await ch.connector())["transaction_key"] is not None
    await page.click(f"{C1} [data-action=stop]")
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=message]"), "Session stop requested."),
        "stop acknowledged",
    )
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction", timeout_s=15)
    assert stop.payload["reason"] == "Local"
    await page.until(
        lambda: _eq(page.text(f"{C1} [data-field=transaction]"), "–"), "transaction gone"
    )
    await page.until(lambda: _ne(page.text(f"{C1} [data-field=status]"), "Charging"), "stopped")
    await page.screenshot("status-page-signed-in-after-stop")

    # "Download CSV" saves the file (fetched by the page, so a token would go in the header).
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    await page.run(
        page.driver.execute_cdp_cmd,
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(downloads)},
    )
    await page.click("#csv-link")
    saved = downloads / f"evsed-sessions-{STATION}.csv"

    async def downloaded() -> bool:
        return saved.exists() and saved.read_bytes().endswith(b"\r\n")

    await page.until(downloaded, "CSV downloaded")
    csv_text = saved.read_text(encoding="utf-8")
    assert csv_text.startswith("started_at,stopped_at,connector,id_tag")
    assert f",1,{CARD}," in csv_text and ",Local," in csv_text
    assert await page.text("#csv-link") == "Download CSV"
    await page.js(
        "for (const [id, day] of [['export-from', '2026-02-01'], ['export-to', '2026-01-01']]) {"
        "  const input = document.getElementById(id); input.value = day;"
        "  input.dispatchEvent(new Event('change')); }"
    )
    assert await page.js("return document.getElementById('csv-link').getAttribute('href')") == (
        "/api/sessions.csv?from=2026-02-01&to=2026-01-01"
    )
    await page.click("#csv-link")
    await page.until(
        lambda: _eq(page.text("#export-error"), "'from' must not be after 'to'"),
        "bad range message",
    )

    # Signing out hides the controls again.
    await page.click("#logout")
    await page.until(lambda: _eq(page.text("#auth-state"), "read-only"), "signed out")
    assert not await page.visible(f"{C1} .controls")
    assert await page.js("return sessionStorage.getItem('evsed.api.token')") is None
    # The only console errors are the refused requests this test made on purpose.
    for message in await page.console_errors():
        assert "status of 401" in message or "status of 400" in message, message


def test_status_page_urls_are_plain_http_only() -> None:
    """The page loads nothing from outside the charger (it may be offline)."""
    web = REPO / "controller" / "web"
    for name in ("index.html", "app.js", "style.css"):
        # The SVG namespace name of the charts is an identifier, never fetched.
        text = (web / name).read_text(encoding="utf-8").replace('"http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
    assert "innerHTML" not in (web / "app.js").read_text(encoding="utf-8")


async def test_page_lists_the_backends_of_a_charger_with_several(
    page: Page, tmp_path: Path, csms: DevCsms
) -> None:
    """Issue 15: with a [[csms]] list the page shows one row per backend (name, role,
    version, state, queue); a backend going offline shows as such, the primary stays."""
    from tests.e2e.test_kill9_backends import with_mirror

    async with DevCsms(host="127.0.0.1", port=0, heartbeat_interval_s=3600) as mirror:
        port = free_port()
        config = write_config(tmp_path, station_id=STATION, csms_url=csms.url, api_port=port)
        with_mirror(config, mirror.url)
        ev = Evsed(config, port, tmp_path)
        ev.start()
        try:
            await ev.wait_api()
            await ev.wait_status(
                lambda s: all(b["state"] == "accepted" for b in s["backends"]), what="accepted"
            )
            await page.get(ev.base + "/")
            rows = "#backends-body tr"
            await page.until(
                lambda: page.js(f"return document.querySelectorAll('{rows}').length === 2"),
                "two backend rows",
            )
            assert await page.visible("#backends")
            mirror_row = "#backends-body tr[data-backend=mirror]"
            assert await page.text(f"{mirror_row} td:nth-child(2)") == "mirror"
            assert await page.text(f"{mirror_row} td:nth-child(3)") == "1.6"
            await page.until(
                lambda: _eq(page.text(f"{mirror_row} td:nth-child(4)"), "accepted"), "accepted"
            )
            mirror.refuse_connections = True
            await mirror.disconnect(STATION)
            await page.until(
                lambda: _ne(page.text(f"{mirror_row} td:nth-child(4)"), "accepted"), "offline"
            )
            billing_row = "#backends-body tr[data-backend=billing]"
            assert await page.text(f"{billing_row} td:nth-child(4)") == "accepted"
            await page.screenshot("status-page-backends")
            assert await page.console_errors() == []
        finally:
            ev.cleanup()
