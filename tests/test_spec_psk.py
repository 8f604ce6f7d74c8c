"""Conformance tests of the pre-shared-key mode: sealed datagrams and the Noise NNpsk0
handshake (spec sections 3.7, 6.8 and 17.6).

Like tests/test_spec.py, each tagged test holds the implementation to one MUST.  The
engines are real ``SansIOConnection``s and ``Endpoint``s wired back to back in memory on a
virtual clock; the attacker's packets are built with ``rudp.core.wire`` as a stranger
would, and a tampered datagram gets a correct CRC so that only the AEAD can refuse it.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_spec import _drain_events

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.endpoint import Endpoint
from rudp.core.protection import REPLAY_WINDOW, ReplayWindow
from rudp.core.secure_handshake import SecureHandshake
from rudp.core.state import ConnectionState
from rudp.core.wire import AckFields, Flags, Handshake, PacketType
from rudp.core.wire_sealed import is_sealed, packet_number, seal_datagram
from rudp.events import Connected, Event, MessageReceived
from rudp.testing import LinkProfile, transfer

PSK = bytes(range(32))
OTHER_PSK = bytes(range(100, 132))
CLIENT = ("192.0.2.7", 40000)

Wire = Callable[[bytes], bool]
"""A filter on the datagrams one side sends: False drops the datagram."""


def _engine(psk: bytes | None, *, is_client: bool, seed: int, **options: Any) -> SansIOConnection:
    return SansIOConnection(
        Config(psk=psk, **options), is_client=is_client, rng=random.Random(seed)
    )


class Pair:
    """A client and a server engine wired back to back, recording what each sent."""

    def __init__(self, client_psk: bytes | None = PSK, server_psk: bytes | None = PSK) -> None:
        self.client = _engine(client_psk, is_client=True, seed=1)
        self.server = _engine(server_psk, is_client=False, seed=2)
        self.now = 0.0
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.events: dict[str, list[Event]] = {"client": [], "server": []}

    def run(self, rounds: int = 50, drop: Wire | None = None) -> None:
        """Shuttle datagrams both ways; ``drop`` filters the client's."""
        for _ in range(rounds):
            moved = False
            for name, sender, receiver in (
                ("client", self.client, self.server),
                ("server", self.server, self.client),
            ):
                for datagram in sender.datagrams_to_send(self.now):
                    self.sent[name].append(datagram)
                    moved = True
                    if name == "client" and drop is not None and not drop(datagram):
                        continue
                    receiver.receive_datagram(datagram, self.now)
            self.events["client"] += _drain_events(self.client)
            self.events["server"] += _drain_events(self.server)
            if not moved:
                deadline = min(
                    (t for t in (self.client.get_timer(), self.server.get_timer()) if t),
                    default=None,
                )
                if deadline is None or deadline > self.now + 60:
                    return
                self.now = max(self.now, deadline)
                for conn in (self.client, self.server):
                    timer = conn.get_timer()
                    if timer is not None and timer <= self.now:
                        conn.handle_timer(self.now)
            self.now += 0.001

    def established(self) -> Pair:
        self.client.connect(self.now)
        self.run()
        assert self.client.is_established and self.server.is_established
        return self

    def delivered(self, side: str) -> list[bytes]:
        return [e.data for e in self.events[side] if isinstance(e, MessageReceived)]


def _recrc(datagram: bytes | bytearray) -> bytes:
    """``datagram`` with its CRC recomputed: a tampering the CRC cannot catch."""
    body = bytes(datagram[:-4])
    return body + zlib.crc32(body).to_bytes(4, "big")


def _flip_payload_byte(datagram: bytes) -> bytes:
    tampered = bytearray(datagram)
    tampered[-6] ^= 0x01  # inside the tag (or ciphertext), before the CRC
    return _recrc(tampered)


def _plain(conn: SansIOConnection, ptype: PacketType, seq: int, payload: bytes = b"") -> bytes:
    """What a stranger who sees the traffic would forge: the right id and numbers, unsealed."""
    acks = AckFields(0, 64, 0, 0)
    return wire.encode_fields(ptype, 0, conn.local_connection_id, 1, seq, acks, payload)


def _unauthenticated(conn: SansIOConnection) -> int:
    return conn.stats.datagrams_unauthenticated


