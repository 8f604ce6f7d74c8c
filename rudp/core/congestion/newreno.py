"""NewReno congestion control (RFC 5681, with RFC 6582's recovery rule), in packets.

- Slow start (RFC 5681 section 3.1): the window grows by one packet per packet
  acknowledged while it is below ``ssthresh``.
- Congestion avoidance: about one packet per window of acknowledgements (the
  "appropriate byte counting" form, RFC 3465, counted in packets).
- Loss (fast retransmit, RFC 5681 section 3.2): ``ssthresh = max(cwnd / 2, 2)``
  and the window drops to it (RFC 9002 section 7.3.2 halves the window rather
  than RFC 5681's FlightSize, which the window bounds).  Only one reduction
  per window of data: losses of packets sent before the recovery started are
  part of the same event.  This
  is RFC 6582's "recover" point, expressed with send times as RFC 9002
  section 7.3.2 does; recovery ends when a packet sent after it began is
  acknowledged (a "full acknowledgement").  Partial acknowledgements need no
  special case: the sender's SACK-driven loss detection retransmits the next
  hole at once.  The window is not inflated during recovery (RFC 6675 style).
- Timeout (RFC 5681 section 3.1 and equation 4): ``ssthresh = max(cwnd / 2, 2)``,
  window = 1 packet.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.congestion.base import CongestionController, register

MIN_WINDOW = 2
"""RFC 5681 equation (4): ssthresh never drops below two segments."""


@register
class NewReno(CongestionController):
    """RFC 5681 slow start / congestion avoidance with RFC 6582 fast recovery."""

    name = "newreno"

    __slots__ = ("_acked_in_ca", "_cwnd", "_max", "_recovery_start", "_ssthresh")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._max = config.max_send_window
        self._cwnd = max(1, min(config.initial_window, self._max))
        self._ssthresh: float = float("inf")
        self._recovery_start = float("-inf")
        self._acked_in_ca = 0

    @property
    def cwnd(self) -> int:
        """Congestion window in packets."""
        return self._cwnd

    @property
    def ssthresh(self) -> float:
        """Slow-start threshold in packets."""
        return self._ssthresh

    @property
    def in_recovery(self) -> bool:
        """True between a loss and the first acknowledgement of a packet sent after it."""
        return self._recovery_start != float("-inf")

    def on_packet_sent(self, now: float) -> None:
        """Nothing to do: the sender enforces the window itself."""

    def on_packets_acked(self, now: float, count: int, newest_sent_time: float) -> None:
        """Grow the window, unless the acknowledged packets predate the recovery."""
        if newest_sent_time <= self._recovery_start:
            # Still in the recovery period (RFC 6582 section 3.2 step 3: partial ack).
            return
        self._recovery_start = float("-inf")
        if self._cwnd < self._ssthresh:
            # Slow start: one packet per packet acknowledged (RFC 5681 section 3.1).
            self._cwnd = min(self._cwnd + count, self._max)
            return
        # Congestion avoidance: one packet per cwnd packets acknowledged.
        self._acked_in_ca += count
        if self._acked_in_ca >= self._cwnd:
            self._acked_in_ca -= self._cwnd
            self._cwnd = min(self._cwnd + 1, self._max)

    def on_packets_lost(self, now: float, newest_lost_sent_time: float) -> None:
        """Halve once per recovery period (RFC 5681 section 3.2 steps 2-3, RFC 6582)."""
        if newest_lost_sent_time <= self._recovery_start:
            return
        self._recovery_start = now
        self._ssthresh = max(self._cwnd / 2, float(MIN_WINDOW))
        self._cwnd = max(int(self._ssthresh), 1)
        self._acked_in_ca = 0

    def on_rto(self, now: float) -> None:
        """Back to one packet and slow start (RFC 5681 section 3.1, equation 4)."""
        self._ssthresh = max(self._cwnd / 2, float(MIN_WINDOW))
        self._cwnd = 1
        self._acked_in_ca = 0
        self._recovery_start = now
