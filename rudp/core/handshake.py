"""The opening handshake (specs/protocol.md section 6.2), sans-IO like the rest of the core.

``Opening`` handles what only the handshake needs: the SYN and SYN_ACK packets
and the first packet that acknowledges a SYN_ACK, what they tell about the peer
(its connection id, initial sequence number and datagram size), our own SYN or
SYN_ACK and its retransmission (the same RTO and give-up budget as data,
section 9), its RTT sample (named by the peer's packet-number echo), and the
server's anti-amplification limit, and the client's answer to a RETRY (section 6.2.1: the
SYN again at once, with the token).  It moves the connection's ``StateMachine``
like every other part, and reports to ``rudp.core.connection`` what the
connection must count or remember.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from rudp.config import Config
from rudp.core import wire
from rudp.core.receiver import Receiver
from rudp.core.secure_handshake import SecureHandshake
from rudp.core.sender import Sender
from rudp.core.state import ConnectionState, Input, StateMachine
from rudp.core.wire import Handshake, Packet, PacketType
from rudp.errors import BadPacket
from rudp.events import Connected, Event

MAX_UNVERIFIED_SYN_ACK_RETRANSMITS = 2
"""Timer-driven SYN_ACK retransmissions before the client proved its address (a spoofed
SYN then costs at most three SYN_ACKs)."""

HANDSHAKE_SAMPLES: Final = 8
"""SYN / SYN_ACK transmissions remembered for the first RTT sample (the newest ones)."""

REJECTED: Final = 0
"""Result: the packet is not acceptable here; the connection drops and counts it."""
HEARD: Final = 1
"""Result: an authentic handshake packet (the peer is alive)."""
OPENED: Final = 2
"""Result: the handshake finished; ``Connected`` was queued."""


class Opening:
    """One connection's handshake: the peer it learns, and our SYN or SYN_ACK."""

    def __init__(
        self,
        config: Config,
        *,
        is_client: bool,
        local_connection_id: int,
        reset_token: bytes,
        initial_sequence: int,
        machine: StateMachine,
        sender: Sender,
        receiver: Receiver,
        events: deque[Event],
        secure: SecureHandshake | None = None,
    ) -> None:
        self._config = config
        self._secure = secure
        # With a key, every datagram after the handshake carries a tag (section 3.7).
        self._overhead = wire.OVERHEAD + (wire.AEAD_TAG_SIZE if secure is not None else 0)
        self._is_client = is_client
        self._local_id = local_connection_id
        self.reset_token = reset_token
        """Our stateless-reset token, announced in our handshake block (section 6.6)."""
        self._isn = initial_sequence
        self._sm = machine
        self._sender = sender
        self._receiver = receiver
        self._events = events
        self.remote_connection_id: int | None = None
        """The peer's connection id, once its SYN or SYN_ACK told us."""
        self.peer_isn: int | None = None
        """The peer's initial sequence number, likewise."""
        self.peer_reset_token: bytes = wire.NO_RESET_TOKEN
        """The token the peer's resets carry (its handshake block; all zeros until then)."""
        self.max_datagram = config.max_datagram_size
        """The effective datagram size: ours, then the smaller of ours and the peer's."""
        self.sack_limit = self._sack_limit(self.max_datagram)
        """SACK blocks that fit in one ACK of ``max_datagram`` bytes."""
        if secure is not None:
            self._set_payload_size(self.max_datagram)
        self.deadline: float | None = None
        """When our SYN / SYN_ACK is retransmitted (None: not armed)."""
        self.due = False
        """Our SYN / SYN_ACK goes out with the next ``datagram()``."""
        # Packet number -> send time of each SYN / SYN_ACK transmission: the peer's echo
        # names the one it answered, so even a resent handshake gives an RTT sample
        # (section 9.1; no Karn ambiguity).  Only the newest HANDSHAKE_SAMPLES are kept:
        # a peer repeating its SYN cannot grow it.
        self._sent_at: dict[int, float] = {}
        self._retries = 0  # handshake timeouts so far: the give-up budget
        self.retry_token: bytes | None = None
        """Client: the token of the server's RETRY, echoed by every later SYN (section 6.2.1)."""

    def _sack_limit(self, size: int) -> int:
        return min(wire.MAX_SACK_BLOCKS, (size - self._overhead) // wire.SACK_SIZE)

    def _set_payload_size(self, size: int) -> None:
        payload = size - self._overhead
        self._sender.set_max_payload(payload)
        self._receiver.set_payload_size(payload)  # the window's unit (11.1)

    def _block(self, packet: Packet) -> Handshake | None:
        """The handshake block a SYN or SYN_ACK carries, or None if it does not parse or,
        with a key, does not authenticate (section 6.8)."""
        try:
            clear = wire.decode_handshake(packet.payload)
        except BadPacket:
            return None
        noise = wire.noise_message(packet.payload)
        if self._secure is None:
            return clear if noise is None else None  # section 6.8-2: keyed peer, no key here
        if noise is None:
            return None  # section 6.8-1: no Noise message, no handshake
        return self._secure.read(noise, clear, packet.seq)

    def start(self, now: float) -> None:
        """Our SYN / SYN_ACK is due now, and again after one RTO unless answered."""
        self.due = True
        self.deadline = now + self._sender.rtt.rto

    # --- packets --------------------------------------------------------------------------

    def on_syn(self, packet: Packet, now: float, handshake: Handshake | None = None) -> int:
        """A SYN: the server learns its client (LISTEN), or resends its SYN_ACK.

        ``handshake`` is the SYN's block if an endpoint already decoded it (for routing).
        """
        # With a key, or a Noise message, the endpoint's decoding of the clear block is
        # not enough: the handshake must authenticate (or, unkeyed, be refused).
        if (
            handshake is None
            or self._secure is not None
            or wire.noise_message(packet.payload) is not None
        ) and (handshake := self._block(packet)) is None:
            return REJECTED
        if packet.connection_id != 0 or handshake.source_connection_id == 0:
            return REJECTED  # section 6.1: a SYN carries 0, and its sender's id is never 0
        if self._sm.state is ConnectionState.SYN_RECEIVED:
            if (
                handshake.source_connection_id != self.remote_connection_id
                or packet.seq != self.peer_isn
                or not self._sm.apply(Input.RECV_SYN)
            ):
                return REJECTED
            # The client retransmitted its SYN: our SYN_ACK was lost (or is slow).  The
            # SYN_ACK we resend echoes this SYN, so the client's RTT sample is timed from
            # the transmission that got through, not from its first SYN.
            self._receiver.on_packet_number(packet.packet_number, now)
            self.due = True
            return HEARD
        if not self._sm.apply(Input.RECV_SYN):
            return REJECTED
        self._adopt_peer(packet, handshake, now)
        self.start(now)
        return HEARD

    def on_syn_ack(self, packet: Packet, now: float) -> int:
        """A SYN_ACK: the client's handshake ends, or (ESTABLISHED) it is acknowledged again."""
        if (handshake := self._block(packet)) is None:
            return REJECTED
        if self._sm.state is not ConnectionState.SYN_SENT:
            if not self._sm.apply(Input.RECV_SYN_ACK):
                return REJECTED
            # ESTABLISHED: the server retransmitted (our ack was lost); ack again if it is it.
            if (
                not self._is_client
                or packet.seq != self.peer_isn
                or handshake.source_connection_id != self.remote_connection_id
            ):
                return REJECTED
            # Our ack will echo this SYN_ACK, so the server times its sample from it.
            self._receiver.on_packet_number(packet.packet_number, now)
            self._receiver.ack_now = True
            return HEARD
        una = self._sender.snd_una
        if (
            wire.expand_seq(packet.ack, una) != una
            or handshake.source_connection_id == 0
            or not self._sm.apply(Input.RECV_SYN_ACK)
        ):
            return REJECTED
        self._adopt_peer(packet, handshake, now)
        self._receiver.ack_now = True  # the SYN_ACK must be acknowledged (DATA may carry it)
        self._opened(packet, now)
        return OPENED

    def on_retry(self, packet: Packet, now: float) -> int:
        """Client in SYN_SENT: a RETRY (section 6.2.1).  The first one that acknowledges
        our SYN is taken: the SYN goes out again at once with its token, and the timer
        restarts without backing off (the RETRY proved the path alive).  Any other is
        dropped: a client follows one RETRY only, so two servers cannot bounce it."""
        if (
            not self._is_client
            or self.retry_token is not None
            or wire.expand_seq(packet.ack, self._sender.snd_una) != self._sender.snd_una
        ):
            return REJECTED
        payload = bytes(packet.payload)
        if self._secure is not None:
            token = self._secure.retry_token(payload)  # section 6.8.1-4: only a tagged one
        else:
            token = payload if len(payload) == wire.RETRY_TOKEN_SIZE else None
        if token is None or not self._sm.apply(Input.RECV_RETRY):
            return REJECTED
        self.retry_token = token
        # No RTT sample from the RETRY: the SYN_ACK's echo names the SYN that carries the
        # token, and that transmission's send time gives the handshake's sample.
        self.start(now)
        return HEARD

    def on_ack_of_syn_ack(self, packet: Packet, now: float) -> bool:
        """Server in SYN_RECEIVED: a packet acknowledging our SYN_ACK ends the handshake."""
        sender = self._sender
        if wire.expand_seq(packet.ack, sender.snd_nxt) != sender.snd_una:
            return False
        self._sm.apply(Input.HANDSHAKE_ACKED)
        self._opened(packet, now)
        return True

    def _adopt_peer(self, packet: Packet, handshake: Handshake, now: float) -> None:
        """Take what a SYN or SYN_ACK tells about the peer (section 6.1)."""
        self.remote_connection_id = handshake.source_connection_id
        self.peer_reset_token = handshake.reset_token
        self.peer_isn = packet.seq
        size = min(self.max_datagram, handshake.max_datagram_size)
        self.max_datagram = size
        self.sack_limit = self._sack_limit(size)
        self._set_payload_size(size)
        sender = self._sender
        sender.peer_window = packet.window
        sender.peer_edge = sender.snd_una + packet.window
        self._receiver.start(packet.seq + 1)
        self._receiver.on_packet_number(packet.packet_number, now)

    def _opened(self, packet: Packet, now: float) -> None:
        recovery = self._sender.recovery
        echo = wire.expand_seq(packet.largest_received, recovery.next_pn - 1)
        sent_at = self._sent_at.get(echo)
        if sent_at is not None:
            # The first RTT sample: from the SYN / SYN_ACK transmission the peer answered.
            delay = min(packet.ack_delay * wire.ACK_DELAY_UNIT, self._config.max_ack_delay)
            self._sender.rtt.on_sample(now - sent_at, delay)
        self._sent_at.clear()
        self.deadline = None
        self.due = False
        self._events.append(Connected())
        if self._sm.state is ConnectionState.CLOSING:  # close() was called meanwhile
            self._sender.request_fin()

    # --- output and timer -----------------------------------------------------------------

    def datagram(self, now: float) -> bytes | None:
        """Our SYN or SYN_ACK if one is due (it carries our handshake block), else None."""
        if not self.due:
            return None
        self.due = False
        state = self._sm.state
        if state is ConnectionState.SYN_SENT:
            ptype, ack = PacketType.SYN, 0  # a SYN acknowledges nothing
        elif state is ConnectionState.SYN_RECEIVED:
            ptype, ack = PacketType.SYN_ACK, self._receiver.rcv_next
        else:
            return None
        ours = Handshake(self._local_id, self._config.max_datagram_size, self.reset_token)
        secure = self._secure
        # Section 6.8: with a key the reset token travels sealed only; the clear block
        # carries zeros in its place.
        block = wire.encode_handshake(
            ours if secure is None else ours._replace(reset_token=wire.NO_RESET_TOKEN)
        )
        if ptype is PacketType.SYN and self.retry_token is not None:
            block += self.retry_token  # section 6.2.1: the SYN echoes the RETRY's token
        if secure is not None:
            block += secure.write(ours, self._isn)
        remote = self.remote_connection_id or 0
        receiver = self._receiver
        # A SYN acknowledges nothing; a SYN_ACK echoes the SYN's packet number.
        acks = receiver.ack_fields(None)._replace(ack=ack)
        pn = self._sender.recovery.allocate_pn()
        self._sent_at[pn] = now
        if len(self._sent_at) > HANDSHAKE_SAMPLES:
            del self._sent_at[next(iter(self._sent_at))]
        return wire.encode_fields(ptype, 0, remote, pn, self._isn, acks, block)

    def on_timeout(self, now: float) -> bool:
        """The deadline passed: back off and resend (or wait); False once the budget ran out."""
        self._retries += 1
        limit = self._config.max_retransmits
        if limit is not None and self._retries > limit:
            return False
        self._sender.timeouts += 1  # counted with the data timeouts (Stats.timeouts)
        rtt = self._sender.rtt
        rtt.back_off()
        if self._is_client or self._retries <= MAX_UNVERIFIED_SYN_ACK_RETRANSMITS:
            self.due = True
            self.deadline = now + rtt.rto
            return True
        # Anti-amplification (RFC 9000 section 8.1 in spirit): a SYN may be spoofed, so the
        # server stops retransmitting on its own.  A client that got a SYN_ACK acknowledges
        # it with its next packet (data or keepalive); one that did not retransmits its SYN,
        # which we answer.  peer_timeout ends the wait.
        self.deadline = None
        return True
