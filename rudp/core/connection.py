"""The sans-IO connection: rudp's whole protocol, with no sockets, clocks or threads.

``SansIOConnection`` consumes datagrams (``receive_datagram``) and local calls
(``connect``, ``send``, ``close``, ``abort``), produces datagrams
(``datagrams_to_send``) and events (``next_event``), and asks to be woken at an
absolute time (``get_timer`` / ``handle_timer``).  Time is always passed in as
``now``; randomness (connection ids, initial sequence numbers) comes from an
injected ``random.Random``, so a seeded simulation replays exactly.

State changes go through ``rudp.core.state.TRANSITIONS`` only (``_apply``).  The
send half lives in ``rudp.core.sender``, the receive half in ``rudp.core.receiver``.

Network input never raises: anything invalid is dropped and counted in
``stats.datagrams_dropped``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

from rudp.config import Config
from rudp.core import wire
from rudp.core.receiver import DROPPED, DUPLICATE, FIN_DELIVERED, PROTOCOL_ERROR, Receiver
from rudp.core.sender import GIVE_UP, Payload, Sender
from rudp.core.state import (
    HANDSHAKING,
    PACKET_INPUTS,
    TERMINAL,
    TRANSITIONS,
    ConnectionState,
    Input,
)
from rudp.core.stats import Stats
from rudp.errors import BadPacket, LocalProtocolError, MessageTooLarge
from rudp.events import Closed, Connected, Event, Failed, FailureKind, MessageReceived, PeerClosed

__all__ = ["ConnectionState", "SansIOConnection"]

_S = ConnectionState
_MASK = wire.SEQ_MODULUS - 1
_SYN = int(wire.PacketType.SYN)
_SYN_ACK = int(wire.PacketType.SYN_ACK)
_DATA = int(wire.PacketType.DATA)
_ACK = int(wire.PacketType.ACK)
_PING = int(wire.PacketType.PING)
_FIN = int(wire.PacketType.FIN)
_RESET = int(wire.PacketType.RESET)
_ACK_NOW = int(wire.Flags.ACK_NOW)
_DATA_STATES = frozenset(
    {_S.ESTABLISHED, _S.CLOSING, _S.FIN_WAIT, _S.PEER_CLOSED, _S.SIMULTANEOUS_CLOSE, _S.TIME_WAIT}
)
# States as module constants: ``_S.NAME`` goes through the enum class on every use
# (measured ~10x slower than a global), and the receive path tests several per packet.
_CLOSED = _S.CLOSED
_ESTABLISHED = _S.ESTABLISHED
_INITIAL = _S.INITIAL
_LISTEN = _S.LISTEN
_PEER_CLOSED = _S.PEER_CLOSED
_SIMULTANEOUS_CLOSE = _S.SIMULTANEOUS_CLOSE
_SYN_RECEIVED = _S.SYN_RECEIVED
_SYN_SENT = _S.SYN_SENT
_TIME_WAIT = _S.TIME_WAIT
MAX_UNVERIFIED_SYN_ACK_RETRANSMITS = 2
"""Timer-driven SYN_ACK retransmissions before the client proved its address (a spoofed
SYN then costs at most three SYN_ACKs)."""
_TRANSITIONS_GET = TRANSITIONS.get
_PACKET_INPUTS = PACKET_INPUTS
_expand = wire.expand_seq


class SansIOConnection:
    """One rudp connection, client or server side, as a pure state machine.

    See specs/protocol.md for the protocol.  Typical driver loop::

        conn.receive_datagrams(batch, now)
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
        self.remote_connection_id: int | None = None
        """The peer's connection id, once the handshake told us."""
        if initial_sequence is None:
            initial_sequence = rng.getrandbits(32)
        elif not 0 <= initial_sequence <= _MASK:
            raise ValueError("initial_sequence must be a 32-bit unsigned integer")
        self._isn = initial_sequence
        self._state = _INITIAL if is_client else _LISTEN
        self._events: deque[Event] = deque()
        self._sender = Sender(self.config, initial_sequence + 1, self._events)
        self._receiver = Receiver(self.config, self._events)
        self._max_datagram = self.config.max_datagram_size
        self._sack_limit = min(
            wire.MAX_SACK_BLOCKS, (self._max_datagram - wire.OVERHEAD) // wire.SACK_SIZE
        )
        self._connected = False
        self._close_deferred = False

        # handshake (SYN / SYN_ACK) retransmission, same RTO and budget as data
        self._hs_deadline: float | None = None
        self._hs_send = False
        self._hs_sent_time = 0.0
        self._hs_retries = 0  # handshake timeouts: the give-up budget
        self._hs_resent = False  # Karn: once resent, the handshake gives no RTT sample
        self._peer_isn: int | None = None

        # liveness
        self._last_heard = 0.0
        self._last_ping: float | None = None
        self._ping_pending = False
        self._persist_deadline: float | None = None
        self._persist_interval = 0.0
        self._linger_deadline: float | None = None
        self._last_activity = 0.0  # last DATA/FIN sent or received (idle_timeout)
        self._final: list[bytes] = []  # a RESET to hand out after failing

        # counters
        self._datagrams_sent = 0
        self._datagrams_received = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._dropped = 0
        self._acks_sent = 0

    # --- properties -----------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current state (``rudp.core.state.ConnectionState``)."""
        return self._state

    @property
    def is_closed(self) -> bool:
        """Terminal: ``Closed`` or ``Failed`` was reported and nothing more will be sent.

        A connection that reported ``Closed`` may linger in TIME_WAIT first (to
        re-acknowledge a retransmitted FIN); drivers keep feeding it until this is true.
        """
        return self._state in TERMINAL

    @property
    def is_established(self) -> bool:
        """The handshake finished (``Connected`` was reported)."""
        return self._connected

    @property
    def send_queue_bytes(self) -> int:
        """Bytes of messages queued or in flight and not yet acknowledged (for back-pressure)."""
        return self._sender.queued_bytes

    @property
    def stats(self) -> Stats:
        """A snapshot of counters and estimates."""
        sender = self._sender
        receiver = self._receiver
        rtt = sender.rtt
        return Stats(
            srtt=rtt.srtt,
            rttvar=rtt.rttvar,
            latest_rtt=rtt.latest,
            rto=rtt.rto,
            cwnd=sender.cc.cwnd,
            ssthresh=sender.cc.ssthresh,
            packets_in_flight=sender.in_flight,
            peer_window=sender.peer_window,
            local_window=receiver.window,
            datagrams_sent=self._datagrams_sent,
            datagrams_received=self._datagrams_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            datagrams_dropped=self._dropped,
            data_packets_sent=sender.data_packets_sent,
            data_packets_received=receiver.data_packets_received,
            duplicates_received=receiver.duplicates,
            acks_sent=self._acks_sent,
            retransmissions=sender.retransmissions,
            fast_retransmits=sender.fast_retransmits,
            timeouts=sender.timeouts,
            tail_probes=sender.tail_probes,
            messages_sent=sender.messages_sent,
            messages_acked=sender.messages_acked,
            messages_delivered=receiver.messages_delivered,
            send_queue_bytes=sender.queued_bytes,
        )

    # --- the state table --------------------------------------------------------------

    def _apply(self, inp: Input) -> bool:
        """Move along ``TRANSITIONS``; False (and no change) if the pair is not in it."""
        target = TRANSITIONS.get((self._state, inp))
        if target is None:
            return False
        self._state = target
        return True

    def _local(self, inp: Input, what: str) -> None:
        if not self._apply(inp):
            raise LocalProtocolError(f"{what} not allowed in state {self._state.name}")

    # --- local calls ----------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Client: start the handshake (queue a SYN)."""
        if not self.is_client:
            raise LocalProtocolError("connect() is for the client side")
        self._local(Input.CONNECT, "connect()")
        self._last_heard = now
        self._hs_send = True
        self._hs_sent_time = now
        self._hs_deadline = now + self._sender.rtt.rto

    def send(self, message: bytes | bytearray | memoryview) -> int:
        """Queue a message; return its id (0, 1, 2, ... in send order).

        Allowed before ``Connected`` (queued).  Raises ``MessageTooLarge`` above
        ``Config.max_message_size`` and ``LocalProtocolError`` after ``close()``
        or a failure.
        """
        if len(message) > self.config.max_message_size:
            raise MessageTooLarge(
                f"message of {len(message)} bytes exceeds max_message_size "
                f"{self.config.max_message_size}"
            )
        if self._close_deferred:
            raise LocalProtocolError("send() after close()")
        if (self._state, Input.SEND) not in TRANSITIONS:  # SEND never changes the state
            raise LocalProtocolError(f"send() not allowed in state {self._state.name}")
        # Keep an immutable copy: the caller may reuse a bytearray.
        data = message if type(message) is bytes else bytes(message)
        return self._sender.queue_message(data)

    def close(self, now: float | None = None) -> None:
        """Close gracefully: a FIN follows every queued message.

        During the handshake (and on a server still waiting for its SYN) the close
        is deferred until the handshake finishes.  Before ``connect()`` the client
        ends at once: ``Closed``, or ``Failed`` listing the queued messages if
        there were any.
        """
        state = self._state
        if state is _INITIAL and self._sender.has_queued:
            self._fail(
                Input.ABORT,
                "closed before connecting",
                FailureKind.CLOSED_BY_APPLICATION,
                send_reset=False,
            )
            return
        self._local(Input.CLOSE, "close()")
        if state is _INITIAL:
            self._events.append(Closed())
        elif state in HANDSHAKING:
            self._close_deferred = True
        elif state is _ESTABLISHED:
            self._sender.request_fin()

    def abort(self, reason: str = "aborted") -> None:
        """End at once: send a RESET (if the peer is known) and report ``Failed``."""
        if self._state in TERMINAL:
            self._apply(Input.ABORT)
            return
        if self._state is _TIME_WAIT:
            # Closed was already reported; just stop lingering.
            self._apply(Input.ABORT)
            self._stop_timers()
            return
        self._fail(Input.ABORT, reason, FailureKind.ABORTED, send_reset=True)

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

    def receive_datagrams(self, datagrams: Iterable[bytes], now: float) -> None:
        """Batch form of ``receive_datagram`` (acks are coalesced until ``datagrams_to_send``)."""
        decode = wire.decode
        receive = self._receive
        # Hot loop: the counters live in locals and are stored once (``finally`` keeps
        # them right even if a bug raised mid-batch).
        count = 0
        size = 0
        bad = 0
        try:
            for data in datagrams:
                count += 1
                size += len(data)
                if self._state in TERMINAL:
                    bad += 1
                    continue
                try:
                    packet = decode(data)
                except BadPacket:
                    bad += 1
                    continue
                receive(packet, now)
        finally:
            self._datagrams_received += count
            self._bytes_received += size
            self._dropped += bad

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Process one datagram from the network.  Never raises; bad input is counted."""
        self._datagrams_received += 1
        self._bytes_received += len(data)
        if self._state in TERMINAL:
            self._dropped += 1
            return
        try:
            packet = wire.decode(data)
        except BadPacket:
            self._dropped += 1
            return
        self._receive(packet, now)

    def receive_packet(self, packet: wire.Packet, now: float) -> None:
        """Like ``receive_datagram`` for a packet an endpoint already decoded (for routing)."""
        self._datagrams_received += 1
        self._bytes_received += wire.encoded_size(packet)
        if self._state in TERMINAL:
            self._dropped += 1
            return
        self._receive(packet, now)

    def _receive(self, packet: wire.Packet, now: float) -> None:
        # One tuple unpack instead of a dozen NamedTuple attribute lookups (hot path).
        ptype, flags, connection_id, seq, ack_field, window, fragments_left, sack_field, payload = (
            packet
        )
        if connection_id != self.local_connection_id:
            if ptype == _SYN:  # a SYN carries 0: it does not know our id yet
                self._on_syn(packet, now)
            else:
                self._dropped += 1
            return
        if ptype == _SYN:  # a SYN must carry connection id 0
            self._dropped += 1
            return
        state = self._state
        if state is _SYN_SENT:
            if ptype == _SYN_ACK:
                self._on_syn_ack(packet, now)
            elif ptype == _RESET and self._apply(Input.RECV_RESET):
                self._failed("reset by peer", FailureKind.RESET_BY_PEER)
            else:
                self._dropped += 1
            return
        if state is _SYN_RECEIVED and ptype != _RESET:
            ack = _expand(ack_field, self._sender.snd_nxt)
            if ack != self._sender.snd_una or ptype == _SYN_ACK:
                self._dropped += 1
                return
            self._apply(Input.HANDSHAKE_ACKED)
            if not self._hs_resent:
                self._sender.rtt.on_sample(now - self._hs_sent_time)
            self._on_established(now)
            state = self._state
        # Every packet type is an input of the state table (inlined ``_apply``: hot path).
        target = _TRANSITIONS_GET((state, _PACKET_INPUTS[ptype]))
        if target is None:
            self._dropped += 1
            return
        self._state = target
        if ptype == _RESET:
            self._failed("reset by peer", FailureKind.RESET_BY_PEER)
            return
        receiver = self._receiver
        if ptype == _SYN_ACK:
            # Our ack of it was lost: the server retransmitted.  Ack again, if it really
            # is the server's SYN_ACK.
            if (
                self.is_client
                and seq == self._peer_isn
                and self._handshake_source(packet) == self.remote_connection_id
            ):
                self._last_heard = now
                receiver.ack_now = True
            else:
                self._dropped += 1
            return
        sender = self._sender
        una = sender.snd_una
        if ack_field == (una & _MASK) and not sack_field:
            # Fast path: nothing newly acknowledged, only the window may have moved.
            sender.peer_edge = una + window
            sender.peer_window = window
        else:
            nxt = sender.snd_nxt
            ack = _expand(ack_field, nxt)
            # Most acks carry no SACK blocks: no comprehension for them (hot path).
            sack = [(_expand(s, nxt), _expand(e, nxt)) for s, e in sack_field] if sack_field else []
            if not sender.valid_ack(ack, sack):
                self._dropped += 1
                return
            sender.on_ack(now, ack, window, sack)
            if sender.fin_seq is not None and sender.snd_una > sender.fin_seq:
                self._on_fin_acked(now)
                if self._state in TERMINAL:
                    return
        # Only an authentic, plausible packet proves the peer alive (peer_timeout, keepalive).
        self._last_heard = now
        if self._persist_deadline is not None and not sender.window_blocked:
            self._persist_deadline = None
        if flags & _ACK_NOW:
            receiver.ack_now = True
        if ptype in (_DATA, _FIN):
            self._last_activity = now
            if target is _TIME_WAIT:
                # RFC 9293 section 3.10.7.4: a retransmitted FIN restarts TIME-WAIT (our
                # ack of it was lost; the next one may be too).
                self._linger_deadline = now + self.config.close_linger
            rcv_next = receiver.rcv_next
            result = receiver.on_data(
                now,
                rcv_next if seq == (rcv_next & _MASK) else _expand(seq, rcv_next),
                ptype == _FIN,
                fragments_left,
                payload,
            )
            if result <= DUPLICATE:
                return
            if result == DROPPED:
                self._dropped += 1
            elif result == FIN_DELIVERED:
                self._on_peer_fin(now)
            elif result == PROTOCOL_ERROR:
                self._fail(
                    Input.PROTOCOL_ERROR,
                    f"protocol error: {receiver.error}",
                    FailureKind.PROTOCOL_ERROR,
                )
        elif ptype == _PING:
            receiver.ack_now = True

    @staticmethod
    def _handshake_source(packet: wire.Packet) -> int:
        """The source connection id in a SYN/SYN_ACK payload, 0 if it does not parse."""
        try:
            return wire.decode_handshake(packet.payload).source_connection_id
        except BadPacket:
            return 0

    def _on_syn(self, packet: wire.Packet, now: float) -> None:
        state = self._state
        if packet.connection_id != 0:
            self._dropped += 1
            return
        try:
            handshake = wire.decode_handshake(packet.payload)
        except BadPacket:
            self._dropped += 1
            return
        if handshake.source_connection_id == 0:
            self._dropped += 1
            return
        if state is _SYN_RECEIVED:
            if (
                handshake.source_connection_id == self.remote_connection_id
                and packet.seq == self._peer_isn
                and self._apply(Input.RECV_SYN)
            ):
                # Our SYN_ACK was lost (or is slow): resend it now.
                self._hs_send = True
                self._hs_resent = True  # Karn: the SYN_ACK's RTT is now ambiguous
                self._last_heard = now
            else:
                self._dropped += 1
            return
        if not self._apply(Input.RECV_SYN):
            self._dropped += 1
            return
        self._adopt_peer(packet, handshake, now)
        sender = self._sender
        self._hs_send = True
        self._hs_sent_time = now
        self._hs_deadline = now + sender.rtt.rto

    def _on_syn_ack(self, packet: wire.Packet, now: float) -> None:
        sender = self._sender
        try:
            handshake = wire.decode_handshake(packet.payload)
        except BadPacket:
            self._dropped += 1
            return
        ack = _expand(packet.ack, sender.snd_una)
        if ack != sender.snd_una or handshake.source_connection_id == 0:
            self._dropped += 1
            return
        if not self._apply(Input.RECV_SYN_ACK):
            self._dropped += 1
            return
        self._adopt_peer(packet, handshake, now)
        if not self._hs_resent:
            sender.rtt.on_sample(now - self._hs_sent_time)
        self._receiver.ack_now = True  # the SYN_ACK must be acknowledged (DATA may carry it)
        self._on_established(now)

    def _adopt_peer(self, packet: wire.Packet, handshake: wire.Handshake, now: float) -> None:
        """Take what a SYN or SYN_ACK tells about the peer (specs/protocol.md section 6.1)."""
        self.remote_connection_id = handshake.source_connection_id
        self._peer_isn = packet.seq
        self._set_datagram_size(handshake.max_datagram_size)
        self._receiver.start(packet.seq + 1)
        sender = self._sender
        sender.peer_window = packet.window
        sender.peer_edge = sender.snd_una + packet.window
        self._last_heard = now

    def _set_datagram_size(self, peer_size: int) -> None:
        size = min(self._max_datagram, peer_size)
        self._max_datagram = size
        self._sender.set_max_payload(size - wire.OVERHEAD)
        self._sack_limit = min(wire.MAX_SACK_BLOCKS, (size - wire.OVERHEAD) // wire.SACK_SIZE)

    def _on_established(self, now: float) -> None:
        self._connected = True
        self._last_activity = now
        self._hs_deadline = None
        self._hs_send = False
        self._events.append(Connected())
        if self._close_deferred:
            self._close_deferred = False
            self._apply(Input.CLOSE)
            self._sender.request_fin()

    def _on_fin_acked(self, now: float) -> None:
        if not self._apply(Input.FIN_ACKED):
            return  # already past it (a later ack of the same FIN)
        if self._state is _CLOSED:
            self._events.append(Closed())
            self._stop_timers()
        elif self._state is _TIME_WAIT:
            self._enter_time_wait(now)

    def _on_peer_fin(self, now: float) -> None:
        self._events.append(PeerClosed())
        self._apply(Input.PEER_FIN)
        # After the peer's FIN we flush our own queue and close too.
        self._sender.request_fin()
        if self._state is _TIME_WAIT:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        # Closed is reported now: for the application the connection is over.  We stay
        # to re-acknowledge a retransmitted FIN (our ack of it may be lost).
        self._events.append(Closed())
        self._sender.stop_timers()
        self._persist_deadline = None
        self._linger_deadline = now + self.config.close_linger

    # --- failure --------------------------------------------------------------------------------

    def _fail(self, inp: Input, reason: str, kind: FailureKind, *, send_reset: bool = True) -> None:
        """Fail through ``inp``; queue a RESET for the peer when it is known."""
        if send_reset and self.remote_connection_id is not None:
            self._final = [self._encode(_RESET, 0, self._sender.snd_nxt, 0, b"", ())]
        if self._apply(inp):
            self._failed(reason, kind)

    def _give_up(self, reason: str) -> None:
        """The give-up budget ran out: ``Failed``, unless only our FIN's ack is missing."""
        if (
            self._state in (_PEER_CLOSED, _SIMULTANEOUS_CLOSE)
            and not self._sender.undelivered()
            and self._apply(Input.FIN_GIVE_UP)
        ):
            # Every message was acknowledged and the peer's FIN delivered: the peer has
            # most likely left TIME_WAIT before our FIN's ack reached us.  Nothing was lost.
            self._events.append(Closed())
            self._stop_timers()
            return
        self._fail(Input.GIVE_UP, reason, FailureKind.UNREACHABLE, send_reset=False)

    def _failed(self, reason: str, kind: FailureKind) -> None:
        self._events.append(Failed(reason, self._sender.undelivered(), kind))
        self._stop_timers()

    def _stop_timers(self) -> None:
        self._hs_deadline = None
        self._sender.stop_timers()
        self._receiver.ack_deadline = None
        self._persist_deadline = None
        self._linger_deadline = None

    # --- output --------------------------------------------------------------------------------

    def _encode(
        self,
        ptype: int,
        flags: int,
        seq: int,
        fragments_left: int,
        payload: Payload,
        sack: list[tuple[int, int]] | tuple[()],
    ) -> bytes:
        """Build one datagram with the current ack and window (``wire.encode_fields``)."""
        receiver = self._receiver
        ack = receiver.rcv_next if ptype != _SYN else 0
        remote = self.remote_connection_id or 0
        return wire.encode_fields(ptype, flags, remote, seq, ack, receiver.window, payload, sack)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Every datagram due now, in order.  Empty after the connection ended."""
        state = self._state
        if state in TERMINAL:
            final, self._final = self._final, []
            self._count_sent(final)
            return final
        out: list[bytes] = []
        if self._hs_send:
            self._hs_send = False
            if state is _SYN_SENT or state is _SYN_RECEIVED:
                ptype = _SYN if state is _SYN_SENT else _SYN_ACK
                payload = wire.encode_handshake(
                    wire.Handshake(self.local_connection_id, self.config.max_datagram_size)
                )
                out.append(self._encode(ptype, 0, self._isn, 0, payload, ()))
        if state in _DATA_STATES:
            self._send_data(now, out)
        self._count_sent(out)
        return out

    def _send_data(self, now: float, out: list[bytes]) -> None:
        sender = self._sender
        receiver = self._receiver
        encode = self._encode
        packets = sender.next_packets(now)
        if packets:
            self._last_activity = now
            remote = self.remote_connection_id or 0
            out += wire.encode_data_batch(remote, receiver.rcv_next, receiver.window, packets)
            if not receiver.ranges:
                # Every DATA packet carries the cumulative ack and window (piggybacking);
                # only SACK blocks need a pure ACK.
                receiver.on_ack_sent()
        if self._ping_pending:
            self._ping_pending = False
            out.append(encode(_PING, _ACK_NOW, sender.snd_nxt, 0, b"", ()))
        deadline = receiver.ack_deadline
        if receiver.ack_now or (deadline is not None and deadline <= now):
            out.append(
                encode(_ACK, 0, sender.snd_nxt, 0, b"", receiver.sack_blocks(self._sack_limit))
            )
            receiver.on_ack_sent()
            self._acks_sent += 1
        if sender.window_blocked:
            if self._persist_deadline is None:
                self._persist_interval = sender.rtt.rto
                self._persist_deadline = now + self._persist_interval
        else:
            self._persist_deadline = None

    def _count_sent(self, out: list[bytes]) -> None:
        if out:
            self._datagrams_sent += len(out)
            self._bytes_sent += sum(map(len, out))

    # --- timers ---------------------------------------------------------------------------------

    def _outstanding(self) -> bool:
        """Whether the peer owes us an answer (the condition for ``peer_timeout``)."""
        if self._state in HANDSHAKING:
            return self._state is not _INITIAL and self._state is not _LISTEN
        sender = self._sender
        return (
            sender.outstanding
            or sender.has_queued
            or (self._last_ping is not None and self._last_ping >= self._last_heard)
        )

    def _keepalive_deadline(self) -> float | None:
        interval = self.config.keepalive_interval
        if interval is None or self._state not in _DATA_STATES or self._state is _TIME_WAIT:
            return None
        last = self._last_heard
        if self._last_ping is not None and self._last_ping > last:
            last = self._last_ping
        return last + interval

    def _idle_deadline(self) -> float | None:
        timeout = self.config.idle_timeout
        if timeout is None or self._state is not _ESTABLISHED:
            return None
        sender = self._sender
        if sender.outstanding or sender.has_queued:
            return None
        return self._last_activity + timeout

    def get_timer(self) -> float | None:
        """The absolute time ``handle_timer`` should next be called, or None."""
        state = self._state
        if state in TERMINAL:
            return None
        # Drivers call this after every wakeup: take the minimum in place, without
        # building a list or calling the deadline helpers.  The inlined helpers below
        # compute the same values (tests/test_perf_invariants.py checks it).
        sender = self._sender
        earliest: float | None = None
        for deadline in (
            self._hs_deadline,
            sender.rto_deadline,
            sender.loss_deadline,
            sender.probe_deadline,
            self._receiver.ack_deadline,
            self._persist_deadline,
            self._linger_deadline,
        ):
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        config = self.config
        last_ping = self._last_ping
        # inlined _keepalive_deadline()
        interval = config.keepalive_interval
        if interval is not None and state in _DATA_STATES and state is not _TIME_WAIT:
            last = self._last_heard
            if last_ping is not None and last_ping > last:
                last = last_ping
            deadline = last + interval
            if earliest is None or deadline < earliest:
                earliest = deadline
        busy = sender.snd_una < sender.snd_nxt or sender.has_queued
        # inlined _idle_deadline()
        timeout = config.idle_timeout
        if timeout is not None and state is _ESTABLISHED and not busy:
            deadline = self._last_activity + timeout
            if earliest is None or deadline < earliest:
                earliest = deadline
        # inlined _outstanding(): the peer owes us an answer, so peer_timeout runs.
        if state in HANDSHAKING:
            outstanding = state is not _INITIAL and state is not _LISTEN
        else:
            outstanding = busy or (last_ping is not None and last_ping >= self._last_heard)
        if outstanding:
            deadline = self._last_heard + config.peer_timeout
            if earliest is None or deadline < earliest:
                earliest = deadline
        return earliest

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        if self._state in TERMINAL:
            return
        if self._outstanding() and now >= self._last_heard + self.config.peer_timeout:
            self._give_up(f"peer unreachable: nothing heard for {self.config.peer_timeout:g} s")
            return
        deadline = self._hs_deadline
        if deadline is not None and now >= deadline:
            self._hs_retries += 1
            limit = self.config.max_retransmits
            if limit is not None and self._hs_retries > limit:
                self._fail(
                    Input.GIVE_UP,
                    f"peer unreachable: handshake unanswered after {limit} retransmissions",
                    FailureKind.UNREACHABLE,
                    send_reset=False,
                )
                return
            self._sender.timeouts += 1
            self._sender.rtt.back_off()
            if self.is_client or self._hs_retries <= MAX_UNVERIFIED_SYN_ACK_RETRANSMITS:
                self._hs_send = True
                self._hs_resent = True
                self._hs_deadline = now + self._sender.rtt.rto
            else:
                # Anti-amplification (RFC 9000 section 8.1 in spirit): a SYN may be spoofed,
                # so the server stops retransmitting on its own.  A client that got a
                # SYN_ACK acknowledges it with its next packet (data or keepalive); one that
                # did not retransmits its SYN, which we answer.  peer_timeout ends the wait.
                self._hs_deadline = None
        sender = self._sender
        deadline = sender.loss_deadline
        if deadline is not None and now >= deadline:
            sender.detect_losses(now)
        deadline = sender.probe_deadline
        if deadline is not None and now >= deadline:
            sender.on_probe_timeout(now)
        deadline = sender.rto_deadline
        if deadline is not None and now >= deadline and sender.on_timeout(now) == GIVE_UP:
            self._give_up(
                f"peer unreachable: {sender.consecutive_timeouts - 1} retransmissions unanswered"
            )
            return
        deadline = self._persist_deadline
        if deadline is not None and now >= deadline:
            # Zero-window probe: a PING makes the peer report its window again.
            self._ping_pending = True
            self._last_ping = now
            self._persist_interval = min(self._persist_interval * 2, self.config.max_rto)
            self._persist_deadline = now + self._persist_interval
        deadline = self._keepalive_deadline()
        if deadline is not None and now >= deadline:
            self._ping_pending = True
            self._last_ping = now
        deadline = self._idle_deadline()
        if deadline is not None and now >= deadline:
            # idle_timeout: a graceful close, exactly as if the application called close().
            self.close(now)
        deadline = self._linger_deadline
        if deadline is not None and now >= deadline and self._apply(Input.LINGER_EXPIRED):
            self._stop_timers()
