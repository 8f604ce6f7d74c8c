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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rudp.config import Config
from rudp.events import Connected, Failed, MessageReceived
from rudp.testing.link import GilbertElliott, Link, LinkProfile, LinkStats
from rudp.testing.simulator import derive_rng

if TYPE_CHECKING:
    from rudp.core.stats import Stats

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

STARTUP_RTTS = 30
"""Start-up is taken to last ``STARTUP_RTTS`` base RTTs (at least ``STARTUP_MIN``
seconds) after a flow starts: long enough for slow start or BBR's STARTUP and
DRAIN, and the loss recovery that ends them, to be over."""
STARTUP_MIN = 1.0
"""Shortest start-up period, seconds (see ``STARTUP_RTTS``)."""


def bdp_packets(rate_bps: float, rtt: float, datagram_size: int = 1400) -> float:
    """The bandwidth-delay product in datagrams: ``rate_bps * rtt / 8 / datagram_size``."""
    return rate_bps * rtt / 8.0 / datagram_size


@dataclass(frozen=True)
class Bottleneck:
    """The shared link: its rate, its tail-drop FIFO and the delay every flow's path has."""

    rate_bps: float
    """Bandwidth of the shared link, bits per second."""
    queue_limit: int
    """Datagrams the FIFO holds, the one being serialised included (tail drop beyond)."""
    delay: float = 0.0
    """One-way propagation delay of every flow, each direction, seconds."""

    def __post_init__(self) -> None:
        LinkProfile(rate_bps=self.rate_bps, queue_limit=self.queue_limit, delay=self.delay)


@dataclass(frozen=True)
class Flow:
    """One connection across the bottleneck: a client sending ``size`` bytes to its server."""

    size: int | None = None
    """Bytes to deliver; ``None`` keeps the sender backlogged until the run ends."""
    start: float = 0.0
    """Virtual time at which the client connects and starts sending."""
    extra_delay: float = 0.0
    """One-way delay added to ``Bottleneck.delay`` in each direction (so RTTs can differ)."""
    loss: float = 0.0
    """Random loss of the data direction, before the shared queue."""
    burst: GilbertElliott | None = None
    """Bursty loss of the data direction (replaces ``loss`` when set)."""
    reverse_loss: float = 0.0
    """Random loss of the ack direction."""
    reverse_burst: GilbertElliott | None = None
    """Bursty loss of the ack direction (replaces ``reverse_loss`` when set)."""
    controller: str | None = None
    """Congestion controller of the sender; ``None`` keeps ``config``'s."""
    config: Config | None = None
    """Configuration of both ends (default ``Config()``)."""
    message_size: int = 16384
    """Bytes per message handed to ``send()``; the last one may be shorter."""

    def __post_init__(self) -> None:
        if self.size is not None and self.size < 1:
            raise ValueError("size must be positive or None")
        if self.start < 0 or self.extra_delay < 0:
            raise ValueError("start and extra_delay must be >= 0")
        if self.message_size < 1:
            raise ValueError("message_size must be positive")
        LinkProfile(loss=self.loss, burst=self.burst)
        LinkProfile(loss=self.reverse_loss, burst=self.reverse_burst)

    def resolved_config(self) -> Config:
        """``config`` with ``controller`` applied."""
        config = self.config if self.config is not None else Config()
        if self.controller is not None:
            config = replace(config, congestion_control=self.controller)
        return config


@dataclass
class FlowResult:
    """What one flow did.  Per-bin lists are indexed by ``int(time / bin_width)``."""

    flow: Flow
    """The flow's specification."""
    controller: str
    """Name of the sender's congestion controller."""
    base_rtt: float
    """Propagation RTT plus one full datagram's serialisation at the bottleneck: the
    RTT of an empty queue."""
    bin_width: float
    """Width of the time bins, seconds."""
    delivered: list[int] = field(default_factory=list)
    """Bytes delivered in order to the receiving application, per bin."""
    offered: list[int] = field(default_factory=list)
    """Datagrams that reached the shared queue, per bin."""
    overflowed: list[int] = field(default_factory=list)
    """Datagrams the full queue dropped, per bin."""
    delivered_bytes: int = 0
    """Bytes of ``MessageReceived`` events, total."""
    messages_delivered: int = 0
    """``MessageReceived`` events, total."""
    misdelivered: int = 0
    """Messages that arrived out of order, twice or altered (always 0 unless rudp is broken)."""
    connected_at: float | None = None
    """When the client's ``Connected`` event came."""
    completed_at: float | None = None
    """When the last byte of ``size`` reached the receiving application (``None``: never)."""
    failure: Failed | None = None
    """A ``Failed`` event of either end, if one came."""
    sent_datagrams: int = 0
    """Datagrams the client sent (handshake, data, acks)."""
    random_drops: int = 0
    """Client datagrams lost at random before the queue."""
    overflow_drops: int = 0
    """Client datagrams the full queue dropped."""
    queue_wait_total: float = 0.0
    """Sum over the flow's datagrams that left the queue of the time they waited
    behind others (their own serialisation excluded), seconds."""
    queue_departures: int = 0
    """Datagrams of this flow that left the shared queue."""
    access: LinkStats = field(default_factory=LinkStats)
    """Counters of the data path up to the shared queue (where the random loss is)."""
    reverse: LinkStats = field(default_factory=LinkStats)
    """Counters of the ack path."""
    sender_stats: Stats | None = None
    """The client's ``stats`` when the run ended."""
    receiver_stats: Stats | None = None
    """The server's ``stats`` when the run ended."""
    cwnd: list[int] = field(default_factory=list)
    """The sender's congestion window at each queue sample time (0 before the start)."""
    srtt: list[float | None] = field(default_factory=list)
    """The sender's smoothed RTT at each queue sample time."""

    @property
    def complete(self) -> bool:
        """``size`` bytes were delivered (never true for a backlogged flow)."""
        return self.completed_at is not None

    @property
    def startup_end(self) -> float:
        """End of the start-up period (see ``STARTUP_RTTS``)."""
        return self.flow.start + max(STARTUP_MIN, STARTUP_RTTS * self.base_rtt)

    @property
    def mean_queue_wait(self) -> float:
        """Mean wait of this flow's datagrams in the shared queue, seconds."""
        return self.queue_wait_total / self.queue_departures if self.queue_departures else 0.0

    def goodput_bps(self, t0: float | None = None, t1: float | None = None) -> float:
        """Delivered bits per second over the bins within ``[t0, t1)``.

        ``t0`` defaults to the flow's start, ``t1`` to its completion or the
        end of the recorded bins.  Both are rounded to bin edges.
        """
        width = self.bin_width
        if t0 is None:
            t0 = self.flow.start
        if t1 is None:
            t1 = self.completed_at if self.completed_at is not None else len(self.delivered) * width
        first, last = round(t0 / width), max(round(t0 / width), math.ceil(t1 / width - 1e-9))
        if last <= first:
            return 0.0
        return sum(self.delivered[first:last]) * 8.0 / ((last - first) * width)


