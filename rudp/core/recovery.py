"""Loss recovery building blocks: the RTO estimator and the loss-detection thresholds.

``RttEstimator`` follows RFC 6298 (SRTT, RTTVAR, RTO, exponential backoff;
Karn's rule is applied by the caller, which simply does not feed samples from
retransmitted packets).  The thresholds are RFC 9002 section 6.1's; the
send-order detector that applies them lives in ``rudp.core.sender``.
"""

from __future__ import annotations

K_PACKET_THRESHOLD = 3
"""RFC 9002 section 6.1.1: reordering tolerated before a packet is declared lost
(the same three "duplicate acks" as RFC 5681 section 3.2)."""

TIME_THRESHOLD = 9 / 8
"""RFC 9002 section 6.1.2: kTimeThreshold, reordering tolerated in time, as a multiple
of the RTT."""

ALPHA = 1 / 8
"""RFC 6298 section 2.3: gain of the smoothed RTT."""
BETA = 1 / 4
"""RFC 6298 section 2.3: gain of the RTT variation."""
K = 4
"""RFC 6298 section 2.3: weight of RTTVAR in the RTO."""
CLOCK_GRANULARITY = 0.001
"""RFC 6298 section 2.2's G: the core's clock is a float, so 1 ms is a safe floor."""


class RttEstimator:
    """Round-trip time estimate and retransmission timeout (RFC 6298).

    ``rto`` is the current timeout including any backoff.  Backoff (section 5.5)
    doubles it up to ``max_rto``; it stays backed off until a fresh sample
    arrives (section 5.7), which recomputes it from SRTT and RTTVAR.
    """

    __slots__ = ("_max_rto", "_min_rto", "latest", "rto", "rttvar", "srtt")

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self._min_rto = min_rto
        self._max_rto = max_rto
        self.rto = initial_rto
        """Current retransmission timeout, seconds (RFC 6298 section 2.1 before a sample)."""
        self.srtt: float | None = None
        """Smoothed RTT, None before the first sample."""
        self.rttvar: float | None = None
        """RTT variation, None before the first sample."""
        self.latest: float | None = None
        """The most recent sample."""

    def on_sample(self, rtt: float) -> None:
        """Feed one RTT measurement from a packet that was sent only once (Karn)."""
        if rtt < 0:
            return
        self.latest = rtt
        if self.srtt is None or self.rttvar is None:
            # RFC 6298 section 2.2: first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # Section 2.3: RTTVAR first, using the old SRTT.
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt
        self.reset_backoff()

    def reset_backoff(self) -> None:
        """Recompute the RTO from SRTT and RTTVAR, undoing any backoff.

        Called on every fresh sample (RFC 6298 section 2.3) and whenever the
        cumulative ack advances: forward progress shows the path works, which is
        when RFC 9002 section 6.2.1 resets its probe backoff.  Without it, heavy loss
        keeps the timer backed off for want of a sample from a packet sent once
        (Karn's rule), and each further loss waits twice as long.
        """
        if self.srtt is None or self.rttvar is None:
            return
        rto = self.srtt + max(CLOCK_GRANULARITY, K * self.rttvar)
        # Sections 2.4 and 2.5: clamp to the configured floor and cap.
        self.rto = min(max(rto, self._min_rto), self._max_rto)

    def loss_delay(self) -> float:
        """RFC 9002 section 6.1.2: 9/8 of max(smoothed, latest) RTT, at least 1 ms.

        Before any sample, the initial RTO stands in for the RTT.
        """
        if self.srtt is None or self.latest is None:
            return self.rto
        return max(TIME_THRESHOLD * max(self.srtt, self.latest), CLOCK_GRANULARITY)

    def back_off(self) -> None:
        """Double the RTO after a timeout, capped at ``max_rto`` (RFC 6298 section 5.5)."""
        self.rto = min(self.rto * 2, self._max_rto)
