"""Tests of ``rudp.core.noise``: Noise_NNpsk0_25519_ChaChaPoly_SHA256 (Noise revision 34)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from rudp.core.noise import (
    KEY_SIZE,
    MESSAGE_OVERHEAD,
    PROTOCOL_NAME,
    TAG_SIZE,
    CipherState,
    HandshakeState,
)
from rudp.errors import BadPacket

# The Noise_NNpsk0_25519_ChaChaPoly_SHA256 vector of cacophony's test vectors (public domain):
# github.com/haskell-cryptography/cacophony, vectors/cacophony.txt (commit 8ee9d41e; the
# same file ships as tests/vectors/cacophony.txt in mcginty/snow).  No "one_way" field: the
# messages alternate initiator->responder, responder->initiator, also after the handshake.
PROLOGUE = bytes.fromhex("4a6f686e2047616c74")
PSK = bytes.fromhex("54686973206973206d7920417573747269616e20706572737065637469766521")
INIT_EPHEMERAL = bytes.fromhex("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
RESP_EPHEMERAL = bytes.fromhex("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
HANDSHAKE_HASH = bytes.fromhex("f4d03dc34495c95729ea6de9e1b59004b59733102488b3e24bc441e0be208eaf")
MESSAGES = [  # (payload, ciphertext)
    (
        "4c756477696720766f6e204d69736573",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
        "79b962b8aff8485742ac32f905ba45369e2465fb59e138a93d67a0d1266b6a54",
    ),
    (
        "4d757272617920526f746862617264",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
        "d6062704d5a9c422a8e834423f8c1feada7e8d0d910a1a2cd030fb584221e3",
    ),
    ("462e20412e20486179656b", "e632c3763d7669067383433197a3baddf146e9e70ad4b4e9e59e0f"),
    ("4361726c204d656e676572", "64c6bee32ea91c8474bb4c21d7a700109ad45af77b29764ba5eb1e"),
    (
        "4a65616e2d426170746973746520536179",
        "e2fa0bed0603b62d3ccac2ecabbf3fe33f3e86514909b323361626266cb2471cc8",
    ),
    (
        "457567656e2042f6686d20766f6e2042617765726b",
        "0c01dc9cec1fe4ddd692e8dd32188aa351088dc91183639a53b57aa4692b5ebdef8b8ca111",
    ),
]
VECTOR = [(bytes.fromhex(p), bytes.fromhex(c)) for p, c in MESSAGES]
LOW_ORDER_POINTS = [bytes(32), b"\x01" + bytes(31)]  # X25519 with these gives all zeros

keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
payloads = st.binary(max_size=200)


def pair(
    psk: bytes = PSK,
    e_i: bytes = INIT_EPHEMERAL,
    e_r: bytes = RESP_EPHEMERAL,
    prologue: bytes = PROLOGUE,
    responder_psk: bytes | None = None,
) -> tuple[HandshakeState, HandshakeState]:
    initiator = HandshakeState(initiator=True, psk=psk, ephemeral_private=e_i, prologue=prologue)
    responder = HandshakeState(
        initiator=False, psk=responder_psk or psk, ephemeral_private=e_r, prologue=prologue
    )
    return initiator, responder


def test_protocol_constants() -> None:
    assert PROTOCOL_NAME == b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
    assert (KEY_SIZE, TAG_SIZE, MESSAGE_OVERHEAD) == (32, 16, 48)


def test_cacophony_vector() -> None:
    initiator, responder = pair()
    (p1, c1), (p2, c2) = VECTOR[:2]
    assert initiator.write_message(p1) == c1
    assert responder.read_message(c1) == p1
    assert not initiator.finished and not responder.finished
    assert responder.write_message(p2) == c2
    assert initiator.read_message(c2) == p2
    assert initiator.finished and responder.finished
    assert initiator.handshake_hash == responder.handshake_hash == HANDSHAKE_HASH
    assert len(c1) == len(p1) + MESSAGE_OVERHEAD

    i_send, i_receive = initiator.split()
    r_receive, r_send = responder.split()
    for index, (payload, ciphertext) in enumerate(VECTOR[2:]):
        sender, receiver = (i_send, r_receive) if index % 2 == 0 else (r_send, i_receive)
        nonce = index // 2
        assert sender.nonce == receiver.nonce == nonce
        assert sender.encrypt_at(nonce, b"", payload) == ciphertext  # explicit = implicit n
        assert sender.encrypt_with_ad(b"", payload) == ciphertext
        assert receiver.decrypt_at(nonce, b"", ciphertext) == payload
        assert receiver.decrypt_with_ad(b"", ciphertext) == payload
    assert (i_send.nonce, i_receive.nonce, r_send.nonce, r_receive.nonce) == (2, 2, 2, 2)


def test_cacophony_vector_takes_buffers() -> None:
    initiator, responder = pair()
    (p1, c1), (p2, c2) = VECTOR[:2]
    assert initiator.write_message(p1) == c1
    assert responder.read_message(memoryview(c1)) == p1
    assert responder.write_message(p2) == c2
    assert initiator.read_message(bytearray(c2)) == p2
    send, _ = initiator.split()
    payload, ciphertext = VECTOR[2]
    assert send.encrypt_at(0, memoryview(b""), bytearray(payload)) == ciphertext
    assert responder.split()[0].decrypt_at(0, bytearray(), memoryview(ciphertext)) == payload


@given(psk=keys, e_i=keys, e_r=keys, prologue=st.binary(max_size=40), p1=payloads, p2=payloads)
def test_round_trip(
    psk: bytes, e_i: bytes, e_r: bytes, prologue: bytes, p1: bytes, p2: bytes
) -> None:
    initiator, responder = pair(psk, e_i, e_r, prologue)
    message1 = initiator.write_message(p1)
    assert len(message1) == len(p1) + MESSAGE_OVERHEAD
    if len(p1) >= 8:
        assert p1 not in message1  # the payload is encrypted
    assert responder.read_message(message1) == p1
    assert initiator.read_message(responder.write_message(p2)) == p2
    assert initiator.handshake_hash == responder.handshake_hash
    i_send, i_receive = initiator.split()
    r_receive, r_send = responder.split()
    assert i_send.key == r_receive.key and i_receive.key == r_send.key
    assert i_send.key != i_receive.key and i_send.key is not None
    assert r_receive.decrypt_with_ad(b"ad", i_send.encrypt_with_ad(b"ad", p1)) == p1
    assert i_receive.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", p2)) == p2


def handshake(
    initiator: HandshakeState, responder: HandshakeState, p1: bytes = b"", p2: bytes = b""
) -> tuple[CipherState, CipherState]:
    """Run both messages; the initiator's split."""
    assert responder.read_message(initiator.write_message(p1)) == p1
    assert initiator.read_message(responder.write_message(p2)) == p2
    return initiator.split()


