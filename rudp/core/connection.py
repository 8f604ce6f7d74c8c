"""The sans-IO connection: rudp's whole protocol, with no sockets, clocks or threads.

``SansIOConnection`` consumes datagrams (``receive_datagram``) and local calls
(``connect``, ``send``, ``close``, ``abort``), produces datagrams
(``datagrams_to_send``) and events (``next_event``), and asks to be woken at an
absolute time (``get_timer`` / ``handle_timer``).  Time is always passed in as
``now``; randomness (connection ids, initial sequence numbers) comes from an
injected ``random.Random``, so a seeded simulation replays exactly.

State changes go through ``rudp.core.state.StateMachine`` only.  A received packet
goes to the reader for its type (``_READERS``, like aioquic's frame handlers); the
handshake, sender, receiver, recovery, timers and wire layout have modules of their
own.  Network input never raises: anything invalid is dropped and counted in
``stats.datagrams_dropped``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import ClassVar

from rudp.config import Config
from rudp.core import wire
from rudp.core.closing import Closing
from rudp.core.handshake import MAX_UNVERIFIED_SYN_ACK_RETRANSMITS, OPENED, REJECTED, Opening
from rudp.core.path import PathValidator
from rudp.core.receiver import (
    DROPPED,
    DUPLICATE,
    FIN_DELIVERED,
    PROTOCOL_ERROR,
    Budget,
    Receiver,
)
from rudp.core.recovery import PING
from rudp.core.secure_handshake import SecureHandshake
from rudp.core.sender import GIVE_UP, Sender
from rudp.core.state import (
    CLOSE_DONE,
    DATA_STATES,
    PACKET_INPUTS,
    SYNCHRONIZED,
    TERMINAL,
    ConnectionState,
    Input,
    StateMachine,
)
from rudp.core.stats import Stats, snapshot
from rudp.core.timers import Timers, earliest
from rudp.core.tokens import STATIC_KEY_SIZE, reset_token
from rudp.core.wire import Flags, PacketType
from rudp.errors import BadPacket, LocalProtocolError, MessageTooLarge
from rudp.events import Event, FailureKind, MessageReceived

__all__ = ["MAX_UNVERIFIED_SYN_ACK_RETRANSMITS", "ConnectionState", "SansIOConnection"]

_S = ConnectionState
_SYN, _STATELESS_RESET = PacketType.SYN, PacketType.STATELESS_RESET
_SEALED = int(Flags.SEALED)
_ACK_NOW = int(Flags.ACK_NOW)
_Reader = Callable[["SansIOConnection", wire.Packet, float], object]  # the result is ignored


class SansIOConnection:
    """One rudp connection, client or server side, as a pure state machine.

    See specs/protocol.md for the protocol.  Typical driver loop::

        for datagram in batch:
            conn.receive_datagram(datagram, now)
        for datagram in conn.datagrams_to_send(now):
            sock.sendto(datagram, peer)
        while (event := conn.next_event()) is not None:
            ...
        deadline = conn.get_timer()   # sleep until then (or until input)
        conn.handle_timer(now)        # when it passes
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        is_client: bool,
        rng: random.Random | None = None,
        initial_sequence: int | None = None,
        static_key: bytes | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        """The configuration (frozen)."""
        self.is_client = is_client
        """True for the side that calls ``connect()``."""
        rng = rng if rng is not None else random.SystemRandom()
        cid = 0
        while cid == 0:  # 0 means "no id yet" in a SYN's header
            cid = rng.getrandbits(64)
        self.local_connection_id: int = cid
        """Our 64-bit connection id: every packet the peer sends us carries it."""
        # Section 6.6: the endpoint's static key makes our token; alone, we draw a key.
        if static_key is None:
            static_key = rng.getrandbits(8 * STATIC_KEY_SIZE).to_bytes(STATIC_KEY_SIZE, "big")
        if initial_sequence is None:
            initial_sequence = rng.getrandbits(32)
        elif not 0 <= initial_sequence < wire.SEQ_MODULUS:
            raise ValueError("initial_sequence must be a 32-bit unsigned integer")
        self._isn = initial_sequence
        self._sm = StateMachine(_S.INITIAL if is_client else _S.LISTEN)
        self._events: deque[Event] = deque()
        self._sender = Sender(self.config, initial_sequence + 1, self._events)
        self._receiver = Receiver(self.config, self._events)
        psk = self.config.psk
        self._secure = None if psk is None else SecureHandshake(psk, is_client=is_client, rng=rng)
        self._unauthenticated = 0
        self._opening = Opening(
            self.config,
            is_client=is_client,
            local_connection_id=cid,
            reset_token=reset_token(static_key, cid),
            initial_sequence=initial_sequence,
            machine=self._sm,
            sender=self._sender,
            receiver=self._receiver,
            events=self._events,
            secure=self._secure,
        )
        self._timers = Timers(self.config, self._sm, self._sender)
        self._closing = Closing(
            self.config,
            machine=self._sm,
            sender=self._sender,
            receiver=self._receiver,
            opening=self._opening,
            timers=self._timers,
            events=self._events,
            reset_datagram=self._reset_datagram,
        )
        self._path = PathValidator(self.config, rng, self._sm, self._sender.rtt)

        # counters
        self._datagrams_sent = 0
        self._datagrams_received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._dropped = 0
        self._oversize = 0
        self._acks_sent = 0

    # --- properties -----------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state (``rudp.core.state.ConnectionState``)."""
        return self._sm.state

    @property
    def remote_connection_id(self) -> int | None:
        """The peer's connection id, once the handshake told us."""
        return self._opening.remote_connection_id

    @property
    def path(self) -> PathValidator:
        """Path validation (section 6.7): the endpoint starts it when the peer's address moves."""
        return self._path

    @property
    def largest_packet_number(self) -> int:
        """The largest packet number received from the peer (-1 before any): the endpoint
        follows an address change only for a packet that raised it (RFC 9000 section 9.3)."""
        return self._receiver.largest_pn

    @property
    def is_closed(self) -> bool:
        """Terminal: ``Closed`` or ``Failed`` was reported and nothing more will be sent.

        A connection that reported ``Closed`` may linger in TIME_WAIT first (to
        re-acknowledge a retransmitted FIN); drivers keep feeding it until this is true.
        """
        return self._sm.state in TERMINAL

    @property
    def is_established(self) -> bool:
        """The handshake finished (``Connected`` was reported)."""
        return self._sm.connected

    @property
    def close_done(self) -> bool:
        """Our FIN, after all our data, is acknowledged, or the connection is over.

        True in FIN_WAIT, TIME_WAIT, CLOSED and FAILED (``rudp.core.state.CLOSE_DONE``):
        a blocking ``close()`` may return, since nothing we sent is still unacknowledged
        (or nothing more ever will be).
        """
        return self._sm.state in CLOSE_DONE

    @property
    def send_queue_bytes(self) -> int:
        """Bytes of messages queued or in flight and not yet acknowledged (for back-pressure)."""
        return self._sender.queued_bytes

    @property
    def stats(self) -> Stats:
        """A snapshot of counters and estimates."""
        secure = self._secure
        unauthenticated = self._unauthenticated + (secure.unauthenticated if secure else 0)
        return snapshot(
            self._sender,
            self._receiver,
            datagrams_sent=self._datagrams_sent,
            datagrams_received=self._datagrams_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            datagrams_dropped=self._dropped,
            acks_sent=self._acks_sent,
            resets_rejected=self._closing.resets_rejected,
            challenge_acks_sent=self._closing.challenge_acks_sent,
            datagrams_oversize=self._oversize,
            datagrams_unauthenticated=unauthenticated,
            replays_dropped=secure.replays if secure is not None else 0,
        )

    def attach_budget(self, budget: Budget) -> None:
        """Share the receive bytes of an endpoint (``Config.max_buffered_bytes``)."""
        self._receiver.pool = budget
        budget.used += self._receiver.buffered

    def release_budget(self) -> None:
        """The endpoint forgets this connection: its buffered bytes leave the shared budget."""
        self._receiver.release()

    # --- local calls ----------------------------------------------------------------------

    def _local(self, inp: Input, what: str) -> None:
        if not self._sm.apply(inp):
            raise LocalProtocolError(f"{what} not allowed in state {self._sm.state.name}")

    def connect(self, now: float) -> None:
        """Client: start the handshake (queue a SYN)."""
        if not self.is_client:
            raise LocalProtocolError("connect() is for the client side")
        self._local(Input.CONNECT, "connect()")
        self._timers.last_heard = now
        self._opening.start(now)

    def send(self, message: bytes | bytearray | memoryview) -> int:
        """Queue a message; return its id (0, 1, 2, ... in send order).

        Allowed before ``Connected`` (queued).  Raises ``MessageTooLarge`` above
        ``Config.max_message_size`` and ``LocalProtocolError`` after ``close()``
        or a failure.
        """
        if len(message) > self.config.max_message_size:
            raise MessageTooLarge(
                f"message of {len(message)} bytes exceeds max_message_size "
                f"{self.config.max_message_size} (raise it, with receive_buffer, on both ends)"
            )
        if not self._sm.allows(Input.SEND):  # SEND never changes the state
            if self._sm.close_deferred:
                raise LocalProtocolError("send() after close()")
            raise LocalProtocolError(f"send() not allowed in state {self._sm.state.name}")
        # Keep an immutable copy: the caller may reuse a bytearray.
        data = message if type(message) is bytes else bytes(message)
        return self._sender.queue_message(data)

    def close(
        self, now: float | None = None, *, reading: bool = True, left_unread: bool = False
    ) -> None:
        """Close: a FIN follows every queued message (section 6.3; ``Closing.close``).

        The default is a half-close: the peer's messages are still delivered.
        ``reading=False`` is a full close (RFC 1122 section 4.2.2.13): the peer's later
        data is neither delivered nor acknowledged and, if any was lost (or
        ``left_unread``: messages already handed out stay unread), a RESET follows once
        all of ours are acknowledged.  During the handshake the close is deferred;
        before ``connect()`` it ends at once (``Failed`` if messages were queued).
        """
        self._closing.close(now, reading=reading, left_unread=left_unread)

    def abort(self, reason: str = "aborted") -> None:
        """End at once: send a RESET (if the peer is known) and report ``Failed``."""
        self._closing.abort(reason)

    # --- events ------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event, or None.  Reading a message frees receive window."""
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if type(event) is MessageReceived:
            self._receiver.on_read()
        return event

    # --- input ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Process one datagram from the network.  Never raises; bad input is counted."""
        self._datagrams_received += 1
        self._bytes_received += len(data)
        if self._sm.state in TERMINAL:
            self._dropped += 1
            return
        if len(data) > self._opening.max_datagram:
            self._dropped += 1  # section 6.1-5: longer than the effective datagram size
            self._oversize += 1
            return
        try:
            packet = wire.decode(data)
        except BadPacket:
            self._dropped += 1
            return
        self._receive(packet, now)

    def receive_packet(
        self,
        packet: wire.Packet,
        now: float,
        handshake: wire.Handshake | None = None,
        size: int | None = None,
    ) -> None:
        """Like ``receive_datagram`` for a packet an endpoint already decoded (for routing).

        ``handshake`` is a SYN's handshake block if the endpoint decoded it too, so
        that it is decoded once; ``size`` the datagram's length if the caller has it.
        """
        self._datagrams_received += 1
        if size is None:
            size = wire.encoded_size(packet)
        self._bytes_received += size
        if self._sm.state in TERMINAL:
            self._dropped += 1
        elif size > self._opening.max_datagram:
            self._dropped += 1  # section 6.1-5: longer than the effective datagram size
            self._oversize += 1
        elif handshake is not None and packet.type is PacketType.SYN:
            self._heard(self._opening.on_syn(packet, now, handshake), now)
        else:
            self._receive(packet, now)

    def _receive(self, packet: wire.Packet, now: float) -> None:
        """Hand a decoded packet to the reader for its type."""
        ptype = packet.type  # against module globals: a lookup on the enum class costs 10x
        cid = packet.connection_id
        if cid != self.local_connection_id and ptype is not _SYN and ptype is not _STATELESS_RESET:
            # Section 6.1-4: not for us (a SYN carries 0 instead, and a stateless reset,
            # section 6.6.1, the id the peer issued).
            self._dropped += 1
            return
        if self._secure is not None:
            opened = self._secure.inbound(packet)  # section 3.7-2: only what authenticates
            if opened is None:
                self._dropped += 1
                return
            packet = opened
        elif packet.flags & _SEALED:
            self._unauthenticated += 1  # section 3.7-4: sealed, and we have no key
            self._dropped += 1
            return
        self._READERS[ptype](self, packet, now)

    # --- readers: one per packet type (``_READERS``); each drops what it cannot take -----------

    def _read_syn(self, packet: wire.Packet, now: float) -> None:
        self._heard(self._opening.on_syn(packet, now), now)

    def _read_syn_ack(self, packet: wire.Packet, now: float) -> None:
        self._heard(self._opening.on_syn_ack(packet, now), now)

    def _read_retry(self, packet: wire.Packet, now: float) -> None:
        self._heard(self._opening.on_retry(packet, now), now)

    def _heard(self, result: int, now: float) -> None:
        """Count or remember what ``Opening`` made of a SYN or SYN_ACK."""
        if result == REJECTED:
            self._dropped += 1
            return
        self._timers.last_heard = now
        if result == OPENED:
            self._timers.last_activity = now

    def _read_reset(self, packet: wire.Packet, now: float) -> None:
        if not self._closing.on_reset(packet, now):
            self._dropped += 1  # implausible (perhaps challenged), or not in this state

    def _read_stateless_reset(self, packet: wire.Packet, now: float) -> None:
        if not self._closing.on_stateless_reset(packet):
            self._dropped += 1

    def _read_path(self, packet: wire.Packet, now: float) -> None:
        """PATH_CHALLENGE / PATH_RESPONSE (section 6.7), checked like any packet first."""
        if not self._accept(packet, now):
            return
        if packet.type is PacketType.PATH_CHALLENGE:
            self._path.on_challenge(packet.payload)  # echoed by the next datagrams_to_send
        elif not self._path.on_response(packet.payload):
            self._dropped += 1  # echoes no challenge of ours still outstanding

    def _read_ping(self, packet: wire.Packet, now: float) -> None:
        if self._accept(packet, now):
            self._receiver.ack_now = True  # a PING asks for an immediate ack (section 11.4)

    def _read_data(self, packet: wire.Packet, now: float, is_fin: bool = False) -> None:
        """DATA (and FIN): into the receiver (reassembly, delivery, the peer's close)."""
        if not self._accept(packet, now):
            return
        timers = self._timers
        timers.last_activity = now
        if timers.linger_deadline is not None:  # lingering in TIME_WAIT
            # RFC 9293 section 3.10.7.4: a retransmitted FIN restarts TIME-WAIT (our ack
            # of it was lost; the next one may be too).
            timers.linger_deadline = now + self.config.close_linger
        receiver = self._receiver
        rcv_next = receiver.rcv_next
        seq = packet.seq
        seq = rcv_next if seq == (rcv_next & wire.SEQ_MASK) else wire.expand_seq(seq, rcv_next)
        if not self._closing.reading and self._closing.refuses_data(seq, is_fin):
            self._dropped += 1  # after a full close: not delivered, not acknowledged
            return
        result = receiver.on_data(now, seq, is_fin, packet.fragments_left, packet.payload)
        if result <= DUPLICATE:
            return
        if result == DROPPED:
            self._dropped += 1
        elif result == FIN_DELIVERED:
            self._closing.on_peer_fin(now)
        elif result == PROTOCOL_ERROR:
            self._closing.fail(
                Input.PROTOCOL_ERROR,
                f"protocol error: {receiver.error}",
                FailureKind.PROTOCOL_ERROR,
            )

    def _accept(self, packet: wire.Packet, now: float) -> bool:
        """What DATA, ACK, PING and FIN share: the state table, the ack fields, liveness.

        False if the packet went no further (dropped, or it ended the connection).
        """
        sm = self._sm
        sender = self._sender
        recovery = sender.recovery
        una = sender.snd_una
        expand = wire.expand_seq
        # The ack fields are checked before they change anything, the handshake included
        # (a forged ack must not complete it).  Section 8.7: an echo of a packet number
        # we never sent, and section 8.5: an ack or SACK of data never sent, are forgeries.
        largest = recovery.next_pn - 1  # an echo of our latest packet needs no expansion
        if packet.largest_received != largest & wire.SEQ_MASK:
            largest = expand(packet.largest_received, largest)
        if largest >= recovery.next_pn:
            self._dropped += 1
            return False
        # Nothing newly acknowledged is the common case on a receiving side.
        fresh = (
            packet.ack != (una & wire.SEQ_MASK)
            or bool(packet.sack)
            or largest != recovery.largest_acked_pn
        )
        if fresh:
            nxt = sender.snd_nxt
            ack = expand(packet.ack, nxt)
            sack = [(expand(s, nxt), expand(e, nxt)) for s, e in packet.sack] if packet.sack else []
            if not sender.valid_ack(ack, sack):
                self._dropped += 1
                return False
        if not sm.connected:
            # Before the handshake finished, only its last step gets here: a packet
            # acknowledging the server's SYN_ACK.
            if sm.state is not _S.SYN_RECEIVED or not self._opening.on_ack_of_syn_ack(packet, now):
                self._dropped += 1
                return False
            self._timers.last_activity = now
        if sm.state not in DATA_STATES and not sm.apply(PACKET_INPUTS[packet.type]):
            self._dropped += 1
            return False
        window = packet.window
        if not fresh:
            # Only the peer's window may have moved.
            sender.peer_edge = una + window
            sender.peer_window = window
        else:
            ack_delay = packet.ack_delay * wire.ACK_DELAY_UNIT
            sender.on_ack(now, ack, window, sack, largest, ack_delay)
            if sender.fin_acked:
                self._closing.on_fin_acked(now)
                if sm.state in TERMINAL:
                    return False
            if self._closing.reset_owed:  # a full close waits for our messages' acks
                self._closing.reset_if_acknowledged()
                if sm.state in TERMINAL:
                    return False
        self._receiver.on_packet_number(packet.packet_number, now)
        # Only an authentic, plausible packet proves the peer alive (peer_timeout, keepalive).
        timers = self._timers
        timers.last_heard = now
        if timers.persist_deadline is not None and not sender.window_blocked:
            timers.persist_deadline = None
        if packet.flags & _ACK_NOW:
            self._receiver.ack_now = True
        return True

    _READERS: ClassVar[dict[PacketType, _Reader]] = {
        PacketType.SYN: _read_syn,
        PacketType.SYN_ACK: _read_syn_ack,
        PacketType.DATA: _read_data,
        PacketType.ACK: _accept,  # an ACK is only the ack fields every packet carries
        PacketType.PING: _read_ping,
        PacketType.FIN: partial(_read_data, is_fin=True),
        PacketType.RESET: _read_reset,
        PacketType.STATELESS_RESET: _read_stateless_reset,
        PacketType.PATH_CHALLENGE: _read_path,
        PacketType.PATH_RESPONSE: _read_path,
        PacketType.RETRY: _read_retry,
    }
    """Packet type -> its reader.  Every type is an input of the state table as well."""

    # --- output --------------------------------------------------------------------------------

    def _reset_datagram(self) -> bytes:
        """Our RESET: it carries our token, plausible whatever its sequence number (6.4)."""
        return self._control(PacketType.RESET, None, payload=self._opening.reset_token)

    def _control(
        self,
        ptype: PacketType,
        now: float | None,
        flags: int = 0,
        sack: Sequence[tuple[int, int]] = (),
        payload: bytes = b"",
    ) -> bytes:
        """An ACK, PING or RESET: a packet number, our next sequence number and the acks.

        A PING is ack-eliciting: recovery keeps its record for an RTT sample and the
        probe timeout.  ``now`` is None only for a RESET (queued by ``Closing``).
        """
        recovery = self._sender.recovery
        pn = recovery.allocate_pn()
        if ptype is PacketType.PING and now is not None:
            recovery.on_packet_sent(pn, PING, now)
        remote = self._opening.remote_connection_id or 0
        acks = self._receiver.ack_fields(now)
        snd_nxt = self._sender.snd_nxt
        seal = self._secure.seal if self._secure is not None else None
        return wire.encode_fields(ptype, flags, remote, pn, snd_nxt, acks, payload, sack, seal)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Every datagram due now, in order.  Empty after the connection ended."""
        state = self._sm.state
        if state in TERMINAL:
            closing = self._closing
            final, closing.final = closing.final, []
            if self._secure is not None and final:
                final = self._secure.outbound(final)
            self._count_sent(final)
            return final
        out: list[bytes] = []
        if (opening := self._opening.datagram(now)) is not None:
            out.append(opening)
        if state in SYNCHRONIZED:
            self._send_data(now, out)
            if self._path.has_output:
                self._path.flush(now, out, self._path_packet)
        if self._secure is not None and out:
            out = self._secure.outbound(out)
        self._count_sent(out)
        return out

    def _send_data(self, now: float, out: list[bytes]) -> None:
        sender = self._sender
        receiver = self._receiver
        packets = sender.next_packets(now)
        if packets:
            self._timers.last_activity = now
            remote = self._opening.remote_connection_id or 0
            seal = self._secure.seal if self._secure is not None else None
            out += wire.encode_data_batch(remote, receiver.ack_fields(now), packets, seal)
            if not receiver.ranges:
                # Every DATA packet carries the cumulative ack and window (piggybacking);
                # only SACK blocks need a pure ACK.
                receiver.on_ack_sent()
        if self._timers.ping_pending or sender.probe_ping:
            # A keepalive or zero-window probe, or a PTO probe with no data to carry it.
            self._timers.ping_pending = False
            sender.probe_ping = False
            out.append(self._control(PacketType.PING, now, Flags.ACK_NOW))
        deadline = receiver.ack_deadline
        if receiver.ack_now or (deadline is not None and deadline <= now):
            sack = receiver.sack_blocks(self._opening.sack_limit)
            out.append(self._control(PacketType.ACK, now, sack=sack))
            receiver.on_ack_sent()
            self._acks_sent += 1
        self._timers.on_sent(now)

    def _path_packet(self, ptype: PacketType, now: float, payload: bytes) -> bytes:
        return self._control(ptype, now, payload=payload)

    def _count_sent(self, out: list[bytes]) -> None:
        if out:
            self._datagrams_sent += len(out)
            self._bytes_sent += sum(map(len, out))

    # --- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The absolute time ``handle_timer`` should next be called, or None."""
        if self._sm.state in TERMINAL:
            return None
        sender = self._sender
        recovery = sender.recovery
        return earliest(
            self._opening.deadline,
            recovery.pto_deadline,
            recovery.loss_deadline,
            sender.pacing_deadline,
            self._receiver.ack_deadline,
            self._timers.earliest(),
            self._path.deadline,
        )

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        if self._sm.state in TERMINAL:
            return
        timers = self._timers
        deadline = timers.peer_deadline()
        if deadline is not None and now >= deadline:
            silence = self.config.peer_timeout
            self._closing.give_up(f"peer unreachable: nothing heard for {silence:g} s")
            return
        sender = self._sender
        deadline = self._opening.deadline
        if deadline is not None and now >= deadline and not self._opening.on_timeout(now):
            limit = self.config.max_retransmits
            self._closing.give_up(
                f"peer unreachable: handshake unanswered after {limit} retransmissions"
            )
            return
        recovery = sender.recovery
        deadline = recovery.loss_deadline
        if deadline is not None and now >= deadline:
            recovery.detect_losses(now)
        deadline = recovery.pto_deadline
        if deadline is not None and now >= deadline and sender.on_pto(now) == GIVE_UP:
            self._closing.give_up(
                f"peer unreachable: {sender.consecutive_timeouts - 1} probe timeouts unanswered"
            )
            return
        timers.fire_probes(now)
        self._path.on_timer(now)
        deadline = timers.idle_deadline()
        if deadline is not None and now >= deadline:
            # idle_timeout: a graceful close, exactly as if the application called close().
            self.close(now)
        deadline = timers.linger_deadline
        if deadline is not None and now >= deadline and self._sm.apply(Input.LINGER_EXPIRED):
            self._closing.stop_timers()
