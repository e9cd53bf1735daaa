"""Request limits: a token bucket per API key, and a throttle on failed keys per client address.

Both live in the memory of one server process: with ``serve --workers N`` every worker keeps its own buckets,
so a key may make up to N times the configured rate. That is the price of needing no shared store; a
deployment that must hold the limit exactly runs one worker per limit domain (or puts a proxy in front).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from indexer.errors import JiangxinError


class RateLimited(JiangxinError):
    """Too many requests for one key, or too many failed keys from one address: try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds (HTTP allows no fractions), never 0."""
        return str(max(1, math.ceil(self.retry_after)))


class TokenBucket:
    """One bucket per name: ``burst`` tokens at most, refilled at ``rate`` tokens a second.

    Thread-safe: every take is one check-and-update under a lock. At most ``max_names`` buckets are kept; the
    least recently used are forgotten first (a forgotten bucket comes back full, as a new name's does).
    """

    def __init__(self, rate: float, burst: float, max_names: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not rate={rate}, burst={burst}")
        self.rate, self.burst, self.max_names, self.clock = rate, float(burst), max_names, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # name -> (tokens, at)
        self._lock = threading.Lock()

    def _level(self, name: str, now: float) -> float:
        tokens, at = self._buckets.get(name, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take(self, name: str) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be (nothing is taken)."""
        with self._lock:
            now = self.clock()
            tokens = self._level(name, now)
            if tokens < 1.0:
                self._buckets.move_to_end(name)  # a name being refused is in use: keep it (forgetting refills it)
                return (1.0 - tokens) / self.rate
            self._buckets[name] = (tokens - 1.0, now)
            self._buckets.move_to_end(name)
            while len(self._buckets) > self.max_names:
                self._buckets.popitem(last=False)
            return 0.0

    def wait(self, name: str) -> float:
        """Seconds until ``name`` has a token again (0.0 if it has one now); takes nothing."""
        with self._lock:
            tokens = self._level(name, self.clock())
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


@dataclass(frozen=True)
class LimitSettings:
    """Requests per second and burst per key (rate 0: no limit), and failed keys allowed per address per window."""

    rate_per_second: float = 10.0
    rate_burst: int = 30
    auth_failures: int = 20
    auth_failure_window: float = 60.0


class Limits:
    """The limits one server process enforces before a request reaches a route."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_key = (TokenBucket(settings.rate_per_second, max(1, settings.rate_burst), clock=clock)
                        if settings.rate_per_second > 0 else None)
        self.failures = (TokenBucket(settings.auth_failures / settings.auth_failure_window, settings.auth_failures, clock=clock)
                         if settings.auth_failures > 0 and settings.auth_failure_window > 0 else None)
        self.settings = settings

    def check_address(self, address: str) -> None:
        """Refuse every keyed request from an address that has sent too many wrong keys, before looking at its key.

        Checking before the key (not only on failure) is what stops guessing: a throttled address learns
        nothing, not even whether a key it tries is valid.
        """
        wait = self.failures.wait(address) if self.failures else 0.0
        if wait > 0:
            raise RateLimited(f"too many wrong API keys from {address}; try again in {math.ceil(wait)} s", wait)

    def failed(self, address: str) -> None:
        """Count one wrong key from ``address``."""
        if self.failures:
            self.failures.take(address)

    def take(self, key_id: str) -> None:
        """Spend one request of key ``key_id``'s bucket, or refuse with the time until the next one."""
        wait = self.per_key.take(key_id) if self.per_key else 0.0
        if wait > 0:
            s = self.settings
            raise RateLimited(f"rate limit of key {key_id} reached ({s.rate_per_second:g} requests/s, burst {s.rate_burst}); "
                              f"try again in {math.ceil(wait)} s", wait)
