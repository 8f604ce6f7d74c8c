"""The connection state machine, as data.

Everything that affects a connection's state lives here: the states, the
inputs that can move it, the one table ``TRANSITIONS`` mapping ``(state, input)``
to the next state, the two facts a state alone does not tell (``StateMachine``:
whether the handshake ever finished, and a ``close()`` deferred during it), and
the groups of states the connection asks about.  ``rudp.core.connection`` changes
state only through ``StateMachine.apply``; it never assigns a state directly.

A pair that is *not* in the table is a protocol error, handled by the kind of
input (see ``Input``):

- a packet input (``RECV_*``) not in the table: the datagram is dropped and
  counted in ``Stats.datagrams_dropped`` (for example a SYN_ACK reaching a
  server, or DATA before the handshake);
- a local input (``CONNECT``, ``SEND``, ``CLOSE``) not in the table: the call
  raises ``LocalProtocolError`` (for example ``send()`` after ``close()``);
- the internal inputs (``HANDSHAKE_ACKED``, ``PEER_FIN``, ``FIN_ACKED``,
  ``GIVE_UP``, ``PROTOCOL_ERROR``, ``LINGER_EXPIRED``, ``FIN_GIVE_UP``,
  ``PEER_LEFT``, ``RESET_UNREAD``) are only generated where the table has them
  (``RESET_UNREAD`` is tried whenever a full close may owe its RESET, and taken
  once the connection is past the handshake).

The diagram in specs/protocol.md is ``to_mermaid()``'s output; a test checks
that the two agree.
"""

from __future__ import annotations

import enum


class ConnectionState(enum.IntEnum):
    """States of one connection (names follow RFC 9293's TCP states where they match)."""

    INITIAL = 0
    """Client before ``connect()``."""
    LISTEN = 1
    """Server waiting for the client's SYN."""
    SYN_SENT = 2
    """Client sent SYN, waits for SYN_ACK."""
    SYN_RECEIVED = 3
    """Server sent SYN_ACK, waits for the client to acknowledge it."""
    ESTABLISHED = 4
    """Handshake done; messages flow both ways."""
    CLOSING = 5
    """We closed: our FIN follows our queued data; it is not yet acknowledged and the
    peer's FIN has not been delivered (TCP's FIN-WAIT-1)."""
    FIN_WAIT = 6
    """Our FIN is acknowledged; waiting for the peer's FIN (TCP's FIN-WAIT-2)."""
    PEER_CLOSED = 7
    """The peer's FIN was delivered first; we flush our queue and send our FIN, then wait
    for its acknowledgement (TCP's CLOSE-WAIT and LAST-ACK in one: closing is automatic)."""
    SIMULTANEOUS_CLOSE = 8
    """Both sides closed; the peer's FIN was delivered before ours was acknowledged (TCP's
    CLOSING).  Our ack of the peer's FIN may have travelled alone, so we linger afterwards."""
    TIME_WAIT = 9
    """Both FINs done; we acknowledged the last one and stay ``close_linger`` seconds to
    re-acknowledge a retransmitted FIN.  ``Closed`` has been reported."""
    CLOSED = 10
    """Terminal: ended cleanly."""
    FAILED = 11
    """Terminal: ended by reset, give-up, protocol error or ``abort()``."""


