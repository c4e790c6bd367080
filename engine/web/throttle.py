"""Login attempts, rate-limited: after `MAX_FAILURES` failed logins within `WINDOW` for one user
name, or from one client address, further attempts for that name or from that address are
refused (429, with the seconds to wait) until the oldest failure leaves the window.

The failures are counted in this process's memory (a restart forgets them); a successful login
forgets the failures of its user name (not those of its address).  Thread-safe: logins run in
the web's thread pool.
"""

from __future__ import annotations

import math
import threading
from collections import deque

MAX_FAILURES = 5
WINDOW_S = 15 * 60.0
MAX_KEYS = 100_000  # past this many keys, those whose failures all left the window are dropped


class Throttle:
    """Failed attempts per key (`name:NAME`, `address:ADDR`), each a deque of times (seconds,
    any monotonic clock the caller passes)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, keys: tuple[str, ...], now: float) -> int:
        """0 when an attempt for these keys may go ahead, else the whole seconds to wait."""
        with self._lock:
            return max((self._wait(key, now) for key in keys), default=0)

    def _wait(self, key: str, now: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        if len(times) < self.max_failures:
            return 0
        return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        """Note one failed attempt under each key."""
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            if len(self._failures) > MAX_KEYS:
                for key in list(self._failures):
                    self._wait(key, now)  # drops a key with no failure left in the window

    def forget(self, key: str) -> None:
        """Forget a key's failures (its user logged in)."""
        with self._lock:
            self._failures.pop(key, None)