# --- section 3.7: sealed datagrams ------------------------------------------------------------


def test_s3_7_1_no_packet_number_seals_two_datagrams() -> None:
    """§3.7-1: a sender never seals two different datagrams under one packet number in one
    direction: every datagram after the handshake is sealed, and their packet numbers are
    all distinct, retransmissions (forced by dropping a third of the client's datagrams)
    included."""
    pair = Pair().established()
    for i in range(60):
        pair.client.send(bytes([i]) * 3000)
    counter = iter(range(10**6))
    pair.run(rounds=2000, drop=lambda d: next(counter) % 3 != 0)
    assert pair.delivered("server") == [bytes([i]) * 3000 for i in range(60)]
    assert pair.client.stats.retransmissions > 0
    after_handshake = [d for d in pair.sent["client"] if d[1] not in (1, 2)]
    assert after_handshake and all(is_sealed(d) for d in after_handshake)
    numbers = [packet_number(d) for d in after_handshake]
    distinct = {packet_number(d): d for d in after_handshake}
    assert len(distinct) == len(numbers)


def test_s3_7_2_unsealed_or_forged_packets_change_nothing() -> None:
    """§3.7-2: with a key, an unsealed DATA, FIN, RESET, PING or ACK, even with the right
    connection id, sequence number and reset token, and a sealed DATA altered in transit
    (CRC recomputed), are dropped and counted, and change nothing."""
    pair = Pair().established()
    server = pair.server
    seq = server._receiver.rcv_next
    token = pair.client._opening.reset_token
    forgeries = [
        _plain(server, PacketType.DATA, seq, b"injected"),
        _plain(server, PacketType.FIN, seq),
        _plain(server, PacketType.RESET, seq, token),
        _plain(server, PacketType.PING, seq),
        _plain(server, PacketType.ACK, seq),
    ]
    pair.client.send(b"genuine")
    (genuine,) = [d for d in pair.client.datagrams_to_send(pair.now) if d[1] == PacketType.DATA]
    forgeries.append(_flip_payload_byte(genuine))
    before = _unauthenticated(server)
    for forged in forgeries:
        server.receive_datagram(forged, pair.now)
    assert _unauthenticated(server) == before + len(forgeries)
    assert _drain_events(server) == []
    assert server.state is ConnectionState.ESTABLISHED
    server.receive_datagram(genuine, pair.now)  # the real one still gets through
    assert [e.data for e in _drain_events(server) if isinstance(e, MessageReceived)] == [b"genuine"]


def test_s3_7_3_replayed_sealed_packets_are_dropped() -> None:
    """§3.7-3: a sealed packet whose number was already authenticated is dropped (a replayed
    DATA is not delivered twice, nor re-acknowledged as new), and so is one a whole replay
    window below the largest."""
    pair = Pair().established()
    pair.client.send(b"once")
    (data,) = [d for d in pair.client.datagrams_to_send(pair.now) if d[1] == PacketType.DATA]
    server = pair.server
    server.receive_datagram(data, pair.now)
    server.receive_datagram(data, pair.now)
    events = _drain_events(server)
    assert [e.data for e in events if isinstance(e, MessageReceived)] == [b"once"]
    assert server.stats.replays_dropped == 1
    # The window itself: fresh once, never twice, nothing a window below the largest.
    window = ReplayWindow()
    for number in (5, 3, 4000, 4000 + REPLAY_WINDOW - 1):
        assert window.is_fresh(number)
        window.mark(number)
        assert not window.is_fresh(number)
    assert not window.is_fresh(5)  # a whole window below the largest: too old to tell
    assert window.is_fresh(4001)
    window.mark(10**12)  # a jump far past the window forgets it, without a huge integer
    assert not window.is_fresh(10**12) and not window.is_fresh(4001)
    assert window.is_fresh(10**12 - 1)


