"""OCPP 2.0.1 security events (A04) over a real WebSocket: every event of the security log
becomes a SecurityEventNotification in the durable outbox, with the 2.0.1 type names."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from tests.conftest import STATION_ID
from tests.ocpp201.test_e2e_boot import accepted, start


def notifications(csms: DevCsms) -> list[dict[str, Any]]:
    return [f.payload for f in csms.received if f.action == "SecurityEventNotification"]


async def test_startup_and_invalid_messages_are_notified(charger: Any, csms: DevCsms) -> None:
    """A04.FR.01/02: StartupOfTheDevice (critical) after the boot is accepted, never before
    (B02/B03: nothing but BootNotification until Accepted); a frame that is not valid OCPP
    is InvalidMessages (2.0.1 spelling), schema-valid, with techInfo."""
    h = await start(charger, csms)
    await accepted(h)
    await h.settle(lambda: bool(notifications(csms)))
    first = notifications(csms)[0]
    assert first["type"] == "StartupOfTheDevice"
    actions = [f.action for f in csms.received]
    assert actions.index("BootNotification") < actions.index("SecurityEventNotification")
    await csms.send_text(STATION_ID, "this is not OCPP")
    await csms.next_raw_response(STATION_ID, timeout_s=5)
    await h.settle(lambda: any(n["type"] == "InvalidMessages" for n in notifications(csms)))
    for payload in notifications(csms):
        rpc201.validate(2, "SecurityEventNotification", payload)
    invalid = next(n for n in notifications(csms) if n["type"] == "InvalidMessages")
    assert invalid.get("techInfo")
    await h.settle(lambda: h.app.port is not None and h.app.port.queued_messages() == 0)


async def test_a_csms_without_the_message_does_not_block_the_queue(
    charger: Any, csms: DevCsms
) -> None:
    """A CSMS answering NotImplemented: the event stays in the security log only and the
    transaction messages behind it are still delivered."""
    csms.error_actions["SecurityEventNotification"] = "NotImplemented"
    h = await start(charger, csms)
    await accepted(h)
    await h.settle(lambda: bool(notifications(csms)))
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(
        lambda: any(
            f.action == "TransactionEvent" and f.payload["eventType"] == "Started"
            for f in csms.received
        )
    )
    await h.settle(lambda: h.app.port is not None and h.app.port.queued_messages() == 0)
    assert any(r.error_code == "NotImplemented" for r in csms.sent_results)
