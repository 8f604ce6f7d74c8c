"""Pacing as a timer, not a sleep: a token bucket in the sans-IO core.

RFC 9002 section 7.7 asks senders to pace: spread a window's packets over the
round trip instead of sending them in one burst that overflows the bottleneck
queue.  The congestion controller sets the rate (BBR paces at gain x bandwidth;
NewReno and CUBIC at 1.25 x cwnd / srtt); this bucket turns it into "how many
packets may go now" and "when may the next one go".  The connection adds that
time to ``get_timer()``, so a driver wakes up for it like for any other timer.

The bucket holds at most ``burst`` packets: after idle time, or when a driver
wakes up late, no more than ``burst`` packets leave back to back.
"""

from __future__ import annotations

import math

_EPSILON = 1e-6
"""Packets: far below one, far above the rounding error of ``tokens + elapsed * rate``."""


class Pacer:
    """A token bucket of packets, refilled at the controller's pacing rate."""

    __slots__ = ("_burst", "_last", "_tokens")

    def __init__(self, burst: int) -> None:
        if burst < 1:
            raise ValueError("the pacing burst must be at least one packet")
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None

    @property
    def burst(self) -> int:
        """Most packets released back to back."""
        return int(self._burst)

    def budget(self, now: float, rate: float | None) -> int:
        """Packets that may leave at ``now`` at ``rate`` packets per second (None: no limit)."""
        if rate is None:
            self._last = now
            self._tokens = self._burst
            return 1 << 30
        last = self._last
        if last is not None and now > last:
            tokens = self._tokens + (now - last) * rate
            self._tokens = tokens if tokens < self._burst else self._burst
        self._last = now
        # The epsilon absorbs float error: at the time ``next_release`` computed, the
        # bucket must hold a whole packet, or a driver would wake up to send nothing.
        return int(self._tokens + _EPSILON)

    def on_sent(self, count: int) -> None:
        """``count`` packets left (after ``budget`` allowed them)."""
        tokens = self._tokens - count
        self._tokens = tokens if tokens > 0.0 else 0.0

    def next_release(self, now: float, rate: float | None) -> float | None:
        """When the bucket next holds a whole packet (None: it does now, or no pacing)."""
        if rate is None or rate <= 0.0 or self._tokens + _EPSILON >= 1.0:
            return None
        # Never ``now`` itself: at a huge rate the wait rounds to zero, and a timer due at
        # ``now`` with no time passing would refill nothing (a driver would spin).  And on
        # a large clock ``now + wait`` rounds down: step up until the refill ``budget``
        # will compute at that time really holds a packet (a few ulps at most).
        release = max(now + (1.0 - self._tokens) / rate, math.nextafter(now, math.inf))
        while self._tokens + (release - now) * rate + _EPSILON < 1.0:
            release = math.nextafter(release, math.inf)
        return release
