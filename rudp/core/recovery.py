"""Loss recovery after RFC 9002: RTT estimation, sent-packet records, loss detection, PTO.

This module owns everything that is about *transmissions* rather than about data
(aioquic's ``recovery.py`` has the same split): every ack-eliciting datagram the
sender puts on the wire gets a fresh **packet number** (``pn``, specs/protocol.md
section 8), and ``Recovery`` keeps one ``SentPacket`` for it until it is
acknowledged or declared lost.  The sender (``rudp.core.sender``) keeps the data:
the message queue, fragmentation, the sequence-number records and the windows.

Because the receiver echoes the largest packet number it has received, and how
long it held the ack (``ack_delay``), every transmission is identifiable:

- RTT samples come from retransmissions too (RFC 9002 section 5.1; Karn's
  ambiguity, RFC 6298 section 3, is gone);
- loss detection runs in send order on the packet number, with the packet and
  time thresholds of RFC 9002 section 6.1 (RACK, RFC 8985, in spirit), both raised
  while the path shows reordering (RFC 8985 section 6.2);
- a retransmission whose data the peer acknowledges *before* it has received the
  retransmission (its packet number is above the echoed largest) was spurious,
  and the congestion response to that loss is undone (the Eifel response,
  RFC 4015; RFC 9002 detects the same through its packet-number acks).

The timers are RFC 9002's: the time-threshold loss timer (section 6.1.2) and the
probe timeout (section 6.2), ``srtt + max(4 * rttvar, kGranularity) +
max_ack_delay``, doubled at each consecutive expiry up to ``Config.max_rto``.  A
PTO sends probes and never shrinks the congestion window; only persistent
congestion (section 7.6) takes it to the minimum.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final, NamedTuple

from rudp.config import Config
from rudp.core.congestion.base import CongestionController
from rudp.core.congestion.delivery_rate import DeliveryRateEstimator

K_PACKET_THRESHOLD: Final = 3
"""RFC 9002 section 6.1.1: reordering tolerated before a packet is declared lost
(the same three "duplicate acks" as RFC 5681 section 3.2)."""

TIME_THRESHOLD: Final = 9 / 8
"""RFC 9002 section 6.1.2: kTimeThreshold, reordering tolerated in time, as a multiple
of the RTT."""

CLOCK_GRANULARITY: Final = 0.001
"""RFC 9002 section 6.1.2's kGranularity (and RFC 6298's G): 1 ms."""

MAX_PACKET_THRESHOLD: Final = 256
"""The most reordering, in packets, the packet threshold grows to (Linux caps its
``tcp_max_reordering`` at 300): beyond it the time threshold alone decides."""
TIME_THRESHOLD_STEP: Final = 1 / 4
"""What each sign of reordering adds to the time threshold, in RTTs: RFC 8985 section
6.2's ``reo_wnd_mult * min_rtt / 4``..."""
MAX_TIME_THRESHOLD: Final = 2.0
"""...up to a whole RTT of reordering window (RFC 8985 caps it at srtt)."""
SPURIOUS_SHARE_GAIN: Final = 1 / 16
"""Gain of the moving share of declared losses that proved spurious (about the last 16)..."""
REORDERING_SHARE: Final = 0.25
"""...above which spurious losses are taken for reordering.  Below it they are what heavy
loss makes anyway: a hole the receiver's 32 SACK blocks no longer reach is declared lost
and then acknowledged (measured: 5% and 10% of the fast retransmits at 30% loss, 100 and
200 ms; every one of them with +/-10 ms of jitter)."""
REORDERING_PERSIST: Final = 16
"""Loss events without a spurious retransmission after which both thresholds step back
towards RFC 9002's (RFC 8985 section 6.2's reo_wnd_persist)."""
PERSISTENT_CONGESTION_THRESHOLD: Final = 3
"""RFC 9002 section 7.6.1: kPersistentCongestionThreshold, in PTO durations."""

ALPHA: Final = 1 / 8
"""RFC 6298 section 2.3 / RFC 9002 section 5.3: gain of the smoothed RTT."""
BETA: Final = 1 / 4
"""RFC 6298 section 2.3 / RFC 9002 section 5.3: gain of the RTT variation."""
K: Final = 4
"""RFC 6298 section 2.3: weight of RTTVAR in the timeout."""

