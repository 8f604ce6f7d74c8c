"""Conformance tests of keepalive (spec section 11.4): liveness of an idle connection.

Two sans-IO endpoints joined by a lossless wire with a fixed one-way delay, stepped by
hand in virtual time: no sockets, no sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random

from rudp.config import Config
from rudp.core.endpoint import Endpoint
from rudp.core.wire import PacketType, decode
from rudp.events import Failed, FailureKind

ONE_WAY = 0.02
"""One-way delay of the wire (a 40 ms round trip)."""
KEY = bytes(range(32))
"""The server's static key, kept across its restart (section 6.6)."""


class _Wire:
    """Endpoints by address; datagrams arrive ``ONE_WAY`` after they were sent."""

    def __init__(self, endpoints: dict[str, Endpoint]) -> None:
        self.endpoints = endpoints
        self.now = 0.0
        self._queue: list[tuple[float, int, str, str, bytes]] = []
        self._order = itertools.count()
        self.delivered: list[tuple[str, PacketType]] = []

    def _collect(self) -> None:
        for name, endpoint in self.endpoints.items():
            for data, address in endpoint.datagrams_to_send(self.now):
                item = (self.now + ONE_WAY, next(self._order), name, address, data)
                heapq.heappush(self._queue, item)

    def run_until(self, done: object, limit: float) -> None:
        """Step to the next arrival or timer until ``done()`` or ``limit`` (virtual s)."""
        assert callable(done)
        self._collect()
        while not done() and self.now < limit:
            deadlines = [e.get_timer() for e in self.endpoints.values()]
            candidates = [d for d in deadlines if d is not None]
            if self._queue:
                candidates.append(self._queue[0][0])
            if not candidates:
                return
            self.now = max(self.now, min(candidates))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, source, target, data = heapq.heappop(self._queue)
                self.delivered.append((target, decode(data).type))
                self.endpoints[target].receive_datagram(data, source, self.now)
            for endpoint in self.endpoints.values():
                endpoint.handle_timer(self.now)
            self._collect()


def test_s11_4_idle_connection_to_a_restarted_peer_fails_within_one_keepalive() -> None:
    """§11.4-2: an idle peer that restarted is detected within keepalive_interval + 1 RTT."""
    config = Config(keepalive_interval=5.0, peer_timeout=30.0)
    client = Endpoint(config, rng=random.Random(1))
    server = Endpoint(config, accepting=True, rng=random.Random(2), static_key=KEY)
    wire = _Wire({"client": client, "server": server})
    assoc = client.connect("server", 0.0)
    wire.run_until(lambda: server.pending_count == 1 and assoc.connection.is_established, 5.0)
    accepted = server.accept()
    assert accepted is not None and assoc.connection.is_established
    wire.run_until(lambda: False, 1.0)  # the handshake's last ack settles; then silence
    # The server process dies and a new one takes the port, with the same key but no state.
    restarted_at = wire.now
    wire.endpoints["server"] = Endpoint(
        config, accepting=True, rng=random.Random(3), static_key=KEY
    )
    wire.run_until(lambda: assoc.connection.is_closed, restarted_at + 60.0)
    failures = []
    while (item := client.next_event()) is not None:
        if isinstance(item[1], Failed):
            failures.append(item[1])
    assert [f.kind for f in failures] == [FailureKind.RESET_BY_PEER]
    # The keepalive PING drew the stateless reset: within one interval and one round trip,
    # not the 30 s peer_timeout of silence.
    assert ("server", PacketType.PING) in wire.delivered
    assert ("client", PacketType.STATELESS_RESET) in wire.delivered
    assert wire.now - restarted_at <= config.keepalive_interval + 2 * ONE_WAY + 1e-9


def test_s11_4_keepalives_alone_keep_an_idle_connection_up() -> None:
    """Section 11.4: answered PINGs keep an idle connection up far past peer_timeout."""
    config = Config(keepalive_interval=5.0, peer_timeout=12.0)
    client = Endpoint(config, rng=random.Random(4))
    server = Endpoint(config, accepting=True, rng=random.Random(5))
    wire = _Wire({"client": client, "server": server})
    assoc = client.connect("server", 0.0)
    wire.run_until(lambda: server.pending_count == 1 and assoc.connection.is_established, 5.0)
    wire.run_until(lambda: assoc.connection.is_closed, 60.0)
    assert not assoc.connection.is_closed  # 60 s idle: five times peer_timeout
    pings = [t for target, t in wire.delivered if t is PacketType.PING]
    assert len(pings) >= 60.0 / config.keepalive_interval - 2