def test_s3_7_4_unkeyed_receiver_drops_sealed_datagrams() -> None:
    """§3.7-4: without a key, a sealed datagram is dropped and counted, however well formed."""
    pair = Pair(client_psk=None, server_psk=None).established()
    pair.client.send(b"plain")
    (data,) = [d for d in pair.client.datagrams_to_send(pair.now) if d[1] == PacketType.DATA]
    sealed = seal_datagram(data, packet_number(data), lambda n, ad, text: bytes(text) + bytes(16))
    assert wire.decode(sealed).flags & Flags.SEALED
    pair.server.receive_datagram(sealed, pair.now)
    assert _drain_events(pair.server) == []
    assert pair.server.stats.datagrams_unauthenticated == 1
    pair.server.receive_datagram(data, pair.now)
    assert [e.data for e in _drain_events(pair.server) if isinstance(e, MessageReceived)] == [
        b"plain"
    ]


# --- section 6.8: the Noise NNpsk0 handshake ------------------------------------------------


def _syn_of(psk: bytes | None, seed: int = 11) -> tuple[SansIOConnection, bytes]:
    client = _engine(psk, is_client=True, seed=seed)
    client.connect(0.0)
    (syn,) = client.datagrams_to_send(0.0)
    return client, syn


def _server_endpoint(psk: bytes | None) -> Endpoint:
    return Endpoint(Config(psk=psk), accepting=True, rng=random.Random(3), static_key=PSK)


def test_s6_8_1_handshake_needs_the_key_and_its_clear_fields_are_checked() -> None:
    """§6.8-1: a keyed server keeps no state for a SYN whose Noise message was made with
    another key, or whose clear client id or header ISN was changed on the way; a keyed
    client does not take a SYN_ACK made with another key."""
    server = _server_endpoint(PSK)
    _, wrong_key = _syn_of(OTHER_PSK)
    _, genuine = _syn_of(PSK)
    other_id = bytearray(genuine)
    other_id[wire.HEADER_SIZE] ^= 0x01  # first byte of the clear source connection id
    other_isn = bytearray(genuine)
    other_isn[16] ^= 0x01  # the header's seq: the client's ISN
    for forged in (wrong_key, _recrc(other_id), _recrc(other_isn)):
        server.receive_datagram(forged, CLIENT, 0.0)
        assert len(server) == 0 and not server._by_syn and server.datagrams_to_send(0.0) == []
    assert server.stats.syn_unauthenticated == 3
    server.receive_datagram(genuine, CLIENT, 0.0)
    assert len(server) == 1  # the genuine SYN is answered
    # The client side: a SYN_ACK from a server holding another key is dropped.
    pair = Pair(client_psk=PSK, server_psk=OTHER_PSK)
    pair.client.connect(0.0)
    pair.run(rounds=5)
    assert not pair.client.is_established and not pair.server.is_established
    assert pair.server.state is ConnectionState.LISTEN  # it never took the SYN
    assert pair.client.stats.datagrams_unauthenticated == 0  # no SYN_ACK came at all


def test_s6_8_1_client_drops_a_syn_ack_made_with_another_key() -> None:
    """§6.8-1: a SYN_ACK whose Noise message was written under another key (by a server
    that read the client's SYN) does not authenticate at the client."""
    client, syn = _syn_of(PSK)
    server = _engine(PSK, is_client=False, seed=5)
    server.receive_datagram(syn, 0.0)
    (syn_ack,) = server.datagrams_to_send(0.0)
    payload_at = wire.HEADER_SIZE
    tampered = bytearray(syn_ack)
    tampered[payload_at + wire.HANDSHAKE_SIZE + 40] ^= 0x80  # inside the sealed block
    client.receive_datagram(_recrc(tampered), 0.0)
    assert client.state is ConnectionState.SYN_SENT
    assert client.stats.datagrams_unauthenticated == 1
    client.receive_datagram(syn_ack, 0.0)
    assert client.state is ConnectionState.ESTABLISHED
    assert any(isinstance(e, Connected) for e in _drain_events(client))


@pytest.mark.parametrize(("client_psk", "server_psk"), [(PSK, None), (None, PSK)])
def test_s6_8_2_keyed_and_unkeyed_never_connect(
    client_psk: bytes | None, server_psk: bytes | None
) -> None:
    """§6.8-2: an unkeyed endpoint drops a handshake that carries a Noise message (and a
    keyed one a handshake without): the two never connect."""
    server = _server_endpoint(server_psk)
    _, syn = _syn_of(client_psk)
    assert (wire.noise_message(wire.decode(syn).payload) is not None) == (client_psk is not None)
    server.receive_datagram(syn, CLIENT, 0.0)
    assert len(server) == 0 and server.datagrams_to_send(0.0) == []
    pair = Pair(client_psk=client_psk, server_psk=server_psk)
    pair.client.connect(0.0)
    pair.run(rounds=200)
    assert not pair.client.is_established and not pair.server.is_established


