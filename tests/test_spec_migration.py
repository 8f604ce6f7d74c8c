"""Conformance tests of specs/protocol.md sections 6.6 (token, sending stateless resets)
and 6.7 (connection migration and path validation), and the virtual-time migration runs.

Two ``Endpoint``s with the real core talk through ``Net``: one ``Link`` per direction in
virtual time, and a NAT in front of the client whose public address can change (a
rebinding).  Datagrams the server sends to an address the NAT no longer maps are lost,
as on a real network.  No sockets, no sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from rudp.config import Config
from rudp.core import wire
from rudp.core.endpoint import Association, Endpoint
from rudp.core.migration import AMPLIFICATION_FACTOR
from rudp.core.path import VALIDATION_TIMEOUT_PTOS, PathState
from rudp.core.stateless_reset import ResetRateLimiter
from rudp.core.tokens import reset_token
from rudp.core.wire import Packet, PacketType
from rudp.events import MessageReceived
from rudp.testing.link import Link, LinkProfile
from rudp.testing.simulator import derive_rng

CLIENT = ("10.0.0.1", 40000)
REBOUND = ("10.0.0.1", 40001)  # the same host behind a NAT that picked a new port
ELSEWHERE = ("10.7.7.7", 40000)  # another host (a spoofed copy, or a network change)
SERVER = ("10.0.0.9", 9000)
KEY = bytes(range(32))


class Net:
    """Client and server endpoints, a link each way, a NAT in front of the client."""

    def __init__(
        self, seed: int = 1, profile: LinkProfile | None = None, config: Config | None = None
    ) -> None:
        config = config or Config()
        profile = profile or LinkProfile(delay=0.005)
        self.client = Endpoint(config, rng=derive_rng(seed, "client"))
        self.server = Endpoint(
            config, accepting=True, rng=derive_rng(seed, "server"), static_key=KEY
        )
        self.up = Link(profile, derive_rng(seed, "up"))
        self.down = Link(profile, derive_rng(seed, "down"))
        self.nat = CLIENT
        """The client's address as the server sees it."""
        self.now = 0.0
        self.drop_up: Callable[[bytes], bool] = lambda datagram: False
        self.received_from: Counter[Any] = Counter()  # bytes the server got per address
        self.sent_to: Counter[Any] = Counter()  # bytes the server sent per address
        self.sent_unvalidated: Counter[Any] = Counter()  # ... while that path was unvalidated
        self.stranded = 0
        self.rebind_after: int | None = None
        self._delivered_up = 0

    def server_assoc(self) -> Association:
        (assoc,) = self.server.associations
        return assoc

    def run(self, done: Callable[[], bool], limit: float = 120.0) -> None:
        while not done():
            assert self.now < limit, "the run did not finish in virtual time"
            self._send()
            deadlines = [
                t
                for t in (
                    self.client.get_timer(),
                    self.server.get_timer(),
                    self.up.next_arrival(),
                    self.down.next_arrival(),
                )
                if t is not None
            ]
            assert deadlines, "nothing left to happen"
            self.now = max(self.now, min(deadlines))
            for datagram in self.up.deliver(self.now):
                self._delivered_up += 1
                if self.rebind_after is not None and self._delivered_up > self.rebind_after:
                    self.nat = REBOUND
                self.received_from[self.nat] += len(datagram)
                self.server.receive_datagram(datagram, self.nat, self.now)
            for datagram in self.down.deliver(self.now):
                self.client.receive_datagram(datagram, SERVER, self.now)
            self.client.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self._send()

    def _send(self) -> None:
        for datagram, address in self.client.datagrams_to_send(self.now):
            assert address == SERVER
            if not self.drop_up(datagram):
                self.up.send(datagram, self.now)
        assocs = self.server.associations
        validating = {
            a.address
            for a in assocs
            if a.migration is not None and a.connection.path.state is PathState.VALIDATING
        }
        for datagram, address in self.server.datagrams_to_send(self.now):
            self.sent_to[address] += len(datagram)
            if address in validating:
                self.sent_unvalidated[address] += len(datagram)
                # Section 6.7-5, checked after every datagram, not only at the end.
                assert self.sent_unvalidated[address] <= (
                    AMPLIFICATION_FACTOR * self.received_from[address]
                )
            if address == self.nat:
                self.down.send(datagram, self.now)
            else:
                self.stranded += 1

    def established(self) -> tuple[Association, Association]:
        """A connected pair that delivered one message each way and went quiet."""
        client = self.client.connect(SERVER, self.now)
        client.send(b"hello")

        def ready() -> bool:
            drain(self.server)
            drain(self.client)
            return (
                bool(self.server.associations)
                and self.server_assoc().connection.is_established
                and client.connection.send_queue_bytes == 0
                and self.up.next_arrival() is None
                and self.down.next_arrival() is None
            )

        self.run(ready, limit=10.0)
        return client, self.server_assoc()