class Input(enum.IntEnum):
    """Inputs to the state machine: local calls, received packets, internal conditions."""

    # local calls
    CONNECT = 0
    """``connect()`` (client)."""
    SEND = 1
    """``send()``: does not change state; allowed where the table lists it."""
    CLOSE = 2
    """``close()``: graceful close (deferred until the handshake finishes; a server
    connection still waiting for its SYN closes right after the handshake)."""
    ABORT = 3
    """``abort()``: send RESET, fail."""
    # received packets, one per packet type
    RECV_SYN = 10
    """A SYN arrived."""
    RECV_SYN_ACK = 11
    """A SYN_ACK arrived that acknowledges our SYN."""
    RECV_DATA = 12
    """A DATA packet arrived."""
    RECV_ACK = 13
    """An ACK packet arrived."""
    RECV_PING = 14
    """A PING arrived."""
    RECV_FIN = 15
    """A FIN packet arrived (perhaps out of order; see ``PEER_FIN``)."""
    RECV_RESET = 16
    """A RESET arrived (and passed the checks of section 6.4)."""
    RECV_STATELESS_RESET = 17
    """A stateless reset carrying the peer's token arrived (section 6.6)."""
    RECV_PATH_CHALLENGE = 18
    """A PATH_CHALLENGE arrived (section 6.7)."""
    RECV_PATH_RESPONSE = 19
    """A PATH_RESPONSE arrived (section 6.7)."""
    # internal conditions
    HANDSHAKE_ACKED = 20
    """Server: a packet with our connection id acknowledged our SYN_ACK."""
    PEER_FIN = 21
    """The peer's FIN became in-order: every message before it was delivered."""
    FIN_ACKED = 22
    """The cumulative ack passed our FIN."""
    GIVE_UP = 23
    """Retransmission budget or ``peer_timeout`` exhausted."""
    PROTOCOL_ERROR = 24
    """The peer broke a rule that cannot be handled by dropping one packet
    (inconsistent fragments, a message above ``max_message_size``)."""
    LINGER_EXPIRED = 25
    """``close_linger`` elapsed in TIME_WAIT."""
    FIN_GIVE_UP = 26
    """The give-up budget ran out while only our FIN was unacknowledged, after the peer's
    FIN was delivered: both sides closed and every message was acknowledged, so the
    connection ends as ``Closed`` (the peer most likely left TIME_WAIT before our FIN's
    ack got through: the two generals cannot both be sure)."""
    PEER_LEFT = 27
    """A plausible reset (ordinary or stateless) arrived in the condition of ``FIN_GIVE_UP``:
    the peer left after a clean close, nothing was lost, so the connection ends as ``Closed``
    (section 6.4)."""
    RESET_UNREAD = 28
    """After a full close (``close(reading=False)``) data of the peer was left unread or
    arrived later, and every message of ours is acknowledged: we send a RESET (RFC 1122
    section 4.2.2.13) and, having lost nothing of our own, end as ``Closed`` (section 6.3)."""
    RECV_RETRY = 29
    """A RETRY arrived (section 6.2.1): the client resends its SYN with the token."""


S = ConnectionState
I = Input  # noqa: E741 - a one-letter alias keeps the table readable

_LIVE = (
    S.SYN_SENT,
    S.SYN_RECEIVED,
    S.ESTABLISHED,
    S.CLOSING,
    S.FIN_WAIT,
    S.PEER_CLOSED,
    S.SIMULTANEOUS_CLOSE,
)
"""States in which packets flow and the peer may fail us."""

_DATA_STATES = (S.ESTABLISHED, S.CLOSING, S.FIN_WAIT, S.PEER_CLOSED, S.SIMULTANEOUS_CLOSE)
"""States after the handshake and before TIME_WAIT: every ordinary packet is processed."""

DATA_STATES = frozenset(_DATA_STATES)
"""The states in which DATA, ACK, PING, FIN, PATH_CHALLENGE and PATH_RESPONSE leave the
state as it is (``TRANSITIONS`` maps each to itself): the receive path skips ``apply``."""

_CLOSED_BY_US = (S.CLOSING, S.FIN_WAIT, S.PEER_CLOSED, S.SIMULTANEOUS_CLOSE)
"""States after ``close()`` (or the peer's FIN) took effect and before TIME_WAIT."""