def test_s6_8_3_one_noise_message_per_connection() -> None:
    """§6.8-3: a retransmitted SYN carries the same Noise message as the first, and a server
    that read one takes no other for the same client id and ISN, even one that would
    authenticate on its own."""
    client, first = _syn_of(PSK)
    client.handle_timer(client.get_timer() or 0.0)
    (again,) = client.datagrams_to_send(5.0)
    noise = wire.noise_message(wire.decode(first).payload)
    assert noise is not None and wire.noise_message(wire.decode(again).payload) == noise
    assert wire.decode(first).packet_number != wire.decode(again).packet_number
    server = _engine(PSK, is_client=False, seed=5)
    server.receive_datagram(first, 0.0)
    (syn_ack,) = server.datagrams_to_send(0.0)
    # A second, valid message for the same client and ISN, from another ephemeral key.
    decoded = wire.decode(first)
    block = Handshake(client.local_connection_id, 1400, client._opening.reset_token)
    other = SecureHandshake(PSK, is_client=True, rng=random.Random(99)).write(block, client._isn)
    assert other != noise
    forked = wire.encode_fields(
        PacketType.SYN,
        0,
        0,
        7,
        decoded.seq,
        AckFields(0, decoded.window, 0, 0),
        decoded.payload[: -wire.NOISE_MESSAGE_SIZE] + other,
    )
    server.receive_datagram(forked, 0.1)
    assert server.datagrams_to_send(0.1) == []  # no SYN_ACK for it
    assert server.stats.datagrams_unauthenticated == 1
    server.receive_datagram(again, 0.2)
    (resent,) = server.datagrams_to_send(0.2)
    assert wire.noise_message(wire.decode(resent).payload) == wire.noise_message(
        wire.decode(syn_ack).payload
    )


# --- what the key protects, end to end (section 17.6) -----------------------------------------


def test_reset_token_travels_only_sealed() -> None:
    """Section 6.8: the clear handshake blocks carry a zero reset token; the peer still
    learns the real one (it believes a stateless reset carrying it)."""
    pair = Pair().established()
    for name in ("client", "server"):
        handshake = [d for d in pair.sent[name] if d[1] in (1, 2)]
        assert handshake
        for datagram in handshake:
            assert wire.decode_handshake(wire.decode(datagram).payload).reset_token == bytes(16)
    assert pair.client._opening.peer_reset_token == pair.server._opening.reset_token != bytes(16)


def test_config_checks_and_hides_the_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Config(psk=b"short")
    assert PSK.hex() not in repr(Config(psk=PSK)) and str(list(PSK)) not in repr(Config(psk=PSK))


def test_keyed_payload_budget_leaves_room_for_the_tag() -> None:
    """Sealed datagrams stay within the effective datagram size (section 6.1-5)."""
    pair = Pair().established()
    pair.client.send(bytes(200_000))
    pair.run(rounds=500)
    assert pair.delivered("server") == [bytes(200_000)]
    sizes = [len(d) for d in pair.sent["client"]]
    assert max(sizes) == Config().max_datagram_size


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.3),
    corrupt=st.floats(0.0, 0.05),
    duplicate=st.floats(0.0, 0.2),
    sizes=st.lists(st.integers(0, 5000), max_size=12),
)
def test_keyed_transfer_exactly_once_in_order(
    seed: int, loss: float, corrupt: float, duplicate: float, sizes: list[int]
) -> None:
    """Over a lossy, duplicating, corrupting, reordering simulated path, a keyed connection
    delivers every message exactly once, in order, both ways."""
    messages = [random.Random(i).randbytes(size) for i, size in enumerate(sizes)]
    profile = LinkProfile(loss=loss, corrupt=corrupt, duplicate=duplicate, reorder=0.1, delay=0.02)
    result = transfer(
        messages,
        messages[::-1],
        profile_ab=profile,
        seed=seed,
        config=Config(psk=PSK, peer_timeout=3600.0),
    )
    assert result.complete, result.failures
    assert result.b.received == messages
    assert result.a.received == messages[::-1]
    assert result.b.stats.replays_dropped <= result.link_ab.duplicated


