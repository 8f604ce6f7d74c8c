"""Several connections through one shared bottleneck, in virtual time: fairness and queueing.

:func:`run_bottleneck` runs N bulk transfers, each a client sending to its own
server, whose data all crosses ONE rate-limited :class:`~rudp.testing.Link`
with a tail-drop FIFO.  The path of flow *i*::

    client --access_i--> [shared FIFO, rate_bps, queue_limit] --> server     (data)
    client <--reverse_i-- server                                             (acks)

- ``access_i`` is a :class:`Link` with the flow's own random or bursty loss and
  its one-way delay (``Bottleneck.delay + Flow.extra_delay``).  Loss therefore
  happens *before* the shared queue, as in the single-link model: a datagram
  lost at random never takes a queue slot.
- The shared link has no delay and no impairment but its rate and queue, so
  it hands datagrams out in the order it took them; a parallel FIFO of flow
  numbers routes each to its server and times its stay in the queue.
- ``reverse_i`` carries the server's acks with the same one-way delay and the
  flow's own (optional) reverse loss; it has no rate limit.

The clock jumps to the next deadline (every connection's ``get_timer()``,
every link's next arrival, the next flow start), like
:class:`~rudp.testing.Simulator`.  Every random draw comes from generators
derived from one seed (:func:`~rudp.testing.derive_rng`), so a seed replays a
run exactly.  Only the public sans-IO surface of the connections is used.

This module is the event loop.  The scenario and result types it fills in are in
``rudp.testing.bottleneck_scenario`` and the measures over a result in
``rudp.testing.bottleneck_measures``; every name is importable from here too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from rudp.events import Connected, Failed, MessageReceived
from rudp.testing.bottleneck_measures import (
    bdp_packets,
    jain_index,
    mean_queue_delay,
    overflow_loss_fraction,
    standing_queue_delay,
)
from rudp.testing.bottleneck_scenario import STARTUP_MIN as STARTUP_MIN
from rudp.testing.bottleneck_scenario import STARTUP_RTTS as STARTUP_RTTS
from rudp.testing.bottleneck_scenario import Bottleneck, BottleneckResult, Flow, FlowResult
from rudp.testing.link import Link, LinkProfile
from rudp.testing.simulator import derive_rng

__all__ = [
    "Bottleneck",
    "BottleneckResult",
    "Flow",
    "FlowResult",
    "bdp_packets",
    "jain_index",
    "mean_queue_delay",
    "overflow_loss_fraction",
    "run_bottleneck",
    "standing_queue_delay",
]


def _message(key: int, length: int, fill: bytes) -> bytes:
    """Message ``key`` (flow << 48 | number): the key, then zeros, cut to ``length``."""
    return (key.to_bytes(8, "big") + fill)[:length]


def _grow(counts: list[int], index: int) -> None:
    if index >= len(counts):
        counts.extend([0] * (index + 1 - len(counts)))


class _FlowState:
    """The moving parts of one flow during a run."""

    def __init__(self, index: int, spec: Flow, bottleneck: Bottleneck, seed: int, bin_width: float):
        from rudp.core.connection import SansIOConnection

        config = spec.resolved_config()
        delay = bottleneck.delay + spec.extra_delay
        self.index = index
        self.spec = spec
        name = f"bottleneck/flow{index}"
        self.client = SansIOConnection(config, is_client=True, rng=derive_rng(seed, name + "/c"))
        self.server = SansIOConnection(config, is_client=False, rng=derive_rng(seed, name + "/s"))
        self.access = Link(
            LinkProfile(loss=spec.loss, burst=spec.burst, delay=delay),
            derive_rng(seed, name + "/access"),
        )
        self.reverse = Link(
            LinkProfile(loss=spec.reverse_loss, burst=spec.reverse_burst, delay=delay),
            derive_rng(seed, name + "/reverse"),
        )
        self.client_timer: float | None = None
        self.server_timer: float | None = None
        self.started = False
        self.next_message = 0  # messages handed to send()
        self.next_received = 0  # messages the server reported
        self.queued_bytes = 0  # bytes handed to send()
        # More queued than the largest possible flight, so the sender never starves.
        self.backlog = config.max_send_window * config.max_datagram_size + 2 * spec.message_size
        self.fill = bytes(spec.message_size)
        self.result = FlowResult(
            flow=spec,
            controller=config.congestion_control,
            base_rtt=2 * delay + config.max_datagram_size * 8.0 / bottleneck.rate_bps,
            bin_width=bin_width,
        )

    def message_length(self, number: int) -> int:
        size, m = self.spec.size, self.spec.message_size
        return m if size is None else min(m, size - number * m)

    def feed(self) -> None:
        """Queue messages until the backlog target is met or everything is queued."""
        client, size = self.client, self.spec.size
        while not client.is_closed and client.send_queue_bytes < self.backlog:
            if size is not None and self.queued_bytes >= size:
                return
            length = self.message_length(self.next_message)
            client.send(_message(self.index << 48 | self.next_message, length, self.fill))
            self.next_message += 1
            self.queued_bytes += length


class _Run:
    """The event loop of :func:`run_bottleneck` and its bookkeeping."""

    def __init__(
        self,
        bottleneck: Bottleneck,
        flows: Sequence[Flow],
        seed: int,
        bin_width: float,
        sample_interval: float,
    ) -> None:
        self.states = [_FlowState(i, f, bottleneck, seed, bin_width) for i, f in enumerate(flows)]
        self.shared = Link(
            LinkProfile(rate_bps=bottleneck.rate_bps, queue_limit=bottleneck.queue_limit),
            derive_rng(seed, "bottleneck/shared"),
        )
        self.result = BottleneckResult(
            seed=seed,
            bottleneck=bottleneck,
            flows=[s.result for s in self.states],
            duration=0.0,
            steps=0,
            stop_reason="",
            sample_interval=sample_interval,
            link=self.shared.stats,
        )
        # The shared link has no delay, so it releases datagrams in the order it took
        # them: this FIFO of (flow, size, enqueue time) mirrors its queue and routes
        # what leaves it.
        self.fifo: deque[tuple[int, int, float]] = deque()
        self.queued = 0  # bytes in the shared queue
        self.seconds_per_bit = 1.0 / bottleneck.rate_bps
        self.bin_width = bin_width
        self.sized_left = sum(1 for f in flows if f.size is not None)
        self.samples = 0

    def sample_until(self, t: float) -> None:
        """Record the samples due before ``t``: nothing changes between events."""
        result, fifo, interval = self.result, self.fifo, self.result.sample_interval
        while self.samples * interval < t:
            at = self.samples * interval
            self.samples += 1
            result.sample_times.append(at)
            result.queue_packets.append(len(fifo))
            wait = 0.0
            if fifo:
                head = self.shared.next_arrival()
                assert head is not None
                # The head leaves then; everything behind it takes its serialisation.
                wait = head - at + (self.queued - fifo[0][1]) * 8.0 * self.seconds_per_bit
            result.queue_delay.append(wait)
            for s in self.states:
                stats = s.client.stats if s.started else None
                s.result.cwnd.append(stats.cwnd if stats is not None else 0)
                s.result.srtt.append(stats.srtt if stats is not None else None)

    def next_deadline(self) -> float | None:
        """The earliest timer, arrival or flow start."""
        deadline = self.shared.next_arrival()
        for s in self.states:
            if not s.started:
                candidates: tuple[float | None, ...] = (s.spec.start,)
            else:
                candidates = (
                    s.client_timer,
                    s.server_timer,
                    s.access.next_arrival(),
                    s.reverse.next_arrival(),
                )
            for t in candidates:
                if t is not None and (deadline is None or t < deadline):
                    deadline = t
        return deadline

    def step(self, now: float) -> None:
        """Process everything due at ``now``."""
        bin_index = int(now / self.bin_width)
        shared, fifo, states = self.shared, self.fifo, self.states
        clients: list[_FlowState] = []
        servers: list[_FlowState] = []
        # 1. departures from the shared queue reach their servers
        for datagram in shared.deliver(now):
            index, size, enqueued = fifo.popleft()
            self.queued -= size
            s = states[index]
            s.result.queue_wait_total += now - enqueued - size * 8.0 * self.seconds_per_bit
            s.result.queue_departures += 1
            s.server.receive_datagram(datagram, now)
            if s not in servers:
                servers.append(s)
        overflows = shared.stats
        for s in states:
            r = s.result
            # 2. a flow whose time has come connects
            if not s.started:
                if s.spec.start > now:
                    continue
                s.started = True
                s.client.connect(now)
                clients.append(s)
            # 3. arrivals at the end of the access path join the shared queue
            arrivals = s.access.deliver(now)
            if arrivals:
                _grow(r.offered, bin_index)
                _grow(r.overflowed, bin_index)
                r.offered[bin_index] += len(arrivals)
                for datagram in arrivals:
                    before = overflows.dropped_queue
                    shared.send(datagram, now)
                    if overflows.dropped_queue != before:
                        r.overflow_drops += 1
                        r.overflowed[bin_index] += 1
                    else:
                        fifo.append((s.index, len(datagram), now))
                        self.queued += len(datagram)
                self.result.max_queue = max(self.result.max_queue, len(fifo))
            # 4. acks reach the client
            for datagram in s.reverse.deliver(now):
                s.client.receive_datagram(datagram, now)
                if s not in clients:
                    clients.append(s)
            # 5. due timers fire (a stale cached timer only costs a no-op call)
            if s.client_timer is not None and s.client_timer <= now:
                s.client.handle_timer(now)
                if s not in clients:
                    clients.append(s)
            if s.server_timer is not None and s.server_timer <= now:
                s.server.handle_timer(now)
                if s not in servers:
                    servers.append(s)
        # 6. touched endpoints report events, then send; their timers are read again.
        # Events first: reading a message frees receive window the next ack advertises.
        for s in servers:
            self.server_events(s, now, bin_index)
            send = s.reverse.send
            for datagram in s.server.datagrams_to_send(now):
                send(datagram, now)
            s.server_timer = s.server.get_timer()
        for s in clients:
            client, r = s.client, s.result
            event = client.next_event()
            while event is not None:
                if isinstance(event, Failed) and r.failure is None:
                    r.failure = event
                elif isinstance(event, Connected) and r.connected_at is None:
                    r.connected_at = now
                event = client.next_event()
            if r.completed_at is None:
                s.feed()
            out = client.datagrams_to_send(now)
            r.sent_datagrams += len(out)
            access = s.access
            before = access.stats.dropped_loss
            for datagram in out:
                access.send(datagram, now)
            r.random_drops += access.stats.dropped_loss - before
            s.client_timer = client.get_timer()

    def server_events(self, s: _FlowState, now: float, bin_index: int) -> None:
        """Count and check what the server's application receives."""
        r = s.result
        event = s.server.next_event()
        while event is not None:
            if type(event) is MessageReceived:
                data = event.data
                number = s.next_received
                s.next_received += 1
                # Byte for byte what was sent, in order, once: else rudp is broken.
                if data != _message(s.index << 48 | number, s.message_length(number), s.fill):
                    r.misdelivered += 1
                r.messages_delivered += 1
                r.delivered_bytes += len(data)
                _grow(r.delivered, bin_index)
                r.delivered[bin_index] += len(data)
                size = s.spec.size
                if size is not None and r.completed_at is None and r.delivered_bytes >= size:
                    r.completed_at = now
                    self.sized_left -= 1
            elif isinstance(event, Failed) and r.failure is None:
                r.failure = event
            event = s.server.next_event()


