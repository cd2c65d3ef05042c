"""Per-client rate limits: a token bucket for each authenticated client, in each process.

An agency's client that sends more than its rate gets 429 with ``Retry-After`` (seconds until a
request would be admitted). The bucket is per process: with N API workers a client may reach N
times the rate in the worst case, which is the trade for costing nothing per request. The key is
the verified token's issuer and subject, never anything a caller can set unauthenticated.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate_per_second
        self.burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> int | None:
        """Admit one request of ``client``: None if admitted, else whole seconds to wait."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        admitted = tokens >= 1.0
        if admitted:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)  # most recent last: the oldest are evicted first
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if admitted:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))
