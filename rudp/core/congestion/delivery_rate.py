"""Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation), in packets.

The estimator turns acknowledgements into one ``RateSample`` per ack: how many
packets the network delivered over how long, measured from the most recently
sent packet that the ack newly delivers.  BBR's bandwidth model is built from
these samples.

How a sender uses it (the draft's "Transmitting a data packet" and "Upon
receiving an ACK" steps):

1. ``stamp = estimator.on_packet_sent(now, in_flight_before)`` for every
   transmission; keep the stamp with the packet.
2. For every packet an ack newly delivers (acknowledged or SACKed for the
   first time, whatever transmission carried it):
   ``estimator.on_packet_delivered(stamp, sent_time, now)``.
3. Once per ack, after those calls: ``sample = estimator.take_sample(now)``,
   passed to ``CongestionController.on_ack``.
4. When the sender has window room but nothing to send:
   ``estimator.on_app_limited(in_flight)`` (the draft's "Detecting
   application-limited phases"), so the samples of that phase are marked.

The draft's ``C.delivered_time`` / ``P.delivered_time`` are seconds on the
caller's clock; ``0`` has no special meaning here (a stamp's existence is what
says "not yet delivered"), so a clock starting at zero is fine.
"""

from __future__ import annotations

from typing import NamedTuple

from rudp.core.congestion.base import RateSample

TIME_EPSILON = 1e-6
"""Seconds by which an interval may fall short of the min RTT and still count: float
times that should be equal are not always (Linux's tcp_rate.c works in whole µs)."""


class RateStamp(NamedTuple):
    """The per-packet state the draft records at transmission (``P.*``)."""

    delivered: int
    """``C.delivered`` when the packet was sent."""
    delivered_time: float
    """``C.delivered_time`` when the packet was sent."""
    first_sent_time: float
    """``C.first_sent_time``: send time of the first packet of the current sampling flight."""
    is_app_limited: bool
    """Sent inside an application-limited phase."""


class DeliveryRateEstimator:
    """Per-connection delivery-rate state (the draft's ``C.*``) and the sample being built (``rs``).

    Samples whose interval is shorter than the smallest RTT seen before are
    dropped, as the draft says: no flight can be delivered faster than a round
    trip, so such an interval means the ack raced ahead (an ack for an original
    transmission credited to its spurious retransmission, say) and the rate
    would be too high.  The smallest RTT is the estimator's own running
    minimum of ``RateSample.rtt``, taken before the ack being judged so a
    racing ack cannot vouch for itself.  With unambiguous RTTs (one packet
    number per transmission) an interval is never below its own RTT, so the
    rule only ever drops samples that ambiguity produced.
    """

    __slots__ = (
        "_app_limited_until",
        "_delivered_time",
        "_first_sent_time",
        "_min_rtt",
        "_rs_ack_elapsed",
        "_rs_app_limited",
        "_rs_prior_delivered",
        "_rs_send_elapsed",
        "_rs_sent_time",
        "_rs_valid",
        "delivered",
    )

    def __init__(self) -> None:
        self.delivered = 0
        """Packets delivered so far, each counted once, when first acked or SACKed."""
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0
        """``C.app_limited``: the ``delivered`` count that ends the app-limited phase; 0 = none."""
        self._min_rtt = float("inf")
        self._rs_valid = False
        self._rs_prior_delivered = 0
        self._rs_send_elapsed = 0.0
        self._rs_ack_elapsed = 0.0
        self._rs_app_limited = False
        self._rs_sent_time = float("-inf")

    @property
    def is_app_limited(self) -> bool:
        """True inside an application-limited phase (packets sent now will be marked)."""
        return self._app_limited_until != 0

    def on_packet_sent(self, now: float, in_flight_before: int) -> RateStamp:
        """A packet is sent (first time or again); its stamp, to keep with it.

        ``in_flight_before`` is the flight without this packet.  When nothing is
        in flight a new sampling flight starts here, so the idle time before it
        is not counted as delivery time (the draft: "if no packets in flight").
        """
        if in_flight_before == 0:
            self._first_sent_time = now
            self._delivered_time = now
        return RateStamp(
            self.delivered,
            self._delivered_time,
            self._first_sent_time,
            self._app_limited_until != 0,
        )

    def on_packet_delivered(self, stamp: RateStamp, sent_time: float, now: float) -> None:
        """One packet is newly delivered by the ack being processed at ``now``.

        The sample follows the most recently *sent* of the delivered packets
        (the draft's "IsNewestPacket"): its stamp covers the largest span of
        the flight, and a late ack of an old retransmission cannot restart it.
        Ties go to the later call.
        """
        self.delivered += 1
        self._delivered_time = now
        if self._rs_valid and sent_time < self._rs_sent_time:
            return
        self._rs_valid = True
        self._rs_sent_time = sent_time
        self._rs_prior_delivered = stamp.delivered
        self._rs_app_limited = stamp.is_app_limited
        self._rs_send_elapsed = sent_time - stamp.first_sent_time
        self._rs_ack_elapsed = now - stamp.delivered_time
        # The next flight's send interval starts at this packet.
        self._first_sent_time = sent_time

    def take_sample(self, now: float) -> RateSample | None:
        """The sample of the ack just processed, or ``None`` when it has none.

        ``interval = max(send_elapsed, ack_elapsed)`` (the draft's "Upon
        receiving an ACK"): the ack rate alone would overstate a compressed
        burst of acks, the send rate alone would overstate a burst sent faster
        than the path carries.
        """
        if self._app_limited_until and self.delivered > self._app_limited_until:
            # Everything sent in the app-limited phase is delivered: it is over.
            self._app_limited_until = 0
        if not self._rs_valid:
            return None
        self._rs_valid = False
        rtt = now - self._rs_sent_time
        min_rtt = self._min_rtt
        if 0 <= rtt < min_rtt:
            self._min_rtt = rtt
        interval = max(self._rs_send_elapsed, self._rs_ack_elapsed)
        delivered = self.delivered - self._rs_prior_delivered
        # (The first sample has no earlier RTT to compare with.)
        too_short = min_rtt != float("inf") and interval < min_rtt - TIME_EPSILON
        if interval <= 0 or too_short or delivered <= 0:
            return None
        return RateSample(
            delivery_rate=delivered / interval,
            interval=interval,
            delivered=delivered,
            prior_delivered=self._rs_prior_delivered,
            is_app_limited=self._rs_app_limited,
            rtt=rtt,
        )

    def on_app_limited(self, in_flight: int) -> None:
        """The sender had window room but nothing to send: an app-limited phase begins.

        It lasts until everything now in flight is delivered (the draft's
        ``C.app_limited = max(C.delivered + C.inflight, 1)``).
        """
        self._app_limited_until = max(self.delivered + in_flight, 1)