def _build() -> dict[tuple[ConnectionState, Input], ConnectionState]:
    t: dict[tuple[ConnectionState, Input], ConnectionState] = {
        # opening (client)
        (S.INITIAL, I.CONNECT): S.SYN_SENT,
        (S.INITIAL, I.SEND): S.INITIAL,
        (S.INITIAL, I.CLOSE): S.CLOSED,  # nothing queued: nothing to do
        (S.INITIAL, I.ABORT): S.FAILED,  # also used by close() when messages were queued
        (S.SYN_SENT, I.SEND): S.SYN_SENT,
        (S.SYN_SENT, I.CLOSE): S.SYN_SENT,  # deferred until ESTABLISHED
        (S.SYN_SENT, I.RECV_SYN_ACK): S.ESTABLISHED,
        (S.SYN_SENT, I.RECV_RETRY): S.SYN_SENT,  # resend the SYN with the retry token
        # opening (server)
        (S.LISTEN, I.RECV_SYN): S.SYN_RECEIVED,
        (S.LISTEN, I.SEND): S.LISTEN,
        (S.LISTEN, I.CLOSE): S.LISTEN,  # deferred: close gracefully once connected
        (S.LISTEN, I.ABORT): S.FAILED,
        (S.SYN_RECEIVED, I.SEND): S.SYN_RECEIVED,
        (S.SYN_RECEIVED, I.CLOSE): S.SYN_RECEIVED,  # deferred until ESTABLISHED
        (S.SYN_RECEIVED, I.RECV_SYN): S.SYN_RECEIVED,  # our SYN_ACK was lost: resend it
        (S.SYN_RECEIVED, I.HANDSHAKE_ACKED): S.ESTABLISHED,
        # established
        (S.ESTABLISHED, I.SEND): S.ESTABLISHED,
        (S.ESTABLISHED, I.RECV_SYN_ACK): S.ESTABLISHED,  # our ack of it was lost: re-ack
        (S.ESTABLISHED, I.CLOSE): S.CLOSING,
        (S.ESTABLISHED, I.PEER_FIN): S.PEER_CLOSED,
        # closing
        (S.CLOSING, I.FIN_ACKED): S.FIN_WAIT,
        (S.CLOSING, I.PEER_FIN): S.SIMULTANEOUS_CLOSE,
        (S.FIN_WAIT, I.PEER_FIN): S.TIME_WAIT,
        (S.PEER_CLOSED, I.FIN_ACKED): S.CLOSED,
        (S.SIMULTANEOUS_CLOSE, I.FIN_ACKED): S.TIME_WAIT,
        (S.PEER_CLOSED, I.FIN_GIVE_UP): S.CLOSED,
        (S.SIMULTANEOUS_CLOSE, I.FIN_GIVE_UP): S.CLOSED,
        (S.PEER_CLOSED, I.PEER_LEFT): S.CLOSED,
        (S.SIMULTANEOUS_CLOSE, I.PEER_LEFT): S.CLOSED,
        # close() again after closing: harmless
        (S.CLOSING, I.CLOSE): S.CLOSING,
        (S.FIN_WAIT, I.CLOSE): S.FIN_WAIT,
        (S.PEER_CLOSED, I.CLOSE): S.PEER_CLOSED,
        (S.SIMULTANEOUS_CLOSE, I.CLOSE): S.SIMULTANEOUS_CLOSE,
        (S.TIME_WAIT, I.CLOSE): S.TIME_WAIT,
        # lingering: re-acknowledge retransmissions, then go
        (S.TIME_WAIT, I.RECV_FIN): S.TIME_WAIT,
        (S.TIME_WAIT, I.RECV_DATA): S.TIME_WAIT,
        (S.TIME_WAIT, I.RECV_ACK): S.TIME_WAIT,
        (S.TIME_WAIT, I.RECV_PING): S.TIME_WAIT,
        (S.TIME_WAIT, I.LINGER_EXPIRED): S.CLOSED,
        (S.TIME_WAIT, I.ABORT): S.CLOSED,  # Closed was already reported
        # after the end: close() and abort() are harmless no-ops
        (S.CLOSED, I.CLOSE): S.CLOSED,
        (S.CLOSED, I.ABORT): S.CLOSED,
        (S.FAILED, I.CLOSE): S.FAILED,
        (S.FAILED, I.ABORT): S.FAILED,
    }
    for state in _DATA_STATES:
        for packet in (
            I.RECV_DATA,
            I.RECV_ACK,
            I.RECV_PING,
            I.RECV_FIN,
            I.RECV_PATH_CHALLENGE,
            I.RECV_PATH_RESPONSE,
        ):
            t[(state, packet)] = state
    for state in _CLOSED_BY_US:
        t[(state, I.RESET_UNREAD)] = S.CLOSED
    for state in _LIVE:
        t[(state, I.RECV_RESET)] = S.FAILED
        t[(state, I.RECV_STATELESS_RESET)] = S.FAILED
        t[(state, I.GIVE_UP)] = S.FAILED
        t[(state, I.PROTOCOL_ERROR)] = S.FAILED
        t[(state, I.ABORT)] = S.FAILED
    return t


TRANSITIONS: dict[tuple[ConnectionState, Input], ConnectionState] = _build()
"""``(state, input) -> next state``.  A missing pair is a protocol error (module docstring)."""

TERMINAL = frozenset({S.CLOSED, S.FAILED})
"""States after which nothing is sent and no timer runs."""

HANDSHAKING = frozenset({S.INITIAL, S.LISTEN, S.SYN_SENT, S.SYN_RECEIVED})
"""States before the handshake finished (an endpoint treats them as half-open)."""

OPEN = frozenset(_DATA_STATES)
"""After the handshake and before TIME_WAIT: data flows and keepalives run."""

