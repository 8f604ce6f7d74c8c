"""NewReno congestion control (RFC 5681, with RFC 6582's recovery rule), in packets.

- Slow start (RFC 5681 section 3.1): the window grows by one packet per packet
  acknowledged while it is below ``ssthresh``.
- Congestion avoidance: about one packet per window of acknowledgements (the
  "appropriate byte counting" form, RFC 3465, counted in packets).
- Loss (fast retransmit, RFC 5681 section 3.2): ``ssthresh = max(cwnd / 2, 2)``
  and the window drops to it (RFC 9002 section 7.3.2 halves the window rather
  than RFC 5681's FlightSize, which the window bounds).  Only one reduction
  per window of data: losses of packets sent before the recovery started are
  part of the same event.  This is RFC 6582's "recover" point, expressed with
  send times as RFC 9002 section 7.3.2 does; recovery ends when a packet sent
  after it began is acknowledged (a "full acknowledgement").  Partial
  acknowledgements need no special case: the sender's SACK-driven loss
  detection retransmits the next hole at once.  The window is not inflated
  during recovery (RFC 6675 style).
- Persistent congestion (RFC 9002 section 7.6.2): window to ``MIN_WINDOW``.
  Outside a recovery period ``ssthresh`` is halved too, as RFC 5681 equation
  (4) does on a timeout; inside one the loss event has already set it
  (RFC 9002 appendix B.8 reduces once).
- Spurious loss (the Eifel response, RFC 4015 section 3): ``cwnd`` and
  ``ssthresh`` go back to what they were before the last reduction.
- Pacing (RFC 9002 section 7.7): ``1.25 * cwnd / srtt`` once an RTT is known,
  so a window is spread over most of a round trip instead of leaving in a burst.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.congestion.base import MIN_WINDOW, CongestionController, RateSample, register

PACING_GAIN = 1.25
"""RFC 9002 section 7.7's N: pace a little faster than cwnd/srtt so pacing itself
does not limit the window in slow start."""

NO_RECOVERY = float("-inf")
"""``_recovery_start`` outside a recovery period."""


@register
class NewReno(CongestionController):
    """RFC 5681 slow start / congestion avoidance with RFC 6582 fast recovery.

    The window is kept as a float (``_window``) so subclasses (CUBIC) can grow
    it by fractions; ``cwnd`` is its integer part.
    """

    name = "newreno"

    __slots__ = (
        "_acked_in_ca",
        "_max",
        "_recovery_start",
        "_srtt",
        "_ssthresh",
        "_undo",
        "_window",
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._max = config.max_send_window
        self._window = float(max(1, min(config.initial_window, self._max)))
        self._ssthresh: float = float("inf")
        self._recovery_start = NO_RECOVERY
        self._acked_in_ca = 0
        self._srtt: float | None = None
        self._undo: tuple[float, float, int] | None = None

    @property
    def cwnd(self) -> int:
        """Congestion window in packets."""
        return max(1, int(self._window))

    @property
    def ssthresh(self) -> float:
        """Slow-start threshold in packets."""
        return self._ssthresh

    @property
    def pacing_rate(self) -> float | None:
        """``1.25 * cwnd / srtt`` packets/s (RFC 9002 section 7.7).

        Before an RTT sample reaches the controller, ``initial_rto`` stands in for
        the RTT, as RFC 9002 section 6.2.2 uses an initial RTT: the first flight is
        then held to the pacing burst like every later one.
        """
        srtt = self._srtt if self._srtt is not None and self._srtt > 0 else None
        return PACING_GAIN * self.cwnd / (srtt if srtt is not None else self.config.initial_rto)

    @property
    def in_recovery(self) -> bool:
        """True between a loss and the first acknowledgement of a packet sent after it."""
        return self._recovery_start != NO_RECOVERY

    def on_ack(
        self,
        now: float,
        acked: int,
        newest_acked_sent_time: float,
        in_flight: int,
        srtt: float | None,
        min_rtt: float | None,
        sample: RateSample | None,
    ) -> None:
        """Grow the window, unless the acknowledged packets predate the recovery."""
        if srtt is not None:
            self._srtt = srtt
        if newest_acked_sent_time <= self._recovery_start:
            # Still in the recovery period (RFC 6582 section 3.2 step 3: partial ack).
            return
        self._recovery_start = NO_RECOVERY
        if acked <= 0:
            return
        if self._window < self._ssthresh:
            # Slow start: one packet per packet acknowledged (RFC 5681 section 3.1).
            self._window = min(self._window + acked, float(self._max))
            return
        self._congestion_avoidance(now, acked)

    def _congestion_avoidance(self, now: float, acked: int) -> None:
        """One packet per cwnd packets acknowledged (RFC 5681 section 3.1, RFC 3465)."""
        self._acked_in_ca += acked
        cwnd = self.cwnd
        if self._acked_in_ca >= cwnd:
            self._acked_in_ca -= cwnd
            self._window = min(float(cwnd + 1), float(self._max))

    def on_packets_lost(
        self, now: float, lost: int, newest_lost_sent_time: float, in_flight: int
    ) -> None:
        """Reduce once per recovery period (RFC 5681 section 3.2 steps 2-3, RFC 6582)."""
        if lost <= 0 or newest_lost_sent_time <= self._recovery_start:
            return
        self._save_for_undo()
        self._recovery_start = now
        self._reduce(now)
        self._acked_in_ca = 0

    def _reduce(self, now: float) -> None:
        """The multiplicative decrease of one congestion event: halve (RFC 9002 section 7.3.2)."""
        self._ssthresh = max(self._window / 2, float(MIN_WINDOW))
        self._window = float(int(self._ssthresh))

    def on_persistent_congestion(self, now: float) -> None:
        """Window to ``MIN_WINDOW`` (RFC 9002 section 7.6.2), then slow start up to ``ssthresh``."""
        self._save_for_undo()
        if not self.in_recovery:
            # No loss event set ssthresh for this episode (the sender's RTO path):
            # RFC 5681 equation (4).
            self._timeout_ssthresh()
        self._window = float(MIN_WINDOW)
        self._acked_in_ca = 0
        # Losses of packets sent before now belong to this episode.
        self._recovery_start = now

    def _timeout_ssthresh(self) -> None:
        """``ssthresh`` after a timeout with no loss event before it (RFC 5681 equation 4)."""
        self._ssthresh = max(self._window / 2, float(MIN_WINDOW))

    def on_spurious_loss(self, now: float) -> None:
        """Undo the last reduction (RFC 4015 section 3.2: restore cwnd and ssthresh)."""
        if self._undo is None:
            return
        window, ssthresh, acked_in_ca = self._undo
        self._undo = None
        # Never below where the window has grown back to since.
        self._window = max(self._window, window)
        self._ssthresh = max(self._ssthresh, ssthresh)
        self._acked_in_ca = acked_in_ca
        self._recovery_start = NO_RECOVERY

    def _save_for_undo(self) -> None:
        """Remember the state before a reduction, for ``on_spurious_loss``."""
        self._undo = (self._window, self._ssthresh, self._acked_in_ca)
