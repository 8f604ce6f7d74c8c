"""How a connection ends (specs/protocol.md sections 6.3 to 6.6), sans-IO like the rest.

``Closing`` is the component ``SansIOConnection`` delegates its end to, as it
delegates its start to ``rudp.core.handshake.Opening``: the graceful close and
the full close (RFC 1122 section 4.2.2.13), ``abort()``, giving up, and the
RESETs and stateless resets that arrive, each checked for plausibility before it
is believed (RFC 5961 section 3, RFC 9293 section 3.10.7, RFC 9000 section 10.3).
It moves the connection's ``StateMachine`` like every other part and queues the
one RESET a terminal connection still hands out (``final``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from rudp.config import Config
from rudp.core import wire
from rudp.core.handshake import Opening
from rudp.core.receiver import Receiver
from rudp.core.sender import Sender
from rudp.core.state import TERMINAL, ConnectionState, Input, StateMachine
from rudp.core.timers import Timers
from rudp.core.tokens import tokens_equal
from rudp.errors import LocalProtocolError
from rudp.events import Closed, Event, Failed, FailureKind, PeerClosed

_S = ConnectionState

CHALLENGE_ACK_INTERVAL: Final = 0.5
"""Seconds between two challenge ACKs of one connection, at least (section 6.4).

RFC 5961 section 7 asks for a limit so that a spray of forged in-window RESETs
cannot turn the connection into an ACK reflector.  One challenge per half second
(two per second, the per-socket interval Linux uses for its challenge and
out-of-window ACKs, ``tcp_invalid_ratelimit``) is plenty for the only thing a
challenge is for: a genuine peer without a token that lost track of our sequence
numbers answers it with an exact-sequence RESET, and one answer suffices.  The
limit is per connection, not shared by the endpoint: a shared counter lets an
off-path attacker tell, by the challenges it stops seeing, whether a guess hit
another connection (CVE-2016-5696)."""

_CLEAN_END_STATES = (_S.PEER_CLOSED, _S.SIMULTANEOUS_CLOSE)
"""The peer's FIN was delivered and ours is not yet acknowledged."""