def public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


@given(e_i=keys, e_r=keys)
def test_other_ephemerals_give_other_keys(e_i: bytes, e_r: bytes) -> None:
    reference = handshake(*pair())
    initiator, responder = pair(e_i=e_i, e_r=e_r)
    split = handshake(initiator, responder)
    same = (public(e_i), public(e_r)) == (public(INIT_EPHEMERAL), public(RESP_EPHEMERAL))
    assert (initiator.handshake_hash == HANDSHAKE_HASH) == same
    assert (split[0].key == reference[0].key) == same
    assert (split[1].key == reference[1].key) == same


@given(psk=keys, other=keys)
def test_wrong_psk_fails_at_the_responder(psk: bytes, other: bytes) -> None:
    if psk == other:
        other = bytes(b ^ 1 for b in other)
    initiator, responder = pair(psk, responder_psk=other)
    message1 = initiator.write_message(b"hello")
    with pytest.raises(BadPacket):
        responder.read_message(message1)
    assert not responder.finished
    with pytest.raises(RuntimeError):  # the failed read did not advance the responder
        responder.write_message()


def test_prologue_mismatch_fails() -> None:
    initiator = HandshakeState(initiator=True, psk=PSK, ephemeral_private=INIT_EPHEMERAL)
    _, responder = pair()
    with pytest.raises(BadPacket):
        responder.read_message(initiator.write_message())


