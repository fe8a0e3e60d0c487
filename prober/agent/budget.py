"""The probe budget: a hard cap on probe launches per second, whatever the plan says.

The schedule already spreads a round's probes over the interval within the budget;
this is the agent's own guarantee on top, so a bug in a plan, a pinglist with a
small interval or a burst of retries can never make an agent flood its targets.
Pure: the caller passes the (monotonic) time.
"""

from __future__ import annotations

import math
from collections import deque


class Budget:
    """At most ``rate`` probe launches in any window of ``max(1 s, 1/rate)``: a sliding window.

    Pure: the caller passes the (monotonic) time. A launch larger than the whole
    window's allowance (a big same-source-port group) is admitted only into an empty
    window, so it is never split and the limit is never exceeded by more than itself.
    """

    def __init__(self, rate_per_s: float) -> None:
        self.window_s = max(1.0, 1.0 / rate_per_s)
        self.cap = max(1, math.floor(rate_per_s * self.window_s + 1e-9))
        self._stamps: deque[float] = deque()

    def delay(self, now: float, n: int = 1) -> float:
        """Seconds to wait before ``n`` launches fit; 0 when they fit now."""
        stamps = self._stamps
        horizon = now - self.window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        over = len(stamps) + n - self.cap
        if over <= 0 or not stamps:
            return 0.0
        return stamps[min(over, len(stamps)) - 1] + self.window_s - now

    def take(self, now: float, n: int = 1) -> None:
        self._stamps.extend([now] * n)