PING: Final = -1
"""``SentPacket.seq`` of a keepalive or probe PING: it carries no data."""


class RttEstimator:
    """RTT estimate (RFC 9002 section 5) and the handshake's RFC 6298 timeout.

    ``on_sample`` takes the measured RTT and the peer's reported ack delay:
    ``min_rtt`` ignores the delay, the smoothed estimate subtracts it when that
    does not take the sample below ``min_rtt`` (section 5.3).  ``rto`` is the
    RFC 6298 timeout the handshake uses (it has no packet numbers to echo yet),
    with ``back_off`` doubling it up to ``max_rto``.
    """

    __slots__ = (
        "_initial_rto",
        "_max_rto",
        "_min_rto",
        "latest",
        "min_rtt",
        "rto",
        "rttvar",
        "samples",
        "srtt",
    )

    def __init__(self, initial_rto: float, min_rto: float, max_rto: float) -> None:
        self._initial_rto = initial_rto
        self._min_rto = min_rto
        self._max_rto = max_rto
        self.rto = initial_rto
        """Current timeout, seconds: ``initial_rto`` before a sample (RFC 6298 section 2.1)."""
        self.srtt: float | None = None
        """Smoothed RTT, None before the first sample."""
        self.rttvar: float | None = None
        """RTT variation, None before the first sample."""
        self.latest: float | None = None
        """The most recent sample."""
        self.min_rtt: float | None = None
        """The smallest sample seen (RFC 9002 section 5.2), ack delay not subtracted."""
        self.samples = 0
        """Samples taken so far (lets a cache of a derived timeout know it is stale)."""

    def on_sample(self, rtt: float, ack_delay: float = 0.0) -> None:
        """Feed one RTT measurement and the ack delay the peer reported for it."""
        if rtt < 0:
            return
        self.latest = rtt
        self.samples += 1
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None or self.rttvar is None:
            # RFC 9002 section 5.3 (and RFC 6298 section 2.2): first measurement.
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            adjusted = rtt - ack_delay if rtt >= self.min_rtt + ack_delay else rtt
            # RTTVAR first, using the old SRTT (RFC 6298 section 2.3).
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - adjusted)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * adjusted
        self.reset_backoff()

    def reset_backoff(self) -> None:
        """Recompute ``rto`` from SRTT and RTTVAR, undoing any backoff (RFC 6298 section 5.7)."""
        if self.srtt is None or self.rttvar is None:
            return
        rto = self.srtt + max(CLOCK_GRANULARITY, K * self.rttvar)
        # RFC 6298 sections 2.4 and 2.5: clamp to the configured floor and cap.
        self.rto = min(max(rto, self._min_rto), self._max_rto)

    def back_off(self) -> None:
        """Double ``rto`` after a handshake timeout, capped at ``max_rto`` (RFC 6298 5.5)."""
        self.rto = min(self.rto * 2, self._max_rto)

    def loss_delay(self, threshold: float = TIME_THRESHOLD) -> float:
        """RFC 9002 section 6.1.2: 9/8 (or ``threshold``) of max(smoothed, latest) RTT,
        at least 1 ms.

        Before any sample, the initial timeout stands in for the RTT.
        """
        if self.srtt is None or self.latest is None:
            return self.rto
        return max(threshold * max(self.srtt, self.latest), CLOCK_GRANULARITY)

    def pto_base(self, max_ack_delay: float) -> float:
        """RFC 9002 section 6.2.1: srtt + max(4 * rttvar, kGranularity) + max_ack_delay.

        Clamped to ``[min_rto, max_rto]``: the mission's floor and cap stay real.
        Before any sample it is the initial timeout (RFC 9002 section 6.2.2 uses
        the initial RTT the same way).
        """
        if self.srtt is None or self.rttvar is None:
            return self._initial_rto  # not the handshake's backed-off RTO: data starts afresh
        pto = self.srtt + max(K * self.rttvar, CLOCK_GRANULARITY) + max_ack_delay
        return min(max(pto, self._min_rto), self._max_rto)