@given(data=st.data(), p1=payloads, p2=payloads)
def test_flipped_byte_in_message1_fails_then_genuine_works(
    data: st.DataObject, p1: bytes, p2: bytes
) -> None:
    initiator, responder = pair()
    message1 = initiator.write_message(p1)
    index = data.draw(st.integers(0, len(message1) - 1), label="index")
    mask = data.draw(st.integers(1, 255), label="mask")
    forged = bytearray(message1)
    forged[index] ^= mask
    hash_before = responder.handshake_hash
    with pytest.raises(BadPacket):
        responder.read_message(bytes(forged))
    assert responder.handshake_hash == hash_before
    assert responder.read_message(message1) == p1
    assert initiator.read_message(responder.write_message(p2)) == p2
    assert initiator.split()[0].key == responder.split()[0].key


@given(data=st.data(), p2=payloads)
def test_flipped_byte_in_message2_fails_then_genuine_works(data: st.DataObject, p2: bytes) -> None:
    initiator, responder = pair()
    responder.read_message(initiator.write_message())
    message2 = responder.write_message(p2)
    index = data.draw(st.integers(0, len(message2) - 1), label="index")
    forged = bytearray(message2)
    forged[index] ^= data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(BadPacket):
        initiator.read_message(bytes(forged))
    assert not initiator.finished
    assert initiator.read_message(message2) == p2
    assert initiator.handshake_hash == responder.handshake_hash


def test_truncated_or_extended_messages_fail() -> None:
    initiator, responder = pair()
    message1 = initiator.write_message(b"x")
    for bad in (b"", message1[: MESSAGE_OVERHEAD - 1], message1[:-1], message1 + b"\0"):
        with pytest.raises(BadPacket):
            responder.read_message(bad)
    with pytest.raises(BadPacket):
        responder.read_message(bytes(65536))
    assert responder.read_message(message1) == b"x"


def test_messages_out_of_turn_fail() -> None:
    initiator, responder = pair()
    message1 = initiator.write_message()
    with pytest.raises(BadPacket):  # the initiator expects message 2, not its own message 1
        initiator.read_message(message1)
    with pytest.raises(RuntimeError):
        initiator.write_message()
    with pytest.raises(RuntimeError):
        responder.write_message()  # the responder has not read message 1
    responder.read_message(message1)
    with pytest.raises(BadPacket):
        responder.read_message(message1)  # a replayed message 1
    message2 = responder.write_message()
    initiator.read_message(message2)
    for side in (initiator, responder):
        with pytest.raises(BadPacket):
            side.read_message(message2)
        with pytest.raises(RuntimeError):
            side.write_message()


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_ephemeral_in_message1_fails(point: bytes) -> None:
    initiator, responder = pair()
    genuine = pair()[0].write_message(b"p")
    initiator._e_pub = point  # a peer that knows the PSK but sends a low-order e
    forged = initiator.write_message(b"p")
    assert forged[:KEY_SIZE] == point
    with pytest.raises(BadPacket):
        responder.read_message(forged)
    assert responder.read_message(genuine) == b"p"


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_ephemeral_in_message2_fails(point: bytes) -> None:
    initiator, responder = pair()
    message1 = initiator.write_message()
    responder.read_message(message1)
    genuine = responder.write_message(b"q")
    _, forger = pair()
    forger.read_message(message1)
    forger._e_pub = point
    forged = forger.write_message(b"q")
    with pytest.raises(BadPacket):
        initiator.read_message(forged)
    assert initiator.read_message(genuine) == b"q"