@dataclass
class BottleneckResult:
    """The outcome of :func:`run_bottleneck`."""

    seed: int
    """The seed of the run: pass it again to replay the run exactly."""
    bottleneck: Bottleneck
    """The shared link's specification."""
    flows: list[FlowResult]
    """Per flow, in the order given."""
    duration: float
    """Virtual time when the run stopped."""
    steps: int
    """Clock jumps taken."""
    stop_reason: str
    """``"complete"`` (every sized flow done), ``"duration"``, ``"max_time"``,
    ``"max_steps"`` or ``"idle"`` (nothing left scheduled)."""
    sample_interval: float
    """Spacing of the queue samples, seconds."""
    sample_times: list[float] = field(default_factory=list)
    """Times of the queue samples (``k * sample_interval``)."""
    queue_packets: list[int] = field(default_factory=list)
    """Datagrams in the shared queue at each sample time."""
    queue_delay: list[float] = field(default_factory=list)
    """Wait a datagram arriving at each sample time would have before its own
    serialisation starts, seconds (the time to drain what is queued)."""
    max_queue: int = 0
    """Most datagrams ever in the shared queue (checked after every arrival)."""
    link: LinkStats = field(default_factory=LinkStats)
    """Counters of the shared link."""

    @property
    def finished(self) -> bool:
        """Every sized flow completed and nothing failed."""
        return all(f.failure is None and (f.flow.size is None or f.complete) for f in self.flows)

    @property
    def min_rtt(self) -> float:
        """The smallest ``base_rtt`` of the flows."""
        return min(f.base_rtt for f in self.flows)


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``: 1 if all equal, 1/n if one takes all.

    ``nan`` when every value is zero (no allocation to judge; compares false with any
    threshold).  Raises ``ValueError`` for an empty sequence or a negative value.
    """
    if not values:
        raise ValueError("jain_index of no values")
    if any(v < 0 for v in values):
        raise ValueError("jain_index needs non-negative values")
    squares = sum(v * v for v in values)
    if squares == 0:
        return math.nan
    return sum(values) ** 2 / (len(values) * squares)


def _window(result: BottleneckResult, t0: float | None, t1: float | None) -> list[int]:
    start = -math.inf if t0 is None else t0
    end = math.inf if t1 is None else t1
    return [i for i, t in enumerate(result.sample_times) if start <= t < end]


def mean_queue_delay(
    result: BottleneckResult, t0: float | None = None, t1: float | None = None
) -> float:
    """Time-average of the sampled queueing delay within ``[t0, t1)``, seconds."""
    delays = result.queue_delay
    picked = _window(result, t0, t1)
    return sum(delays[i] for i in picked) / len(picked) if picked else 0.0


def standing_queue_delay(
    result: BottleneckResult,
    t0: float | None = None,
    t1: float | None = None,
    window: float | None = None,
) -> float:
    """Mean over consecutive ``window``-long intervals of ``[t0, t1)`` of the least sampled delay.

    A queue that drains within an interval was a burst; the delay that never
    drained is the standing queue (CoDel's definition).  ``window`` defaults to
    ``result.min_rtt`` (it should span several samples); ``t0`` defaults to the
    end of the first flow's start-up.
    """
    if window is None:
        window = result.min_rtt
    if t0 is None:
        t0 = result.flows[0].startup_end
    minima: dict[int, float] = {}
    delays = result.queue_delay
    for i in _window(result, t0, t1):
        key = int((result.sample_times[i] - t0) / window)
        d = delays[i]
        if key not in minima or d < minima[key]:
            minima[key] = d
    return sum(minima.values()) / len(minima) if minima else 0.0


def overflow_loss_fraction(
    result: BottleneckResult, flow: int = 0, t0: float | None = None, t1: float | None = None
) -> float:
    """Share of the flow's datagrams reaching the queue within ``[t0, t1)`` that it dropped.

    ``t0`` defaults to the end of the flow's start-up (``FlowResult.startup_end``).
    """
    f = result.flows[flow]
    width = f.bin_width
    first = round((f.startup_end if t0 is None else t0) / width)
    last = len(f.offered) if t1 is None else round(t1 / width)
    offered = sum(f.offered[first:last])
    return sum(f.overflowed[first:last]) / offered if offered else 0.0


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
