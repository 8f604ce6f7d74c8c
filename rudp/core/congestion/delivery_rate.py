"""Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation), in packets.

The estimator turns acknowledgements into one ``RateSample`` per ack: how many
packets the network delivered over how long, measured from the most recently
sent packet that the ack newly delivers.  BBR's bandwidth model is built from
these samples.

How a sender uses it (the draft's "Transmitting a data packet" and "Upon
receiving an ACK" steps):

1. ``stamp = estimator.on_packet_sent(now, in_flight_before)`` for every
   transmission; keep the stamp with the packet.  (A sender that keeps a record
   per packet anyway may store the stamp's four fields in that record instead,
   as ``rudp.core.recovery.SentPacket`` does: ``start_flight`` when nothing is in
   flight, then copy ``delivered``, ``delivered_time``, ``first_sent_time`` and
   ``is_app_limited``.  The record is then a ``Stamp`` itself.)
2. For every packet an ack newly delivers (acknowledged or SACKed for the
   first time, whatever transmission carried it):
   ``estimator.on_packet_delivered(stamp, sent_time, now)``; or, once per ack,
   ``estimator.on_packets_delivered(count, stamp, sent_time, now)`` with the
   stamp of the most recently sent of them (the same result in one call).
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

from typing import NamedTuple, Protocol

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


class Stamp(Protocol):
    """What the estimator reads of a delivered packet's stamp: ``RateStamp``'s fields.

    ``RateStamp`` has them, and so may a sender's own per-packet record.
    """

    @property
    def delivered(self) -> int: ...
    @property
    def delivered_time(self) -> float: ...
    @property
    def first_sent_time(self) -> float: ...
    @property
    def is_app_limited(self) -> bool: ...


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
        "_min_rtt",
        "_rs_ack_elapsed",
        "_rs_app_limited",
        "_rs_prior_delivered",
        "_rs_send_elapsed",
        "_rs_sent_time",
        "_rs_valid",
        "delivered",
        "delivered_time",
        "first_sent_time",
        "is_app_limited",
    )

    def __init__(self) -> None:
        self.delivered = 0
        """``C.delivered``: packets delivered so far, each counted once, when first acked
        or SACKed."""
        self.delivered_time = 0.0
        """``C.delivered_time``: when ``delivered`` last grew (or the flight started)."""
        self.first_sent_time = 0.0
        """``C.first_sent_time``: send time of the first packet of the sampling flight."""
        self.is_app_limited = False
        """True inside an application-limited phase (packets sent now will be marked)."""
        self._app_limited_until = 0
        """``C.app_limited``: the ``delivered`` count that ends the app-limited phase; 0 = none."""
        self._min_rtt = float("inf")
        self._rs_valid = False
        self._rs_prior_delivered = 0
        self._rs_send_elapsed = 0.0
        self._rs_ack_elapsed = 0.0
        self._rs_app_limited = False
        self._rs_sent_time = float("-inf")

    def start_flight(self, now: float) -> None:
        """Nothing is in flight and a packet is sent: a new sampling flight starts at ``now``.

        So the idle time before it is not counted as delivery time (the draft:
        "if no packets in flight").
        """
        self.first_sent_time = now
        self.delivered_time = now

    def on_packet_sent(self, now: float, in_flight_before: int) -> RateStamp:
        """A packet is sent (first time or again); its stamp, to keep with it.

        ``in_flight_before`` is the flight without this packet.
        """
        if in_flight_before == 0:
            self.start_flight(now)
        return RateStamp(
            self.delivered, self.delivered_time, self.first_sent_time, self.is_app_limited
        )

    def on_packet_delivered(self, stamp: Stamp, sent_time: float, now: float) -> None:
        """One packet is newly delivered by the ack being processed at ``now``.

        The sample follows the most recently *sent* of the delivered packets
        (the draft's "IsNewestPacket"): its stamp covers the largest span of
        the flight, and a late ack of an old retransmission cannot restart it.
        Ties go to the later call.
        """
        self.on_packets_delivered(1, stamp, sent_time, now)

    def on_packets_delivered(self, count: int, stamp: Stamp, sent_time: float, now: float) -> None:
        """``count`` packets are newly delivered by the ack being processed at ``now``.

        ``stamp`` and ``sent_time`` are those of the most recently sent of them (the
        last one, among equals, in the order ``on_packet_delivered`` would have been
        called): the state is then exactly what ``count`` calls of
        ``on_packet_delivered`` leave, since only that packet's stamp survives them.
        """
        self.delivered += count
        self.delivered_time = now
        if self._rs_valid and sent_time < self._rs_sent_time:
            return
        self._rs_valid = True
        self._rs_sent_time = sent_time
        self._rs_prior_delivered = stamp.delivered
        self._rs_app_limited = stamp.is_app_limited
        self._rs_send_elapsed = sent_time - stamp.first_sent_time
        self._rs_ack_elapsed = now - stamp.delivered_time
        # The next flight's send interval starts at this packet.
        self.first_sent_time = sent_time

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
            self.is_app_limited = False
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
        self.is_app_limited = True
