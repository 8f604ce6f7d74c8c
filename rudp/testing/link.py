"""A sans-IO model of one direction of an impaired network path.

A :class:`Link` takes datagrams with :meth:`Link.send` and hands them back
from :meth:`Link.deliver` once their arrival time has come, after applying the
impairments of a :class:`LinkProfile`: blackouts, random or bursty loss, a
bandwidth limit with a bounded FIFO queue, corruption, truncation,
duplication, delay with jitter, and reordering.

The link never reads a clock and never touches the global ``random`` module:
time is passed in and every random draw comes from the injected
``random.Random``, so one seed reproduces a run exactly.  The same class drives
the virtual-time :class:`rudp.testing.Simulator` and the real-socket proxy.

The order in which a datagram meets the impairments is fixed (and so is the
order of random draws, which is what makes runs reproducible):

1. blackout window at send time -> ``dropped_blackout``
2. loss (Gilbert-Elliott when ``burst`` is set, else independent) -> ``dropped_loss``
3. bottleneck queue (``rate_bps``); a full queue -> ``dropped_queue``
4. corruption (1-3 flipped bits), then truncation
5. duplication: the copy gets its own delay draw, so it may overtake the original
6. delay + uniform jitter (never negative), plus ``reorder_delay`` for a
   datagram picked for reordering.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, fields
from typing import Any


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability within [0, 1], got {value!r}")


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state Markov loss model for bursty loss (Gilbert 1960, Elliott 1963).

    The channel is in a *good* or a *bad* state; it moves between them with
    the given per-datagram probabilities and drops a datagram with
    ``loss_in_good`` or ``loss_in_bad``.  The mean burst length is
    ``1 / p_bad_to_good`` datagrams and the long-run share of time in the bad
    state is ``p_good_to_bad / (p_good_to_bad + p_bad_to_good)``.
    """

    p_good_to_bad: float
    """Per-datagram probability of entering the bad state."""
    p_bad_to_good: float
    """Per-datagram probability of leaving the bad state."""
    loss_in_bad: float = 1.0
    """Drop probability while in the bad state."""
    loss_in_good: float = 0.0
    """Drop probability while in the good state."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_probability(f.name, getattr(self, f.name))

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate of the model (stationary distribution)."""
        total = self.p_good_to_bad + self.p_bad_to_good
        if total == 0.0:
            return self.loss_in_good
        share_bad = self.p_good_to_bad / total
        return share_bad * self.loss_in_bad + (1.0 - share_bad) * self.loss_in_good


