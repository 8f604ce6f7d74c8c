"""The sending half of a connection: the message queue, fragmentation, windows, acks.

Selective repeat over sequence numbers: every DATA/FIN packet sent and not yet
cumulatively acknowledged has a record (``_Sent``), keyed by its (unbounded)
sequence number.  The peer's SACK blocks (RFC 2018) mark records as received so
they are never sent again.  Each *transmission* of a record takes a new packet
number, and ``rudp.core.recovery.Recovery`` judges transmissions: it declares
them lost (RFC 9002 section 6.1) and runs the probe timeout (section 6.2).  Lost
records go out again, oldest first, before any new data.

What may leave at a time is the smallest of the congestion window, the pacing
budget (``rudp.core.pacing``), the peer's window and ``max_send_window``; after
a probe timeout one or two probes go out whatever those say.

Messages are cut into fragments lazily, only when the window has room: the
queue holds whole messages and an offset into the first one, and a fragment is
a ``memoryview`` slice of its message (no copy, no per-fragment bytes object up
front, so a 64 MiB message costs nothing until it is sent).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from rudp.config import Config
from rudp.core import wire
from rudp.core.congestion import create as create_congestion_controller
from rudp.core.pacing import Pacer
from rudp.core.rangeset import RangeSet
from rudp.core.recovery import PING, Recovery, RttEstimator
from rudp.events import Event, MessageAcknowledged

Payload = bytes | memoryview

OutPacket = tuple[int, int, Payload, int, bool, bool]
"""One packet for the wire: ``(pn, seq, payload, fragments_left, is_fin, ack_now)``."""

GIVE_UP: Final = 1
"""``Sender.on_pto`` result: the give-up budget is exhausted."""
RETRY: Final = 0
"""``Sender.on_pto`` result: probes will go out with the next packets."""

PTO_PROBES: Final = 2
"""RFC 9002 section 6.2.4: a sender MAY send two probes per PTO expiry; two make a
single loss of a probe less likely to cost another timeout."""


class _Sent:
    """One DATA or FIN packet (a sequence number) sent and not yet cumulatively acknowledged."""

    __slots__ = (
        "fragments_left",
        "is_fin",
        "last_pn",
        "lost",
        "lost_at",
        "lost_blind",
        "payload",
        "pns",
        "sacked",
    )

    def __init__(self, payload: Payload, fragments_left: int, is_fin: bool, pn: int) -> None:
        self.payload = payload
        self.fragments_left = fragments_left
        self.is_fin = is_fin
        self.last_pn = pn
        """Packet number of its latest transmission."""
        self.pns: list[int] | None = None
        """Packet numbers of its transmissions that Recovery still tracks; ``None`` stands
        for ``[last_pn]``, the common case of a single transmission (so a packet sent
        once costs no list: one object fewer per packet for the garbage collector)."""
        self.lost = False
        """Declared lost and queued for retransmission."""
        self.lost_at: float | None = None
        """When a transmission of it was last declared lost (for the spurious-loss undo)."""
        self.lost_blind = False
        """Declared lost while the peer's acks carried all the SACK blocks they can: it may
        have arrived unreported, so a later ack of it says nothing of reordering."""
        self.sacked = False
        """Selectively acknowledged: the peer holds it; never send it again."""


class Sender:
    """Send-side state of one connection.  ``rudp.core.connection`` drives it."""

    def __init__(self, config: Config, first_seq: int, events: deque[Event]) -> None:
        self._config = config
        self._events = events
        self.rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        """RTT estimate (RFC 9002 section 5), shared with the handshake."""
        self.cc = create_congestion_controller(config)
        """The congestion controller ``config.congestion_control`` names."""
        self.recovery = Recovery(config, self.cc, self.rtt, self._on_lost)
        """Transmission records, loss detection and the probe timeout."""
        self.pacer = Pacer(config.pacing_burst)
        """Releases packets at the controller's pacing rate (RFC 9002 section 7.7)."""
        self.max_payload = config.max_datagram_size - wire.OVERHEAD
        """Largest fragment: effective datagram size minus the fixed overhead (the
        handshake lowers it to what the peer accepts)."""

        self.snd_una = first_seq
        """Lowest sequence number not cumulatively acknowledged."""
        self.snd_nxt = first_seq
        """Next sequence number a new packet will use."""
        self.peer_edge = first_seq + 1
        """Right edge of the peer's window: new packets need seq < peer_edge."""
        self.peer_window = 1
        """The peer's last advertised window, packets."""
        self.pacing_deadline: float | None = None
        """When pacing next lets a packet go, while packets wait only for it."""

        self._sent: dict[int, _Sent] = {}
        self._sacked = RangeSet()
        self._lost: deque[int] = deque()
        self._probes = 0
        self.probe_ping = False
        """A probe is due and no data can carry it: the connection sends a PING."""

        # message queue: (id, data); _offset is how far the head has been cut
        self._queue: deque[tuple[int, Payload]] = deque()
        self._offset = 0
        # messages fully cut, waiting for the cumulative ack: (last seq, id, length)
        self._unacked: deque[tuple[int, int, int]] = deque()
        self._next_id = 0
        self.queued_bytes = 0
        """Bytes of messages not yet acknowledged (queued or in flight)."""

        self.fin_requested = False
        """``close()`` asked for a FIN after the queued data."""
        self.fin_seq: int | None = None
        """Sequence number of our FIN once it has been cut."""

        # counters for Stats
        self.data_packets_sent = 0
        self.retransmissions = 0
        self.fast_retransmits = 0
        self.probes_sent = 0
        self.timeouts = 0
        """Probe timeouts, and handshake retransmission timeouts (counted by the handshake)."""
        self.spurious_retransmissions = 0
        self._acks_truncated = False  # the last ack carried every SACK block it could
        self.messages_sent = 0
        self.messages_acked = 0

    # --- the application side ---------------------------------------------------

    def queue_message(self, data: bytes) -> int:
        """Queue one message; return its id (0, 1, 2, ... in send order)."""
        message_id = self._next_id
        self._next_id += 1
        self._queue.append((message_id, data))
        self.queued_bytes += len(data)
        self.messages_sent += 1
        return message_id

    def request_fin(self) -> None:
        """Send a FIN once every queued fragment has been sent."""
        self.fin_requested = True

    def set_max_payload(self, max_payload: int) -> None:
        """Fix the fragment size (after the handshake agreed on a datagram size)."""
        self.max_payload = max_payload

    @property
    def in_flight(self) -> int:
        """Packets counting towards the congestion window."""
        return self.recovery.in_flight

    @property
    def has_queued(self) -> bool:
        """Messages not fully cut into fragments, or a FIN not yet sent."""
        return bool(self._queue) or (self.fin_requested and self.fin_seq is None)

    @property
    def outstanding(self) -> bool:
        """Packets sent and not cumulatively acknowledged."""
        return self.snd_una < self.snd_nxt

    @property
    def fin_acked(self) -> bool:
        """Our FIN has been cumulatively acknowledged."""
        return self.fin_seq is not None and self.snd_una > self.fin_seq

    @property
    def consecutive_timeouts(self) -> int:
        """Probe timeouts since the peer last acknowledged anything (the give-up budget)."""
        return self.recovery.pto_count

    @property
    def window_blocked(self) -> bool:
        """New data waits only for the peer's window, and nothing is outstanding.

        Then no ack will come to open the window by itself: the connection
        probes (RFC 9293 section 3.8.6.1, the zero-window probe).
        """
        return (
            not self.outstanding
            and bool(self._queue)
            and self.snd_nxt >= self.peer_edge
            and not self._lost
        )

    def undelivered(self) -> tuple[int, ...]:
        """Ids of every message not acknowledged, in send order (for ``Failed``)."""
        return tuple([mid for _, mid, _ in self._unacked] + [mid for mid, _ in self._queue])

    # --- building packets ---------------------------------------------------------

    def next_packets(self, now: float) -> list[OutPacket]:
        """Every packet the windows and pacing allow now, each with a fresh packet number.

        Retransmissions first (oldest first), then new fragments, then the FIN,
        then, if a probe is still due, a repeat of the oldest unacknowledged packet.
        """
        out: list[OutPacket] = []
        self.pacing_deadline = None
        probes = self._probes
        if not (
            self._lost or self._queue or probes or (self.fin_requested and self.fin_seq is None)
        ):
            return out
        cc = self.cc
        recovery = self.recovery
        rate = cc.pacing_rate
        window_budget = cc.cwnd - recovery.in_flight
        pace_budget = self.pacer.budget(now, rate)
        budget = min(window_budget, pace_budget)
        if probes > budget:
            # RFC 9002 section 6.2.4: probes go whatever the window and pacing say.
            budget = probes
        self._probes = 0
        paced = pace_budget < window_budget
        count = self._send_lost(now, budget, out)
        count += self._send_new(now, budget - count, out)
        if probes and count < probes:
            count += self._send_probe_repeats(now, probes - count, out)
        if probes:
            # A probe asks for an immediate ack (specs/protocol.md section 3.2).
            for index in range(min(probes, len(out))):
                pn, seq, payload, left, fin, _ = out[index]
                out[index] = (pn, seq, payload, left, fin, True)
            self.probes_sent += min(probes, len(out))
            if not out:
                self.probe_ping = True
        if out:
            self.pacer.on_sent(len(out))
            self.data_packets_sent += len(out)
        waiting = bool(self._lost or self._queue or (self.fin_requested and self.fin_seq is None))
        if waiting and paced and count >= budget:
            self.pacing_deadline = self.pacer.next_release(now, rate)
        elif not waiting and count < budget:
            recovery.on_app_limited()
        return out

    def _transmit(self, now: float, seq: int, record: _Sent) -> int:
        pn = self.recovery.allocate_pn()
        if record.pns is None:
            record.pns = [record.last_pn, pn]
        else:
            record.pns.append(pn)
        record.last_pn = pn
        self.recovery.on_packet_sent(pn, seq, now)
        return pn

    def _send_lost(self, now: float, budget: int, out: list[OutPacket]) -> int:
        lost = self._lost
        sent = self._sent
        count = 0
        while lost and count < budget:
            seq = lost.popleft()
            record = sent.get(seq)
            if record is None or record.sacked or not record.lost:
                continue  # acknowledged since it was declared lost
            record.lost = False
            pn = self._transmit(now, seq, record)
            out.append((pn, seq, record.payload, record.fragments_left, record.is_fin, True))
            count += 1
        self.retransmissions += count
        return count

    def _send_new(self, now: float, budget: int, out: list[OutPacket]) -> int:
        if budget <= 0:
            return 0
        recovery = self.recovery
        sent = self._sent
        first_new = seq = self.snd_nxt
        # The burst's packets are numbered consecutively from recovery.next_pn, and
        # recovery records them all at the end (on_burst_sent): no call per packet.
        first_pn = pn = recovery.next_pn
        queue = self._queue
        # New packets need room in the peer's window and in max_send_window too.
        limit = min(self.peer_edge, self.snd_una + self._config.max_send_window, seq + budget)
        if queue and seq < limit:
            max_payload = self.max_payload
            unacked = self._unacked
            offset = self._offset
            while queue and seq < limit:
                message_id, data = queue[0]
                length = len(data)
                if offset == 0 and length <= max_payload:
                    # The common case: a message that fits one datagram.
                    payload: Payload = data
                    fragments_left = 0
                else:
                    end = offset + max_payload
                    if end > length:
                        end = length
                    payload = memoryview(data)[offset:end]
                    fragments_left = (length - end + max_payload - 1) // max_payload
                    offset = end
                if fragments_left == 0:
                    queue.popleft()
                    offset = 0
                    unacked.append((seq, message_id, length))
                sent[seq] = _Sent(payload, fragments_left, False, pn)
                out.append((pn, seq, payload, fragments_left, False, False))
                pn += 1
                seq += 1
            self._offset = offset
        if not queue and seq - first_new < budget and self.fin_requested and self.fin_seq is None:
            # The FIN needs no room in the peer's window (it carries no data).
            self.fin_seq = seq
            sent[seq] = _Sent(b"", 0, True, pn)
            out.append((pn, seq, b"", 0, True, False))
            pn += 1
            seq += 1
        if seq > first_new:
            recovery.on_burst_sent(first_pn, first_new, seq - first_new, now)
        self.snd_nxt = seq
        return seq - first_new

    def _send_probe_repeats(self, now: float, count: int, out: list[OutPacket]) -> int:
        """RFC 9002 section 6.2.4: with no new data, a probe repeats unacknowledged data.

        The oldest un-SACKed packets go again: the peer most likely misses them.
        They stay in flight; only the transmission is new.
        """
        sent = self._sent
        repeated = 0
        for seq in range(self.snd_una, self.snd_nxt):
            if repeated >= count:
                break
            record = sent.get(seq)
            if record is None or record.sacked or record.lost:
                continue
            pn = self._transmit(now, seq, record)
            out.append((pn, seq, record.payload, record.fragments_left, record.is_fin, True))
            repeated += 1
        self.retransmissions += repeated
        return repeated

    # --- acknowledgements -------------------------------------------------------------

    def valid_ack(self, ack: int, sack: list[tuple[int, int]]) -> bool:
        """Whether an ack (already expanded) is plausible: nothing unsent acknowledged.

        SACK blocks must lie in ``[ack, snd_nxt)`` and be non-empty (RFC 2018).
        """
        nxt = self.snd_nxt
        if ack > nxt:
            return False
        # ``not sack`` first: most acks have no blocks, and a generator costs more than the check.
        return not sack or all(ack <= start < end <= nxt for start, end in sack)

    def on_ack(
        self,
        now: float,
        ack: int,
        window: int,
        sack: list[tuple[int, int]],
        largest_pn: int,
        ack_delay: float,
    ) -> None:
        """Process a valid cumulative ack, window, SACK blocks and packet-number echo."""
        # A full set of blocks may leave older arrivals out (section 8.2): losses declared
        # now may be arrivals the peer could not report.
        self._acks_truncated = len(sack) >= wire.MAX_SACK_BLOCKS
        una = self.snd_una
        if ack < una:
            return  # an old ack overtaken by newer ones: nothing new in it
        self.peer_edge = ack + window
        self.peer_window = window
        sent = self._sent
        delivered: list[int] = []
        if ack > una:
            # Cumulative progress: every record below ack goes (O(newly acked)).
            pop = sent.pop
            for seq in range(una, ack):
                record = pop(seq, None)
                if record is None or record.sacked:
                    continue
                if record.pns is None and record.lost_at is None:
                    # The common case, inline: sent once and never declared lost, so
                    # there is no spurious loss to detect (see _delivered).
                    delivered.append(record.last_pn)
                else:
                    self._delivered(record, delivered, largest_pn, now)
            self.snd_una = ack
            self._sacked.discard_below(ack)
            unacked = self._unacked
            events = self._events
            while unacked and unacked[0][0] < ack:
                _, message_id, length = unacked.popleft()
                self.queued_bytes -= length
                self.messages_acked += 1
                events.append(MessageAcknowledged(message_id))
        for start, end in sack:
            # Only the sub-ranges not reported before cost anything (RangeSet.add).
            for new_start, new_end in self._sacked.add(start, end):
                for seq in range(new_start, new_end):
                    record = sent.get(seq)
                    if record is None or record.sacked:
                        continue
                    record.sacked = True
                    self._delivered(record, delivered, largest_pn, now)
        self.recovery.on_ack_received(now, largest_pn, ack_delay, delivered)

    def _delivered(self, record: _Sent, delivered: list[int], largest_pn: int, now: float) -> None:
        """The peer holds ``record``'s data: its transmissions are acknowledged."""
        # (The record is popped or SACKed: its packet numbers are done with.)
        if record.pns is None:
            delivered.append(record.last_pn)
        else:
            delivered.extend(record.pns)
        if record.lost_at is not None and (record.lost or record.last_pn > largest_pn):
            # Its data arrived through a transmission older than the one we would send
            # (or sent) after declaring it lost: that loss was spurious (RFC 4015).
            self.spurious_retransmissions += 1
            self.recovery.on_spurious_retransmission(
                record.lost_at, now, reordered=not record.lost_blind
            )
        record.lost = False

    def _on_lost(self, pn: int, seq: int, now: float) -> None:
        """Recovery declared transmission ``pn`` lost: queue its data again, if needed."""
        if seq == PING:
            return
        record = self._sent.get(seq)
        if record is None or record.sacked:
            return
        pns = record.pns
        if pns is None:
            if pn != record.last_pn:
                return  # not its transmission: that one is still on its way
            record.pns = pns = []
        elif pn in pns:
            pns.remove(pn)
        if pns or record.lost:
            return  # a later transmission (a probe) is still on its way
        record.lost = True
        record.lost_at = now
        record.lost_blind = self._acks_truncated
        self._lost.append(seq)
        self.fast_retransmits += 1

    # --- timers ---------------------------------------------------------------------

    def on_loss_timeout(self, now: float) -> None:
        """The time-threshold loss timer fired (RFC 9002 section 6.1.2)."""
        self.recovery.detect_losses(now)

    def on_pto(self, now: float) -> int:
        """The probe timer fired (RFC 9002 section 6.2.4).

        Returns ``GIVE_UP`` once ``max_retransmits`` consecutive timeouts passed
        without an acknowledgement, else ``RETRY``: one or two probes go out with
        the next packets.  Nothing is declared lost and the window is unchanged.
        """
        self.timeouts += 1
        if not self.recovery.on_pto(now):
            return GIVE_UP
        self._probes = PTO_PROBES if self.outstanding or self.has_queued else 1
        return RETRY

    def stop_timers(self) -> None:
        """Stop the loss, probe and pacing timers (the connection has ended)."""
        self.recovery.stop_timers()
        self.pacing_deadline = None
