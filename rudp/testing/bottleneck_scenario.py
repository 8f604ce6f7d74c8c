"""What a shared-bottleneck run is given and what it records, as plain data.

:class:`Bottleneck` and :class:`Flow` describe a run of
:func:`rudp.testing.bottleneck.run_bottleneck`; :class:`FlowResult` and
:class:`BottleneckResult` are what it fills in.  They live apart from the event
loop so that the measures read off a result (``rudp.testing.bottleneck_measures``)
and the loop that produces one each depend on these types alone, and so that
``bottleneck.py`` reads as the simulation only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rudp.config import Config
from rudp.events import Failed
from rudp.testing.link import GilbertElliott, LinkProfile, LinkStats

if TYPE_CHECKING:
    from rudp.core.stats import Stats

__all__ = [
    "STARTUP_MIN",
    "STARTUP_RTTS",
    "Bottleneck",
    "BottleneckResult",
    "Flow",
    "FlowResult",
]

STARTUP_RTTS = 30
"""Start-up is taken to last ``STARTUP_RTTS`` base RTTs (at least ``STARTUP_MIN``
seconds) after a flow starts: long enough for slow start or BBR's STARTUP and
DRAIN, and the loss recovery that ends them, to be over."""
STARTUP_MIN = 1.0
"""Shortest start-up period, seconds (see ``STARTUP_RTTS``)."""


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
