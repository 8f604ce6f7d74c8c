"""The pre-shared-key handshake (specs/protocol.md section 6.8): Noise NNpsk0.

With ``Config.psk`` both sides run the Noise pattern NNpsk0 (``-> psk, e`` then
``<- e, ee``; ``rudp.core.noise``) inside the SYN and the SYN_ACK.  The PSK authenticates
both messages, the ephemeral-ephemeral X25519 exchange gives every connection fresh keys
that a later theft of the PSK does not reveal (forward secrecy), and Noise's ``Split``
gives one key per direction for ``rudp.core.protection``.  WireGuard builds on a Noise
pattern in the same way; NNpsk0 needs no static keys, only the shared secret.

Each message's sealed payload is its sender's real handshake block (with the reset token,
which the clear block carries as zeros) and its initial sequence number.  The receiver
takes the handshake only if they agree with the clear block and the header, so nothing the
handshake decides is left unauthenticated.  A retransmitted SYN or SYN_ACK carries the
same message: the first one is computed once and kept, and the peer's is recognised.
"""

from __future__ import annotations

import random

from rudp.core import wire
from rudp.core.answer_tags import AnswerTags
from rudp.core.noise import KEY_SIZE, HandshakeState
from rudp.core.protection import PacketProtection
from rudp.core.wire import Flags, Handshake, Packet, PacketType
from rudp.errors import BadPacket

PROLOGUE = b"rudp/%d Noise_NNpsk0" % wire.VERSION
"""Bound into the Noise transcript: a peer of another wire version cannot complete."""
_ISN_SIZE = 4
_SEALED = int(Flags.SEALED)
_CLEAR_TYPES = frozenset(
    (PacketType.SYN, PacketType.SYN_ACK, PacketType.RETRY, PacketType.STATELESS_RESET)
)
"""Taken unsealed (section 3.7-2): the handshake, which carries Noise's own messages, a
RETRY (stateless) and a stateless reset (its token travelled sealed in the handshake)."""
_CLEAR_CODES = frozenset((int(PacketType.SYN), int(PacketType.SYN_ACK)))


class SecureHandshake:
    """One connection's Noise NNpsk0 handshake: our message, the peer's, the keys."""

    def __init__(self, psk: bytes, *, is_client: bool, rng: random.Random) -> None:
        self._state = HandshakeState(
            initiator=is_client,
            psk=psk,
            ephemeral_private=rng.getrandbits(8 * KEY_SIZE).to_bytes(KEY_SIZE, "big"),
            prologue=PROLOGUE,
        )
        self._is_client = is_client
        self._tags = AnswerTags(psk)
        self.message: bytes | None = None
        """Our Noise message, once written (every retransmission carries it again)."""
        self._peer_message: bytes | None = None
        self._peer_block: Handshake | None = None
        self.protection: PacketProtection | None = None
        """The transport keys, once the handshake is complete on our side."""
        self.failures = 0
        """Handshake messages that did not authenticate (or disagreed with their clear
        fields, or differed from the message already read), and packets that came unsealed
        or before the keys."""

    def write(self, block: Handshake, isn: int) -> bytes:
        """Our message (computed the first time): it seals ``block`` and ``isn``."""
        if self.message is None:
            payload = wire.encode_handshake(block) + isn.to_bytes(_ISN_SIZE, "big")
            self.message = self._state.write_message(payload)
            self._split_if_finished()
        return self.message

    def read(self, message: bytes, clear: Handshake, isn: int) -> Handshake | None:
        """The peer's authenticated handshake block, or None if ``message`` does not
        authenticate or disagrees with the clear ``block`` or the header's ``isn``.  A
        retransmission of the message already read gives the same block again."""
        if self._peer_message is not None:
            if message == self._peer_message:
                return self._peer_block
            self.failures += 1  # section 6.8-3: one message per connection
            return None
        try:
            payload = self._state.read_message(message)
            block = wire.decode_handshake(payload[: wire.HANDSHAKE_SIZE])
        except BadPacket:
            self.failures += 1
            return None
        sealed_isn = int.from_bytes(payload[wire.HANDSHAKE_SIZE :], "big")
        if (
            sealed_isn != isn
            or block.source_connection_id != clear.source_connection_id
            or block.max_datagram_size != clear.max_datagram_size
        ):
            self.failures += 1  # the clear fields were changed on the way (a forgery)
            return None
        self._peer_message = message
        self._peer_block = block
        self._split_if_finished()
        return block

    # --- the connection's datagrams, once keyed (section 3.7) ----------------------------

    def inbound(self, packet: Packet) -> Packet | None:
        """``packet`` opened (or as it is, for the types never sealed), or None: dropped,
        because it is unsealed, arrived before the keys, is a replay or does not verify."""
        if packet.type in _CLEAR_TYPES:
            return packet
        protection = self.protection
        if protection is None and packet.type is PacketType.RESET and self._is_refusal(packet):
            return packet  # section 6.8.1-2: a refusal of our SYN by a holder of the key
        if protection is None or not packet.flags & _SEALED:
            self.failures += 1
            return None
        return protection.open(packet)  # counts its own failures and replays

    def _is_refusal(self, packet: Packet) -> bool:
        message = self.message
        return (
            self._is_client
            and message is not None
            and not packet.flags & _SEALED
            and self._tags.is_refusal(packet.payload, message)
        )

    def retry_token(self, payload: bytes) -> bytes | None:
        """The token of a RETRY answering our SYN, or None (counted) unless its answer tag
        shows a holder of the key made it for our Noise message (section 6.8.1-4)."""
        message = self.message
        token = None if message is None else self._tags.retry_token(payload, message)
        if token is None:
            self.failures += 1
        return token

    def outbound(self, datagrams: list[bytes]) -> list[bytes]:
        """What may go out: once the keys exist, everything (the encoders sealed all but
        SYN and SYN_ACK with ``seal``); before, only SYN and SYN_ACK, since a datagram made
        then (a client aborting before the SYN_ACK) is unsealed and the peer takes nothing
        unsealed."""
        if self.protection is not None:
            return datagrams
        return [d for d in datagrams if wire.peek_type(d) in _CLEAR_CODES]

    @property
    def seal(self) -> wire.Seal | None:
        """What the encoders seal with, once the keys exist."""
        protection = self.protection
        return protection.encrypt if protection is not None else None

    @property
    def unauthenticated(self) -> int:
        """Datagrams and handshake messages dropped as not authentic (``Stats``)."""
        opened = self.protection
        return self.failures + (opened.failures if opened is not None else 0)

    @property
    def replays(self) -> int:
        """Sealed datagrams dropped by the replay window (``Stats``)."""
        return self.protection.replays if self.protection is not None else 0

    def _split_if_finished(self) -> None:
        if self._state.finished and self.protection is None:
            initiator_to_responder, responder_to_initiator = self._state.split()
            if self._is_client:
                self.protection = PacketProtection(initiator_to_responder, responder_to_initiator)
            else:
                self.protection = PacketProtection(responder_to_initiator, initiator_to_responder)