def drain(endpoint: Endpoint) -> list[bytes]:
    out = []
    while (item := endpoint.next_event()) is not None:
        if isinstance(item[1], MessageReceived):
            out.append(item[1].data)
    return out


def _transfer(net: Net, count: int, size: int = 1000, server_sends: bool = False) -> None:
    """Queue ``count`` messages on one side and run until the other read them all."""
    client = net.client.connect(SERVER, net.now)
    messages = [random.Random(i).randbytes(size) for i in range(count)]
    got: list[bytes] = []
    if not server_sends:
        for message in messages:
            client.send(message)
    sender_started = False

    def done() -> bool:
        nonlocal sender_started
        if server_sends:
            got.extend(drain(net.client))
            if not sender_started and net.server.associations:
                assoc = net.server_assoc()
                if assoc.established or assoc.connection.is_established:
                    sender_started = True
                    for message in messages:
                        assoc.send(message)
            drain(net.server)
        else:
            got.extend(drain(net.server))
            drain(net.client)
        return len(got) == count

    net.run(done)
    assert got == messages  # exactly, in order


# --- section 6.6: the token and sending stateless resets -----------------------------


def test_s6_6_token_is_hmac_of_the_id_under_the_static_key() -> None:
    """§6.6-1: the announced token is HMAC-SHA256(key, label + id)[:16]; a restart with the
    same key computes the same token for the same id."""
    net = Net()
    client_assoc = net.client.connect(SERVER, 0.0)
    net.run(lambda: client_assoc.connection.is_established, limit=5.0)
    server = net.server_assoc().connection
    cid = server.local_connection_id
    expected = hmac.new(
        KEY, b"rudp stateless reset v3" + cid.to_bytes(8, "big"), hashlib.sha256
    ).digest()[:16]
    assert server._opening.reset_token == expected == reset_token(KEY, cid)
    # The client learned it from the SYN_ACK's handshake block.
    (client,) = net.client.associations
    assert client.connection._opening.peer_reset_token == expected
    restarted = Endpoint(Config(), static_key=KEY)
    restarted.receive_datagram(_ack(cid), CLIENT, 1.0)
    ((reset, _),) = restarted.datagrams_to_send(1.0)
    assert wire.decode(reset).payload == expected


def _ack(cid: int, pn: int = 5) -> bytes:
    return wire.encode(Packet(PacketType.ACK, 0, cid, 1, 1, 64, 0, (), b"", pn))


def test_s6_6_2_unknown_id_answered_with_stateless_reset() -> None:
    """§6.6.2-1: a valid datagram for an id with no live connection (not SYN, RESET or
    STATELESS_RESET) is answered, to its source, by a stateless reset for that id."""
    endpoint = Endpoint(Config(), static_key=KEY)
    for ptype, payload in [
        (PacketType.ACK, b""),
        (PacketType.DATA, b"late data"),
        (PacketType.FIN, b""),
        (PacketType.PING, b""),
        (PacketType.SYN_ACK, wire.encode_handshake(wire.Handshake(7, 1400))),
        (PacketType.PATH_CHALLENGE, bytes(8)),
    ]:
        cid = random.Random(int(ptype)).getrandbits(64) | 1
        datagram = wire.encode(Packet(ptype, 0, cid, 1, 1, 64, 0, (), payload))
        endpoint.receive_datagram(datagram, CLIENT, 1.0)
        ((reset, address),) = endpoint.datagrams_to_send(1.0)
        assert address == CLIENT
        packet = wire.decode(reset)
        assert packet.type is PacketType.STATELESS_RESET
        assert packet.connection_id == cid and packet.payload == reset_token(KEY, cid)
    assert endpoint.stats.stateless_resets_sent == 6


