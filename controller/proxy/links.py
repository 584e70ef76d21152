"""One charger's link to one backend: its status for the page, the rate limit of its
commands and the ownership check they pass before they reach the charger."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from controller.core.ownership import Ownership
from controller.csms.guard import BurstLog, TokenBucket
from controller.csms.rpc import CallError
from controller.proxy.config import BackendConfig, RateLimit
from controller.proxy.protocol import SECURITY_ERROR, Protocol

LOG = logging.getLogger(__name__)

# Sends a request to the charger and returns its answer (raises CallError for a CALLERROR).
ToCharger = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class LinkStatus:
    """What the status page shows of one backend of one charger."""

    backend: str
    role: str
    state: str = "offline"  # connecting, connected, offline, failed: <why>
    last_message_at: float | None = None  # wall clock, seconds
    last_message: str = ""
    refused: int = 0  # commands answered by the proxy itself (ownership, rate, bad input)
    extra: dict[str, Any] = field(default_factory=dict)

    def saw(self, what: str) -> None:
        self.last_message = what
        self.last_message_at = time.time()


class CommandGate:
    """A backend's requests to the charger: the rate limit, then the owner check, then the
    charger. What is refused is answered by the proxy and never reaches the charger."""

    def __init__(
        self,
        *,
        charger_id: str,
        backend: BackendConfig,
        ownership: Ownership,
        protocol: Protocol,
        rate: RateLimit,
        status: LinkStatus,
        to_charger: ToCharger,
        rewrite: Callable[[str, dict[str, Any]], dict[str, Any]] = lambda a, p: p,
    ) -> None:
        self._charger_id = charger_id
        self._backend = backend
        self._ownership = ownership
        self._protocol = protocol
        self._bucket = TokenBucket(rate.burst, rate.per_s)
        self._status = status
        self._to_charger = to_charger
        self._rewrite = rewrite
        self._refusals = BurstLog(LOG, f"{charger_id}: backend {backend.name}")

    async def __call__(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self._status.saw(f"{action}.req")
        d = self._protocol.dialect
        if not self._bucket.allow():
            self._refuse(f"{action} over the rate limit")
            raise CallError(
                d.generic_error,
                f"rate limit: at most {self._bucket.burst} requests at once and "
                f"{self._bucket.per_s:g}/s per charger from one backend",
            )
        command = self._protocol.command_of(action, payload)
        why = self._ownership.refusal(self._backend.name, action, command)
        if why is not None:
            self._refuse(why)
            raise CallError(SECURITY_ERROR, why)
        try:
            payload = self._rewrite(action, payload)
        except ValueError as exc:
            self._refuse(f"{action}: {exc}")
            raise CallError("PropertyConstraintViolation", str(exc)) from None
        return await self._to_charger(action, payload)

    def _refuse(self, why: str) -> None:
        self._status.refused += 1
        self._refusals(f"refused: {why}")
