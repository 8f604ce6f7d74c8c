"""BBR's loss rule: which of a round trip's losses are congestion.

``rudp.core.congestion.bbr`` runs the model and the state machine; this module judges
each round's losses from the RTT samples and loss counts of that round, and learns the
rate of the loss that is not congestion (``random_loss``).  The rules, (a) a standing
queue, (b) heavy loss and (c) loss that only rounds with a queue see, and the numbers
behind them, are in ``bbr``'s docstring and specs/protocol.md section 12.2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["LossRule"]

LOSS_TOLERANCE = 0.30
"""Loss fraction per round beyond which loss is congestion even without delay."""
LOSS_MARGIN_SIGMAS = 2.0
"""Standard deviations above the tolerance a round must be (small rounds are noisy)."""
HEAVY_LOSS_MIN_PACKETS = 100
"""Packets (lost + delivered) a heavy-loss judgement needs; whole rounds are pooled."""
QUEUE_DELAY_FRACTION = 0.25
"""A standing queue is a round minimum RTT above min_rtt by this fraction of it..."""
QUEUE_DELAY_FLOOR = 0.004
"""...and by at least this many seconds.  On a 2 ms path a quarter of min_rtt is half a
millisecond, less than the queue BBR's own 2 x BDP window and the peer's delayed acks
keep; a 1 ms floor took 10% random loss for congestion there (0.77 of the link against
1.0 with 4 ms).  A full one-BDP queue of any path is still far above it."""
JITTER_GAIN = 0.25
"""Gain of the RTT deviation's moving average (RFC 6298's beta)."""
JITTER_ALLOWANCE = 4.0
"""Deviations of jitter the queue-delay test allows, RFC 6298's K (measured: 20 Mbit/s,
40 ms RTT, +/-20 ms jitter each way, 5% loss: 0.46 Mbit/s when jitter passed for a
queue)."""
NO_QUEUE_FRACTION = 0.1
"""A round whose largest RTT stays within this fraction of min_rtt (and the floor) saw no
queue at all: only such rounds teach ``random_loss``."""
RANDOM_LOSS_PACKETS = 200
"""The random-loss estimate averages over about this many packets."""
EXCESS_LOSS_MIN_PACKETS = 100
"""Packets (lost + delivered) of rounds with some queue that rule (c) pools."""
EXCESS_LOSS_SIGMAS = 3.0
"""Binomial deviations above the expected loss that rule (c) asks for..."""
EXCESS_LOSS_RATIO = 1.5
"""...above this multiple of ``random_loss``, an average that lags (measured: one false
alarm at 20% random loss, 100 ms, with a ratio of 1, estimate 0.175, costing 3%)..."""
EXCESS_LOSS_FLOOR = 0.01
"""...and of at least this loss rate, so a path without random loss still needs a few."""

Congestion = Callable[[float, int, bool], None]
"""``(now, inflight at loss, keep the drained flight)``: what the controller does with a round
judged congested; the flag is rule (c)'s, whose cut keeps the flight of an empty queue."""


def no_queue_slack(min_rtt: float) -> float:
    """How far above min_rtt an RTT sample may be and still have seen no queue."""
    return max(NO_QUEUE_FRACTION * min_rtt, QUEUE_DELAY_FLOOR)


def heavy_loss(lost: int, acked: int) -> bool:
    """More than LOSS_TOLERANCE lost, by LOSS_MARGIN_SIGMAS binomial deviations."""
    total = lost + acked
    if total <= 0:
        return False
    p = LOSS_TOLERANCE
    margin = LOSS_MARGIN_SIGMAS * math.sqrt(total * p * (1 - p))
    return lost > p * total + margin


