"""A tiny packet-level path model for congestion-controller tests.

One bottleneck of ``rate`` packets per second with a FIFO of ``queue_limit``
packets (tail drop), a fixed base RTT, optional random loss *before* the queue
(as ``rudp.testing.link.Link`` applies it), and one or more backlogged flows
sharing it.  Each flow plays the role of the sender the lead is building: it
paces at the controller's ``pacing_rate``, keeps a ``DeliveryRateEstimator``
and a stamp per packet, acks each packet one base RTT after it leaves the
queue, declares a packet lost when a packet sent three later is acked (RFC
9002 section 6.1.1's kPacketThreshold; nothing is reordered here) or, for a
tail, when nothing was acked for 3 srtt, and feeds the controller its hooks
with real rate samples.  Every transmission is a new packet, as with
per-transmission packet numbers; nothing needs retransmitting because only
goodput is measured.

Deterministic: the only randomness is a seeded ``random.Random``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rudp.core.congestion import CongestionController, DeliveryRateEstimator, RateStamp

SEND, ACK, TAIL = 0, 1, 2


@dataclass
class Packet:
    flow: int
    number: int
    sent: float
    stamp: RateStamp
    lost: bool = False
    acked: bool = False


@dataclass
class Flow:
    """One backlogged sender and what it measured."""

    cc: CongestionController
    start: float = 0.0
    stop: float = float("inf")
    est: DeliveryRateEstimator = field(default_factory=DeliveryRateEstimator)
    in_flight: int = 0
    next_number: int = 0
    outstanding: deque[Packet] = field(default_factory=deque)
    next_send: float = 0.0
    send_pending: bool = False
    srtt: float | None = None
    min_rtt: float | None = None
    last_ack: float = 0.0
    delivered: int = 0
    lost: int = 0
    sent: int = 0
    rtts: list[tuple[float, float]] = field(default_factory=list)
    """(time, rtt) of every ack."""
    trace: list[tuple[float, int, float | None]] = field(default_factory=list)
    """(time, cwnd, pacing_rate) after every ack."""
    delivered_at: list[float] = field(default_factory=list)


class PathModel:
    """The bottleneck and its flows; ``run(until)`` advances virtual time."""

    def __init__(
        self,
        rate: float,
        base_rtt: float,
        *,
        queue_limit: int | None = None,
        loss: float = 0.0,
        seed: int = 1,
        samples: bool = True,
    ) -> None:
        self.rate = rate
        self.base_rtt = base_rtt
        self.queue_limit = queue_limit
        self.loss = loss
        self.samples = samples
        """Pass rate samples to the controller (False: sample=None, as today's sender)."""
        self.rng = random.Random(seed)
        self.flows: list[Flow] = []
        self.now = 0.0
        self._events: list[tuple[float, int, int, int, object]] = []
        self._counter = 0
        self._departures: deque[float] = deque()
        self._busy_until = 0.0
        self.queue_samples: list[tuple[float, int]] = []
        """(time, packets queued) at every enqueue."""
        self.on_ack: Callable[[Flow, float], None] | None = None

    def add(self, cc: CongestionController, *, start: float = 0.0, stop: float = 1e9) -> Flow:
        flow = Flow(cc, start=start, stop=stop, next_send=start)
        self.flows.append(flow)
        self._push(start, SEND, len(self.flows) - 1, None)
        return flow

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def _push(self, when: float, kind: int, flow: int, data: object) -> None:
        self._counter += 1
        heapq.heappush(self._events, (when, kind, self._counter, flow, data))

    def run(self, until: float) -> None:
        events = self._events
        while events and events[0][0] <= until:
            when, kind, _, index, data = heapq.heappop(events)
            self.now = when
            flow = self.flows[index]
            if kind == SEND:
                flow.send_pending = False
                self._try_send(index, flow)
            elif kind == ACK:
                assert isinstance(data, Packet)
                self._ack(index, flow, data)
            else:
                self._tail_check(index, flow)
        self.now = until

    # --- the bottleneck ---------------------------------------------------------------

    def _queued(self) -> int:
        departures = self._departures
        while departures and departures[0] <= self.now:
            departures.popleft()
        return len(departures)

    def _transmit(self, index: int, packet: Packet) -> None:
        if self.loss and self.rng.random() < self.loss:
            return  # random loss before the queue
        queued = self._queued()
        self.queue_samples.append((self.now, queued))
        if self.queue_limit is not None and queued >= self.queue_limit:
            return  # tail drop
        departure = max(self.now, self._busy_until) + 1 / self.rate
        self._busy_until = departure
        self._departures.append(departure)
        self._push(departure + self.base_rtt, ACK, index, packet)

    # --- a sender -----------------------------------------------------------------------

    def _try_send(self, index: int, flow: Flow) -> None:
        now = self.now
        if now >= flow.stop:
            return
        cc = flow.cc
        while flow.in_flight < cc.cwnd:
            if now < flow.next_send - 1e-12:
                if not flow.send_pending:
                    flow.send_pending = True
                    self._push(flow.next_send, SEND, index, None)
                return
            stamp = flow.est.on_packet_sent(now, flow.in_flight)
            packet = Packet(index, flow.next_number, now, stamp)
            flow.next_number += 1
            flow.in_flight += 1
            flow.sent += 1
            flow.outstanding.append(packet)
            cc.on_packet_sent(now, flow.in_flight)
            rate = cc.pacing_rate
            flow.next_send = max(flow.next_send, now) + (1 / rate if rate else 0.0)
            if flow.in_flight == 1:
                self._push(now + self._tail_delay(flow), TAIL, index, None)
            self._transmit(index, packet)

    def _tail_delay(self, flow: Flow) -> float:
        return 3 * (flow.srtt or 1.0) + 0.01

    def _ack(self, index: int, flow: Flow, packet: Packet) -> None:
        now = self.now
        flow.last_ack = now
        flow.est.on_packet_delivered(packet.stamp, packet.sent, now)
        sample = flow.est.take_sample(now)
        packet.acked = True
        flow.delivered += 1
        flow.delivered_at.append(now)
        rtt = now - packet.sent
        flow.rtts.append((now, rtt))
        flow.srtt = rtt if flow.srtt is None else 0.875 * flow.srtt + 0.125 * rtt
        flow.min_rtt = rtt if flow.min_rtt is None else min(flow.min_rtt, rtt)
        acked = 0
        if not packet.lost:
            flow.in_flight -= 1
            acked = 1
        flow.cc.on_ack(
            now,
            acked,
            packet.sent,
            flow.in_flight,
            flow.srtt,
            flow.min_rtt,
            sample if self.samples else None,
        )
        self._detect_losses(flow, packet.number)
        flow.trace.append((now, flow.cc.cwnd, flow.cc.pacing_rate))
        if self.on_ack is not None:
            self.on_ack(flow, now)
        self._try_send(index, flow)

    def _detect_losses(self, flow: Flow, largest: int) -> None:
        outstanding = flow.outstanding
        lost = 0
        newest = 0.0
        while outstanding and (outstanding[0].acked or outstanding[0].number <= largest - 3):
            packet = outstanding.popleft()
            if packet.acked:
                continue
            packet.lost = True
            lost += 1
            newest = packet.sent
        if lost:
            flow.in_flight -= lost
            flow.lost += lost
            flow.cc.on_packets_lost(self.now, lost, newest, flow.in_flight)

    def _tail_check(self, index: int, flow: Flow) -> None:
        if flow.in_flight == 0:
            return
        delay = self._tail_delay(flow)
        if self.now - flow.last_ack < delay - 1e-9:
            self._push(flow.last_ack + delay, TAIL, index, None)
            return
        # Nothing acked for 3 srtt: everything outstanding is gone.
        lost = 0
        newest = 0.0
        while flow.outstanding:
            packet = flow.outstanding.popleft()
            if not packet.acked:
                packet.lost = True
                lost += 1
                newest = packet.sent
        if lost:
            flow.in_flight -= lost
            flow.lost += lost
            flow.cc.on_packets_lost(self.now, lost, newest, flow.in_flight)
        self._try_send(index, flow)

    # --- measurements -----------------------------------------------------------------

    def goodput(self, flow: Flow, start: float, end: float) -> float:
        """Packets per second delivered in ``[start, end)``."""
        count = sum(1 for t in flow.delivered_at if start <= t < end)
        return count / (end - start)

    def mean_queue_delay(self, start: float, end: float) -> float:
        """Mean queueing delay (seconds) seen by arrivals in ``[start, end)``."""
        queued = [q for t, q in self.queue_samples if start <= t < end]
        return sum(queued) / len(queued) / self.rate if queued else 0.0


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when equal, 1/n when one takes everything."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))