SYNCHRONIZED = OPEN | {S.TIME_WAIT}
"""Both sequence spaces are known (RFC 9293's synchronized states): data, acks and pings
are sent; in TIME_WAIT only to re-acknowledge the peer's FIN."""

CLOSE_DONE = frozenset({S.FIN_WAIT, S.TIME_WAIT, S.CLOSED, S.FAILED})
"""Our FIN, sent after all our data, is acknowledged, or the connection is over: a
blocking ``close()`` may return (``SansIOConnection.close_done``)."""

DEFERRING = frozenset({(S.LISTEN, I.CLOSE), (S.SYN_SENT, I.CLOSE), (S.SYN_RECEIVED, I.CLOSE)})
"""CLOSE during the handshake: the state stays and ``StateMachine.close_deferred`` is set;
CLOSE is taken on entering ESTABLISHED, and SEND is refused meanwhile."""

ESTABLISHING = frozenset({(S.SYN_SENT, I.RECV_SYN_ACK), (S.SYN_RECEIVED, I.HANDSHAKE_ACKED)})
"""The pairs that finish the handshake: they set ``StateMachine.connected`` and release a
deferred close."""


class StateMachine:
    """One connection's walk through ``TRANSITIONS``, with the two facts no state holds.

    ``connected`` says the handshake finished; it stays true after the end, so a
    connection that failed after opening can be told from one that never opened.
    ``close_deferred`` says ``close()`` was called during the handshake (``DEFERRING``);
    the pair of ``ESTABLISHING`` that ends the handshake then goes on through CLOSE, so
    the connection lands in CLOSING.  Both change only in ``apply``.
    """

    __slots__ = ("close_deferred", "connected", "state")

    def __init__(self, state: ConnectionState) -> None:
        self.state = state
        """The current state."""
        self.connected = False
        """The handshake finished (``Connected`` was reported)."""
        self.close_deferred = False
        """``close()`` was called during the handshake and is not yet taken."""

    def allows(self, inp: Input) -> bool:
        """Whether ``apply(inp)`` would succeed (and change nothing yet)."""
        if self.close_deferred and inp is I.SEND:
            return False
        return (self.state, inp) in TRANSITIONS

    def apply(self, inp: Input) -> bool:
        """Take ``inp``: move along ``TRANSITIONS``; False (and no change) if not allowed."""
        key = (self.state, inp)
        target = TRANSITIONS.get(key)
        if target is None:
            return False
        if self.connected:
            # After the handshake the table alone decides (both facts are settled).
            self.state = target
            return True
        if self.close_deferred and inp is I.SEND:
            return False
        self.state = target
        if key in DEFERRING:
            self.close_deferred = True
        elif key in ESTABLISHING:
            self.connected = True
            if self.close_deferred:
                self.close_deferred = False
                self.state = TRANSITIONS[(target, I.CLOSE)]
        return True


PACKET_INPUTS: dict[int, Input] = {
    1: I.RECV_SYN,
    2: I.RECV_SYN_ACK,
    3: I.RECV_DATA,
    4: I.RECV_ACK,
    5: I.RECV_PING,
    6: I.RECV_FIN,
    7: I.RECV_RESET,
    8: I.RECV_STATELESS_RESET,
    9: I.RECV_PATH_CHALLENGE,
    10: I.RECV_PATH_RESPONSE,
    11: I.RECV_RETRY,
}
"""Packet type code (``rudp.core.wire.PacketType``) -> the input it is."""


def to_mermaid() -> str:
    """Render ``TRANSITIONS`` as a mermaid ``stateDiagram-v2``.

    Self-loops are left out (they only say an input is allowed), except that
    the result stays deterministic: edges are sorted by state and input, and
    parallel edges between the same two states share one label.
    """
    edges: dict[tuple[ConnectionState, ConnectionState], list[str]] = {}
    for (state, inp), target in sorted(TRANSITIONS.items()):
        if state is target:
            continue
        edges.setdefault((state, target), []).append(inp.name)
    lines = ["stateDiagram-v2", f"    [*] --> {S.INITIAL.name}", f"    [*] --> {S.LISTEN.name}"]
    for (state, target), names in sorted(edges.items()):
        lines.append(f"    {state.name} --> {target.name}: {', '.join(names)}")
    lines.append(f"    {S.CLOSED.name} --> [*]")
    lines.append(f"    {S.FAILED.name} --> [*]")
    return "\n".join(lines) + "\n"
