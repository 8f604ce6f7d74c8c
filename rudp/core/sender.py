"""The sending half of a connection: fragmentation, the sliding window, acks, loss, timeouts.

Selective repeat: every DATA/FIN packet sent and not yet cumulatively
acknowledged has a record (``_Sent``), keyed by its (unbounded) sequence number.
The peer's SACK blocks (RFC 2018) mark records as received so they are never
sent again; a packet is declared lost by the packet threshold (RFC 9002
section 6.1.1) or by the retransmission timer (RFC 6298), and lost packets go
out again, oldest first, before any new data.

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
from rudp.core.rangeset import RangeSet
from rudp.core.recovery import K_PACKET_THRESHOLD, RttEstimator
from rudp.events import Event, MessageAcknowledged

Payload = bytes | memoryview

GIVE_UP: Final = 1
"""``Sender.on_timeout`` result: the retransmission budget is exhausted."""
RETRY: Final = 0
"""``Sender.on_timeout`` result: packets were queued for retransmission."""


class _Sent:
    """One DATA or FIN packet sent and not yet cumulatively acknowledged."""

    __slots__ = (
        "fragments_left",
        "in_flight",
        "is_fin",
        "lost",
        "payload",
        "retransmitted",
        "sacked",
        "sent_time",
        "transmission",
    )

    def __init__(
        self,
        payload: Payload,
        fragments_left: int,
        is_fin: bool,
        sent_time: float,
        transmission: int,
    ) -> None:
        self.payload = payload
        self.fragments_left = fragments_left
        self.is_fin = is_fin
        self.sent_time = sent_time
        self.in_flight = True
        """Counts towards the congestion window (sent, not acked, not declared lost)."""
        self.lost = False
        """Declared lost and queued for retransmission."""
        self.sacked = False
        """Selectively acknowledged: the peer holds it; never send it again."""
        self.retransmitted = False
        """Sent more than once: gives no RTT sample (Karn's rule)."""
        self.transmission = transmission
        """Number of its latest transmission in send order (see ``Sender._transmissions``)."""


class Sender:
    """Send-side state of one connection.  ``rudp.core.connection`` drives it."""

    def __init__(self, config: Config, first_seq: int, events: deque[Event]) -> None:
        self._config = config
        self._events = events
        self.rtt = RttEstimator(config.initial_rto, config.min_rto, config.max_rto)
        """RFC 6298 estimator, shared with the handshake."""
        self.cc = create_congestion_controller(config)
        """The congestion controller ``config.congestion_control`` names."""
        self.max_payload = config.max_datagram_size - wire.OVERHEAD  # lowered by the handshake
        """Largest fragment: effective datagram size minus the fixed overhead."""

        self.snd_una = first_seq
        """Lowest sequence number not cumulatively acknowledged."""
        self.snd_nxt = first_seq
        """Next sequence number a new packet will use."""
        self.largest_acked = first_seq - 1
        """Highest sequence number acknowledged cumulatively or selectively."""
        self.peer_edge = first_seq + 1
        """Right edge of the peer's window: new packets need seq < peer_edge."""
        self.peer_window = 1
        """The peer's last advertised window, packets."""
        self.in_flight = 0
        """Packets counting towards the congestion window."""

        self._sent: dict[int, _Sent] = {}
        self._sacked = RangeSet()
        self._lost: deque[int] = deque()
        self._probes = 0
        # Every transmission, first or repeated, gets the next number of this private
        # counter: a packet number in QUIC's sense that never goes on the wire.  Loss
        # detection works in send order (RFC 9002 section 6.1, RACK in RFC 8985), so a
        # retransmission that is lost again is found like any other packet, although
        # it reuses its sequence number.
        self._transmissions = 0
        self._largest_acked_transmission = -1
        self._send_order: deque[tuple[int, int]] = deque()
        """``(transmission, seq)`` of every transmission not yet judged, in send order."""
        self.loss_deadline: float | None = None
        """When the oldest unacknowledged packet sent before an acknowledged one
        crosses the time threshold (RFC 9002 section 6.1.2); None when no such packet."""

        # message queue: (id, data, length); _offset is how far the head has been cut
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

        self.rto_deadline: float | None = None
        """Absolute time the retransmission timer fires, None when stopped."""
        self.probe_deadline: float | None = None
        """Absolute time the tail-loss probe fires (RFC 8985 section 7), None when unarmed."""
        self._probe_due = False
        self._probe_armed_since_ack = False
        self.consecutive_timeouts = 0
        """Timeouts since the cumulative ack last moved (the give-up budget)."""

        # counters for Stats
        self.data_packets_sent = 0
        self.retransmissions = 0
        self.fast_retransmits = 0
        self.timeouts = 0
        self.tail_probes = 0
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

    def next_packets(self, now: float) -> list[tuple[int, Payload, int, bool, bool]]:
        """Every packet the windows allow now: ``(seq, payload, fragments_left, is_fin, retx)``.

        Retransmissions first (oldest first), then new fragments, then the FIN.
        Stops when the congestion window, the peer's window or
        ``max_send_window`` is full, or there is nothing left to send.  After a
        timeout, two probes may exceed the congestion window.
        """
        out: list[tuple[int, Payload, int, bool, bool]] = []
        if not (
            self._lost
            or self._queue
            or self._probe_due
            or (self.fin_requested and self.fin_seq is None)
        ):
            # Nothing could go out (the common case for a side that only acks, asked
            # on every ``datagrams_to_send``): skip the window arithmetic below, which
            # would end with the same empty list and the same reset of ``_probes``.
            self._probes = 0
            return out
        budget = self.cc.cwnd - self.in_flight
        if self._probes > budget:
            # After a timeout: two packets whatever the window (RFC 9002 section 6.2.4).
            budget = self._probes
        self._probes = 0
        tail_probe = self._probe_due
        if tail_probe:
            # RFC 8985 section 7.3: one packet whatever the congestion window.
            self._probe_due = False
            if budget < 1:
                budget = 1
        if budget <= 0:
            return out
        on_sent = self.cc.on_packet_sent
        lost = self._lost
        sent = self._sent
        transmissions = self._transmissions
        send_order = self._send_order
        while lost and budget > 0:
            seq = lost.popleft()
            record = sent.get(seq)
            if record is None or record.sacked or not record.lost:
                continue  # acknowledged since it was declared lost
            record.lost = False
            record.in_flight = True
            record.sent_time = now
            record.retransmitted = True
            record.transmission = transmissions
            send_order.append((transmissions, seq))
            transmissions += 1
            on_sent(now)
            out.append((seq, record.payload, record.fragments_left, record.is_fin, True))
            budget -= 1
        retransmitted = len(out)
        first_new = seq = self.snd_nxt
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
                sent[seq] = _Sent(payload, fragments_left, False, now, transmissions)
                send_order.append((transmissions, seq))
                transmissions += 1
                on_sent(now)
                out.append((seq, payload, fragments_left, False, False))
                seq += 1
            self._offset = offset
        if not queue and seq - first_new < budget and self.fin_requested and self.fin_seq is None:
            # The FIN needs no room in the peer's window (it carries no data).
            self.fin_seq = seq
            sent[seq] = _Sent(b"", 0, True, now, transmissions)
            send_order.append((transmissions, seq))
            transmissions += 1
            on_sent(now)
            out.append((seq, b"", 0, True, False))
            seq += 1
        self.snd_nxt = seq
        self._transmissions = transmissions
        if out:
            count = len(out)
            self.in_flight += count
            self.data_packets_sent += count
            self.retransmissions += retransmitted
            if tail_probe:
                # New data makes the best probe; ask for an immediate ack of it.
                seq0, payload0, left0, fin0, _ = out[0]
                out[0] = (seq0, payload0, left0, fin0, True)
                self.tail_probes += 1
        elif tail_probe:
            probe = self._tail_probe_packet(now)
            if probe is not None:
                out.append(probe)
                self.data_packets_sent += 1
                self.retransmissions += 1
        if out:
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rtt.rto
            self._arm_probe(now)
        return out

    def _tail_probe_packet(self, now: float) -> tuple[int, Payload, int, bool, bool] | None:
        """Resend the newest outstanding packet the peer has not SACKed (RFC 8985 section 7.3).

        Its ack either acknowledges it or, through SACK, reveals the earlier losses
        to ``detect_losses``.  It stays in flight; only the transmission is new.
        """
        sent = self._sent
        for seq in range(self.snd_nxt - 1, self.snd_una - 1, -1):
            record = sent.get(seq)
            if record is None or record.sacked or record.lost:
                continue
            record.sent_time = now
            record.retransmitted = True
            record.transmission = self._transmissions
            self._send_order.append((self._transmissions, seq))
            self._transmissions += 1
            if not record.in_flight:
                record.in_flight = True
                self.in_flight += 1
            self.tail_probes += 1
            return (seq, record.payload, record.fragments_left, record.is_fin, True)
        return None

    def _arm_probe(self, now: float) -> None:
        """Arm the tail-loss probe once per ack (RFC 8985 section 7.2).

        PTO = 2 * SRTT, plus the peer's delayed-ack allowance when a single packet is
        in flight, and never later than the RTO.  Without an RTT sample the RTO alone
        stands guard.
        """
        srtt = self.rtt.srtt
        if (
            srtt is None
            or self._probe_armed_since_ack
            or not self.outstanding
            or not self._config.tail_loss_probe
        ):
            return
        pto = 2 * srtt
        if self.in_flight <= 1:
            pto += self._config.max_ack_delay
        deadline = now + pto
        if self.rto_deadline is not None and deadline >= self.rto_deadline:
            return
        self.probe_deadline = deadline
        self._probe_armed_since_ack = True

    def on_probe_timeout(self, now: float) -> None:
        """The tail-loss probe timer fired: send one probe with the next packets."""
        self.probe_deadline = None
        if self.outstanding:
            self._probe_due = True

    def stop_timers(self) -> None:
        """Stop the retransmission, loss and probe timers (the connection has ended)."""
        self.rto_deadline = None
        self.loss_deadline = None
        self.probe_deadline = None

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

    def on_ack(self, now: float, ack: int, window: int, sack: list[tuple[int, int]]) -> None:
        """Process a valid cumulative ack, window and SACK blocks (see ``valid_ack``)."""
        una = self.snd_una
        if ack < una:
            return  # an old ack overtaken by newer ones: nothing new in it
        self.peer_edge = ack + window
        self.peer_window = window
        sent = self._sent
        acked = 0
        newest: _Sent | None = None
        newest_seq = -1
        largest_transmission = self._largest_acked_transmission
        if ack > una:
            # Cumulative progress: every record below ack goes (O(newly acked)).
            for seq in range(una, ack):
                record = sent.pop(seq, None)
                if record is None:
                    continue
                if record.in_flight:
                    acked += 1
                if not record.sacked:
                    newest = record
                    newest_seq = seq
                    if record.transmission > largest_transmission:
                        largest_transmission = record.transmission
            self.snd_una = ack
            self._sacked.discard_below(ack)
            self.consecutive_timeouts = 0
            self.rtt.reset_backoff()
            unacked = self._unacked
            events = self._events
            while unacked and unacked[0][0] < ack:
                _, message_id, length = unacked.popleft()
                self.queued_bytes -= length
                self.messages_acked += 1
                events.append(MessageAcknowledged(message_id))
        largest = ack - 1
        for start, end in sack:
            if end - 1 > largest:
                largest = end - 1
            # Only the sub-ranges not reported before cost anything (RangeSet.add).
            for new_start, new_end in self._sacked.add(start, end):
                for seq in range(new_start, new_end):
                    record = sent.get(seq)
                    if record is None or record.sacked:
                        continue
                    record.sacked = True
                    if record.transmission > largest_transmission:
                        largest_transmission = record.transmission
                    if record.in_flight:
                        record.in_flight = False
                        acked += 1
                    if seq > newest_seq:
                        newest = record
                        newest_seq = seq
        if acked:
            self.in_flight -= acked
        if newest is not None:
            # Karn's rule (RFC 6298 section 3): only packets sent once give samples.
            if not newest.retransmitted:
                self.rtt.on_sample(now - newest.sent_time)
            self.cc.on_packets_acked(now, acked, newest.sent_time)
        if largest > self.largest_acked:
            self.largest_acked = largest
        if largest_transmission > self._largest_acked_transmission:
            self._largest_acked_transmission = largest_transmission
            self.detect_losses(now)
        # RFC 6298 section 5.2/5.3: stop when all is acknowledged, restart on progress.
        if ack > una:
            self.rto_deadline = now + self.rtt.rto if self.snd_una < self.snd_nxt else None
        if ack > una or acked:
            # Something new was acknowledged: the tail-loss probe may be armed again.
            self.probe_deadline = None
            self._probe_armed_since_ack = False
            self._arm_probe(now)

    def detect_losses(self, now: float) -> None:
        """Declare lost what RFC 9002 section 6.1 says is lost; arm the loss timer.

        A packet sent before an acknowledged one is lost when K_PACKET_THRESHOLD
        packets sent after it are acknowledged (section 6.1.1) or when it was sent
        more than 9/8 of an RTT ago (section 6.1.2).  Both rules hold in send order,
        so the scan stops at the first packet that is not yet lost: amortised O(1),
        each transmission is judged once.  Entries for packets acknowledged or sent
        again since are stale and dropped as the scan meets them.  Called on every
        ack that acknowledges a later transmission, and when ``loss_deadline`` passes.
        """
        largest = self._largest_acked_transmission
        order = self._send_order
        sent = self._sent
        threshold = largest - K_PACKET_THRESHOLD
        # Computed at the first live entry: without loss most calls only drop stale
        # entries (positive once computed, RttEstimator.loss_delay is at least 1 ms).
        delay = -1.0
        self.loss_deadline = None
        lost = 0
        newest_lost_time = 0.0
        while order and order[0][0] < largest:
            transmission, seq = order[0]
            record = sent.get(seq)
            if (
                record is None
                or record.sacked
                or not record.in_flight
                or record.transmission != transmission
            ):
                order.popleft()
                continue
            if delay < 0:
                delay = self.rtt.loss_delay()
            # The deadline is computed exactly as it is compared, so a timer that fires
            # at ``loss_deadline`` always finds the packet lost (no float livelock).
            deadline = record.sent_time + delay
            if transmission > threshold and deadline > now:
                self.loss_deadline = deadline
                break
            order.popleft()
            record.in_flight = False
            record.lost = True
            self._lost.append(seq)
            lost += 1
            if record.sent_time > newest_lost_time:
                newest_lost_time = record.sent_time
        if lost:
            self.in_flight -= lost
            self.fast_retransmits += lost
            self.cc.on_packets_lost(now, newest_lost_time)

    # --- the retransmission timer -------------------------------------------------------

    def on_timeout(self, now: float) -> int:
        """The retransmission timer fired (RFC 6298 section 5.4-5.6).

        Returns ``GIVE_UP`` when ``max_retransmits`` consecutive timeouts have
        passed, else ``RETRY``: the RTO is doubled, every un-SACKed outstanding
        packet is marked lost (oldest first), and two probes may go out whatever
        the congestion window says (RFC 9002 section 6.2.4).
        """
        self.timeouts += 1
        self.consecutive_timeouts += 1
        limit = self._config.max_retransmits
        if limit is not None and self.consecutive_timeouts > limit:
            self.rto_deadline = None
            return GIVE_UP
        self.rtt.back_off()
        sent = self._sent
        lost: deque[int] = deque()
        for seq in range(self.snd_una, self.snd_nxt):
            record = sent.get(seq)
            if record is None or record.sacked:
                continue
            record.in_flight = False
            record.lost = True
            lost.append(seq)
        self._lost = lost
        self._send_order.clear()  # every packet in it was just declared lost
        self.loss_deadline = None
        self.probe_deadline = None
        self._probe_due = False
        self._probe_armed_since_ack = False
        self.in_flight = 0
        self.cc.on_rto(now)
        self._probes = 2
        self.rto_deadline = now + self.rtt.rto if self.outstanding else None
        return RETRY
