"""Invariants behind the hot-path shortcuts of the sans-IO core (no timing here).

The per-datagram code keeps a few hand-inlined forms for speed.  Each test
runs a seeded lossy exchange and checks such a form against the plain one it
replaces:

- ``get_timer()`` takes the minimum in place; it must equal the minimum of the
  deadline helpers (``_keepalive_deadline``, ``_idle_deadline``, ``_outstanding``)
  and timer attributes, as a list-building reference computes it.
- ``receive_datagrams`` keeps its counters in locals; a batch must leave exactly
  the state and stats that the same datagrams fed one by one leave.
"""

from __future__ import annotations

import random

import pytest

from rudp.config import Config
from rudp.core.connection import SansIOConnection
from rudp.core.stats import Stats
from rudp.events import Event, MessageReceived

CONFIG = Config(
    initial_rto=0.2,
    min_rto=0.05,
    max_rto=1.0,
    keepalive_interval=0.5,
    idle_timeout=3.0,
    peer_timeout=5.0,
    receive_window=16,
    max_datagram_size=200,
)


def reference_timer(conn: SansIOConnection) -> float | None:
    """``get_timer`` written plainly: every deadline into a list, then ``min``."""
    if conn.is_closed:
        return None
    sender = conn._sender
    deadlines = [
        conn._hs_deadline,
        sender.rto_deadline,
        sender.loss_deadline,
        sender.probe_deadline,
        conn._receiver.ack_deadline,
        conn._persist_deadline,
        conn._linger_deadline,
        conn._keepalive_deadline(),
        conn._idle_deadline(),
    ]
    if conn._outstanding():
        deadlines.append(conn._last_heard + conn.config.peer_timeout)
    return min([d for d in deadlines if d is not None], default=None)


def run_exchange(seed: int, *, batched: bool) -> tuple[list[list[Event]], list[Stats]]:
    """A seeded lossy, reordering, corrupting exchange; returns events and final stats.

    Every wakeup delivers each side's datagrams either as one ``receive_datagrams``
    batch or one ``receive_datagram`` call at a time; nothing else differs.
    """
    rng = random.Random(seed)
    client = SansIOConnection(CONFIG, is_client=True, rng=random.Random(seed * 2 + 1))
    server = SansIOConnection(CONFIG, is_client=False, rng=random.Random(seed * 2 + 2))
    sides = (client, server)
    events: list[list[Event]] = [[], []]
    now = 0.0
    client.connect(now)
    for i in range(40):
        client.send(bytes([i]) * rng.randrange(0, 500))
    for i in range(10):
        server.send(bytes([i]) * rng.randrange(0, 300))
    in_flight: list[list[bytes]] = [[], []]  # datagrams waiting for each side
    for step in range(3000):
        for index, conn in enumerate(sides):
            for datagram in conn.datagrams_to_send(now):
                roll = rng.random()
                if roll < 0.1:
                    continue  # lost
                if roll < 0.13:
                    datagram = bytes([datagram[0] ^ 0xFF]) + datagram[1:]  # corrupted
                in_flight[1 - index].append(datagram)
                if roll > 0.97:
                    in_flight[1 - index].append(datagram)  # duplicated
        for index, conn in enumerate(sides):
            batch = in_flight[index]
            rng.shuffle(batch)  # reordered
            in_flight[index] = []
            if batch:
                if batched:
                    conn.receive_datagrams(batch, now)
                else:
                    for datagram in batch:
                        conn.receive_datagram(datagram, now)
            while (event := conn.next_event()) is not None:
                events[index].append(event)
        if step == 1500:
            client.close(now)
        for conn in sides:
            assert conn.get_timer() == reference_timer(conn)
        timers = [t for t in (c.get_timer() for c in sides) if t is not None]
        if all(c.is_closed for c in sides) and not any(in_flight):
            break
        # Advance by a small step, or jump to the next deadline when it is sooner.
        now = min([now + 0.02, *timers]) if timers else now + 0.02
        for conn in sides:
            deadline = conn.get_timer()
            if deadline is not None and deadline <= now:
                conn.handle_timer(now)
    return events, [conn.stats for conn in sides]


@pytest.mark.parametrize("seed", range(6))
def test_get_timer_matches_reference_and_batches_match_single_calls(seed: int) -> None:
    """The inlined ``get_timer`` and batched receive change no value and no outcome."""
    batched_events, batched_stats = run_exchange(seed, batched=True)
    single_events, single_stats = run_exchange(seed, batched=False)
    assert batched_events == single_events
    assert batched_stats == single_stats
    # The exchange really carried messages and exercised the bad-input and loss paths.
    assert sum(type(e) is MessageReceived for e in batched_events[1]) > 20
    assert sum(s.datagrams_dropped for s in batched_stats) > 0
    assert sum(s.retransmissions for s in batched_stats) > 0


def test_receive_datagrams_after_the_end_counts_every_datagram() -> None:
    """Once terminal, a batch is counted and dropped datagram by datagram, like single calls."""
    conns = []
    for batched in (True, False):
        conn = SansIOConnection(CONFIG, is_client=True, rng=random.Random(7))
        conn.connect(0.0)
        conn.abort("test")
        garbage = [b"x" * 40, b"", b"y" * 3]
        if batched:
            conn.receive_datagrams(garbage, 0.0)
        else:
            for datagram in garbage:
                conn.receive_datagram(datagram, 0.0)
        conns.append(conn)
    batched_stats, single_stats = (conn.stats for conn in conns)
    assert batched_stats == single_stats
    assert batched_stats.datagrams_received == 3
    assert batched_stats.datagrams_dropped == 3
    assert batched_stats.bytes_received == 43
