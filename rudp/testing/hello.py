"""The seed "Hello!!" programs on ``rudp.socket``, replayed over the simulator in virtual time.

Seed 000's sender and receiver, with only the constructor swapped (``tests/test_seeds.py``
runs them for real)::

    s = rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM)   # the sender
    s.sendto(b"Hello!!", (host, port))
    s.close()

    s = rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM)   # the receiver
    s.bind(("", port))
    data, address = s.recvfrom(1024)
    print(data)
    s.close()

:func:`hello_exchange` runs that exchange between two :class:`~rudp.core.endpoint.Endpoint`
processes joined by a :class:`~rudp.testing.Simulator`, doing at the core level exactly
what ``rudp.socket`` does, with its predicates imported from ``rudp.drivers.blocking`` so
the model cannot drift from the socket:

- Both sockets own an accepting ``Endpoint``.  ``sendto`` opens an association
  (``Endpoint.connect``: the SYN, specs/protocol.md section 6.2) and queues the message on
  it before the handshake ends; the ledger (``rudp.drivers._common.ConnectionLedger``)
  folds every event.  A ``Connected`` server association is accepted at once.
- ``close()`` (``finish_close`` with the default ``linger=None``) closes every live
  association -- the FIN follows the message -- and waits until it is ``acknowledged``
  (message acknowledged, or the connection ended: only the core's give-up budget,
  section 9.5, ends a close to a silent peer), then at most ``Config.close_linger`` more
  for ``close_complete`` (our FIN acknowledged).  It raises when the connection failed
  with the message unacknowledged (``ConnectionFailed.undelivered``).
- When ``close()`` returns the process is gone (``rudp.socket`` passes
  ``time_wait=False``): its port drops whatever arrives and sends nothing.
- The receiver's ``recvfrom`` returns at the first ``MessageReceived``; its ``close()``
  then runs the same way.

What the sender reports is then compared with what the receiver got
(:attr:`HelloResult.outcome`): a sender that returned from ``close()`` without an error
while the receiver never got the message would be a *silent* loss, which the protocol
must never allow; a failure must name the message as undelivered.

Everything is determined by the seed (both links and both endpoints' random
generators derive from it), and time is virtual: a run that waits out the whole
``peer_timeout`` costs a few milliseconds.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Literal

from rudp.config import Config
from rudp.core.endpoint import Association, Endpoint
from rudp.drivers.blocking import acknowledged, close_complete, ledger
from rudp.errors import LocalProtocolError
from rudp.events import Connected, Event, Failed, MessageAcknowledged, MessageReceived
from rudp.testing.link import LinkProfile
from rudp.testing.simulator import Simulator, derive_rng

__all__ = ["HELLO", "HelloResult", "Outcome", "Phase", "hello_exchange"]

HELLO = b"Hello!!"
"""What seed 000's sender sends."""

SENDER = "sender"
RECEIVER = "receiver"
"""The two processes' addresses (the endpoints only compare them)."""

Outcome = Literal["delivered", "reported", "silent", "hung"]
"""How one run ended, from the sender's side (see :attr:`HelloResult.outcome`)."""

Phase = Literal["SYN", "SYN_ACK", "DATA", "ACK", "FIN", "done"]
"""The furthest step of the exchange that did not complete (see :attr:`HelloResult.phase`)."""