def test_s6_6_2_reset_never_answered_by_a_reset() -> None:
    """§6.6.2-2: neither a STATELESS_RESET, nor a RESET, nor a SYN, nor a RETRY draws a
    stateless reset."""
    endpoint = Endpoint(Config(), accepting=False, static_key=KEY)
    endpoint.receive_datagram(wire.encode_stateless_reset(99, bytes(16)), CLIENT, 1.0)
    reset = wire.encode(Packet(PacketType.RESET, 0, 99, 1, 1, 64, 0, (), bytes(16)))
    endpoint.receive_datagram(reset, CLIENT, 1.0)
    syn = wire.encode(
        Packet(
            PacketType.SYN, 0, 0, 1, 0, 64, 0, (), wire.encode_handshake(wire.Handshake(5, 1400))
        )
    )
    endpoint.receive_datagram(syn, CLIENT, 1.0)
    endpoint.receive_datagram(wire.encode_retry(99, wire.decode(syn), bytes(20)), CLIENT, 1.0)
    assert endpoint.datagrams_to_send(1.0) == []
    assert endpoint.stats.stateless_resets_sent == 0
    assert endpoint.stats.stateless_resets_suppressed == 0
    # Two endpoints that both lost their state cannot ping-pong resets either.
    a, b = Endpoint(Config(), static_key=KEY), Endpoint(Config(), static_key=bytes(32))
    a.receive_datagram(_ack(1234), CLIENT, 1.0)
    for _ in range(3):
        for datagram, _ in a.datagrams_to_send(1.0):
            b.receive_datagram(datagram, SERVER, 1.0)
        for datagram, _ in b.datagrams_to_send(1.0):
            a.receive_datagram(datagram, CLIENT, 1.0)
    assert a.stats.stateless_resets_sent == 1 and b.stats.stateless_resets_sent == 0