class Closing:
    """One connection's end: close, abort, give-up, and the resets it sends or receives."""

    def __init__(
        self,
        config: Config,
        *,
        machine: StateMachine,
        sender: Sender,
        receiver: Receiver,
        opening: Opening,
        timers: Timers,
        events: deque[Event],
        reset_datagram: Callable[[], bytes],
    ) -> None:
        self._config = config
        self._sm = machine
        self._sender = sender
        self._receiver = receiver
        self._opening = opening
        self._timers = timers
        self._events = events
        self._reset_datagram = reset_datagram
        self.final: list[bytes] = []
        """The RESET the next ``datagrams_to_send`` hands out after the end (at most one)."""
        self.reading = True
        """False after a full close: the application reads no more (RFC 1122 4.2.2.13)."""
        self.reset_owed = False
        """Full close: data of the peer was or will be lost; a RESET goes once ours is acked."""
        self.resets_rejected = 0
        """RESETs and stateless resets that were not plausible (``Stats.resets_rejected``)."""
        self.challenge_acks_sent = 0
        """Challenge ACKs scheduled (``Stats.challenge_acks_sent``)."""
        self._last_challenge: float | None = None

    # --- local calls -----------------------------------------------------------------------

    def close(self, now: float | None, *, reading: bool, left_unread: bool) -> None:
        """``SansIOConnection.close``: a FIN after every queued message.

        ``reading=True`` is a half-close: the peer's messages are still delivered
        until its own FIN.  ``reading=False`` is a full close (section 6.3, RFC 1122
        section 4.2.2.13): the application will read no more, so the peer's later
        data is neither delivered nor acknowledged (``refuses_data``), and if any was
        lost (later data, data pending here, or ``left_unread``: the application
        leaves messages unread it was already handed) a RESET tells the peer once all
        of ours are acknowledged.  A full close may follow a half-close.

        During the handshake (and on a server still waiting for its SYN) the close
        is deferred until the handshake finishes.  Before ``connect()`` the client
        ends at once: ``Closed``, or ``Failed`` listing the queued messages if
        there were any.
        """
        sm = self._sm
        state = sm.state
        if state is _S.INITIAL and self._sender.has_queued:
            self.fail(
                Input.ABORT,
                "closed before connecting",
                FailureKind.CLOSED_BY_APPLICATION,
                send_reset=False,
            )
            return
        if not sm.apply(Input.CLOSE):  # during the handshake: deferred (state.DEFERRING)
            raise LocalProtocolError(f"close() not allowed in state {state.name}")
        if state is _S.INITIAL:
            self._events.append(Closed())
            return
        if state is _S.ESTABLISHED:
            self._sender.request_fin()
        if reading or not self.reading:
            return
        self.reading = False
        receiver = self._receiver
        # RFC 1122 section 4.2.2.13: a CLOSE while received data is still pending (unread by
        # the application, in the driver or still queued here, or held for reassembly or
        # reordering) tells the peer with a RESET that data was lost.
        lost = left_unread or receiver.unread or receiver.holds_data
        if lost and sm.state not in TERMINAL and sm.state is not _S.TIME_WAIT:
            self.reset_owed = True
            self.reset_if_acknowledged()

    def abort(self, reason: str) -> None:
        """``SansIOConnection.abort``: a RESET (if the peer is known) and ``Failed``."""
        state = self._sm.state
        if state in TERMINAL:
            self._sm.apply(Input.ABORT)
            return
        if state is _S.TIME_WAIT:
            # Closed was already reported; just stop lingering.
            self._sm.apply(Input.ABORT)
            self.stop_timers()
            return
        self.fail(Input.ABORT, reason, FailureKind.ABORTED)

    # --- the full close ------------------------------------------------------------------

    def refuses_data(self, seq: int, is_fin: bool) -> bool:
        """After a full close: new DATA (``seq`` expanded) is neither delivered nor acked.

        An acknowledgement would make the peer report the message delivered
        (``MessageAcknowledged`` means deliverable here), but nobody will read it:
        the peer learns from our RESET instead (RFC 1122 section 4.2.2.13).
        Duplicates are re-acknowledged as always, and the peer's FIN is taken: it
        loses nothing.
        """
        if self.reading or is_fin or seq < self._receiver.rcv_next:
            return False
        self.reset_owed = True
        self.reset_if_acknowledged()
        return True

    def reset_if_acknowledged(self) -> None:
        """A RESET is owed: send it now if every message of ours is acknowledged.

        Our own messages come first: the RESET waits for their acknowledgement,
        so a full close never loses our data silently (it fails, listing them, if
        they never get through).
        """
        sender = self._sender
        if sender.messages_acked >= sender.messages_sent and self._sm.apply(Input.RESET_UNREAD):
            self.final = [self._reset_datagram()]
            self._events.append(Closed())
            self.stop_timers()

    # --- ends --------------------------------------------------------------------------

    def on_fin_acked(self, now: float) -> None:
        """The cumulative ack passed our FIN."""
        if not self._sm.apply(Input.FIN_ACKED):
            return  # already past it (a later ack of the same FIN)
        if self._sm.state is _S.CLOSED:
            self._events.append(Closed())
            self.stop_timers()
        elif self._sm.state is _S.TIME_WAIT:
            self._enter_time_wait(now)

    def on_peer_fin(self, now: float) -> None:
        """The peer's FIN became in order: every message before it was delivered."""
        self._events.append(PeerClosed())
        self._sm.apply(Input.PEER_FIN)
        # After the peer's FIN we flush our own queue and close too.
        self._sender.request_fin()
        if self._sm.state is _S.TIME_WAIT:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        # Closed is reported now: for the application the connection is over.  We stay
        # to re-acknowledge a retransmitted FIN (our ack of it may be lost).
        self._events.append(Closed())
        self._sender.stop_timers()
        self._timers.linger(now)

    def fail(self, inp: Input, reason: str, kind: FailureKind, *, send_reset: bool = True) -> None:
        """Fail through ``inp``; queue a RESET for the peer when it is known."""
        if send_reset:
            self._queue_reset()
        if self._sm.apply(inp):
            self._failed(reason, kind)

    def _queue_reset(self) -> None:
        if self._opening.remote_connection_id is not None:
            # Section 6.4: our token makes the RESET plausible whatever its sequence number.
            self.final = [self._reset_datagram()]

    def _only_fin_unacknowledged(self) -> bool:
        """Both sides closed, every message acknowledged; only our FIN's ack is missing."""
        return self._sm.state in _CLEAN_END_STATES and not self._sender.undelivered()

    def give_up(self, reason: str) -> None:
        """The give-up budget ran out: ``Failed``, unless only our FIN's ack is missing.

        Either way the peer gets a RESET once the handshake is over (section 6.4): a
        peer that can still hear us but not be heard learns at once instead of after
        its own ``peer_timeout``.  Not before: a server's client has not proved its
        address yet, and the SYN may be spoofed (section 17.3).
        """
        if self._sm.connected:
            self._queue_reset()
        if self._only_fin_unacknowledged() and self._sm.apply(Input.FIN_GIVE_UP):
            # Every message was acknowledged and the peer's FIN delivered: the peer has
            # most likely left TIME_WAIT before our FIN's ack reached us.  Nothing was lost.
            self._events.append(Closed())
            self.stop_timers()
            return
        self.fail(Input.GIVE_UP, reason, FailureKind.UNREACHABLE, send_reset=False)

    def _failed(self, reason: str, kind: FailureKind) -> None:
        self._events.append(Failed(reason, self._sender.undelivered(), kind))
        self.stop_timers()

    def stop_timers(self) -> None:
        """The connection ended: no timer of any part runs any more."""
        self._opening.deadline = None
        self._sender.stop_timers()
        self._receiver.ack_deadline = None
        self._timers.stop()

    def _reset_by_peer(self, inp: Input, reason: str) -> None:
        """A plausible reset: ``Failed``, or ``Closed`` if the peer left after a clean close."""
        if self._only_fin_unacknowledged() and self._sm.apply(Input.PEER_LEFT):
            # Section 6.4: the peer's FIN was delivered and it acknowledged all our messages;
            # only our FIN's ack is missing.  The peer is gone, but nothing was lost.
            self._events.append(Closed())
            self.stop_timers()
        elif self._sm.apply(inp):
            self._failed(reason, FailureKind.RESET_BY_PEER)

    # --- resets received ----------------------------------------------------------------

    def on_reset(self, packet: wire.Packet, now: float) -> bool:
        """A RESET for our connection id: False if it was not taken (the caller counts a drop).

        Section 6.4 (RFC 5961 section 3.2, RFC 9293 section 3.10.7): plausible if it
        carries the peer's token or exactly the sequence number we expect next.
        """
        sm = self._sm
        if not sm.allows(Input.RECV_RESET):
            return False
        opening = self._opening
        sender = self._sender
        if sm.state is _S.SYN_SENT:
            # RFC 9293 section 3.10.7.3: no token yet; plausible only if it acknowledges
            # exactly our SYN (the one thing the server knows that a blind attacker does not).
            if wire.expand_seq(packet.ack, sender.snd_una) != sender.snd_una:
                self.resets_rejected += 1
                return False
            # RFC 9293 section 3.10.7.3: "connection refused".  A server answers a SYN with a
            # RESET only when a cap refuses it (section 13.4-5) or it does not accept.
            self._reset_by_peer(
                Input.RECV_RESET,
                "connection refused by peer: it reset the handshake (it is not accepting, "
                "or it is full: max_connections or max_buffered_bytes)",
            )
            return True
        receiver = self._receiver
        rcv_next = receiver.rcv_next
        seq = wire.expand_seq(packet.seq, rcv_next)
        token = opening.peer_reset_token
        if (token != wire.NO_RESET_TOKEN and tokens_equal(packet.payload, token)) or (
            seq == rcv_next
        ):
            self._take_final_ack(packet, now)
            self._reset_by_peer(Input.RECV_RESET, "reset by peer")
            return True
        self.resets_rejected += 1
        if sm.connected and rcv_next < seq < rcv_next + max(receiver.window, 1):
            # RFC 5961 section 3.2: in window but not exact: a challenge ACK tells a genuine
            # peer the sequence number to reset with; a blind attacker learns nothing.
            last = self._last_challenge
            if last is None or now - last >= CHALLENGE_ACK_INTERVAL:
                self._last_challenge = now
                self.challenge_acks_sent += 1
                receiver.ack_now = True
        return False

    def _take_final_ack(self, packet: wire.Packet, now: float) -> None:
        """A plausible RESET's cumulative ack is the peer's last word on our messages.

        Taken (if valid, section 8.5) before ``Failed`` is reported, so that
        ``undelivered`` names exactly what the peer did not acknowledge even when
        its last ack before the RESET was lost.
        """
        sender = self._sender
        recovery = sender.recovery
        largest = wire.expand_seq(packet.largest_received, recovery.next_pn - 1)
        ack = wire.expand_seq(packet.ack, sender.snd_nxt)
        if largest < recovery.next_pn and ack > sender.snd_una and sender.valid_ack(ack, []):
            sender.on_ack(now, ack, packet.window, [], largest, 0.0)

    def on_stateless_reset(self, packet: wire.Packet) -> bool:
        """A stateless reset (section 6.6.1, RFC 9000 section 10.3): False if not taken.

        Its connection id is the one the peer issued (ours for it is unknown to an
        endpoint that lost its state), and only the peer's token makes it plausible.
        Never answered: an answer could start a loop of resets between two endpoints.
        """
        if not self._sm.allows(Input.RECV_STATELESS_RESET):
            return False
        token = self._opening.peer_reset_token
        if (
            packet.connection_id != self._opening.remote_connection_id
            or token == wire.NO_RESET_TOKEN
            or not tokens_equal(packet.payload, token)
        ):
            self.resets_rejected += 1
            return False
        self._reset_by_peer(
            Input.RECV_STATELESS_RESET,
            "reset by peer: it lost the connection's state (it restarted)",
        )
        return True
