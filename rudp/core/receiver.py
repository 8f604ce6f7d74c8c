"""The receiving half of a connection: dedup, reordering, reassembly, acknowledgements.

Sequence numbers ``[rcv_next, rcv_next + window)`` are acceptable; packets that
arrive early wait in ``_held`` and are reported to the peer as SACK blocks
(RFC 2018, lowest first).  In-order packets are reassembled into messages and
delivered exactly once, in order.

Memory is bounded in bytes (specs/protocol.md sections 11.1 and 13.4): the message
being reassembled and the messages delivered but not yet read count against
``Config.receive_buffer`` (and an endpoint's shared ``Budget``); the window we
advertise is what is left, divided by the effective payload size, so the packets
held out of order, which lie inside it, fit in the rest.  The message being
reassembled is capped at ``Config.max_message_size`` (<= ``receive_buffer``); when it
has used up the budget and nothing is unread, the window stays at one packet so that
it can still complete.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from rudp.config import Config
from rudp.core.rangeset import RangeSet
from rudp.core.wire import OVERHEAD, SEQ_MASK, AckFields, ack_delay_units, expand_seq
from rudp.events import Event, MessageReceived

ACCEPTED: Final = 0
"""``on_data`` result: the packet was new and accepted (or held)."""
DUPLICATE: Final = 1
"""``on_data`` result: we already had it (re-ack, not an error)."""
DROPPED: Final = 2
"""``on_data`` result: outside the window or inconsistent with a FIN; drop and count."""
FIN_DELIVERED: Final = 3
"""``on_data`` result: the peer's FIN became in-order; every message before it is out."""
PROTOCOL_ERROR: Final = 4
"""``on_data`` result: the peer broke the fragment rules; ``error`` says how."""

MAX_PN_JUMP: Final = 1 << 20
"""Largest forward jump of the peer's packet numbers we believe (section 8.7): a forged
packet cannot push the echo beyond what the peer could have sent between two arrivals."""

_Held = tuple[bool, int, bytes]  # (is_fin, fragments_left, payload)


