"""Tests of the BBR controller (``rudp.core.congestion.bbr``).

Two drivers: ``tests.ccmodel.PathModel``, a packet-level bottleneck (rate,
base RTT, tail-drop FIFO, random loss before the queue) with paced senders
that feed real rate samples; and ``Synthetic``, which hands the controller
made-up rounds of samples, for the rules the model would take long to reach.
Everything is deterministic.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rudp.config import Config
from rudp.core.congestion import MIN_WINDOW, Bbr, NewReno, RateSample
from rudp.core.congestion.bbr import (
    DRAIN_GAIN,
    FLOORED_QUANTA,
    INITIAL_RTT_GUESS,
    MIN_PIPE_CWND,
    PACING_GRANULARITY,
    QUANTIZATION_QUANTA,
    SEND_QUANTUM_PACKETS,
    STARTUP_GAIN,
    Mode,
)
from tests.ccmodel import Flow, PathModel, jain

RATE = 1000.0  # packets per second
RTT = 0.04  # seconds; one packet's service time (1 ms) comes on top
BDP = RATE * (RTT + 1 / RATE)  # 41 packets


def bbr() -> Bbr:
    return Bbr(Config(max_send_window=1_000_000))


def single_flow(
    *,
    loss: float = 0.0,
    queue: int | None = int(BDP),
    until: float = 8.0,
    rate: float = RATE,
    rtt: float = RTT,
    samples: bool = True,
) -> tuple[PathModel, Flow, Bbr, list[tuple[float, int, Mode, float, float, int]]]:
    """One BBR flow on the model; a per-round log ``(t, round, mode, max_bw, pacing, cwnd)``."""
    model = PathModel(rate, rtt, queue_limit=queue, loss=loss, samples=samples)
    cc = bbr()
    flow = model.add(cc)
    rounds: list[tuple[float, int, Mode, float, float, int]] = []

    def log(flow: Flow, now: float) -> None:
        if not rounds or rounds[-1][1] != cc.round_count:
            rounds.append((now, cc.round_count, cc.mode, cc.max_bw, cc.pacing_rate, cc.cwnd))

    model.on_ack = log
    model.run(until)
    return model, flow, cc, rounds


def mean_pacing(flow: Flow, start: float, end: float) -> float:
    """Time-weighted mean pacing rate between two times, from the per-ack trace."""
    total = 0.0
    points = [(t, rate) for t, _, rate in flow.trace if start <= t <= end and rate is not None]
    for (t0, r0), (t1, _) in itertools.pairwise(points):
        total += r0 * (t1 - t0)
    return total / (points[-1][0] - points[0][0])


# --- Startup ---------------------------------------------------------------------------------


def test_startup_paces_at_high_gain_and_doubles_per_round() -> None:
    """Pacing = 2/ln2 * max_bw; the delivery rate, hence pacing, doubles every round.

    2/ln2 is the gain that makes a paced flow's delivery rate double per round
    (v1 section 4.3.2.1); the pacing rate itself grows by the same factor of 2.
    """
    _, _, _cc, rounds = single_flow(rate=10_000.0, rtt=0.1, queue=None, until=1.1)
    startup = [r for r in rounds if r[2] is Mode.STARTUP and r[1] >= 3]
    assert len(startup) >= 5
    growth = []
    for (_, _, _, bw0, _, _), (_, _, _, bw1, pacing1, _) in itertools.pairwise(startup):
        assert pacing1 == pytest.approx(STARTUP_GAIN * bw1, rel=1e-9)
        if bw1 < 0.5 * 10_000:  # before the bottleneck caps it
            growth.append(bw1 / bw0)
    assert len(growth) >= 4
    mean_growth = math.exp(sum(map(math.log, growth)) / len(growth))
    assert 1.8 <= mean_growth <= 2.2
    assert pytest.approx(2.885, abs=1e-3) == STARTUP_GAIN


def test_full_pipe_ends_startup_near_the_true_bandwidth() -> None:
    """No queue limit (no loss at all): only full-pipe detection can end Startup."""
    _, _, cc, rounds = single_flow(rate=10_000.0, rtt=0.1, queue=None, until=2.2)
    assert cc.congestion_events == 0
    exit_round = next(r for r in rounds if r[2] is not Mode.STARTUP)
    # log2(BDP / IW) = 6.6 rounds to reach the rate, then three rounds without 25% growth.
    assert exit_round[1] <= 13
    assert 0.95 * 10_000 <= exit_round[3] <= 1.05 * 10_000
    assert cc.filled_pipe and cc.mode is Mode.PROBE_BW


def test_initial_pacing_before_any_sample() -> None:
    cc = bbr()
    # The draft's BBRInitPacingRate with its 1 ms guess: the initial window as one burst.
    assert cc.pacing_rate == pytest.approx(STARTUP_GAIN * 10 / INITIAL_RTT_GUESS)
    cc.on_packet_sent(0.0, 1)
    cc.on_ack(0.1, 1, 0.0, 0, 0.1, None, None)  # srtt known: initial window per srtt
    assert cc.pacing_rate == pytest.approx(STARTUP_GAIN * 10 / 0.1)


# --- steady state ----------------------------------------------------------------------------


def test_steady_state_paces_at_the_bottleneck_rate_with_two_bdp_window() -> None:
    model, flow, cc, _ = single_flow(until=8.0)
    assert cc.mode is Mode.PROBE_BW
    assert cc.max_bw == pytest.approx(RATE, rel=0.1)
    assert cc.min_rtt == pytest.approx(RTT + 1 / RATE, rel=0.01)
    assert mean_pacing(flow, 3.0, 8.0) == pytest.approx(RATE, rel=0.1)
    assert cc.cwnd == pytest.approx(2 * BDP, rel=0.1)
    assert model.goodput(flow, 3.0, 8.0) >= 0.97 * RATE
    # Design target: a mean standing queue under one min RTT (it is far under).
    assert model.mean_queue_delay(3.0, 8.0) < 0.25 * RTT


def test_below_the_timer_granularity_the_window_bounds_the_flight() -> None:
    """A 0.3 ms path (a LAN, loopback): pacing at no less than a window per min_rtt.

    The window, not a sub-millisecond pacing timer, is then what limits the flight; the
    flow still fills the link.  On the 41 ms path above pacing stays at gain x bandwidth.
    """
    rate, rtt = 20_000.0, 0.0003
    model, flow, cc, _ = single_flow(rate=rate, rtt=rtt, queue=200, until=1.0)
    assert cc.mode is Mode.PROBE_BW and cc.min_rtt < PACING_GRANULARITY
    assert cc.pacing_rate >= cc.cwnd / cc.min_rtt > 2 * cc.max_bw
    assert model.goodput(flow, 0.5, 1.0) >= 0.95 * rate
    _, _, slow, _ = single_flow(until=3.0)
    assert slow.pacing_rate <= 1.25 * slow.max_bw * 1.001


def test_the_window_floor_keeps_a_slow_sub_millisecond_bottleneck_safe() -> None:
    """100 Mbit/s, 0.3 ms, a 32-packet queue: the burst-released window fits the queue.

    Its quantization budget is two quanta of the model's rate, not quanta of the floored
    rate (which would grow with the window it sets): loss stays at Startup's, well under
    1% of what was sent, the queue under 3 ms, and the link full.
    """
    rate = 8900.0
    model, flow, cc, _ = single_flow(rate=rate, rtt=0.0002, queue=32, until=3.0)
    assert cc.min_rtt < PACING_GRANULARITY and cc.pacing_rate > 2 * cc.max_bw  # floored
    low, high = SEND_QUANTUM_PACKETS
    quantum = min(max(cc.max_bw * 1.25 * 0.001, low), high)
    assert cc.cwnd <= 2 * cc.bdp() + FLOORED_QUANTA * quantum + 1
    assert flow.lost < 0.01 * flow.sent
    assert model.mean_queue_delay(1.0, 3.0) < 0.003
    assert model.goodput(flow, 1.0, 3.0) >= 0.97 * rate


def test_drain_gain_and_probe_bw_cycle() -> None:
    _, flow, cc, _ = single_flow(until=4.0)
    gains = {round(rate / cc.max_bw, 2) for t, _, rate in flow.trace if t > 2.0 and rate}
    assert {0.75, 1.0, 1.25} <= gains  # the v1 cycle (no loss: no compensation)
    assert pytest.approx(1 / STARTUP_GAIN) == DRAIN_GAIN


# --- the loss rule ---------------------------------------------------------------------------


def test_random_loss_of_20_percent_changes_nothing() -> None:
    """Same path, 20% random loss: after Startup no reduction, same cwnd and pacing."""
    _clean_model, clean, clean_cc, _ = single_flow(until=8.0)
    model, lossy, cc, _ = single_flow(loss=0.2, until=8.0)
    # Startup's own overshoot of the 1-BDP queue is congestion in both runs; nothing after.
    events_after_startup = cc.congestion_events
    model.run(16.0)
    assert cc.congestion_events == events_after_startup == clean_cc.congestion_events
    assert cc.inflight_hi >= 2 * BDP  # the Startup cut, never below the flight it needs
    assert cc.max_bw == pytest.approx(RATE, rel=0.05)
    assert cc.cwnd == pytest.approx(clean_cc.cwnd, rel=0.05)
    # Pacing: the probe phase makes up for the loss (1.25 / 0.8), so the mean is ~4% higher.
    assert mean_pacing(lossy, 3.0, 8.0) == pytest.approx(mean_pacing(clean, 3.0, 8.0), rel=0.1)
    assert cc.random_loss == pytest.approx(0.2, abs=0.05)
    # Goodput near (1 - p) x link.
    assert model.goodput(lossy, 3.0, 16.0) >= 0.78 * RATE


def test_startup_queue_with_random_loss_keeps_a_bdp() -> None:
    """A deep buffer and 20% loss: Startup's own queue makes the loss count, but the
    cut it causes keeps at least one BDP, so the flow still fills the pipe."""
    model, flow, cc, _ = single_flow(loss=0.2, queue=None, until=8.0)
    assert cc.congestion_events >= 1  # Startup ended on loss with queueing delay
    assert cc.inflight_hi >= BDP
    assert model.goodput(flow, 3.0, 8.0) >= 0.78 * RATE


def test_a_startup_cut_never_goes_below_one_bdp() -> None:
    cc = bbr()
    synth = Synthetic(cc)  # 50 ms
    for bw in (100.0, 200.0, 400.0, 800.0, 1600.0):
        synth.round(bw)
    assert cc.mode is Mode.STARTUP
    bdp = cc.bdp()
    assert bdp == pytest.approx(80.0)
    # The queue shows up early in the ramp, at 1.2 BDP: 0.7 of that would be 0.84 BDP.
    synth.round(1600.0, lost_fraction=0.1, rtt=1.3 * synth.rtt, in_flight=96)
    synth.round(1600.0)
    assert cc.congestion_events == 1 and cc.mode is not Mode.STARTUP
    assert cc.inflight_hi == pytest.approx(bdp)


def test_random_loss_alone_does_not_end_startup() -> None:
    """No bottleneck in reach: 20% loss, no queue ever, Startup goes on doubling."""
    cc = bbr()
    synth = Synthetic(cc)
    bw = 100.0
    for _ in range(8):
        synth.round(bw, lost_fraction=0.2)
        bw *= 2
    assert cc.mode is Mode.STARTUP and cc.congestion_events == 0
    assert cc.inflight_hi == math.inf


def test_loss_with_rtt_inflation_cuts_inflight() -> None:
    """The bottleneck halves: the stale model overfills the queue; loss + queue = congestion."""
    model, _flow, cc, _ = single_flow(until=5.0)
    before = cc.congestion_events
    window = cc.cwnd
    model.set_rate(RATE / 2)
    model.run(6.0)
    assert cc.congestion_events > before
    assert cc.inflight_hi <= 0.7 * (window + 2)
    assert cc.cwnd < window
    model.run(10.0)
    assert cc.max_bw == pytest.approx(RATE / 2, rel=0.15)
    # One BDP of queue at most (cwnd = 2 BDP), plus the quantization budget: three send
    # quanta of 2 packets at this low rate (draft BBRQuantizationBudget).
    budget = QUANTIZATION_QUANTA * SEND_QUANTUM_PACKETS[0] / (RATE / 2)
    assert model.mean_queue_delay(8.0, 10.0) < RTT + budget


def test_loss_with_standing_queue_in_synthetic_rounds() -> None:
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(1000.0, rounds=20)
    assert cc.mode is Mode.PROBE_BW and cc.congestion_events == 0
    # Random-looking loss, no queue: nothing.
    synth.round(1000.0, lost_fraction=0.1)
    synth.round(1000.0)
    assert cc.congestion_events == 0
    # The same loss while every sample of the round is 30% above min_rtt: congestion.
    synth.round(1000.0, lost_fraction=0.1, rtt=1.3 * synth.rtt, in_flight=60)
    synth.round(1000.0)
    assert cc.congestion_events == 1
    # BBRv2's beta times the flight when the loss was declared (60 left + the one lost).
    assert cc.inflight_hi == pytest.approx(0.7 * (60 + 1))


def test_queue_delay_below_the_threshold_is_not_evidence() -> None:
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(1000.0, rounds=20)
    synth.round(1000.0, lost_fraction=0.1, rtt=1.2 * synth.rtt)  # +20% < +25%
    synth.round(1000.0)
    assert cc.congestion_events == 0


def test_loss_that_only_rounds_with_a_queue_see_is_congestion() -> None:
    """A buffer too shallow for the standing-queue test: its queue lifts the RTT by less
    than a quarter of min_rtt, but only the rounds that queue lose packets.  Tail drops:
    pooled to 100 packets, they bound the flight, no lower than the drained flight."""
    cc = bbr()
    synth = Synthetic(cc)  # 800 packets/s, 50 ms: BDP 40
    synth.steady(800.0, rounds=20)
    assert cc.random_loss == 0.0 and math.isinf(cc.inflight_hi)
    for _ in range(3):  # 120 packets, +8 ms: a queue, not a standing one
        synth.round(800.0, lost_fraction=0.1, rtt=synth.rtt + 0.008, in_flight=60)
    synth.round(800.0, rtt=synth.rtt + 0.008)
    assert cc.congestion_events == 1
    assert cc.bdp() <= cc.inflight_hi <= 0.7 * 61 + cc.bdp()


def test_loss_at_the_rate_of_rounds_without_a_queue_is_random() -> None:
    """The same rounds, on a path that also loses 10% with no queue at all: the queue
    adds no loss of its own, so nothing is congestion."""
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(800.0, rounds=20)
    for _ in range(10):
        synth.round(800.0, lost_fraction=0.1)  # no queue: random_loss learns 10%
    assert cc.random_loss == pytest.approx(0.1, abs=0.02)
    for _ in range(9):
        synth.round(800.0, lost_fraction=0.1, rtt=synth.rtt + 0.008, in_flight=60)
    assert cc.congestion_events == 0 and math.isinf(cc.inflight_hi)


def test_loss_beyond_the_tolerance_is_congestion_without_delay() -> None:
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(1000.0, rounds=20)
    for _ in range(6):  # judged over blocks of at least 100 packets
        synth.round(1000.0, lost_fraction=0.5)  # no RTT inflation at all
    assert cc.congestion_events >= 1 and cc.inflight_hi < math.inf
    # And in the model: 45% random loss is not taken for random.
    _, _, lossy, _ = single_flow(loss=0.45, queue=None, until=5.0)
    assert lossy.congestion_events >= 1


def test_inflight_hi_grows_back_while_probing() -> None:
    """A cut that binds grows back in up phases by 1, 2, 4, ... packets (BBRv2's slope)."""
    cc = bbr()
    synth = Synthetic(cc)  # 1000 packets/s, 50 ms: BDP 50
    synth.steady(1000.0, rounds=20)
    synth.round(1000.0, lost_fraction=0.1, rtt=1.5 * synth.rtt, in_flight=30)
    synth.round(1000.0)
    assert cc.inflight_hi == pytest.approx(0.7 * 31)
    history = []
    for _ in range(8 * 6):  # six gain cycles, the flight always at the bound
        synth.round(1000.0, in_flight=cc.cwnd)
        history.append(cc.inflight_hi)
    steps = sorted({b - a for a, b in itertools.pairwise(history) if b > a})
    assert len(steps) >= 3 and steps[-1] >= 4 * steps[0]  # growth speeds up
    assert cc.inflight_hi >= 50  # back to at least the BDP


def _cycle_gains(
    synth: Synthetic, rounds: int, *, flight: int, probing_flight: int = 120, rtt: float = 0.05
) -> list[float]:
    """The pacing gain at the end of each of ``rounds`` ProbeBW rounds (one phase each):
    the flight is ``probing_flight`` in an up phase (enough to end it), else ``flight``."""
    gains = []
    for _ in range(rounds):
        probing = synth.cc.pacing_gain > 1
        synth.round(800.0, in_flight=probing_flight if probing else flight, rtt=rtt)
        gains.append(round(synth.cc.pacing_gain, 2))
    return gains


def test_the_down_phase_holds_until_the_queue_is_gone() -> None:
    """BBRv2's ProbeBW_DOWN: while the flight is above the BDP and every RTT sample shows
    a queue, the 0.75 gain holds through the cruise phases; once the queue is gone, cruise
    is at 1.0 again.  The cycle keeps its length: the next up phase comes on time."""
    cc = bbr()
    synth = Synthetic(cc)  # 800 packets/s, 50 ms: BDP 40
    synth.steady(800.0, rounds=20)
    assert cc.mode is Mode.PROBE_BW
    queued = _cycle_gains(synth, 16, flight=120, rtt=2 * synth.rtt)
    up = queued.index(max(queued))
    cycle = queued[up : up + 8]
    assert cycle[0] > 1 and cycle[1:] == [0.75] * 7, queued  # drained all cycle long
    assert queued[up + 8] > 1  # and probed again on time
    # The RTT still shows a queue, but the flight is back at the BDP: the queue is gone.
    drained = _cycle_gains(synth, 16, flight=40, rtt=1.5 * synth.rtt)
    up = drained.index(max(drained))
    assert drained[up + 1 : up + 8] == [0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], drained


def test_an_rtt_without_queue_ends_the_down_phase_whatever_the_flight() -> None:
    """Under loss the flight counts packets not yet known lost: an RTT sample at min_rtt
    is the evidence that the queue is gone, and the drain stops there."""
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(800.0, rounds=20)
    gains = _cycle_gains(synth, 16, flight=120)
    up = gains.index(max(gains))
    assert gains[up + 1 : up + 8] == [0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], gains


def test_capacity_that_returns_is_used_again() -> None:
    model, flow, _cc, _ = single_flow(until=5.0)
    model.set_rate(RATE / 2)
    model.run(7.0)
    model.set_rate(RATE)
    model.run(14.0)
    assert model.goodput(flow, 11.0, 14.0) >= 0.9 * RATE


# --- ProbeRTT, persistent congestion, undo ---------------------------------------------------


def test_probe_rtt_after_ten_seconds_without_a_new_min() -> None:
    """ProbeRTT comes 10 s after the min RTT was last seen, and not while it is seen.

    At t = 1 s the path's delay grows by 2 ms (a route change, or another flow's
    standing queue), so no sample equals the old minimum any more.
    """
    model = PathModel(RATE, RTT, queue_limit=int(BDP))
    cc = bbr()
    model.add(cc)
    modes: list[tuple[float, Mode, int]] = []  # every ack: (time, mode, cwnd)
    model.on_ack = lambda flow, now: modes.append((now, cc.mode, cc.cwnd))
    model.run(1.0)
    model.base_rtt += 0.002
    model.run(12.0)
    probe = [(t, cwnd) for t, mode, cwnd in modes if mode is Mode.PROBE_RTT]
    assert probe, "no ProbeRTT in 12 s"
    start, end = probe[0][0], probe[-1][0]
    assert 11.0 <= start <= 11.1  # ten seconds after the last sample at the old minimum
    # Half a BDP (BBRv2) rather than 4 packets; held for max(200 ms, a round) once drained.
    bdp = BDP * (RTT + 0.002) / RTT  # over the new path
    assert max(cwnd for _, cwnd in probe) <= 1.15 * max(MIN_PIPE_CWND, bdp / 2) + 1  # max_bw jitter
    assert min(cwnd for _, cwnd in probe) >= BDP / 2 - 2
    assert 0.2 <= end - start <= 0.2 + 3 * RTT
    assert cc.mode is Mode.PROBE_BW  # and back
    assert cc.min_rtt == pytest.approx(RTT + 0.002, abs=0.001)  # the new minimum
    model.run(23.0)  # samples at the (new) minimum keep refreshing it: no needless ProbeRTT
    assert not [t for t, mode, _ in modes if mode is Mode.PROBE_RTT and t > 12.0]


def test_persistent_congestion_collapses_for_one_round() -> None:
    model, _, cc, _ = single_flow(until=3.0)
    window = cc.cwnd
    rounds = cc.round_count
    cc.on_persistent_congestion(model.now)
    assert cc.cwnd == MIN_WINDOW
    model.run(model.now + RTT / 2)
    assert cc.cwnd == MIN_WINDOW  # packets sent before the collapse do not end it
    model.run(model.now + 4 * RTT)
    assert cc.round_count > rounds
    assert cc.cwnd == pytest.approx(window, rel=0.1)  # straight back from the model


def test_spurious_loss_undoes_the_last_inflight_hi_cut() -> None:
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(1000.0, rounds=20)
    synth.round(1000.0, lost_fraction=0.1, rtt=1.5 * synth.rtt)
    synth.round(1000.0)
    assert cc.inflight_hi < math.inf
    cc.on_spurious_loss(synth.now)
    assert cc.inflight_hi == math.inf
    # An old cut stays.
    synth.round(1000.0, lost_fraction=0.1, rtt=1.5 * synth.rtt)
    synth.round(1000.0)
    for _ in range(3):
        synth.round(1000.0)
    cut = cc.inflight_hi
    cc.on_spurious_loss(synth.now)
    assert cc.inflight_hi == cut


def test_app_limited_samples_only_raise_the_max() -> None:
    cc = bbr()
    synth = Synthetic(cc)
    synth.steady(1000.0, rounds=20)
    for _ in range(30):
        synth.round(100.0, app_limited=True)  # the application sent little
    assert cc.max_bw == pytest.approx(1000.0)
    synth.round(2000.0, app_limited=True)  # above the max: a real measurement
    assert cc.max_bw == pytest.approx(2000.0)
    for _ in range(11):
        synth.round(900.0)  # not app-limited: the window forgets the old max
    assert cc.max_bw == pytest.approx(900.0)


# --- with other flows ---------------------------------------------------


def test_two_bbr_flows_share_fairly() -> None:
    model = PathModel(RATE, RTT, queue_limit=int(BDP))
    a = model.add(bbr())
    b = model.add(bbr(), start=2.0)
    model.run(20.0)
    shares = [model.goodput(f, 10.0, 20.0) for f in (a, b)]
    assert jain(shares) >= 0.9
    assert sum(shares) >= 0.9 * RATE


def test_newreno_keeps_a_fair_part_of_a_one_bdp_bottleneck() -> None:
    model = PathModel(RATE, RTT, queue_limit=int(BDP))
    model.add(bbr())
    reno = model.add(NewReno(Config(max_send_window=1_000_000)), start=1.0)
    model.run(20.0)
    assert model.goodput(reno, 10.0, 20.0) >= 0.2 * RATE


# --- synthetic rounds ------------------------------------------------------------------------


class Synthetic:
    """Rounds of made-up acks: ``packets`` acks over one RTT, each with a sample.

    The samples carry ``prior_delivered`` = everything delivered by the end of
    the previous round, so each round's first ack starts a new BBR round.
    """

    def __init__(self, cc: Bbr, rtt: float = 0.05) -> None:
        self.cc = cc
        self.rtt = rtt
        self.now = 0.0
        self.delivered = 0

    def round(
        self,
        rate: float,
        *,
        packets: int = 40,
        lost_fraction: float = 0.0,
        rtt: float | None = None,
        in_flight: int | None = None,
        app_limited: bool = False,
    ) -> None:
        rtt = self.rtt if rtt is None else rtt
        prior = self.delivered
        flight = in_flight if in_flight is not None else max(4, int(rate * self.rtt))
        lost = round(packets * lost_fraction)
        acked = packets - lost
        for i in range(acked):
            self.now += self.rtt / acked
            self.delivered += 1
            sample = RateSample(rate, self.rtt, self.delivered - prior, prior, app_limited, rtt)
            self.cc.on_ack(self.now, 1, self.now - rtt, flight, rtt, None, sample)
            self.cc.on_packet_sent(self.now, flight)
            if lost and i % max(1, acked // lost) == 0 and lost > 0:
                self.cc.on_packets_lost(self.now, 1, self.now - rtt, flight)
                lost -= 1
        if lost:
            self.cc.on_packets_lost(self.now, lost, self.now - rtt, flight)

    def steady(self, rate: float, *, rounds: int) -> None:
        """Startup to the plateau, then ``rounds`` rounds at ``rate``: ProbeBW."""
        bw = rate / 64
        while bw < rate:
            self.round(bw)
            bw *= 2
        for _ in range(rounds):
            self.round(rate)


def test_jitter_is_not_taken_for_a_standing_queue() -> None:
    """RTT samples scattered by 30 ms around 60 ms, one lucky 10 ms sample as the minimum,
    and 5% random loss: without the jitter allowance every round's smallest RTT sits
    20 ms above the minimum and the loss would count as congestion."""
    cc = bbr()
    rng = random.Random(5)
    now = 0.0
    delivered = 0
    rate = 500.0
    for round_index in range(60):
        prior = delivered
        for i in range(20):
            now += 0.003
            delivered += 1
            rtt = 0.01 if round_index == 0 and i == 0 else rng.uniform(0.03, 0.09)
            sample = RateSample(rate, 0.06, delivered - prior, prior, False, rtt)
            cc.on_ack(now, 1, now - rtt, 30, 0.06, 0.01, sample)
            cc.on_packet_sent(now, 30)
            if i == 7:
                cc.on_packets_lost(now, 1, now - rtt, 30)  # 1 in 20: 5% random loss
    assert cc.min_rtt == pytest.approx(0.01)
    assert cc.congestion_events == 0
    assert math.isinf(cc.inflight_hi)
