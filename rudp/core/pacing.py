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
        return int(self._tokens)

    def on_sent(self, count: int) -> None:
        """``count`` packets left (after ``budget`` allowed them)."""
        tokens = self._tokens - count
        self._tokens = tokens if tokens > 0.0 else 0.0

    def next_release(self, now: float, rate: float | None) -> float | None:
        """When the bucket next holds a whole packet (None: it does now, or no pacing)."""
        if rate is None or rate <= 0.0 or self._tokens >= 1.0:
            return None
        return now + (1.0 - self._tokens) / rate
