"""Conformance tests of the answer tags (spec section 6.8.1): with a pre-shared key, the
server's stateless answers to a SYN, a refusing RESET and a RETRY, carry a tag that the
client checks against its own Noise message before acting on them.

As in tests/test_spec_psk.py, the engines are real ``SansIOConnection``s and
``Endpoint``s on a virtual clock, and a stranger's packets are built with
``rudp.core.wire`` and given a valid CRC, so that only the tag can refuse them.
"""

from __future__ import annotations

import random

import pytest
from test_spec import _drain_events

from rudp.config import Config
from rudp.core import wire
from rudp.core.answer_tags import AnswerTags
from rudp.core.connection import SansIOConnection
from rudp.core.endpoint import Endpoint
from rudp.core.state import ConnectionState
from rudp.core.wire import AckFields, PacketType
from rudp.events import Connected, Failed, FailureKind

PSK = bytes(range(32))
OTHER_PSK = bytes(range(100, 132))
FIRST_CLIENT = ("192.0.2.6", 40000)
CLIENT = ("192.0.2.7", 40000)
REFUSED = "connection refused by peer"


def _client(psk: bytes | None, seed: int = 11) -> tuple[SansIOConnection, bytes]:
    client = SansIOConnection(Config(psk=psk), is_client=True, rng=random.Random(seed))
    client.connect(0.0)
    (syn,) = client.datagrams_to_send(0.0)
    return client, syn


def _full_server(psk: bytes | None) -> Endpoint:
    """A listener at ``max_connections`` = 1, its one connection taken by another client."""
    server = Endpoint(
        Config(psk=psk, max_connections=1), accepting=True, rng=random.Random(3), static_key=PSK
    )
    _, first_syn = _client(psk, seed=99)
    server.receive_datagram(first_syn, FIRST_CLIENT, 0.0)
    assert len(server) == 1
    server.datagrams_to_send(0.0)  # its SYN_ACK
    return server


def _refusal_of(server: Endpoint, syn: bytes) -> bytes:
    server.receive_datagram(syn, CLIENT, 0.0)
    (reset,) = [d for d, address in server.datagrams_to_send(0.0) if address == CLIENT]
    assert wire.decode(reset).type is PacketType.RESET
    return reset


def _reset_to(client: SansIOConnection, syn: bytes, token: bytes) -> bytes:
    """A RESET as a full server makes it (stateless, acknowledging exactly the SYN)."""
    packet = wire.decode(syn)
    acks = AckFields(packet.seq + 1, 0, packet.packet_number, 0)
    cid = client.local_connection_id
    assert cid is not None
    return wire.encode_fields(PacketType.RESET, 0, cid, 0, 0, acks, token, ())


def test_s6_8_1_1_a_keyed_refusal_is_tagged_and_believed_at_once() -> None:
    """§6.8.1-1: a keyed server refusing a SYN puts the refusal tag of the SYN's Noise
    message in its RESET (and section 6.8.1-2: the keyed client takes that RESET unsealed,
    and fails at once with the refusal instead of waiting out its peer timeout)."""
    client, syn = _client(PSK)
    reset = _refusal_of(_full_server(PSK), syn)
    noise = wire.noise_message(wire.decode(syn).payload)
    assert noise is not None
    payload = wire.decode(reset).payload
    assert payload == AnswerTags(PSK).refusal(noise) != wire.NO_RESET_TOKEN
    assert len(reset) == wire.OVERHEAD + wire.RESET_TOKEN_SIZE  # still below the SYN
    client.receive_datagram(reset, 0.001)
    (failed,) = [event for event in _drain_events(client) if isinstance(event, Failed)]
    assert failed.kind is FailureKind.RESET_BY_PEER and failed.reason.startswith(REFUSED)
    assert client.state is ConnectionState.FAILED
    # Without a key nothing changes: the token stays all zeros, and is believed.
    plain_client, plain_syn = _client(None)
    plain_reset = _refusal_of(_full_server(None), plain_syn)
    assert wire.decode(plain_reset).payload == wire.NO_RESET_TOKEN
    plain_client.receive_datagram(plain_reset, 0.001)
    assert plain_client.state is ConnectionState.FAILED


def test_s6_8_1_2_untagged_or_forged_refusals_change_nothing() -> None:
    """§6.8.1-2: a keyed client in SYN_SENT drops a RESET without the refusal tag of its
    own Noise message: all zeros, a tag under another key, or the tag of another SYN."""
    client, syn = _client(PSK)
    _, other_syn = _client(PSK, seed=12)
    noise = wire.noise_message(wire.decode(syn).payload)
    other_noise = wire.noise_message(wire.decode(other_syn).payload)
    assert noise is not None and other_noise is not None and noise != other_noise
    forgeries = [
        wire.NO_RESET_TOKEN,
        AnswerTags(OTHER_PSK).refusal(noise),
        AnswerTags(PSK).refusal(other_noise),
        AnswerTags(PSK).retry(noise, bytes(wire.RETRY_TOKEN_SIZE)),  # the other kind of tag
    ]
    timer = client.get_timer()
    for count, token in enumerate(forgeries, start=1):
        client.receive_datagram(_reset_to(client, syn, token), 0.001)
        assert client.state is ConnectionState.SYN_SENT and client.get_timer() == timer
        assert client.stats.datagrams_unauthenticated == count
        assert client.stats.datagrams_dropped == count
        assert _drain_events(client) == []
    # The genuine refusal still ends it, after the forgeries.
    client.receive_datagram(_reset_to(client, syn, AnswerTags(PSK).refusal(noise)), 0.002)
    assert client.state is ConnectionState.FAILED


