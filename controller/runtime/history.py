"""The running session's power against its offered limit over time, bounded, in memory
(the status page's chart)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: One point this often at first; the interval doubles each time the history is full, so
#: a session of any length fits in MAX_POINTS (one point a minute after about 3 hours).
FIRST_INTERVAL_S = 10.0
MAX_POINTS = 360


@dataclass
class SessionHistory:
    """Points of one transaction: (seconds since it started, power W or None while the
    meter is silent, offered power W = offered current x phases x nominal voltage)."""

    tx_key: int
    started_s: float
    started_at: str
    interval_s: float = FIRST_INTERVAL_S
    points: list[tuple[float, float | None, float]] = field(default_factory=list)
    _last_s: float | None = None
    _last_offered_w: float | None = None

    def add(self, now_s: float, power_w: float | None, offered_w: float) -> None:
        """Record a point when the interval has passed or the offer changed."""
        due = self._last_s is None or now_s - self._last_s >= self.interval_s - 1e-6
        if not due and offered_w == self._last_offered_w:
            return
        self._last_s = now_s
        self._last_offered_w = offered_w
        self.points.append(
            (
                round(now_s - self.started_s, 1),
                None if power_w is None else round(power_w, 1),
                round(offered_w, 1),
            )
        )
        if len(self.points) >= MAX_POINTS:
            # Keep the first point and every other one after it: half the resolution.
            self.points = self.points[:1] + self.points[2::2]
            self.interval_s *= 2

    def as_json(self) -> dict[str, object]:
        return {
            "transaction_key": self.tx_key,
            "started_at": self.started_at,
            "interval_s": self.interval_s,
            "points": [{"t_s": t, "power_w": p, "offered_w": o} for t, p, o in self.points],
        }