def test_keyed_client_connects_through_a_retry() -> None:
    """Section 6.2.1 with a key: the SYN that echoes the RETRY's token carries the same
    Noise message, and the server (``retry="always"``) validates and connects it."""
    server = Endpoint(
        Config(psk=PSK), accepting=True, rng=random.Random(3), static_key=PSK, retry="always"
    )
    client = _engine(PSK, is_client=True, seed=11)
    client.connect(0.0)
    now = 0.0
    for _ in range(10):
        for datagram in client.datagrams_to_send(now):
            server.receive_datagram(datagram, CLIENT, now)
        for datagram, _ in server.datagrams_to_send(now):
            client.receive_datagram(datagram, now)
        now += 0.01
    assert client.is_established
    assert server.stats.retries_sent == 1 and server.stats.addresses_validated == 1
    assert len(server) == 1


@settings(max_examples=200, deadline=None)
@given(
    position=st.integers(0, 10**6),
    mask=st.integers(1, 255),
    garbage=st.binary(max_size=200),
    fix_crc=st.booleans(),
)
def test_keyed_receive_path_takes_only_authentic_packets(
    position: int, mask: int, garbage: bytes, fix_crc: bool
) -> None:
    """Any bit-flipped copy of a genuine sealed datagram, and any garbage, is dropped
    without an exception or an event; the genuine datagram is then delivered once."""
    pair = Pair().established()
    pair.client.send(b"authentic")
    (genuine,) = [d for d in pair.client.datagrams_to_send(pair.now) if d[1] == PacketType.DATA]
    tampered = bytearray(genuine)
    # Not inside the CRC: with the CRC recomputed that would give back the genuine datagram.
    tampered[position % (len(tampered) - 4)] ^= mask
    inputs = [bytes(tampered), garbage, bytes(tampered[:-20]) + garbage]
    if fix_crc:
        inputs = [_recrc(d) if len(d) >= 4 else d for d in inputs]
    for datagram in inputs:
        pair.server.receive_datagram(datagram, pair.now)
    assert [e for e in _drain_events(pair.server) if isinstance(e, MessageReceived)] == []
    pair.server.receive_datagram(genuine, pair.now)
    assert [e.data for e in _drain_events(pair.server) if isinstance(e, MessageReceived)] == [
        b"authentic"
    ]


@settings(max_examples=100, deadline=None)
@given(
    ptype=st.sampled_from([PacketType.DATA, PacketType.ACK, PacketType.PING, PacketType.RESET]),
    number=st.integers(0, 2**40),
    seq=st.integers(0, 2**40),
    sack=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=4),
    payload=st.binary(max_size=300),
)
def test_encoder_sealing_is_the_sealed_layout(
    ptype: PacketType, number: int, seq: int, sack: list[tuple[int, int]], payload: bytes
) -> None:
    """Section 3.7: a datagram the encoder seals as it lays it out is byte for byte the
    plain datagram sealed afterwards (``wire_sealed.seal_datagram``, the fallback for
    datagrams made before the keys), and it opens to the plain packet."""
    from rudp.core.noise import CipherState
    from rudp.core.protection import PacketProtection

    if ptype is not PacketType.DATA:  # the payload rules of section 3.4
        payload = (payload + bytes(16))[:16] if ptype is PacketType.RESET else b""
    send, receive = CipherState(bytes(range(32))), CipherState(bytes(range(32)))
    acks = AckFields(seq + 5, 300, number // 2, 17)
    plain = wire.encode_fields(ptype, 0, 0xABCD, number, seq, acks, payload, sack)
    sealed = wire.encode_fields(ptype, 0, 0xABCD, number, seq, acks, payload, sack, send.encrypt_at)
    assert sealed == seal_datagram(plain, number, send.encrypt_at)
    assert len(sealed) == len(plain) + wire.AEAD_TAG_SIZE and is_sealed(sealed)
    receiver = PacketProtection(CipherState(bytes(32)), receive)
    receiver.window.largest = max(number - 1, -1)
    opened = receiver.open(wire.decode(sealed))
    assert opened is not None and opened == wire.decode(plain)._replace(payload=payload)