def test_usage_errors() -> None:
    for size in (0, 16, 31, 33):
        with pytest.raises(ValueError):
            HandshakeState(initiator=True, psk=bytes(size), ephemeral_private=INIT_EPHEMERAL)
        with pytest.raises(ValueError):
            HandshakeState(initiator=True, psk=PSK, ephemeral_private=bytes(size))
        with pytest.raises(ValueError):
            CipherState(bytes(size))
    initiator, responder = pair()
    with pytest.raises(RuntimeError):
        initiator.split()
    responder.read_message(initiator.write_message())
    for side in (initiator, responder):
        with pytest.raises(RuntimeError):
            side.split()
    with pytest.raises(ValueError):
        responder.write_message(bytes(65535 - MESSAGE_OVERHEAD + 1))
    assert len(responder.write_message(bytes(65535 - MESSAGE_OVERHEAD))) == 65535


@pytest.mark.parametrize("nonce", [2**64 - 1, 2**64, -1, 2**70])
def test_reserved_and_out_of_range_nonces(nonce: int) -> None:
    cipher = CipherState(bytes(range(32)))
    with pytest.raises(ValueError):
        cipher.encrypt_at(nonce, b"", b"data")
    with pytest.raises(ValueError):
        cipher.decrypt_at(nonce, b"", bytes(TAG_SIZE))
    cipher.nonce = nonce
    with pytest.raises(ValueError):
        cipher.encrypt_with_ad(b"", b"data")
    assert cipher.nonce == nonce


def test_largest_nonce_and_encoding() -> None:
    cipher = CipherState(bytes(range(32)))
    cipher.nonce = 2**64 - 2
    ciphertext = cipher.encrypt_with_ad(b"ad", b"last")
    assert cipher.nonce == 2**64 - 1
    assert CipherState(bytes(range(32))).decrypt_at(2**64 - 2, b"ad", ciphertext) == b"last"


def test_cipher_without_key() -> None:
    cipher = CipherState()
    assert cipher.key is None
    assert cipher.encrypt_with_ad(b"ad", b"clear") == b"clear"  # section 5.1
    assert cipher.decrypt_with_ad(b"ad", b"clear") == b"clear"
    with pytest.raises(RuntimeError):
        cipher.encrypt_at(0, b"", b"x")
    with pytest.raises(RuntimeError):
        cipher.decrypt_at(0, b"", bytes(TAG_SIZE))


@given(
    key=keys,
    nonce=st.integers(0, 2**64 - 2),
    other=st.integers(0, 2**64 - 2),
    ad=st.binary(max_size=40),
    plaintext=st.binary(max_size=1500),
)
def test_explicit_nonce_round_trip(
    key: bytes, nonce: int, other: int, ad: bytes, plaintext: bytes
) -> None:
    sender, receiver = CipherState(key), CipherState(key)
    ciphertext = sender.encrypt_at(nonce, ad, plaintext)
    assert len(ciphertext) == len(plaintext) + TAG_SIZE
    assert sender.nonce == 0  # untouched
    assert receiver.decrypt_at(nonce, ad, ciphertext) == plaintext
    sender.nonce = nonce
    assert sender.encrypt_with_ad(ad, plaintext) == ciphertext
    if other != nonce:
        with pytest.raises(BadPacket):
            receiver.decrypt_at(other, ad, ciphertext)
    with pytest.raises(BadPacket):
        receiver.decrypt_at(nonce, ad + b"!", ciphertext)
    with pytest.raises(BadPacket):
        receiver.decrypt_at(nonce, ad, ciphertext[:-1])
    receiver.nonce = nonce
    forged = bytearray(ciphertext)
    forged[-1] ^= 1
    with pytest.raises(BadPacket):
        receiver.decrypt_with_ad(ad, forged)
    assert receiver.nonce == nonce  # advances only on success
    assert receiver.decrypt_with_ad(ad, ciphertext) == plaintext
    assert receiver.nonce == nonce + 1