class SentPacket(NamedTuple):
    """One ack-eliciting transmission not yet acknowledged or declared lost.

    A DATA/FIN record is also the packet's delivery-rate stamp (a
    ``rudp.core.congestion.delivery_rate.Stamp``): it holds the four fields
    ``DeliveryRateEstimator.on_packet_sent`` would return, so a transmission
    costs one object, not two.  A PING's stamp fields are unused.  A NamedTuple,
    built with ``tuple.__new__`` on the hot path (as ``rudp.core.wire`` builds its
    packets): a record per packet is several times cheaper as a tuple than as an
    object with ``__init__``, and nothing changes it once it is made.
    """

    pn: int
    """Its packet number."""
    seq: int
    """The sequence number of the DATA/FIN it carried, or ``PING``."""
    sent_time: float
    in_flight: bool
    """Counts towards the congestion window (DATA and FIN do; PINGs do not)."""
    # The delivery-rate stamp (draft-cheng-iccrg-delivery-rate-estimation's P.*).
    delivered: int = 0
    delivered_time: float = 0.0
    first_sent_time: float = 0.0
    is_app_limited: bool = False


_new_tuple = tuple.__new__


class Recovery:
    """Sent-packet records, loss detection and the probe timeout of one connection.

    The sender reports every transmission (``on_packet_sent``), every ack
    (``on_ack_received`` with the sequence numbers it newly delivered), and the
    expiry of the two timers (``detect_losses`` at ``loss_deadline``, ``on_pto``).
    Recovery tells the congestion controller and hands each lost transmission
    back through ``on_lost(pn, seq, now)``, a callback the sender gives it.
    """

    def __init__(
        self,
        config: Config,
        cc: CongestionController,
        rtt: RttEstimator,
        on_lost: Callable[[int, int, float], None],
    ) -> None:
        self._config = config
        self.cc = cc
        self.rtt = rtt
        self._on_lost = on_lost
        self.rate = DeliveryRateEstimator()
        """Delivery-rate samples for the congestion controller."""

        self.next_pn = 0
        """Packet number of the next datagram sent (every datagram takes one)."""
        self.largest_acked_pn = -1
        """The largest packet number the peer reported receiving."""
        self._sent: dict[int, SentPacket] = {}
        # Packet numbers in send order; entries already acknowledged are skipped when
        # met (popping the head of a dict is not O(1) in CPython, a deque's is).
        self._order: deque[int] = deque()
        self.in_flight = 0
        """Packets counting towards the congestion window."""

        self.loss_deadline: float | None = None
        """When the oldest unacknowledged packet sent before an acknowledged one
        crosses the time threshold (RFC 9002 section 6.1.2)."""
        self.pto_deadline: float | None = None
        """When the probe timeout fires (RFC 9002 section 6.2), None when unarmed."""
        self.pto_count = 0
        """Consecutive probe timeouts without an acknowledgement: the backoff exponent
        and the give-up budget (``Config.max_retransmits``)."""
        self._last_eliciting_time: float | None = None
        # _pto_duration is cached: it changes only with an RTT sample or the backoff,
        # and these are the rtt.samples and pto_count it was computed for.
        self._pto_samples = -1
        self._pto_backoff = -1
        self._pto_duration = 0.0
        # Every controller so far ignores on_packet_sent (the hook is CongestionController's
        # no-op default): skip the call per packet unless the controller overrides it.
        self._cc_on_packet_sent = (
            cc.on_packet_sent
            if type(cc).on_packet_sent is not CongestionController.on_packet_sent
            else None
        )
        self._first_sample_time: float | None = None
        self._recovery_start = float("-inf")
        self._undone = True
        self.packet_threshold = K_PACKET_THRESHOLD
        """Packets later than a transmission that declare it lost: RFC 9002's 3 until
        the path shows reordering (``on_spurious_retransmission``)."""
        self.time_threshold = TIME_THRESHOLD
        """The time threshold, in RTTs: 9/8 until the path shows reordering."""
        self._reordering_raised_at = float("-inf")
        self._quiet_loss_events = 0
        self._spurious_share = 0.0  # of recent losses, those that proved spurious

        # counters for Stats
        self.ptos = 0
        self.spurious_losses = 0
        self.persistent_congestion_events = 0
        self.declared_lost = 0

    # --- sending ------------------------------------------------------------------

    def allocate_pn(self) -> int:
        """Take the next packet number (for any datagram, ack-eliciting or not)."""
        pn = self.next_pn
        self.next_pn = pn + 1
        return pn

    def on_packet_sent(self, pn: int, seq: int, now: float) -> None:
        """An ack-eliciting datagram went out: DATA/FIN (``seq``) or a PING (``PING``).

        ``pn`` comes from ``allocate_pn``.  A burst of new data is recorded with
        ``on_burst_sent`` instead (one call, not two per packet).
        """
        if seq != PING:
            self._record_data(pn, seq, 1, now)
            return
        self._sent[pn] = SentPacket(pn, seq, now, False)
        self._order.append(pn)
        self._restart_pto(now)

    def on_burst_sent(self, first_pn: int, first_seq: int, count: int, now: float) -> None:
        """``count`` DATA/FIN packets went out at ``now``, numbered as one run.

        Sequence numbers ``first_seq, first_seq + 1, ...`` went in packets
        ``first_pn, first_pn + 1, ...``, and ``first_pn`` is ``next_pn``: the sender
        numbers a burst of new data itself while it cuts it, and takes the numbers
        here, which is ``allocate_pn`` and ``on_packet_sent`` for each of them.
        """
        assert first_pn == self.next_pn, "a burst starts at next_pn"
        self.next_pn = first_pn + count
        self._record_data(first_pn, first_seq, count, now)

    def _record_data(self, first_pn: int, first_seq: int, count: int, now: float) -> None:
        """Records for ``count`` DATA/FIN transmissions: the per-packet hot path."""
        rate = self.rate
        if self.in_flight == 0:
            rate.start_flight(now)
        # The stamp's fields go straight into each record (what on_packet_sent of the
        # DeliveryRateEstimator would return); nothing changes them within a burst.
        delivered = rate.delivered
        delivered_time = rate.delivered_time
        first_sent_time = rate.first_sent_time
        app_limited = rate.is_app_limited
        sent = self._sent
        seq = first_seq
        for pn in range(first_pn, first_pn + count):
            sent[pn] = _new_tuple(
                SentPacket,
                (pn, seq, now, True, delivered, delivered_time, first_sent_time, app_limited),
            )
            seq += 1
        self._order.extend(range(first_pn, first_pn + count))
        on_packet_sent = self._cc_on_packet_sent
        if on_packet_sent is None:
            self.in_flight += count
        else:
            for _ in range(count):
                self.in_flight += 1
                on_packet_sent(now, self.in_flight)
        self._restart_pto(now)

    def _restart_pto(self, now: float) -> None:
        """RFC 9002 section 6.2.1: each ack-eliciting packet restarts the probe timer."""
        self._last_eliciting_time = now
        # The duration is recomputed only when an RTT sample or the backoff changed it.
        if self.rtt.samples != self._pto_samples or self.pto_count != self._pto_backoff:
            self._pto_samples = self.rtt.samples
            self._pto_backoff = self.pto_count
            self._pto_duration = self.pto_duration()
        self.pto_deadline = now + self._pto_duration

    def on_app_limited(self) -> None:
        """The sender had window to spare and nothing to send (delivery-rate draft 3.4)."""
        self.rate.on_app_limited(self.in_flight)

    @property
    def has_unacked(self) -> bool:
        """Any ack-eliciting transmission still awaits an answer."""
        return bool(self._sent)

    # --- acknowledgements ------------------------------------------------------------

    def on_ack_received(
        self, now: float, largest_pn: int, ack_delay: float, delivered: list[int]
    ) -> None:
        """Process the transmission-level half of an ack.

        ``largest_pn`` is the largest packet number the peer has received,
        ``ack_delay`` how long it held this ack (RFC 9000 section 13.2.5), and
        ``delivered`` the packet numbers of every transmission whose data this ack
        newly acknowledged (by cumulative ack or SACK).
        """
        sent = self._sent
        progressed = largest_pn > self.largest_acked_pn
        if progressed:
            self.largest_acked_pn = largest_pn
            packet = sent.get(largest_pn)
            if packet is not None:
                # RFC 9002 section 5.1: a sample when the largest acknowledged is new and
                # ack-eliciting; the echo names the transmission, so retransmissions count.
                delay = min(ack_delay, self._config.max_ack_delay)
                self.rtt.on_sample(now - packet.sent_time, delay)
                if self._first_sample_time is None:
                    self._first_sample_time = now
                if packet.seq == PING:
                    del sent[largest_pn]
        acked = 0
        sampled = 0  # delivered packets that count for the delivery rate
        newest: SentPacket | None = None  # the most recently sent of them (ties: the last)
        newest_sent_time = float("-inf")
        for pn in delivered:
            packet = sent.pop(pn, None)
            if packet is None or not packet.in_flight:
                continue  # judged lost already, or a PING
            acked += 1
            if pn > largest_pn:
                # Not received when the peer sent this ack: the data arrived through an
                # earlier transmission, so this one says nothing about the path's rate
                # or delay (Karn's ambiguity, resolved by the echo).
                continue
            sampled += 1
            if packet.sent_time >= newest_sent_time:
                newest_sent_time = packet.sent_time
                newest = packet
        rate = self.rate
        if newest is not None:
            # One call per ack, not per packet: only the newest packet's stamp matters.
            rate.on_packets_delivered(sampled, newest, newest_sent_time, now)
        self.in_flight -= acked
        if acked or progressed:
            # RFC 9002 section 6.2.1: an acknowledgement resets the PTO backoff.
            self.pto_count = 0
        if acked:
            self.cc.on_ack(
                now,
                acked,
                newest_sent_time,
                self.in_flight,
                self.rtt.srtt,
                self.rtt.min_rtt,
                rate.take_sample(now),
            )
        if progressed:
            self.detect_losses(now)
        self._arm_pto()

    def on_spurious_retransmission(
        self, declared_lost_at: float | None, now: float, reordered: bool = True
    ) -> None:
        """Data we retransmitted reached the peer through an earlier transmission.

        ``declared_lost_at`` is when the earlier one was declared lost (None for a
        probe, which changed no window).  If that loss started the current
        reduction, the reduction is undone once (RFC 4015 section 3).
        """
        self.spurious_losses += 1
        if declared_lost_at is not None and reordered:
            self._spurious_share += (1.0 - self._spurious_share) * SPURIOUS_SHARE_GAIN
            if self._spurious_share > REORDERING_SHARE:
                self._on_reordering(now)
        if declared_lost_at is None or self._undone:
            return
        if declared_lost_at >= self._recovery_start:
            self._undone = True
            self.cc.on_spurious_loss(now)

    def _on_reordering(self, now: float) -> None:
        """A loss was spurious: the packet was late, so the path reorders.  Both thresholds
        grow, once per round trip: the packet threshold doubles (Linux raises
        ``tp->reordering`` to the reordering it saw) and the time threshold gains a quarter
        RTT (RFC 8985 section 6.2).  RFC 9002 section 6.1 leaves the values open
        ("implementations MAY use adaptive thresholds"); without this, a path that reorders
        by more than three packets (jitter on a per-packet path, load balancing) loses a
        retransmission and a loss signal per reordered packet (measured: 20 Mbit/s, 40 ms,
        +/-10 ms jitter each way: 7% of the link, 1223 spurious retransmissions in 10 MB)."""
        self._quiet_loss_events = 0
        srtt = self.rtt.srtt
        if srtt is not None and now - self._reordering_raised_at < srtt:
            return
        self._reordering_raised_at = now
        self.packet_threshold = min(2 * self.packet_threshold, MAX_PACKET_THRESHOLD)
        self.time_threshold = min(self.time_threshold + TIME_THRESHOLD_STEP, MAX_TIME_THRESHOLD)

    # --- loss detection (RFC 9002 section 6.1) ----------------------------------------

    def detect_losses(self, now: float) -> None:
        """Declare lost what the packet or time threshold says is lost; arm the loss timer.

        A transmission with a lower packet number than the largest acknowledged is
        lost once ``packet_threshold`` later ones were received, or once it was sent
        more than ``time_threshold`` (9/8) of an RTT ago.  Both rules hold in send
        order, so the scan stops at the first packet not yet lost: amortised O(1) per
        packet.
        """
        largest = self.largest_acked_pn
        order = self._order
        sent = self._sent
        threshold = largest - self.packet_threshold
        delay = self.rtt.loss_delay(self.time_threshold)
        self.loss_deadline = None
        lost: list[SentPacket] = []
        # RFC 9002 section 7.6.2: a run of lost packets is broken only by one that was
        # acknowledged, which the scan meets as an entry whose record is gone; numbers
        # taken by pure ACKs leave gaps that do not break it.
        run_start: float | None = None
        persistent = False
        first_sample = self._first_sample_time
        duration = -1.0  # computed at the first lost packet: most scans find none
        while order and order[0] < largest:
            pn = order[0]
            packet = sent.get(pn)
            if packet is None:
                order.popleft()
                run_start = None
                continue
            deadline = packet.sent_time + delay
            if pn > threshold and deadline > now:
                self.loss_deadline = deadline
                break
            order.popleft()
            del sent[pn]
            if first_sample is not None and packet.sent_time >= first_sample:
                if duration < 0:
                    duration = self.rtt.pto_base(self._config.max_ack_delay)
                    duration *= PERSISTENT_CONGESTION_THRESHOLD
                if run_start is None:
                    run_start = packet.sent_time
                elif packet.sent_time - run_start >= duration:
                    persistent = True
            if packet.seq != PING:
                lost.append(packet)
        if lost:
            self._on_packets_lost(lost, now, persistent)

    def _on_packets_lost(self, lost: list[SentPacket], now: float, persistent: bool) -> None:
        in_flight_lost = [p for p in lost if p.in_flight]
        self.in_flight -= len(in_flight_lost)
        self.declared_lost += len(lost)
        if in_flight_lost:
            self._spurious_share *= (1.0 - SPURIOUS_SHARE_GAIN) ** len(in_flight_lost)
            newest = max(p.sent_time for p in in_flight_lost)
            if newest > self._recovery_start:
                # A new congestion event (RFC 9002 section 7.3.2): at most one reduction
                # per round trip; the controller applies the same rule.
                self._recovery_start = now
                self._undone = False
                self._quiet_loss_events += 1
                if self._quiet_loss_events >= REORDERING_PERSIST:
                    # No reordering for a while: one step back towards RFC 9002's
                    # thresholds (stepwise, so real loss on a path that still reorders
                    # does not knock them back to where every late packet is lost).
                    self._quiet_loss_events = 0
                    self.packet_threshold = max(self.packet_threshold // 2, K_PACKET_THRESHOLD)
                    self.time_threshold = max(
                        self.time_threshold - TIME_THRESHOLD_STEP, TIME_THRESHOLD
                    )
            self.cc.on_packets_lost(now, len(in_flight_lost), newest, self.in_flight)
            if persistent:
                self.persistent_congestion_events += 1
                self.cc.on_persistent_congestion(now)
        for packet in lost:
            self._on_lost(packet.pn, packet.seq, now)

    # --- the probe timeout (RFC 9002 section 6.2) -----------------------------------

    def pto_duration(self) -> float:
        """The current probe timeout, backoff included, capped at ``max_rto``."""
        base = self.rtt.pto_base(self._config.max_ack_delay)
        return min(base * (1 << min(self.pto_count, 30)), self._config.max_rto)

    def _arm_pto(self) -> None:
        if self._last_eliciting_time is None or not self._sent:
            self.pto_deadline = None
            return
        self.pto_deadline = self._last_eliciting_time + self.pto_duration()

    def on_pto(self, now: float) -> bool:
        """The probe timer fired.  Returns False when the give-up budget is spent.

        RFC 9002 section 6.2.4: the backoff doubles and the caller sends one or two
        probes; no packet is declared lost and the congestion window is untouched.
        """
        self.ptos += 1
        self.pto_count += 1
        limit = self._config.max_retransmits
        if limit is not None and self.pto_count > limit:
            self.pto_deadline = None
            return False
        # Re-arm from now: the probes about to be sent restart it anyway.
        self._last_eliciting_time = now
        self._arm_pto()
        return True

    def stop_timers(self) -> None:
        """The connection ended: no timer fires again."""
        self.loss_deadline = None
        self.pto_deadline = None