@dataclass(frozen=True)
class LinkProfile:
    """The impairments of one direction of a path.  Probabilities are per datagram."""

    loss: float = 0.0
    """Independent drop probability (ignored when ``burst`` is set)."""
    burst: GilbertElliott | None = None
    """Bursty loss model; replaces ``loss`` when set."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice."""
    reorder: float = 0.0
    """Probability that a datagram is held back by an extra ``reorder_delay``."""
    reorder_delay: float = 0.01
    """Extra delay of a reordered datagram, in seconds."""
    corrupt: float = 0.0
    """Probability of flipping 1-3 random bits (the CRC-32 must catch it)."""
    truncate: float = 0.0
    """Probability of cutting the datagram at a random shorter length."""
    delay: float = 0.0
    """One-way propagation delay, in seconds."""
    jitter: float = 0.0
    """Uniform +/- spread around ``delay`` (the total is clamped at zero)."""
    rate_bps: float | None = None
    """Bottleneck bandwidth in bits per second; ``None`` is unlimited."""
    queue_limit: int = 256
    """Datagrams the bottleneck FIFO holds (including the one being sent);
    arrivals beyond it are dropped (tail drop)."""
    blackouts: tuple[tuple[float, float], ...] = ()
    """``[start, end)`` windows of send time in which every datagram is dropped.
    Use ``math.inf`` as the end of a permanent outage."""

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt", "truncate"):
            _check_probability(name, getattr(self, name))
        if self.reorder_delay < 0 or self.delay < 0 or self.jitter < 0:
            raise ValueError("delays must be non-negative")
        if self.rate_bps is not None and not self.rate_bps > 0:
            raise ValueError("rate_bps must be positive or None")
        if self.queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        for start, end in self.blackouts:
            if not start <= end:
                raise ValueError(f"blackout window ({start}, {end}) ends before it starts")

    @classmethod
    def perfect(cls, delay: float = 0.0) -> LinkProfile:
        """No impairment at all, optionally with a fixed one-way delay."""
        return cls(delay=delay)

    @classmethod
    def lossy(cls, loss: float, delay: float = 0.01, jitter: float = 0.0) -> LinkProfile:
        """Independent loss with a fixed delay: the usual benchmark path."""
        return cls(loss=loss, delay=delay, jitter=jitter)

    @classmethod
    def bursty(cls, mean_loss: float, mean_burst: float = 4.0, delay: float = 0.01) -> LinkProfile:
        """Gilbert-Elliott loss with the given long-run loss rate and mean burst length.

        Every datagram is lost in the bad state and none in the good one.
        """
        _check_probability("mean_loss", mean_loss)
        if mean_burst < 1.0:
            raise ValueError("mean_burst must be at least one datagram")
        if mean_loss >= 1.0:
            return cls(loss=1.0, delay=delay)
        p_bad_to_good = 1.0 / mean_burst
        # Stationary share of the bad state = mean_loss, solved for p_good_to_bad.
        p_good_to_bad = min(1.0, mean_loss * p_bad_to_good / (1.0 - mean_loss))
        return cls(burst=GilbertElliott(p_good_to_bad, p_bad_to_good), delay=delay)

    @classmethod
    def terrible(cls) -> LinkProfile:
        """Every impairment at once (a trio-style "terrible network")."""
        return cls(
            loss=0.2,
            duplicate=0.1,
            reorder=0.2,
            reorder_delay=0.02,
            corrupt=0.05,
            truncate=0.05,
            delay=0.02,
            jitter=0.01,
        )

    @classmethod
    def blackout(
        cls, start: float = 0.0, end: float = math.inf, delay: float = 0.01
    ) -> LinkProfile:
        """A perfect path that drops everything sent in ``[start, end)``."""
        return cls(delay=delay, blackouts=((start, end),))

    def replace(self, **changes: Any) -> LinkProfile:
        """A copy with some fields changed (``dataclasses.replace``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return LinkProfile(**values)


@dataclass
class LinkStats:
    """Counters of what a :class:`Link` did.

    Every datagram handed to ``send`` is counted in ``sent`` and then either in
    exactly one ``dropped_*`` counter or eventually in ``delivered``; each
    duplicate adds one more ``delivered``.  ``corrupted`` and ``truncated``
    datagrams are still delivered (it is the receiver's job to reject them).
    """

    sent: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_blackout: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    truncated: int = 0
    delivered: int = 0
    bytes_sent: int = 0
    bytes_delivered: int = 0

    @property
    def dropped(self) -> int:
        """Datagrams dropped for any reason."""
        return self.dropped_loss + self.dropped_queue + self.dropped_blackout


class Link:
    """One direction of an impaired path (sans-IO, deterministic given ``rng``).

    Datagrams in flight live in a heap of ``(arrival_time, counter, bytes)``;
    the counter breaks ties so equal arrival times keep send order.
    """

    def __init__(self, profile: LinkProfile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.stats = LinkStats()
        """What the link did so far."""
        self._heap: list[tuple[float, int, bytes]] = []
        self._counter = 0
        self._in_bad_state = False
        # Departure times of datagrams in the bottleneck queue, oldest first from _queue_head.
        self._queue_departures: list[float] = []
        self._queue_head = 0
        self._busy_until = -math.inf

    def __len__(self) -> int:
        """Datagrams currently in flight (sent, not yet delivered)."""
        return len(self._heap)

    def send(self, datagram: bytes, now: float) -> None:
        """Hand one datagram to the link at time ``now``."""
        profile = self.profile
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(datagram)
        for start, end in profile.blackouts:
            if start <= now < end:
                stats.dropped_blackout += 1
                return
        if self._lost():
            stats.dropped_loss += 1
            return
        departure = now
        if profile.rate_bps is not None:
            queued_departure = self._enqueue(len(datagram), now)
            if queued_departure is None:
                stats.dropped_queue += 1
                return
            departure = queued_departure
        rng = self.rng
        if profile.corrupt and rng.random() < profile.corrupt:
            datagram = self._corrupt(datagram)
            stats.corrupted += 1
        if profile.truncate and datagram and rng.random() < profile.truncate:
            datagram = datagram[: rng.randrange(len(datagram))]
            stats.truncated += 1
        copies = 1
        if profile.duplicate and rng.random() < profile.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            self._schedule(datagram, departure)

    def deliver(self, now: float) -> list[bytes]:
        """Remove and return every datagram whose arrival time is ``<= now``, in arrival order."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return []
        out = []
        pop = heapq.heappop
        while heap and heap[0][0] <= now:
            out.append(pop(heap)[2])
        self.stats.delivered += len(out)
        self.stats.bytes_delivered += sum(map(len, out))
        return out

    def next_arrival(self) -> float | None:
        """Arrival time of the earliest datagram in flight, or ``None`` when empty."""
        heap = self._heap
        return heap[0][0] if heap else None

    # --- the impairments ------------------------------------------------------

    def _lost(self) -> bool:
        profile = self.profile
        burst = profile.burst
        if burst is not None:
            # Step the Markov chain once per datagram, then draw the loss in the new state.
            rng = self.rng
            if self._in_bad_state:
                if rng.random() < burst.p_bad_to_good:
                    self._in_bad_state = False
            elif rng.random() < burst.p_good_to_bad:
                self._in_bad_state = True
            p = burst.loss_in_bad if self._in_bad_state else burst.loss_in_good
            return p > 0.0 and (p >= 1.0 or rng.random() < p)
        return profile.loss > 0.0 and self.rng.random() < profile.loss

    def _enqueue(self, size: int, now: float) -> float | None:
        """Put a datagram in the bottleneck FIFO; its departure time, or ``None`` on overflow."""
        assert self.profile.rate_bps is not None
        departures = self._queue_departures
        head = self._queue_head
        # Datagrams that finished serialising by now have left the queue.
        while head < len(departures) and departures[head] <= now:
            head += 1
        if head > 1024 and head * 2 > len(departures):
            del departures[:head]
            head = 0
        self._queue_head = head
        if len(departures) - head >= self.profile.queue_limit:
            return None
        departure = max(now, self._busy_until) + size * 8.0 / self.profile.rate_bps
        self._busy_until = departure
        departures.append(departure)
        return departure

    def _corrupt(self, datagram: bytes) -> bytes:
        if not datagram:
            return datagram
        rng = self.rng
        data = bytearray(datagram)
        bits = len(data) * 8
        for position in rng.sample(range(bits), min(bits, rng.randint(1, 3))):
            data[position >> 3] ^= 1 << (position & 7)
        return bytes(data)

    def _schedule(self, datagram: bytes, departure: float) -> None:
        profile = self.profile
        arrival = departure + profile.delay
        if profile.jitter:
            arrival = max(departure, arrival + self.rng.uniform(-profile.jitter, profile.jitter))
        if profile.reorder and self.rng.random() < profile.reorder:
            arrival += profile.reorder_delay
            self.stats.reordered += 1
        self._counter += 1
        heapq.heappush(self._heap, (arrival, self._counter, datagram))