def test_s6_6_2_stateless_resets_are_rate_limited() -> None:
    """§6.6.2-3: at most burst + rate * t stateless resets in any t seconds."""
    endpoint = Endpoint(
        Config(), static_key=KEY, stateless_reset_rate=10.0, stateless_reset_burst=5
    )
    sent_at: list[float] = []
    now = 0.0
    for i in range(2000):
        now = i * 0.001  # 1000 triggers per second for 2 s
        endpoint.receive_datagram(_ack(1000 + i), CLIENT, now)
        sent_at += [now for _ in endpoint.datagrams_to_send(now)]
    assert len(sent_at) <= 5 + 10 * 2.0 + 1
    for start in sent_at:
        window = [t for t in sent_at if start <= t < start + 0.5]
        assert len(window) <= 5 + 10 * 0.5 + 1
    assert endpoint.stats.stateless_resets_sent == len(sent_at)
    assert endpoint.stats.stateless_resets_suppressed == 2000 - len(sent_at)
    # The bucket itself: it refills at the rate and never beyond the burst.
    bucket = ResetRateLimiter(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_s6_6_2_stateless_reset_is_smaller_than_its_trigger() -> None:
    """§6.6.2-4: a stateless reset (32 bytes) is smaller than any datagram triggering it."""
    endpoint = Endpoint(Config(), static_key=KEY)
    smallest = _ack(77)
    assert len(smallest) == wire.OVERHEAD
    endpoint.receive_datagram(smallest, CLIENT, 0.0)
    ((reset, _),) = endpoint.datagrams_to_send(0.0)
    assert len(reset) == wire.STATELESS_RESET_SIZE == 32 < len(smallest)


def test_stateless_reset_routed_by_peer_id_from_any_address() -> None:
    """Section 6.6.1 routing: a STATELESS_RESET reaches the connection whose *peer* id it
    names, from any source address.  (That the core then fails is the core's reader.)"""
    net = Net()
    client, server = net.established()
    remote = client.connection.remote_connection_id
    assert remote == server.connection.local_connection_id
    token = client.connection._opening.peer_reset_token
    assert token == reset_token(KEY, remote)
    before = client.connection.stats.datagrams_received
    reset = wire.encode_stateless_reset(remote, token)
    net.client.receive_datagram(reset, ELSEWHERE, net.now)
    assert net.client.stats.stateless_resets_routed == 1
    assert client.connection.stats.datagrams_received == before + 1  # handed to the core
    # One naming no peer of ours is dropped, never answered.
    net.client.receive_datagram(wire.encode_stateless_reset(remote ^ 1, token), SERVER, net.now)
    assert net.client.stats.stateless_resets_routed == 1
    assert (
        net.client.datagrams_to_send(net.now) == [] or net.client.stats.stateless_resets_sent == 0
    )


# --- section 6.7: migration and path validation ---------------------------------------


def test_s6_7_newest_packet_from_new_address_moves_the_connection() -> None:
    """§6.7-1: an established connection's newest non-probing packet from a new address
    moves it there: what follows is sent to the new address, the transfer continues."""
    net = Net(seed=3)
    net.rebind_after = 40
    _transfer(net, 300)
    assoc = net.server_assoc()
    assert assoc.address == REBOUND
    assert net.server.stats.migrations == 1 and net.server.stats.nat_rebindings == 1
    assert net.server.stats.paths_validated == 1
    assert net.sent_to[REBOUND] > 0


def test_migration_with_loss_completes_exactly() -> None:
    """Virtual time, 5% loss both ways and reordering: the client's NAT rebinds mid-transfer,
    the server follows, validates and the transfer completes exactly."""
    for seed in range(4):
        net = Net(seed=seed, profile=LinkProfile(loss=0.05, delay=0.01, jitter=0.002, reorder=0.02))
        net.rebind_after = 150
        _transfer(net, 400)
        assert net.server_assoc().address == REBOUND
        assert net.server.stats.migrations >= 1
        assert net.server.stats.paths_validated >= 1


def test_s6_7_reordered_or_probing_packet_does_not_move() -> None:
    """§6.7-2: a packet from a new address that is not the newest, or is a probe, is
    processed but does not move the connection."""
    net = Net()
    client, server = net.established()
    client.send(b"one")
    net.client.datagrams_to_send(net.now)  # lost: "two" will wait for it
    client.send(b"two")
    (older,) = [d for d, _ in net.client.datagrams_to_send(net.now)]
    newest = client.connection._control(PacketType.ACK, net.now)
    net.server.receive_datagram(newest, CLIENT, net.now)
    dropped = server.connection.stats.datagrams_dropped
    net.server.receive_datagram(older, ELSEWHERE, net.now)  # reordered, and from elsewhere
    assert server.connection.stats.datagrams_dropped == dropped  # processed, held as data
    assert server.address == CLIENT and net.server.stats.migrations == 0
    # A genuine probe with the client's newest packet number, from elsewhere:
    probe = client.connection._control(PacketType.PATH_CHALLENGE, net.now, payload=bytes(8))
    largest = server.connection.largest_packet_number
    net.server.receive_datagram(probe, ELSEWHERE, net.now)
    assert server.connection.largest_packet_number > largest  # accepted by the core
    assert server.address == CLIENT and net.server.stats.migrations == 0


def test_s6_7_move_starts_validation_with_unpredictable_challenge() -> None:
    """§6.7-3: on moving, the endpoint sends a PATH_CHALLENGE with 8 bytes from its random
    source to the new address; each retransmission carries fresh bytes."""
    net = Net()
    client, server = net.established()
    client.send(b"moved" * 100)  # its bytes give the server budget for two challenges
    for datagram, _ in net.client.datagrams_to_send(net.now):
        net.server.receive_datagram(datagram, REBOUND, net.now)
    out = net.server.datagrams_to_send(net.now)
    challenges = [
        wire.decode(d) for d, a in out if wire.decode(d).type is PacketType.PATH_CHALLENGE
    ]
    assert [a for d, a in out] == [REBOUND] * len(out)
    assert len(challenges) == 1 and len(challenges[0].payload) == wire.PATH_DATA_SIZE
    first = challenges[0].payload
    deadline = server.connection.path.deadline
    assert deadline is not None and deadline > net.now
    net.server.handle_timer(deadline)
    again = [wire.decode(d) for d, _ in net.server.datagrams_to_send(deadline)]
    resent = [p.payload for p in again if p.type is PacketType.PATH_CHALLENGE]
    assert resent and resent[0] != first


def test_s6_7_challenge_answered_with_one_echo() -> None:
    """§6.7-4: a PATH_CHALLENGE is answered by exactly one PATH_RESPONSE echoing its bytes."""
    net = Net()
    _client, server = net.established()
    data = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    challenge = server.connection._control(PacketType.PATH_CHALLENGE, net.now, payload=data)
    net.client.receive_datagram(challenge, SERVER, net.now)
    out = [wire.decode(d) for d, _ in net.client.datagrams_to_send(net.now)]
    responses = [p for p in out if p.type is PacketType.PATH_RESPONSE]
    assert len(responses) == 1 and responses[0].payload == data
    assert net.client.datagrams_to_send(net.now + 1) == []


def test_s6_7_three_times_the_bytes_received_until_validated() -> None:
    """§6.7-5: until the new address echoed a challenge, the endpoint sends there at most
    3x the bytes it received from it; held output goes out once it is validated."""
    net = Net(seed=5)
    net.rebind_after = 30
    dropped = [0]

    def drop_first_responses(datagram: bytes) -> bool:
        # The client's first two PATH_RESPONSEs are lost: the server waits with its data.
        if datagram[1] == PacketType.PATH_RESPONSE and dropped[0] < 2:
            dropped[0] += 1
            return True
        return False

    net.drop_up = drop_first_responses
    _transfer(net, 400, size=1300, server_sends=True)  # Net._send asserts the limit
    assert dropped[0] == 2
    assert net.sent_unvalidated[REBOUND] > 0
    assert net.server.stats.amplification_held > 0
    assert net.server.stats.paths_validated == 1
    assert net.server_assoc().address == REBOUND


def test_s6_7_failed_validation_returns_to_the_validated_address() -> None:
    """§6.7-6: no echo within 3 x max(PTO, initial_rto): back to the last validated address."""
    net = Net()
    client, server = net.established()
    client.send(b"replayed from elsewhere")
    (datagram, _), *_ = net.client.datagrams_to_send(net.now)
    start = net.now
    net.server.receive_datagram(datagram, ELSEWHERE, start)  # an attacker's faster copy
    assert server.address == ELSEWHERE and server.migration is not None
    path = server.connection.path
    rtt = server.connection._sender.rtt
    give_up = start + VALIDATION_TIMEOUT_PTOS * max(
        rtt.pto_base(Config().max_ack_delay), Config().initial_rto
    )
    now = start
    while path.state is PathState.VALIDATING:
        net.server.datagrams_to_send(now)  # to ELSEWHERE: nobody answers
        deadline = net.server.get_timer()
        assert deadline is not None and deadline > now  # no spinning timer
        now = deadline
        net.server.handle_timer(now)
    assert path.state is PathState.FAILED and now == pytest.approx(give_up)
    net.server.datagrams_to_send(now)
    assert server.address == CLIENT and server.migration is None
    assert net.server.stats.path_validations_failed == 1


def test_s6_7_response_to_no_outstanding_challenge_does_not_validate() -> None:
    """§6.7-7: a PATH_RESPONSE echoing no challenge of the current validation validates nothing."""
    net = Net()
    client, server = net.established()
    client.send(b"x")
    for datagram, _ in net.client.datagrams_to_send(net.now):
        net.server.receive_datagram(datagram, REBOUND, net.now)
    cid = server.connection.local_connection_id
    guess = wire.encode(Packet(PacketType.PATH_RESPONSE, 0, cid, 0, 0, 64, 0, (), bytes(8), 500))
    net.server.receive_datagram(guess, REBOUND, net.now)
    assert server.connection.path.state is PathState.VALIDATING
    net.server.datagrams_to_send(net.now)
    assert server.migration is not None and net.server.stats.paths_validated == 0


def test_s6_7_no_migration_during_the_handshake() -> None:
    """§6.7-8: before the handshake finished, a packet from another address is dropped."""
    net = Net()
    net.client.connect(SERVER, 0.0)
    ((syn, _),) = net.client.datagrams_to_send(0.0)
    net.server.receive_datagram(syn, CLIENT, 0.0)
    for syn_ack, _ in net.server.datagrams_to_send(0.0):
        net.client.receive_datagram(syn_ack, SERVER, 0.0)
    (server,) = net.server.associations
    for datagram, _ in net.client.datagrams_to_send(0.0):  # the handshake's last step
        net.server.receive_datagram(datagram, REBOUND, 0.0)
    assert not server.connection.is_established
    assert server.address == CLIENT and net.server.stats.wrong_address >= 1