class _Process:
    """One program with its ``rudp.socket``: an endpoint, a ledger per association, a clock.

    The :class:`~rudp.testing.SimulatedPeer` the simulator drives.  At each instant the
    core's output leaves first, then the program sees the events and reacts, and what
    its reaction queued (a FIN) leaves too: the I/O thread sends before it wakes the
    program, whose call then pumps at once (``Engine.pump``).
    """

    def __init__(self, name: str, peer: str, config: Config, seed: int) -> None:
        self.name = name
        self.peer = peer
        self.endpoint = Endpoint(config, accepting=True, rng=derive_rng(seed, name))
        self.config = config
        self.exited_at: float | None = None
        """When ``close()`` returned and the process left (its port is closed)."""
        self.wake: float | None = None
        """The program's own deadline (the ``close_linger`` wait for our FIN's ack)."""
        self.log: deque[Event] = deque()
        self.now = 0.0
        self.closing: list[Association] = []
        """The associations ``close()`` waits for (set when it is called)."""
        self.acked_at: float | None = None
        """When ``close()``'s first wait ended (everything acknowledged, or over)."""

    # --- what the program does, in the subclasses -----------------------------------------

    def react(self, assoc: Association, event: Event) -> None:
        """An event was folded into ``assoc``'s ledger (the socket's ``_on_event``)."""
        if isinstance(event, Connected):
            while self.endpoint.accept(established_only=True) is not None:
                pass

    def poll(self, now: float) -> None:
        """Re-check what the program waits for (a blocked call's predicate)."""

    # --- SimulatedPeer ------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        self.now = now
        while (item := self.endpoint.next_event()) is not None:
            assoc, event = item
            ledger(assoc).apply(event)
            self.log.append(event)
            self.react(assoc, event)
        self.poll(now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self.exited_at is not None:
            return []
        # The I/O thread sends what the core queued, then wakes the program (Engine._run):
        # an ack of the peer's FIN leaves even when it lets close() return.
        out = [data for data, _ in self.endpoint.datagrams_to_send(now)]
        self._dispatch(now)
        if self.exited_at is None:
            out += [data for data, _ in self.endpoint.datagrams_to_send(now)]
        return out

    def receive_datagram(self, data: bytes, now: float) -> None:
        if self.exited_at is None:
            self.endpoint.receive_datagram(data, self.peer, now)

    def get_timer(self) -> float | None:
        if self.exited_at is not None:
            return None
        timer = self.endpoint.get_timer()
        if self.wake is not None and (timer is None or self.wake < timer):
            return self.wake
        return timer

    def handle_timer(self, now: float) -> None:
        if self.exited_at is not None:
            return
        timer = self.endpoint.get_timer()
        if timer is not None and timer <= now:
            self.endpoint.handle_timer(now)
        if self.wake is not None and self.wake <= now:
            self.wake = None  # the program looks at the clock in datagrams_to_send, next

    def next_event(self) -> Event | None:
        return self.log.popleft() if self.log else None

    # --- close(), as rudp.socket does it (finish_close, linger=None) -----------------------

    def start_close(self, now: float) -> None:
        self.closing = [a for a in self.endpoint.associations if not ledger(a).terminated]
        for assoc in self.closing:
            ledger(assoc).discard()
            assoc.paused = False
            with contextlib.suppress(LocalProtocolError):  # already closing
                assoc.close(now)

    def poll_close(self, now: float) -> None:
        """Advance a close under way: its two waits, then exit."""
        if self.acked_at is None:
            if not all(acknowledged(a) for a in self.closing):
                return
            self.acked_at = now
            self.wake = now + self.config.close_linger
        if all(close_complete(a) for a in self.closing) or now >= self.acked_at + (
            self.config.close_linger
        ):
            self.exited_at = now
            self.wake = None


class _Sender(_Process):
    """``s.sendto(b"Hello!!", address); s.close()``, both at time 0."""

    def __init__(self, config: Config, seed: int) -> None:
        super().__init__(SENDER, RECEIVER, config, seed)
        self.assoc = self.endpoint.connect(RECEIVER, 0.0)
        ledger(self.assoc).track(self.assoc.send(HELLO), HELLO)
        self.connected_at: float | None = None
        self.message_acked_at: float | None = None
        self.start_close(0.0)

    def react(self, assoc: Association, event: Event) -> None:
        super().react(assoc, event)
        if assoc is self.assoc and isinstance(event, Connected):
            self.connected_at = self.now
        elif assoc is self.assoc and isinstance(event, MessageAcknowledged):
            self.message_acked_at = self.now

    def poll(self, now: float) -> None:
        self.poll_close(now)


class _Receiver(_Process):
    """``s.bind(...); data, address = s.recvfrom(1024); print(data); s.close()``."""

    def __init__(self, config: Config, seed: int) -> None:
        super().__init__(RECEIVER, SENDER, config, seed)
        self.messages: list[bytes] = []
        """Every message the socket received (the program reads the first)."""
        self.delivered_at: float | None = None
        """When ``recvfrom`` returned."""
        self.syn_at: float | None = None
        """When the first SYN made an association."""
        self.connected_at: float | None = None

    def react(self, assoc: Association, event: Event) -> None:
        super().react(assoc, event)
        if isinstance(event, Connected) and self.connected_at is None:
            self.connected_at = self.now
        if isinstance(event, MessageReceived):
            self.messages.append(event.data)
            if self.delivered_at is None:
                # recvfrom returns it, print(data), close().
                ledger(assoc).pop()
                self.delivered_at = self.now
                self.start_close(self.now)

    def poll(self, now: float) -> None:
        if self.syn_at is None and self.endpoint.stats.connections_created:
            self.syn_at = now
        if self.delivered_at is not None:
            self.poll_close(now)


@dataclass(frozen=True)
class HelloResult:
    """What one seeded run of :func:`hello_exchange` saw.  Times are virtual seconds."""

    seed: int
    loss: tuple[float, float]
    """Loss probability sender -> receiver and receiver -> sender."""
    received: tuple[bytes, ...]
    """Every message the receiver's socket got, in order (the program reads the first)."""
    delivered_at: float | None
    """When the receiver's ``recvfrom`` returned."""
    closed_at: float | None
    """When the sender's ``close()`` returned (raising or not); None if it never did."""
    error: Failed | None
    """The ``Failed`` event behind the error ``close()`` raised, if it raised."""
    undelivered: tuple[bytes, ...]
    """The payloads that error named as never acknowledged."""
    server_heard_syn: bool
    """A SYN reached the receiver (it made an association)."""
    sender_connected: bool
    """The sender's handshake completed (a SYN_ACK reached it)."""
    message_acked: bool
    """The sender saw the message acknowledged."""
    fin_acked: bool
    """The sender's FIN was acknowledged before its ``close()`` returned."""
    datagrams: tuple[int, int]
    """Datagrams sent sender -> receiver and receiver -> sender."""

    @property
    def outcome(self) -> Outcome:
        """``delivered``: ``close()`` returned without error and the receiver got the message
        exactly once.  ``reported``: ``close()`` raised, naming the message undelivered.
        ``silent``: ``close()`` returned without error but the receiver did not get exactly
        the one message (must never happen).  ``hung``: ``close()`` never returned within
        the run's bound (the give-up budget did not end it)."""
        if self.closed_at is None:
            return "hung"
        if self.error is not None:
            return "reported" if self.undelivered == (HELLO,) else "silent"
        return "delivered" if self.received == (HELLO,) else "silent"

    @property
    def phase(self) -> Phase:
        """The first step that did not get through: ``SYN`` (no SYN reached the receiver),
        ``SYN_ACK`` (no SYN_ACK reached the sender), ``DATA`` (the message never reached
        the receiver), ``ACK`` (it did, but no acknowledgement reached the sender before
        the receiver left), ``FIN`` (only the sender's FIN was never acknowledged, which
        loses nothing), or ``done``."""
        if not self.server_heard_syn:
            return "SYN"
        if not self.sender_connected:
            return "SYN_ACK"
        if not self.received:
            return "DATA"
        if not self.message_acked:
            return "ACK"
        if not self.fin_acked:
            return "FIN"
        return "done"


def hello_exchange(
    seed: int,
    loss: float | tuple[float, float] = 0.3,
    *,
    config: Config | None = None,
    rtt: float = 0.05,
    profiles: tuple[LinkProfile, LinkProfile] | None = None,
    max_time: float = 600.0,
) -> HelloResult:
    """Run seed 000's sender and receiver once over independent random loss.

    ``loss`` is the drop probability of each direction (one number for both, or
    ``(sender -> receiver, receiver -> sender)``); each direction has a one-way delay
    of ``rtt / 2``.  ``profiles`` (sender -> receiver, receiver -> sender) replaces
    both with any impairment.  Both sockets use ``config`` (default: ``Config()``,
    the defaults of ``rudp.socket``).  The run ends when both programs have left, or
    after ``max_time`` virtual seconds (the sender then counts as ``hung``).
    """
    config = config if config is not None else Config()
    if profiles is None:
        loss_ab, loss_ba = (loss, loss) if isinstance(loss, float | int) else loss
        profiles = (
            LinkProfile(loss=loss_ab, delay=rtt / 2),
            LinkProfile(loss=loss_ba, delay=rtt / 2),
        )
    sender = _Sender(config, seed)
    receiver = _Receiver(config, seed)
    sim = Simulator(sender, receiver, profile_ab=profiles[0], profile_ba=profiles[1], seed=seed)
    # The receiver blocks in recvfrom until a message comes: once the sender has
    # left, only its own give-up budget ends it (or nothing does; max_time bounds that).
    sim.run_until(
        lambda: (
            sender.exited_at is not None
            and (receiver.exited_at is not None or receiver.endpoint.get_timer() is None)
        ),
        max_time=max_time,
    )
    led = ledger(sender.assoc)
    error = led.failed if led.lost else None
    return HelloResult(
        seed=seed,
        loss=(profiles[0].loss, profiles[1].loss),
        received=tuple(receiver.messages),
        delivered_at=receiver.delivered_at,
        closed_at=sender.exited_at,
        error=error,
        undelivered=led.undelivered if error is not None else (),
        server_heard_syn=receiver.syn_at is not None,
        sender_connected=sender.connected_at is not None,
        message_acked=sender.message_acked_at is not None,
        fin_acked=sender.assoc.close_done and error is None,
        datagrams=(sim.link_ab.stats.sent, sim.link_ba.stats.sent),
    )
