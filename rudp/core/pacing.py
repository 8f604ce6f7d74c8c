"""Pacing as a timer, not a sleep: a token bucket in the sans-IO core.

RFC 9002 section 7.7 asks senders to pace: spread a window's packets over the
round trip instead of sending them in one burst that overflows the bottleneck
queue.  The congestion controller sets the rate (BBR paces at gain x bandwidth;
NewReno and CUBIC at 1.25 x cwnd / srtt); this bucket turns it into "how many
packets may go now" and "when may the next one go".  The connection adds that
time to ``get_timer()``, so a driver wakes up for it like for any other timer.

The bucket holds a millisecond at the current rate, at least ``MIN_BURST`` and at
most ``burst`` packets (Linux sizes its TSO bursts the same way, tcp_tso_autosize):
after idle time, or when a driver wakes up late, no more than that leaves back to
back.  On a 20 Mbit/s path that is two packets; on loopback, where a wakeup per
packet would cost more than the packet, the whole ``burst``.
"""

from __future__ import annotations

import math

QUANTUM_SECONDS = 0.001
"""The bucket holds, and a release waits for, a millisecond's worth of packets."""

MIN_BURST = 2.0
"""Packets the bucket holds at any rate: one more than a single packet, so a late wakeup
of a paced flow does not lose its slot."""

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

    def capacity(self, rate: float) -> float:
        """What the bucket holds at ``rate``: a millisecond, within [MIN_BURST, burst]."""
        quantum = rate * QUANTUM_SECONDS
        if quantum < MIN_BURST:
            quantum = MIN_BURST
        return quantum if quantum < self._burst else self._burst

    def budget(self, now: float, rate: float | None) -> int:
        """Packets that may leave at ``now`` at ``rate`` packets per second (None: no limit)."""
        if rate is None:
            self._last = now
            self._tokens = self._burst
            return 1 << 30
        last = self._last
        if last is not None and now > last:
            tokens = self._tokens + (now - last) * rate
            cap = self.capacity(rate)
            self._tokens = tokens if tokens < cap else cap
        self._last = now
        # The epsilon absorbs float error: at the time ``next_release`` computed, the
        # bucket must hold a whole packet, or a driver would wake up to send nothing.
        return int(self._tokens + _EPSILON)

    def on_sent(self, count: int) -> None:
        """``count`` packets left (after ``budget`` allowed them)."""
        tokens = self._tokens - count
        self._tokens = tokens if tokens > 0.0 else 0.0

    def next_release(self, now: float, rate: float | None) -> float | None:
        """When the bucket next holds a send quantum (None: it does now, or no pacing).

        The quantum is the bucket's capacity, a millisecond at the rate (BBR's send
        quantum, draft-cardwell-iccrg-bbr-congestion-control section 4.6.3): waking for
        every single packet at a high rate costs the driver a wakeup per datagram
        (measured: 6x the CPU per packet in the simulator at 0% loss).
        """
        if rate is None or rate <= 0.0 or self._tokens + _EPSILON >= 1.0:
            return None
        quantum = self.capacity(rate)
        # Never ``now`` itself: at a huge rate the wait rounds to zero, and a timer due at
        # ``now`` with no time passing would refill nothing (a driver would spin).  And on
        # a large clock ``now + wait`` rounds down: step up until the refill ``budget``
        # will compute at that time really holds the quantum (a few ulps at most).
        release = max(now + (quantum - self._tokens) / rate, math.nextafter(now, math.inf))
        while self._tokens + (release - now) * rate + _EPSILON < quantum:
            release = math.nextafter(release, math.inf)
        return release
