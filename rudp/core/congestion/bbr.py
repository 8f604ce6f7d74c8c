"""BBR congestion control: a model of the path, not a reaction to every loss.

BBR (draft-cardwell-iccrg-bbr-congestion-control) estimates the bottleneck
bandwidth (``max_bw``, a windowed max of delivery-rate samples) and the
propagation RTT (``min_rtt``, a windowed min), paces at a gain times
``max_bw`` and bounds the flight at a gain times their product, the BDP.  The
state machine is BBRv1's ("v1 section" below: draft -00; 4.3: Startup, Drain, ProbeBW,
ProbeRTT); from BBRv2 (drafts -01/-02) come ``inflight_hi``, the bound learnt
from congestion, its growth while probing, and ProbeRTT's half-BDP flight.
Units: packets, packets per second, seconds.

The loss rule, judged once per round trip (rounds counted with
``prior_delivered``, v1 section 4.1.1.3):

* Loss is **congestion** when (a) the round's *smallest* RTT sample stayed
  above ``min_rtt`` by more than ``max(min_rtt / 4, 1 ms)``: the queue never
  drained all round, so drops there are tail drops.  Our own probe (1.25 for
  one min_rtt) builds at most a quarter BDP that the 0.75 phase drains, and
  jitter lifts single samples, not a round's minimum; a competing flow's (or
  two BBR flows') standing queue lifts it.  1 ms is a quarter of the
  smallest RTT targeted (2 ms).  Or (b) the loss fraction ``lost / (lost +
  delivered)``, over whole rounds pooled to at least 100 packets, exceeds 30%
  by two binomial standard deviations (40 of 100): a policer or overload
  whatever the delay.  At 20% random loss a false alarm has probability
  4e-6 per block, at 25% 7e-4 (40-packet blocks gave 3e-4 at 20%: one
  false cut in 30 s in the test model, each one capping the flow for seconds).
  Or (c) rounds that saw *some* queue (their smallest RTT above min_rtt by more
  than the no-queue slack and the jitter allowance, below (a)'s threshold), pooled
  to 100 packets, lost more than 1.5 times ``random_loss`` (at least 1%) by three
  binomial deviations: random loss strikes whatever the queue, tail drops only with
  one, so this finds a buffer too shallow for (a) (a quarter BDP never lifts the RTT
  by a quarter).  Not in Startup, which has not learnt ``random_loss`` yet; the cut
  keeps at least the BDP and the quantization budget, the flight of an empty queue.
  Measured on the shared-bottleneck model, two flows on a quarter-BDP queue at
  50 Mbit/s, 100 ms: overflow loss 6% / 10% -> 0.9% / 0.6%, Jain 0.80 -> 0.91.
* Congestion sets ``inflight_hi = max(MIN_WINDOW, 0.7 * inflight at loss)``
  (BBRv2's beta), at least one BDP when it ends Startup (to Drain; with random
  loss it is Startup's own queue that made the loss count), and ends a ProbeBW
  up phase.  ``inflight_hi`` grows back in up phases while it limits the
  flight, by 1, 2, 4, ... packets per round (BBRv2's ProbeBW_UP slope), the
  exponent kept across cycles (v1's up phase lasts a round) until the next cut.
* Any other loss is random and changes nothing: not the model, the window or
  Startup.  (BBRv2 calls over 2% "inflight too high" and starves at 5-20%
  random loss; BBRv1 ignores loss and never yields in a shallow buffer.)
* Deviation, probe compensation: only ``1 - p`` of what is sent reaches the
  bottleneck, so at 20% loss a 1.25 probe offers it exactly ``max_bw`` and can
  never find more (measured: the estimate drifted to 0.82 of the link).  The
  up phase's gain is divided by ``1 - random_loss``, the loss fraction of
  rounds whose *largest* RTT saw no queue (within ``max(min_rtt / 10, 1 ms)``);
  rounds with some queue are left out so tail drops in a buffer too shallow
  for (a) cannot pass for random loss and feed the probe.

Other choices:

* Pacing before any sample: ``2/ln2 * initial_window / (srtt or 1 ms)`` (the
  draft's BBRInitPacingRate, re-initialised at the first srtt as Linux does).
  1 ms sends the initial window as the burst RFC 6928 allows anyway; 100 ms
  would hold a LAN transfer's first flight back for no safety gain.
* ProbeRTT: ``max(4, BDP / 2)`` packets (BBRv2) rather than v1's 4, for
  max(200 ms, one round), after 10 s without a strictly lower RTT (Linux's
  ``<``; the draft's ``<=`` never expires on a steady path).  Any flight under
  a BDP drains one flow's queue; the 4-packet dip costs 4-6% at 200 ms.
* ProbeBW starts deterministically in phase 2 (the first 1.0): no randomness
  in the core, and flows' different start times desynchronise their cycles.
* The down phase drains the queue, not just a min_rtt of it: its 0.75 gain holds
  through the cruise phases until the flight is down to the BDP and the quantization
  budget, or an RTT sample comes within the no-queue slack of min_rtt (BBRv2's
  ProbeBW_DOWN, which also waits for the queue to go; the next up phase ends it in
  any case, so the cycle keeps its length).  v1's one-min_rtt drain leaves whatever
  queue the max filter's upward bias built standing, up to the window: measured on
  the shared-bottleneck model, 10 Mbit/s, 10 ms, a 4-BDP queue, a lone flow's mean
  queue was 1.21 min RTT (0.64 now), and two flows sharing 20 Mbit/s at 40 ms split
  23% / 74% over 10 s (49% / 48% now).  The RTT exit keeps lossy paths from draining
  on a flight inflated by packets not yet known lost.
* ``cwnd = 2 * BDP + 3 * send_quantum`` (the quantization budget), at least 4
  (BBRMinPipeCwnd), capped by ``inflight_hi``, ProbeRTT and persistent congestion,
  never below ``MIN_WINDOW``.
* Persistent congestion: ``MIN_WINDOW`` until a round has passed since, then
  straight back to the model (v1 restores ``prior_cwnd`` after an RTO).  A
  spurious loss undoes an ``inflight_hi`` cut of this or the previous round and
  lifts that clamp.
* ``sample=None`` (an ack whose sample the estimator discarded, its interval
  shorter than the minimum RTT): the filters and the round count wait for the
  next one.
"""