class Budget:
    """Receive bytes shared by the connections of one endpoint (``Config.max_buffered_bytes``).

    Each receiver adds what it buffers to ``used`` and takes it back when it is read
    or the connection ends (``Receiver.release``); windows shrink as it fills.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def free(self) -> int:
        """Bytes left (negative when a message in progress overran it)."""
        return self.limit - self.used


class Receiver:
    """Receive-side state of one connection.  ``rudp.core.connection`` drives it."""

    def __init__(self, config: Config, events: deque[Event]) -> None:
        self._config = config
        self._events = events
        self._window_size = config.receive_window
        self._max_message = config.max_message_size
        self._budget = config.receive_buffer
        self._payload = config.max_datagram_size - OVERHEAD
        self.pool: Budget | None = None
        """The endpoint's shared budget, if any (set before the first packet)."""
        self._held_bytes = 0
        self._unread_bytes = 0
        self.rcv_next = 0
        """Next in-order sequence number expected: the cumulative ack."""
        self._held: dict[int, _Held] = {}
        self._last_arrival: int | None = None  # the most recent out-of-order or duplicate seq
        self.ranges = RangeSet()
        """Sequence numbers held above ``rcv_next``: the SACK blocks."""
        self.fin_seq: int | None = None
        """Sequence number of the peer's FIN, once seen."""
        self.fin_delivered = False
        """The peer's FIN became in-order."""
        self.error = ""
        """Why ``on_data`` returned PROTOCOL_ERROR."""

        # reassembly of the message in progress
        # The fragments are kept apart and joined once: appending each to a bytearray
        # copies the message again whenever the buffer grows.
        self._parts: list[bytes] | None = None
        self._parts_size = 0
        """Bytes in ``_parts`` (0 with no message in progress)."""
        self._expect_left = 0
        self._fragments = 0

        # delivered-but-unread accounting ((packets, bytes) per undelivered MessageReceived)
        self.unread = 0
        self._unread_sizes: deque[tuple[int, int]] = deque()

        # acknowledgement scheduling (RFC 9000 section 13.2.1, RFC 5681 section 4.2)
        self.ack_now = False
        """An ack must go out at the next ``datagrams_to_send``."""
        self.ack_deadline: float | None = None
        """When a delayed ack is due (None: no ack owed)."""
        self._unacked_eliciting = 0
        self.last_advertised = self.window
        # Below this advertised window, reading a message triggers a window update.
        self._update_threshold = max(1, self.last_advertised // 4)

        # the packet-number echo (specs/protocol.md section 8.7)
        self.largest_pn = -1
        """Largest packet number received from the peer, -1 before any."""
        self._largest_pn_time = 0.0

        # counters for Stats
        self.data_packets_received = 0
        self.duplicates = 0
        self.messages_delivered = 0

    def start(self, first_seq: int) -> None:
        """The handshake told us the peer's first data sequence number."""
        self.rcv_next = first_seq

    def set_payload_size(self, payload: int) -> None:
        """The handshake fixed the effective payload size: the unit of the window."""
        self._payload = payload
        self._update_threshold = max(1, min(self._window_size, self._budget // payload) // 4)

    @property
    def window(self) -> int:
        """Packets beyond the cumulative ack we accept (our advertised window).

        What is left of the byte budget after the unread messages and the message in
        progress, in packets of the effective payload size, within ``receive_window``
        packets (section 11.1).
        """
        used = self._unread_bytes
        packets = self.unread
        parts = self._parts
        if parts is not None:
            used += self._parts_size
            packets += self._fragments
        free = self._budget - used
        pool = self.pool
        if pool is not None and pool.limit - pool.used < free:
            free = pool.limit - pool.used
        window = free // self._payload
        cap = self._window_size - packets
        if cap < window:
            window = cap
        if window > 0:
            return window
        # A message that filled the budget with nothing unread must still complete.
        return 1 if parts is not None and not self._unread_sizes else 0

    @property
    def buffered(self) -> int:
        """Bytes held: out of order, the message in progress, delivered but unread."""
        return self._held_bytes + self._unread_bytes + self._parts_size

    def release(self) -> None:
        """The connection is over: give its bytes back to the shared budget."""
        pool = self.pool
        if pool is not None:
            pool.used -= self.buffered
            self.pool = None

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks: the most recent arrival's first, then the highest.

        Section 8.2: the sender remembers every block it was told, so what matters is
        that each arrival is reported; the highest blocks hold the newest arrivals.
        Reporting the lowest instead would hide the top of the window whenever there
        are more holes than blocks, and the sender, whose loss detection runs on
        packet numbers (section 10), would resend what arrived.
        """
        return self.ranges.newest_first(limit, self._last_arrival)

    def on_data(self, now: float, seq: int, is_fin: bool, fragments_left: int, data: bytes) -> int:
        """Process one DATA or FIN packet (``seq`` already expanded).  Returns a result code."""
        self.data_packets_received += 1
        rcv_next = self.rcv_next
        parts = self._parts
        size = len(data)
        if parts is None:
            simple = not fragments_left and size <= self._max_message  # a whole message
        else:
            # The next fragment of the message in progress as ``_consume`` would take it,
            # but not its last one (that one delivers: the general path does it).
            simple = (
                0 < fragments_left == self._expect_left
                and size > 0
                and self._parts_size + size <= self._max_message
                and self.fin_seq is None
            )
        if simple and seq == rcv_next and not is_fin and not self._held and self.window > 0:
            # Fast path: the next packet, a whole message or a middle fragment, nothing
            # waiting behind it.
            self.rcv_next = seq + 1
            if self.pool is not None:
                self.pool.used += size
            if parts is None:
                self._events.append(MessageReceived(data))
                self._unread_sizes.append((1, size))
                self.unread += 1
                self._unread_bytes += size
                self.messages_delivered += 1
            else:
                parts.append(data)
                self._parts_size += size
                self._fragments += 1
                self._expect_left = fragments_left - 1
            if not self.ack_now:
                self._unacked_eliciting += 1
                if self._unacked_eliciting >= 2:
                    self.ack_now = True
                elif self.ack_deadline is None:
                    self.ack_deadline = now + self._config.max_ack_delay
            return ACCEPTED
        # None of the rules below can apply to the next packet when nothing is held, no
        # FIN was seen and the window has room: the next fragment of a message, mostly.
        if not (
            seq == rcv_next
            and not is_fin
            and not self._held
            and self.fin_seq is None
            and self.window > 0
        ):
            if seq < rcv_next or seq in self._held:
                # RFC 5681 section 4.2 / RFC 9000 section 13.2.1: a duplicate is acked at
                # once (our earlier ack may have been lost).
                self.duplicates += 1
                self._last_arrival = seq
                self.ack_now = True
                return DUPLICATE
            fin_seq = self.fin_seq
            if fin_seq is not None and (seq > fin_seq or (is_fin and seq != fin_seq)):
                return DROPPED  # nothing follows a FIN
            limit = self.window
            if is_fin and limit < 1:
                limit = 1  # a FIN needs no buffer: accept it at rcv_next even with a zero window
            if seq >= rcv_next + limit:
                # Outside the window (RFC 9293 section 3.10.7.4): drop, but tell the sender
                # where the window is.
                self.ack_now = True
                return DROPPED
            if is_fin:
                last = self.ranges.last
                if last is not None and last - 1 > seq:
                    return DROPPED  # data beyond the FIN: drop the FIN, keep the data
                self.fin_seq = seq
                self.ack_now = True  # a FIN is acked immediately (specs/protocol.md section 6)
            if seq != rcv_next:
                # Out of order: hold it, ack at once so the sender sees the gap (RFC 5681 4.2).
                self._held[seq] = (is_fin, fragments_left, data)
                self._held_bytes += len(data)
                if self.pool is not None:
                    self.pool.used += len(data)
                self.ranges.add(seq, seq + 1)
                self._last_arrival = seq
                self.ack_now = True
                return ACCEPTED
        if self.pool is not None:
            self.pool.used += len(data)
        result = self._consume(is_fin, fragments_left, data)
        rcv_next += 1
        held = self._held
        if held:
            # A gap was filled: deliver what waited behind it, and ack at once.
            self.ack_now = True
            while result == ACCEPTED and rcv_next in held:
                item = held.pop(rcv_next)
                self._held_bytes -= len(item[2])
                result = self._consume(item[0], item[1], item[2])
                rcv_next += 1
            self.ranges.discard_below(rcv_next)
        self.rcv_next = rcv_next
        if not self.ack_now:
            self._unacked_eliciting += 1
            if self._unacked_eliciting >= 2:
                self.ack_now = True
            elif self.ack_deadline is None:
                self.ack_deadline = now + self._config.max_ack_delay
        return result

    def _consume(self, is_fin: bool, fragments_left: int, data: bytes) -> int:
        """Reassemble one in-order packet; deliver a message when it completes."""
        parts = self._parts
        if is_fin:
            if parts is not None:
                self.error = "FIN inside a message"
                return PROTOCOL_ERROR
            self.fin_delivered = True
            return FIN_DELIVERED
        if parts is None:
            if fragments_left == 0:
                if len(data) > self._max_message:
                    self.error = "message too large"
                    return PROTOCOL_ERROR
                self._deliver(data, 1)
                return ACCEPTED
            if not data:
                self.error = "empty fragment inside a message"
                return PROTOCOL_ERROR
            self._parts = [data]
            self._parts_size = len(data)
            self._expect_left = fragments_left - 1
            self._fragments = 1
        else:
            if fragments_left != self._expect_left:
                self.error = "inconsistent fragments_left"
                return PROTOCOL_ERROR
            if not data and fragments_left:
                self.error = "empty fragment inside a message"
                return PROTOCOL_ERROR
            parts.append(data)
            self._parts_size += len(data)
            self._fragments += 1
            self._expect_left = fragments_left - 1
        if self._parts_size > self._max_message:
            self.error = "message too large"
            return PROTOCOL_ERROR
        if fragments_left == 0:
            assert self._parts is not None
            message = b"".join(self._parts)
            self._parts = None
            self._parts_size = 0
            self._deliver(message, self._fragments)
        return ACCEPTED

    def _deliver(self, message: bytes, packets: int) -> None:
        self._events.append(MessageReceived(message))
        self._unread_sizes.append((packets, len(message)))
        self.unread += packets
        self._unread_bytes += len(message)
        self.messages_delivered += 1

    def on_packet_number(self, wire_pn: int, now: float) -> None:
        """A plausible packet of the peer arrived with packet number ``wire_pn`` (32 bits)."""
        expected = self.largest_pn + 1
        if wire_pn == (expected & SEQ_MASK):
            # The next packet number, the common case: its own expansion, and new.
            self.largest_pn = expected
            self._largest_pn_time = now
            return
        pn = expand_seq(wire_pn, expected)
        if self.largest_pn < pn <= self.largest_pn + MAX_PN_JUMP:
            self.largest_pn = pn
            self._largest_pn_time = now

    def ack_fields(self, now: float | None) -> AckFields:
        """The ack, window, largest packet number and ack delay every packet carries.

        The delay is how long the largest packet number has waited for this
        datagram (RFC 9000 section 13.2.5), so the peer can take it out of its RTT sample.
        """
        largest = self.largest_pn
        if largest < 0:
            return AckFields(self.rcv_next, self.window, 0, 0)
        delay = 0 if now is None else ack_delay_units(now - self._largest_pn_time)
        return AckFields(self.rcv_next, self.window, largest, delay)

    def on_read(self) -> None:
        """The application took one ``MessageReceived``: its packets leave the window.

        If the window we last advertised was zero or small, an ack goes out at
        once so a sender waiting on it is not stalled until its probe timer.
        """
        packets, size = self._unread_sizes.popleft()
        self.unread -= packets
        self._unread_bytes -= size
        if self.pool is not None:
            self.pool.used -= size
        last = self.last_advertised
        threshold = self._update_threshold
        if last < threshold:
            window = self.window
            if window > last and (last == 0 or window >= threshold):
                self.ack_now = True

    def on_ack_sent(self) -> None:
        """An ack (pure or piggybacked) with the current state went out."""
        self.ack_now = False
        self.ack_deadline = None
        self._unacked_eliciting = 0
        self.last_advertised = self.window

    @property
    def holds_data(self) -> bool:
        """Data received and not yet delivered: held out of order, or a message in reassembly."""
        return bool(self._held) or self._parts is not None

    @property
    def held_count(self) -> int:
        """Out-of-order packets held."""
        return len(self._held)