def _retry_to(client: SansIOConnection, syn: bytes, payload: bytes) -> bytes:
    """A RETRY as a server makes it, with any ``payload`` (20 or 36 bytes)."""
    packet = wire.decode(syn)
    acks = AckFields(packet.seq + 1, 0, packet.packet_number, 0)
    cid = client.local_connection_id
    assert cid is not None
    return wire.encode_fields(PacketType.RETRY, 0, cid, 0, 0, acks, payload)


def _retrying_server(psk: bytes | None) -> Endpoint:
    return Endpoint(
        Config(psk=psk), accepting=True, rng=random.Random(3), static_key=PSK, retry="always"
    )


def test_s6_8_1_3_a_keyed_retry_is_tagged_and_followed() -> None:
    """§6.8.1-3: a keyed server's RETRY carries its token and the token's retry tag over the
    SYN's Noise message (78 bytes, under the keyed SYN's 146); the keyed client follows it,
    echoes the token alone, and connects."""
    client, syn = _client(PSK)
    server = _retrying_server(PSK)
    server.receive_datagram(syn, CLIENT, 0.0)
    ((retry, _),) = server.datagrams_to_send(0.0)
    payload = wire.decode(retry).payload
    token, tag = payload[: wire.RETRY_TOKEN_SIZE], payload[wire.RETRY_TOKEN_SIZE :]
    noise = wire.noise_message(wire.decode(syn).payload)
    assert noise is not None and tag == AnswerTags(PSK).retry(noise, token)
    parsed = wire.TAGGED_RETRY.parse(payload)  # the reference schema (section 3.5) agrees
    assert wire.RETRY_TOKEN.build(parsed.token) == token and parsed.tag == tag
    assert len(retry) == wire.OVERHEAD + wire.TAGGED_RETRY_SIZE == 78 < len(syn) == 146
    client.receive_datagram(retry, 0.001)
    (resent,) = client.datagrams_to_send(0.001)
    assert wire.syn_token(wire.decode(resent).payload) == token
    server.receive_datagram(resent, CLIENT, 0.001)
    now = 0.001
    for _ in range(6):
        for datagram, _ in server.datagrams_to_send(now):
            client.receive_datagram(datagram, now)
        for datagram in client.datagrams_to_send(now):
            server.receive_datagram(datagram, CLIENT, now)
        now += 0.01
    assert client.is_established and any(isinstance(e, Connected) for e in _drain_events(client))
    assert server.stats.retries_sent == 1 and server.stats.addresses_validated == 1


def test_s6_8_1_4_untagged_or_forged_retries_are_not_followed() -> None:
    """§6.8.1-4: a keyed client drops a RETRY whose tag does not verify under the key for
    its own Noise message (untagged, another key, another SYN's, a refusal tag), and still
    follows the genuine one after them."""
    client, syn = _client(PSK)
    _, other_syn = _client(PSK, seed=12)
    noise = wire.noise_message(wire.decode(syn).payload)
    other_noise = wire.noise_message(wire.decode(other_syn).payload)
    assert noise is not None and other_noise is not None
    token = bytes(range(wire.RETRY_TOKEN_SIZE))
    forgeries = [
        token,  # an unkeyed server's RETRY, or a stranger's
        token + AnswerTags(OTHER_PSK).retry(noise, token),
        token + AnswerTags(PSK).retry(other_noise, token),
        token + AnswerTags(PSK).refusal(noise),
    ]
    for count, payload in enumerate(forgeries, start=1):
        client.receive_datagram(_retry_to(client, syn, payload), 0.001)
        assert client.datagrams_to_send(0.001) == []  # no SYN resent: not followed
        assert client.stats.datagrams_unauthenticated == count
        assert client.state is ConnectionState.SYN_SENT
    genuine = token + AnswerTags(PSK).retry(noise, token)
    client.receive_datagram(_retry_to(client, syn, genuine), 0.002)
    (resent,) = client.datagrams_to_send(0.002)
    assert wire.syn_token(wire.decode(resent).payload) == token


def test_s6_8_1_4_unkeyed_client_does_not_follow_a_tagged_retry() -> None:
    """§6.8.1-4: an unkeyed client takes only the 20-byte RETRY of an unkeyed server
    (a tagged one comes from a keyed server, which it could never connect to)."""
    client, syn = _client(None)
    token = bytes(range(wire.RETRY_TOKEN_SIZE))
    client.receive_datagram(_retry_to(client, syn, token + bytes(wire.ANSWER_TAG_SIZE)), 0.001)
    assert client.datagrams_to_send(0.001) == [] and client.stats.datagrams_dropped == 1
    client.receive_datagram(_retry_to(client, syn, token), 0.002)
    (resent,) = client.datagrams_to_send(0.002)
    assert wire.syn_token(wire.decode(resent).payload) == token


@pytest.mark.parametrize("size", [0, 19, 21, 35, 37])
def test_retry_payload_is_20_or_36_bytes(size: int) -> None:
    """Section 3.6: a RETRY's payload is its token, or with a key the token and its tag;
    any other length is rejected by the decoder."""
    for good in (wire.RETRY_TOKEN_SIZE, wire.TAGGED_RETRY_SIZE):
        packet = wire.Packet(PacketType.RETRY, 0, 5, 0, 1, 0, 0, (), bytes(good))
        assert wire.decode(wire.encode(packet)).payload == bytes(good)
    bad = wire.Packet(PacketType.RETRY, 0, 5, 0, 1, 0, 0, (), bytes(size))
    with pytest.raises(wire.BadPacket, match="RETRY"):
        wire.decode(wire.encode(bad))