from __future__ import annotations

import math
from collections import deque
from enum import Enum

from rudp.config import Config
from rudp.core.congestion.base import MIN_WINDOW, CongestionController, RateSample, register
from rudp.core.congestion.bbr_loss import LOSS_TOLERANCE, LossRule, no_queue_slack
from rudp.core.congestion.delivery_rate import TIME_EPSILON

STARTUP_GAIN = 2 / math.log(2)
"""v1 section 4.3.2.1 BBRHighGain: the smallest gain that doubles the delivery rate per round."""
DRAIN_GAIN = 1 / STARTUP_GAIN
"""v1 section 4.3.3: drains in one round the queue Startup built."""
CWND_GAIN = 2.0
"""v1 section 4.3.4: twice the BDP absorbs delayed and aggregated acks."""
GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""v1 section 4.3.4.3: probe up for one min_rtt, drain what that built, cruise six."""
DOWN_GAIN = GAIN_CYCLE[1]
PROBE_BW_START_PHASE = 2

BW_WINDOW_ROUNDS = 10
"""v1 (draft -00) section 4.1.1.2 BtlBwFilterLen: the max filter spans 10 round trips."""
MIN_RTT_WINDOW = 10.0
"""v1 section 4.1.2.2 RTpropFilterLen: min_rtt expires after 10 s without a new minimum."""
PROBE_RTT_DURATION = 0.2
"""v1 section 4.3.5: at least 200 ms (and one round) at the low flight."""
PROBE_RTT_CWND_GAIN = 0.5
"""BBRv2 (drafts -01/-02) BBRProbeRTTCwndGain: half a BDP in ProbeRTT."""
MIN_PIPE_CWND = 4
"""v1 section 4.2.3.3 BBRMinPipeCwnd: keeps an ack clock with an ack every second packet."""
SEND_QUANTUM_SECONDS = 0.001
"""The send quantum is a millisecond at the pacing rate (draft-cardwell-iccrg-bbr-
congestion-control-02 section 4.6.3, BBRSetSendQuantum)..."""
SEND_QUANTUM_PACKETS = (2, 44)
"""...bounded to [2 packets, 64 KB]."""
QUANTIZATION_QUANTA = 3
"""Section 4.6.4.2 BBRQuantizationBudget: the cwnd target adds three send quanta, room
for the acks the peer holds back and the bursts a real host's scheduler makes.  On a
sub-millisecond path the BDP is a few packets, and without this room a single lost
ack stalls the flight until the probe timeout: measured on loopback through the 10%
loss proxy (make demo), 54 probe timeouts and 5.2 MB/s with two packets of room,
14-18 timeouts and 12.7-15.5 MB/s with the quantization budget."""

FULL_BW_GROWTH = 1.25
"""v1 section 4.3.2.2: the pipe is full when bandwidth grows less than 25%..."""
FULL_BW_ROUNDS = 3
"""...over three non-app-limited rounds."""

BETA = 0.7
"""BBRv2 BBRBeta: inflight_hi after congestion, as a fraction of the flight at loss."""
INITIAL_RTT_GUESS = 0.001
"""Nominal RTT before any sample (the draft's BBRInitPacingRate)."""
PACING_GRANULARITY = 0.001
"""On a path whose min_rtt is below this (RFC 9002 section 6.1.2's kGranularity, and the
pacer's quantum) BBR in ProbeBW paces at no less than one window per min_rtt: the window,
not the pacing timer, bounds the flight, released at most ``pacing_burst`` at a time.
There a quantum already exceeds the BDP and a ProbeBW phase (one min_rtt) is shorter than
a quantum, so pacing at gain x bandwidth can neither spread a flight nor probe for more; it
only adds wakeups.  Measured on loopback (both ends in one process, medians of 8
alternating runs): the blocking connection API moved 20.6 MB/s paced at gain x bandwidth
and 29.3 MB/s with this floor."""
FLOORED_QUANTA = 2
"""The quantization budget under that floor: the window leaves in bursts, so it holds what
the bottleneck queues.  Measured on a 0.3 ms, 100 Mbit/s model path with a 32-packet
queue (tests/test_bbr.py): three quanta lost 4.4% of the packets to overflow, two 0.4%
(as pacing at gain x bandwidth does); one cost the loopback blocking API 15%."""
MAX_PROBE_UP_EXPONENT = 30


class Mode(Enum):
    """BBR's states (v1 section 4.3)."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


@register
class Bbr(CongestionController):
    """BBRv1's model and state machine with loss treated as congestion only on evidence."""

    name = "bbr"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._max = config.max_send_window
        self._initial = max(1, min(config.initial_window, self._max))
        self.mode = Mode.STARTUP
        """The current state."""
        self._pacing_gain = STARTUP_GAIN
        self._cwnd_gain = STARTUP_GAIN
        self._model_cwnd = float(self._initial)
        self._pacing_rate = 0.0
        self._model_rate: float | None = None  # gain x max_bw when the window floor is above
        self._srtt: float | None = None
        # Bandwidth: (round, rate) pairs, rates decreasing from the left (an exact windowed max).
        self._bw_filter: deque[tuple[int, float]] = deque()
        self._min_rtt = float("inf")
        self._min_rtt_stamp = 0.0
        # Rounds (v1 section 4.1.1.3): a round ends when a packet sent after it began is delivered.
        self._delivered = 0
        self._next_round_delivered = 0
        self.round_count = 0
        """Round trips counted so far."""
        self._round_start = False
        # Startup.
        self.filled_pipe = False
        """Startup found the bottleneck bandwidth (or congestion ended it)."""
        self._full_bw = 0.0
        self._full_bw_count = 0
        # ProbeBW.
        self._cycle_index = PROBE_BW_START_PHASE
        self._cycle_stamp = 0.0
        self._phase_lost = 0
        self._draining = False  # the down phase's gain holds until the queue is gone
        # ProbeRTT.
        self._probe_rtt_done: float | None = None
        self._probe_rtt_round_done = False
        self._loss = LossRule(self._on_congestion)
        self.inflight_hi = float("inf")
        """The flight bound learnt from congestion (BBRv2); ``inf`` until the first."""
        self._inflight_hi_undo: tuple[float, int] | None = None
        self._probe_up_exponent = 0
        self._probe_up_acked = 0.0
        # Persistent congestion: MIN_WINDOW until this round.
        self._clamp_until_round: int | None = None
        self.congestion_events = 0
        """Times the loss rule judged a round congested."""
        self._set_pacing_rate()

    # --- the model -------------------------------------------------------------------

    @property
    def random_loss(self) -> float:
        """Loss fraction of rounds that saw no queue at all: the loss that is not ours."""
        return self._loss.random_loss

    @property
    def max_bw(self) -> float:
        """Windowed max delivery rate, packets per second (0 before a sample)."""
        return self._bw_filter[0][1] if self._bw_filter else 0.0

    @property
    def min_rtt(self) -> float:
        """Windowed min RTT, seconds (``inf`` before a sample)."""
        return self._min_rtt

    def bdp(self, gain: float = 1.0) -> float:
        """``gain`` times the estimated BDP in packets; the initial window before a model."""
        if not self._bw_filter or math.isinf(self._min_rtt):
            return float(self._initial)
        return gain * self.max_bw * self._min_rtt

    @property
    def pacing_gain(self) -> float:
        """The current pacing gain."""
        return self._pacing_gain

    @property
    def cwnd(self) -> int:
        """The model's window, bounded by inflight_hi, ProbeRTT and persistent congestion."""
        window = min(self._model_cwnd, self.inflight_hi)
        if self.mode is Mode.PROBE_RTT:
            window = min(window, self._probe_rtt_cwnd())
        if self._clamp_until_round is not None:
            window = MIN_WINDOW
        return max(MIN_WINDOW, min(int(window), self._max))

    @property
    def ssthresh(self) -> float:
        """BBR has no slow-start threshold; its analogue, ``inflight_hi``, is reported."""
        return self.inflight_hi

    @property
    def pacing_rate(self) -> float:
        """``pacing_gain * max_bw`` packets per second (see ``_set_pacing_rate``)."""
        return self._pacing_rate

    def _probe_rtt_cwnd(self) -> float:
        return max(float(MIN_PIPE_CWND), self.bdp(PROBE_RTT_CWND_GAIN))

    # --- hooks -----------------------------------------------------------------------

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
        """Update the model from this ack, run the state machine, set pacing and cwnd."""
        if srtt is not None:
            first_rtt = self._srtt is None
            self._srtt = srtt
            if first_rtt and not self.filled_pipe and srtt > 0:
                # Linux's bbr_init_pacing_rate_from_rtt: the initial window per srtt replaces
                # the 1 ms guess; Startup's rule (never lower) then keeps it over the first,
                # one-packet samples.
                self._pacing_rate = STARTUP_GAIN * self._initial / srtt
        rtt = sample.rtt if sample is not None else now - newest_acked_sent_time
        if self._srtt is not None and sample is not None:
            self._loss.on_rtt_sample(sample.rtt, self._srtt)
        self._round_start = False
        if sample is not None:
            self._delivered = sample.prior_delivered + sample.delivered
            if sample.prior_delivered >= self._next_round_delivered:
                self._start_round(now)
            self._update_max_bw(sample)
        self._loss.on_ack(acked, rtt)
        expired = self._update_min_rtt(now, rtt) if rtt >= 0 else self._min_rtt_expired(now)
        self._check_full_pipe(sample)
        self._check_drain(now, in_flight)
        if self.mode is Mode.PROBE_BW:
            self._update_cycle(now, in_flight + acked, rtt)
            self._probe_inflight_hi_upward(in_flight + acked, acked)
        self._check_probe_rtt(now, in_flight, expired)
        self._set_pacing_rate()
        self._set_cwnd(acked)

    def on_packets_lost(
        self, now: float, lost: int, newest_lost_sent_time: float, in_flight: int
    ) -> None:
        """Count the loss for this round; the round's end judges it (the loss rule)."""
        if lost <= 0:
            return
        self._loss.on_loss(lost, in_flight)
        self._phase_lost += lost

    def on_persistent_congestion(self, now: float) -> None:
        """``MIN_WINDOW`` for one round trip from now, then the model's window again."""
        self._clamp_until_round = self.round_count + 1
        # A new round starts now: it ends once a packet sent from now on is delivered.
        self._next_round_delivered = self._delivered

    def on_spurious_loss(self, now: float) -> None:
        """Undo an inflight_hi cut of this or the previous round, and the persistent clamp."""
        self._clamp_until_round = None
        undo = self._inflight_hi_undo
        if undo is not None and undo[1] >= self.round_count - 1:
            self.inflight_hi = max(self.inflight_hi, undo[0])
        self._inflight_hi_undo = None

    # --- rounds and the loss rule -------------------------------------------------------

    def _start_round(self, now: float) -> None:
        """A round trip ended with this ack: judge its losses (``LossRule``)."""
        self._next_round_delivered = self._delivered
        self.round_count += 1
        self._round_start = True
        self._loss.end_round(now, self._min_rtt, self.filled_pipe)
        if self._clamp_until_round is not None and self.round_count >= self._clamp_until_round:
            self._clamp_until_round = None

    def _on_congestion(self, now: float, inflight_at_loss: int, keep_drained_flight: bool) -> None:
        """Real congestion: bound the flight, leave Startup, stop probing (BBRv2)."""
        cut = max(float(MIN_WINDOW), BETA * inflight_at_loss)
        if keep_drained_flight:  # rule (c): never below the flight of an empty queue
            cut = max(cut, self._drained_flight())
        if self.mode is Mode.STARTUP:
            # Startup's own queue is what made the loss count: the pipe is full, so keep
            # at least one BDP (BBRv2 leaves Startup with inflight_hi >= the BDP too).
            cut = max(cut, self.bdp())
        self._inflight_hi_undo = (self.inflight_hi, self.round_count)
        self.inflight_hi = min(self.inflight_hi, cut)
        self.congestion_events += 1
        self._probe_up_exponent = 0
        self._probe_up_acked = 0.0
        self._loss.forget_blocks()
        if self.mode is Mode.STARTUP:
            self.filled_pipe = True
        elif self.mode is Mode.PROBE_BW and self._pacing_gain > 1:
            self._enter_cycle_phase(now, 1)

    # --- filters -----------------------------------------------------------------------

    def _update_max_bw(self, sample: RateSample) -> None:
        """v1 sections 4.1.1.4-4.1.1.5: windowed max; app-limited samples only if they raise it."""
        rate = sample.delivery_rate
        if rate <= 0 or (sample.is_app_limited and rate < self.max_bw):
            return
        window = self._bw_filter
        while window and window[-1][1] <= rate:
            window.pop()
        window.append((self.round_count, rate))
        self._expire_bw()

    def _expire_bw(self) -> None:
        window = self._bw_filter
        while len(window) > 1 and window[0][0] <= self.round_count - BW_WINDOW_ROUNDS:
            window.popleft()

    def _min_rtt_expired(self, now: float) -> bool:
        """The minimum is MIN_RTT_WINDOW old.  Before the first sample nothing can expire:
        a driver's clock does not start at zero, and ProbeRTT on the first ack would halve
        a connection that has not even started (measured on loopback: cwnd 4 from the
        first ack, a probe timeout every 13 ms)."""
        return math.isfinite(self._min_rtt) and now > self._min_rtt_stamp + MIN_RTT_WINDOW

    def _update_min_rtt(self, now: float, rtt: float) -> bool:
        """v1 section 4.1.2.3: a sample at or below the minimum, or any once it expired.

        "At or below" is the draft's ``<=`` (Linux uses ``<``): a sample equal to the
        minimum shows the path still has no queue, so ProbeRTT, which costs about a
        round trip at half the window, is needed only while a queue hides the base
        RTT.  A microsecond of float noise counts as equal.
        """
        expired = self._min_rtt_expired(now)
        if rtt <= self._min_rtt + TIME_EPSILON or expired:
            self._min_rtt = rtt
            self._min_rtt_stamp = now
        return expired

    # --- the state machine ---------------------------------------------------------------

    def _check_full_pipe(self, sample: RateSample | None) -> None:
        """v1 section 4.3.2.2: three rounds of less than 25% growth fill the pipe."""
        if self.filled_pipe or not self._round_start or sample is None:
            return
        if sample.is_app_limited:
            return
        self._expire_bw()
        if self.max_bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.max_bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        if self._full_bw_count >= FULL_BW_ROUNDS:
            self.filled_pipe = True

    def _check_drain(self, now: float, in_flight: int) -> None:
        """v1 section 4.3.3: Startup -> Drain -> ProbeBW once the queue is gone."""
        if self.mode is Mode.STARTUP and self.filled_pipe:
            self.mode = Mode.DRAIN
            self._pacing_gain = DRAIN_GAIN
            self._cwnd_gain = STARTUP_GAIN
        if self.mode is Mode.DRAIN and in_flight <= self.bdp():
            self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.mode = Mode.PROBE_BW
        self._cwnd_gain = CWND_GAIN
        self._draining = False  # Drain and ProbeRTT left no queue
        self._enter_cycle_phase(now, PROBE_BW_START_PHASE)

    def _enter_cycle_phase(self, now: float, index: int) -> None:
        if GAIN_CYCLE[self._cycle_index] > 1 and GAIN_CYCLE[index] <= 1:
            # An up phase ends: the next one probes inflight_hi twice as fast.
            self._probe_up_exponent = min(self._probe_up_exponent + 1, MAX_PROBE_UP_EXPONENT)
        self._cycle_index = index
        self._cycle_stamp = now
        gain = GAIN_CYCLE[index]
        if gain > 1:
            self._draining = False
            # Only 1 - p of what is sent reaches the bottleneck: without this a 1.25 probe
            # at 20% loss offers the bottleneck exactly max_bw and can never find more.
            gain /= 1 - min(self._loss.random_loss, LOSS_TOLERANCE)
        elif gain < 1:
            self._draining = True
        elif self._draining:
            gain = DOWN_GAIN  # the queue is still there: cruising would keep it standing
        self._pacing_gain = gain
        self._phase_lost = 0

    def _update_cycle(self, now: float, prior_in_flight: int, rtt: float) -> None:
        """v1 section 4.3.4.3 BBRIsNextCyclePhase."""
        full_length = now - self._cycle_stamp > self._min_rtt
        if self._draining and (
            prior_in_flight <= self._drained_flight()
            or 0 <= rtt <= self._min_rtt + no_queue_slack(self._min_rtt)
        ):
            # The queue is gone: the flight is what the path holds with the room the
            # window keeps anyway, or an RTT sample saw no queue at all (under loss, the
            # flight still counts packets not yet known lost).
            self._draining = False
            if GAIN_CYCLE[self._cycle_index] == 1:
                self._pacing_gain = 1.0
        gain = self._pacing_gain
        if gain > 1:
            advance = full_length and (self._phase_lost > 0 or prior_in_flight >= self.bdp(gain))
        elif gain < 1:
            advance = full_length or prior_in_flight <= self.bdp()
        else:
            advance = full_length
        if advance:
            self._enter_cycle_phase(now, (self._cycle_index + 1) % len(GAIN_CYCLE))

    def _drained_flight(self) -> float:
        """The flight of an empty queue: the BDP and the room the window keeps anyway."""
        return self.bdp() + self._quantization_budget()

    def _quantization_budget(self) -> float:
        """Packets of room beyond gain x BDP: a few send quanta (section 4.6.4.2)."""
        low, high = SEND_QUANTUM_PACKETS
        # The send quantum of the model's rate: a window floor must not feed back into the
        # window through it (measured on a 0.3 ms, 100 Mbit/s model path: 44-packet
        # quanta, cwnd 65 and overflow loss in a 32-packet queue, against cwnd 32).
        rate = self._pacing_rate if self._model_rate is None else self._model_rate
        quantum = min(max(rate * SEND_QUANTUM_SECONDS, low), high)
        return (QUANTIZATION_QUANTA if self._model_rate is None else FLOORED_QUANTA) * quantum

    def _probe_inflight_hi_upward(self, prior_in_flight: int, acked: int) -> None:
        """BBRv2 ProbeBW_UP: raise a binding inflight_hi by 2**k packets per round."""
        if self._pacing_gain <= 1 or math.isinf(self.inflight_hi):
            return
        if prior_in_flight + 1 < self.inflight_hi:
            return  # not the limit: no evidence it may grow
        per_packet = (1 << self._probe_up_exponent) / max(self.inflight_hi, 1.0)
        self._probe_up_acked += acked * per_packet
        if self._probe_up_acked >= 1:
            whole = math.floor(self._probe_up_acked)
            self.inflight_hi += whole
            self._probe_up_acked -= whole
        if self._round_start:
            self._probe_up_exponent = min(self._probe_up_exponent + 1, MAX_PROBE_UP_EXPONENT)

    def _check_probe_rtt(self, now: float, in_flight: int, min_rtt_expired: bool) -> None:
        """v1 section 4.3.5: every 10 s without a new min, a low flight for max(200 ms, a round)."""
        if self.mode is not Mode.PROBE_RTT and min_rtt_expired and math.isfinite(self._min_rtt):
            self.mode = Mode.PROBE_RTT
            self._pacing_gain = 1.0
            self._probe_rtt_done = None
            return
        if self.mode is not Mode.PROBE_RTT:
            return
        if self._probe_rtt_done is None:
            if in_flight <= self._probe_rtt_cwnd():
                self._probe_rtt_done = now + PROBE_RTT_DURATION
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._delivered
            return
        if self._round_start:
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now >= self._probe_rtt_done:
            self._min_rtt_stamp = now
            if self.filled_pipe:
                self._enter_probe_bw(now)
            else:
                self.mode = Mode.STARTUP
                self._pacing_gain = STARTUP_GAIN
                self._cwnd_gain = STARTUP_GAIN

    # --- outputs -----------------------------------------------------------------------

    def _set_pacing_rate(self) -> None:
        """v1 section 4.2.1: gain times max_bw; in Startup it never goes down."""
        bw = self.max_bw
        if bw <= 0:
            rtt = self._srtt or INITIAL_RTT_GUESS
            self._pacing_rate = STARTUP_GAIN * self._initial / rtt
            return
        rate = self._pacing_gain * bw
        self._model_rate = None
        if self._min_rtt < PACING_GRANULARITY and self.mode is Mode.PROBE_BW:
            # Below the timer granularity pacing cannot spread a flight over the round
            # trip: the window, released a burst at a time, is what bounds it.  (Not in
            # Drain, whose low pacing gain is what empties Startup's queue.)
            window_rate = self._model_cwnd / max(self._min_rtt, PACING_GRANULARITY / 1000)
            if window_rate > rate:
                self._model_rate = rate
                rate = window_rate
        if self.filled_pipe or rate > self._pacing_rate:
            self._pacing_rate = rate

    def _set_cwnd(self, acked: int) -> None:
        """v1 sections 4.2.3.2 and 4.2.3.6: grow by what was delivered towards gain * BDP + 2."""
        target = self.bdp(self._cwnd_gain) + self._quantization_budget()
        cwnd = self._model_cwnd
        if self.filled_pipe:
            cwnd = min(cwnd + acked, target)
        elif cwnd < target or self._delivered < self._initial:
            cwnd += acked
        self._model_cwnd = min(max(cwnd, float(MIN_PIPE_CWND)), float(self._max))