class LossRule:
    """One controller's round counters, pooled blocks and ``random_loss``."""

    __slots__ = (
        "_block_inflight_at_loss",
        "_block_lost",
        "_block_total",
        "_congestion",
        "_queued_inflight_at_loss",
        "_queued_lost",
        "_queued_total",
        "_round_acked",
        "_round_inflight_at_loss",
        "_round_lost",
        "_round_max_rtt",
        "_round_min_rtt",
        "random_loss",
        "rtt_deviation",
    )

    def __init__(self, congestion: Congestion) -> None:
        self._congestion = congestion
        self._round_lost = 0
        self._round_acked = 0
        self._round_min_rtt = float("inf")
        self._round_max_rtt = 0.0
        self._round_inflight_at_loss = 0
        self._block_lost = 0  # rule (b): whole rounds, pooled
        self._block_total = 0
        self._block_inflight_at_loss = 0
        self._queued_lost = 0  # rule (c): rounds that saw some queue, pooled
        self._queued_total = 0
        self._queued_inflight_at_loss = 0
        self.random_loss = 0.0
        """Loss fraction of rounds that saw no queue at all (an average)."""
        self.rtt_deviation = 0.0
        """Mean deviation of the RTT samples from srtt: the path's jitter."""

    def on_rtt_sample(self, rtt: float, srtt: float) -> None:
        """A delivery-rate sample's RTT, against the current srtt."""
        self.rtt_deviation += JITTER_GAIN * (abs(rtt - srtt) - self.rtt_deviation)

    def on_ack(self, acked: int, rtt: float) -> None:
        """``acked`` packets delivered this round; ``rtt`` < 0 when there is no sample."""
        self._round_acked += acked
        if rtt >= 0:
            if rtt < self._round_min_rtt:
                self._round_min_rtt = rtt
            if rtt > self._round_max_rtt:
                self._round_max_rtt = rtt

    def on_loss(self, lost: int, in_flight: int) -> None:
        """``lost`` packets declared lost this round, ``in_flight`` left after them."""
        self._round_lost += lost
        self._round_inflight_at_loss = max(self._round_inflight_at_loss, in_flight + lost)

    def forget_blocks(self) -> None:
        """A cut was made: rule (b) starts pooling afresh."""
        self._block_lost = self._block_total = self._block_inflight_at_loss = 0

    def end_round(self, now: float, min_rtt: float, after_startup: bool) -> None:
        """Judge the round that just ended (calling ``congestion`` for each verdict of
        congestion), then reset its counters."""
        lost = self._round_lost
        total = lost + self._round_acked
        inflight_at_loss = self._round_inflight_at_loss
        self._block_lost += lost
        self._block_total += total
        self._block_inflight_at_loss = max(self._block_inflight_at_loss, inflight_at_loss)
        if lost and self._standing_queue(min_rtt):
            self._congestion(now, inflight_at_loss, False)
        elif total and self._no_queue(min_rtt):
            # Loss without any queue is not ours: learn its rate, to make up for it when
            # probing.  Rounds with some queue are left out so tail drops in a buffer too
            # shallow for a standing queue cannot pass for it.
            weight = min(1.0, total / RANDOM_LOSS_PACKETS)
            self.random_loss += (lost / total - self.random_loss) * weight
        elif total and after_startup and self._some_queue(min_rtt):
            # (Not in Startup: a few rounds teach random_loss too little to judge against.)
            self._queued_lost += lost
            self._queued_total += total
            self._queued_inflight_at_loss = max(self._queued_inflight_at_loss, inflight_at_loss)
            if self._queued_total >= EXCESS_LOSS_MIN_PACKETS:
                if self._excess_loss(self._queued_lost, self._queued_total):
                    self._congestion(now, self._queued_inflight_at_loss, True)
                self._queued_lost = self._queued_total = self._queued_inflight_at_loss = 0
        if self._block_total >= HEAVY_LOSS_MIN_PACKETS:
            if heavy_loss(self._block_lost, self._block_total - self._block_lost):
                self._congestion(now, self._block_inflight_at_loss, False)
            self.forget_blocks()
        self._round_lost = 0
        self._round_acked = 0
        self._round_min_rtt = float("inf")
        self._round_max_rtt = 0.0
        self._round_inflight_at_loss = 0

    # --- the round's evidence -------------------------------------------------------------

    def _queue_delay_threshold(self, min_rtt: float) -> float:
        # Jitter raises samples whether or not there is a queue: a path whose RTT
        # scatters looks queued by about the scatter.  A standing queue raises the RTT
        # steadily, which keeps the deviation small, so the test still sees it.
        return max(
            QUEUE_DELAY_FRACTION * min_rtt,
            QUEUE_DELAY_FLOOR,
            JITTER_ALLOWANCE * self.rtt_deviation,
        )

    def _queued_all_round(self, min_rtt: float, allowance: float) -> bool:
        """The round's smallest RTT stayed above min_rtt by more than ``allowance``."""
        if not (math.isfinite(min_rtt) and math.isfinite(self._round_min_rtt)):
            return False
        return self._round_min_rtt - min_rtt > allowance

    def _standing_queue(self, min_rtt: float) -> bool:
        """Rule (a): a queue all round, above the queue-delay threshold."""
        return self._queued_all_round(min_rtt, self._queue_delay_threshold(min_rtt))

    def _no_queue(self, min_rtt: float) -> bool:
        """Even the round's largest RTT stayed close to min_rtt."""
        if not math.isfinite(min_rtt):
            return False
        return self._round_max_rtt - min_rtt <= no_queue_slack(min_rtt)

    def _some_queue(self, min_rtt: float) -> bool:
        """A queue all round, above the no-queue slack and the jitter allowance, if less
        than a standing one."""
        allowance = max(no_queue_slack(min_rtt), JITTER_ALLOWANCE * self.rtt_deviation)
        return self._queued_all_round(min_rtt, allowance)

    def _excess_loss(self, lost: int, total: int) -> bool:
        """Rule (c): rounds with a queue lost more than rounds without one, by
        EXCESS_LOSS_SIGMAS binomial deviations: tail drops, in a buffer too shallow for a
        standing queue to show in the RTT (random loss strikes whatever the queue)."""
        p = max(self.random_loss, EXCESS_LOSS_FLOOR)
        margin = EXCESS_LOSS_SIGMAS * math.sqrt(total * p * (1 - p))
        return lost > EXCESS_LOSS_RATIO * p * total + margin
