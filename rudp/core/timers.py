"""A connection's own timers: peer_timeout, keepalive, zero-window probe, idle, linger.

The sender keeps the loss-recovery timers (RTO, loss detection, tail probe),
the receiver its delayed ack, and ``rudp.core.handshake`` the SYN / SYN_ACK
retransmission.  Everything else a connection waits for is a deadline computed
here from a few timestamps.  ``SansIOConnection.get_timer`` takes the earliest
over all the parts; ``handle_timer`` fires them in a fixed order.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.sender import Sender
from rudp.core.state import HANDSHAKING, OPEN, ConnectionState, StateMachine


def earliest(*deadlines: float | None) -> float | None:
    """The earliest deadline that is set, or None if none is.

    A plain loop: drivers ask for the timer after every wakeup, and this is several
    times cheaper than ``min()`` over a filtered list.
    """
    first = None
    for deadline in deadlines:
        if deadline is not None and (first is None or deadline < first):
            first = deadline
    return first


class Timers:
    """The timestamps behind peer_timeout, keepalive, persist, idle_timeout and linger."""

    __slots__ = (
        "_config",
        "_persist_interval",
        "_sender",
        "_sm",
        "last_activity",
        "last_heard",
        "last_ping",
        "linger_deadline",
        "persist_deadline",
        "ping_pending",
    )

    def __init__(self, config: Config, machine: StateMachine, sender: Sender) -> None:
        self._config = config
        self._sm = machine
        self._sender = sender
        self.last_heard = 0.0
        """Last authentic, plausible packet from the peer (peer_timeout, keepalive)."""
        self.last_ping: float | None = None
        """When we last queued a keepalive or zero-window PING."""
        self.ping_pending = False
        """A PING goes out with the next ``datagrams_to_send``."""
        self.last_activity = 0.0
        """Last DATA or FIN sent or received (idle_timeout)."""
        self.persist_deadline: float | None = None
        """Next zero-window probe (section 11.3); None while the peer's window is open."""
        self._persist_interval = 0.0
        self.linger_deadline: float | None = None
        """End of TIME_WAIT; set only in TIME_WAIT."""

    def outstanding(self) -> bool:
        """Whether the peer owes us an answer (the condition for ``peer_timeout``)."""
        state = self._sm.state
        if state in HANDSHAKING:
            return state is ConnectionState.SYN_SENT or state is ConnectionState.SYN_RECEIVED
        sender = self._sender
        return (
            sender.outstanding
            or sender.has_queued
            or (self.last_ping is not None and self.last_ping >= self.last_heard)
        )

    def peer_deadline(self) -> float | None:
        """When ``peer_timeout`` gives up on a peer that owes us an answer (section 9.5)."""
        return self.last_heard + self._config.peer_timeout if self.outstanding() else None

    def keepalive_deadline(self) -> float | None:
        """When a keepalive PING is due: ``keepalive_interval`` of silence (section 11.4)."""
        interval = self._config.keepalive_interval
        if interval is None or self._sm.state not in OPEN:
            return None
        last = self.last_heard
        if self.last_ping is not None and self.last_ping > last:
            last = self.last_ping
        return last + interval

    def idle_deadline(self) -> float | None:
        """When ``idle_timeout`` closes an ESTABLISHED connection with nothing in flight."""
        timeout = self._config.idle_timeout
        if timeout is None or self._sm.state is not ConnectionState.ESTABLISHED:
            return None
        sender = self._sender
        if sender.outstanding or sender.has_queued:
            return None
        return self.last_activity + timeout

    def earliest(self) -> float | None:
        """The earliest of these deadlines, or None."""
        return earliest(
            self.persist_deadline,
            self.linger_deadline,
            self.keepalive_deadline(),
            self.idle_deadline(),
            self.peer_deadline(),
        )

    def on_sent(self, now: float) -> None:
        """After sending: arm the zero-window probe while the peer's window is closed."""
        if not self._sender.window_blocked:
            self.persist_deadline = None
        elif self.persist_deadline is None:
            self._persist_interval = self._sender.rtt.rto
            self.persist_deadline = now + self._persist_interval

    def fire_probes(self, now: float) -> None:
        """Queue a PING if the zero-window probe or the keepalive is due."""
        deadline = self.persist_deadline
        if deadline is not None and now >= deadline:
            # Zero-window probe: a PING makes the peer report its window again; backed
            # off like the RTO (RFC 9293 section 3.8.6.1).
            self.ping_pending = True
            self.last_ping = now
            self._persist_interval = min(self._persist_interval * 2, self._config.max_rto)
            self.persist_deadline = now + self._persist_interval
        deadline = self.keepalive_deadline()
        if deadline is not None and now >= deadline:
            self.ping_pending = True
            self.last_ping = now

    def linger(self, now: float) -> None:
        """TIME_WAIT begins: no more probes; stay ``close_linger`` seconds."""
        self.persist_deadline = None
        self.linger_deadline = now + self._config.close_linger

    def stop(self) -> None:
        """The connection ended: none of these timers runs any more."""
        self.persist_deadline = None
        self.linger_deadline = None
