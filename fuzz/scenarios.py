"""Deterministic connection states and recorded conversations, shared by the harnesses.

Everything here is seeded (``SEED``), so a state built by ``fuzz_connection.py`` has the
very connection ids and sequence numbers of the conversation ``make_corpus.py``
recorded: a recorded datagram fed to a rebuilt state reaches the state checks, not just
the CRC and connection-id filters.

States for a bare ``SansIOConnection`` (``CONNECTION_STATES``) and for an ``Endpoint``
(``ENDPOINT_STATES``) are built by name; each builder returns fresh objects.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.endpoint import Endpoint
from rudp.testing import ConnectionPair, LinkProfile, Simulator, make_pair

SEED = 7
CONFIG = Config(
    max_datagram_size=1200,  # the minimum (specs/protocol.md section 6.1)
    receive_window=8,
    max_send_window=16,
    max_message_size=16384,
    receive_buffer=32768,
    keepalive_interval=1.0,
    peer_timeout=20.0,
)
"""Small windows and messages: the bounds the harness asserts are reachable."""
KEYED_CONFIG = replace(CONFIG, psk=bytes(range(32)))
"""The same with a pre-shared key: sealed datagrams, the replay window, Noise handshakes
(specs/protocol.md sections 3.7 and 6.8).  Seeded as the rest, so a rebuilt keyed state
has the keys of the recorded keyed conversation and its datagrams authenticate."""

CLIENT_ADDRESS = ("192.0.2.1", 4000)
OTHER_ADDRESS = ("198.51.100.7", 5000)
"""A second source address: datagrams from it look like a migration (path validation)."""


# --- bare connections -------------------------------------------------------------


def _pair(config: Config = CONFIG) -> ConnectionPair:
    return ConnectionPair(config, seed=SEED)


def fresh_server() -> SansIOConnection:
    return make_pair(CONFIG, seed=SEED)[1]


def syn_sent_client() -> SansIOConnection:
    client = make_pair(CONFIG, seed=SEED)[0]
    client.connect(0.0)
    client.datagrams_to_send(0.0)
    return client


def _established(config: Config = CONFIG) -> ConnectionPair:
    pair = _pair(config)
    pair.handshake()
    return pair


def established_server() -> SansIOConnection:
    return _established().server


def established_client() -> SansIOConnection:
    return _established().client


def _mid_transfer(config: Config = CONFIG) -> ConnectionPair:
    """Both sides sent multi-fragment messages; every third datagram was lost."""
    count = [0]

    def drop(sender: str, datagram: bytes) -> bool:
        count[0] += 1
        return count[0] % 3 == 0

    pair = ConnectionPair(config, seed=SEED, drop=drop)
    pair.handshake()
    for i in range(4):
        pair.client.send(bytes([i]) * 4000)  # four fragments
        pair.server.send(bytes([i]) * 500)
    pair.pump()
    return pair


def mid_transfer_server() -> SansIOConnection:
    return _mid_transfer().server


def mid_transfer_client() -> SansIOConnection:
    return _mid_transfer().client


def closing_client() -> SansIOConnection:
    pair = _established()
    pair.client.send(b"last words")
    pair.client.close(pair.now)
    pair.deliver("client")
    return pair.client


def keyed_fresh_server() -> SansIOConnection:
    return make_pair(KEYED_CONFIG, seed=SEED)[1]


def keyed_established_server() -> SansIOConnection:
    return _established(KEYED_CONFIG).server


def keyed_mid_transfer_client() -> SansIOConnection:
    return _mid_transfer(KEYED_CONFIG).client


CONNECTION_STATES: dict[str, Callable[[], SansIOConnection]] = {
    "fresh_server": fresh_server,
    "syn_sent_client": syn_sent_client,
    "established_server": established_server,
    "established_client": established_client,
    "mid_transfer_server": mid_transfer_server,
    "mid_transfer_client": mid_transfer_client,
    "closing_client": closing_client,
    "keyed_fresh_server": keyed_fresh_server,
    "keyed_established_server": keyed_established_server,
    "keyed_mid_transfer_client": keyed_mid_transfer_client,
}


# --- endpoints ----------------------------------------------------------------------


@dataclass
class EndpointScene:
    """An accepting server endpoint and (outside it) the client talking to it."""

    endpoint: Endpoint
    client: SansIOConnection
    now: float = 0.0
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    """``("client" | "server", datagram)`` for everything exchanged, in order."""

    def pump(self, address: tuple[str, int] = CLIENT_ADDRESS, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = 0
            for data in self.client.datagrams_to_send(self.now):
                self.sent.append(("client", data))
                self.endpoint.receive_datagram(data, address, self.now)
                moved += 1
            for data, _address in self.endpoint.datagrams_to_send(self.now):
                self.sent.append(("server", data))
                self.client.receive_datagram(data, self.now)
                moved += 1
            while self.client.next_event() is not None:
                pass
            while self.endpoint.next_event() is not None:
                pass
            if not moved:
                return

    def advance(self, seconds: float, address: tuple[str, int] = CLIENT_ADDRESS) -> None:
        end = self.now + seconds
        while True:
            timers = [t for t in (self.client.get_timer(), self.endpoint.get_timer()) if t]
            if not timers or min(timers) > end:
                break
            self.now = max(self.now, min(timers))
            self.client.handle_timer(self.now)
            self.endpoint.handle_timer(self.now)
            self.pump(address)
        self.now = end


def endpoint_scene() -> EndpointScene:
    endpoint = Endpoint(CONFIG, accepting=True, backlog=4, rng=random.Random(f"ep/{SEED}"))
    client = make_pair(CONFIG, seed=SEED)[0]
    return EndpointScene(endpoint, client)


def fresh_endpoint() -> EndpointScene:
    return endpoint_scene()


def established_endpoint() -> EndpointScene:
    scene = endpoint_scene()
    scene.client.connect(scene.now)
    scene.pump()
    scene.advance(0.05)
    assoc = scene.endpoint.accept()
    assert assoc is not None and scene.client.is_established
    scene.client.send(b"x" * 500)
    scene.pump()
    return scene


ENDPOINT_STATES: dict[str, Callable[[], EndpointScene]] = {
    "fresh_endpoint": fresh_endpoint,
    "established_endpoint": established_endpoint,
}


# --- recordings for the corpus ------------------------------------------------------


def recorded_transfer(config: Config = CONFIG) -> list[tuple[str, bytes]]:
    """Every datagram of a lossy simulated conversation between the ``make_pair(SEED)``
    client and server: handshake, multi-fragment data both ways, acks with SACK blocks,
    keepalive PINGs over an idle spell, and a graceful close (FIN)."""
    client, server = make_pair(config, seed=SEED)
    sim = Simulator(client, server, profile_ab=LinkProfile.lossy(0.2), seed=SEED)
    captured: list[tuple[str, bytes]] = []
    for name, link in (("client", sim.link_ab), ("server", sim.link_ba)):
        original = link.send

        def capture(data: bytes, now: float, original=original, name=name) -> None:  # type: ignore[no-untyped-def]
            captured.append((name, data))
            original(data, now)

        link.send = capture  # type: ignore[method-assign]
    client.connect(0.0)
    for i in range(6):
        client.send(bytes([i]) * (300 * i + 1))
        server.send(bytes([i]) * 50)
    sim.run_until(lambda: client.stats.messages_acked == 6, max_time=600)
    sim.run_until(lambda: False, max_time=sim.now + 3.5)  # idle: keepalive PINGs
    client.close(sim.now)
    sim.run_until(lambda: client.is_closed and server.is_closed, max_time=sim.now + 600)
    return captured


def recorded_endpoint() -> list[tuple[str, bytes]]:
    """An endpoint conversation: handshake, data, a migration (PATH_CHALLENGE and
    PATH_RESPONSE), a stateless reset for an unknown id, and an abortive RESET."""
    scene = established_endpoint()
    scene.advance(0.1)
    scene.client.send(b"from elsewhere")
    scene.pump(OTHER_ADDRESS)  # the client "moved": the endpoint validates the new path
    scene.advance(0.2, OTHER_ADDRESS)
    # A datagram for an id the endpoint does not know: answered with a stateless reset.
    stray = wire.encode(
        wire.Packet(wire.PacketType.PING, 0, 0x1234_5678_9ABC_DEF0, 1, 1, 8, 0, (), b"" * 0)
    )
    scene.sent.append(("client", stray))
    scene.endpoint.receive_datagram(stray, CLIENT_ADDRESS, scene.now)
    for data, _address in scene.endpoint.datagrams_to_send(scene.now):
        scene.sent.append(("server", data))
    scene.client.abort("fuzz corpus")
    scene.pump(OTHER_ADDRESS)
    return scene.sent


# --- the record format of fuzz_connection.py ----------------------------------------

STATES = list(CONNECTION_STATES) + list(ENDPOINT_STATES)
"""What byte 0 of a ``fuzz_connection.py`` input picks (modulo its length)."""
MAX_RECORDS = 64


def records(data: bytes) -> list[tuple[int, bytes]]:
    """The (control, datagram) records of an input (after the state byte)."""
    out: list[tuple[int, bytes]] = []
    pos = 1
    while pos + 3 <= len(data) and len(out) < MAX_RECORDS:
        control = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        datagram = data[pos + 3 : pos + 3 + length]
        pos += 3 + length
        out.append((control, datagram))
    return out


def encode_records(state: int, datagrams: list[tuple[int, bytes]]) -> bytes:
    """The inverse of ``records``: used by ``make_corpus.py``."""
    parts = [bytes([state])]
    for control, datagram in datagrams:
        parts.append(bytes([control]) + len(datagram).to_bytes(2, "big") + datagram)
    return b"".join(parts)