def run_bottleneck(
    bottleneck: Bottleneck,
    flows: Sequence[Flow],
    *,
    seed: int = 0,
    duration: float | None = None,
    max_time: float | None = None,
    max_steps: int = 5_000_000,
    bin_width: float = 0.1,
    sample_interval: float = 0.01,
) -> BottleneckResult:
    """Run ``flows`` through one shared ``bottleneck`` and measure them.

    Without ``duration`` the run ends when every flow delivered its ``size``
    (all must be sized); with it, at that virtual time (or earlier, when every
    flow is sized and done).  ``max_time`` (default ``duration``, else one
    hour) and ``max_steps`` bound it hard: a run that hits them returns with
    ``stop_reason`` saying so.  Never raises for a stalled or failed
    connection: the result tells.
    """
    if not flows:
        raise ValueError("at least one flow")
    if duration is None and any(f.size is None for f in flows):
        raise ValueError("a backlogged flow (size=None) needs a duration")
    if bin_width <= 0 or sample_interval <= 0:
        raise ValueError("bin_width and sample_interval must be positive")
    end = duration if duration is not None else 3600.0
    if max_time is not None:
        end = min(end, max_time)
    run = _Run(bottleneck, flows, seed, bin_width, sample_interval)
    all_sized = run.sized_left == len(flows)
    now = 0.0
    steps = 0
    while True:
        if all_sized and run.sized_left == 0:
            stop = "complete"
            break
        if steps >= max_steps:
            stop = "max_steps"
            break
        deadline = run.next_deadline()
        if deadline is None:
            stop = "idle"
            run.sample_until(end)
            break
        if deadline > end:
            # Nothing happens before the end: the clock goes there.
            stop = "duration" if duration is not None and end == duration else "max_time"
            run.sample_until(end)
            now = max(now, end)
            break
        run.sample_until(deadline)
        now = max(now, deadline)
        steps += 1
        run.step(now)
    result = run.result
    result.duration, result.steps, result.stop_reason = now, steps, stop
    for s in run.states:
        r = s.result
        r.access, r.reverse = s.access.stats, s.reverse.stats
        r.sender_stats, r.receiver_stats = s.client.stats, s.server.stats
        for counts in (r.delivered, r.offered, r.overflowed):
            _grow(counts, max(0, math.ceil(now / bin_width) - 1))
    return result
