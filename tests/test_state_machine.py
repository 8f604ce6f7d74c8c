"""Stateful test: hypothesis plays the network between a client and a server.

Each step sends a message, or does something to one datagram in flight
(deliver it, drop it, duplicate it, deliver it out of order, corrupt it), or
moves the clock so timers fire, or closes one side.  After every step the
invariants must hold; at the end the network heals and every message must get
through (liveness).  A small datagram size and receive window make messages
span several fragments and keep the window limits in play.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rudp.config import Config
from rudp.core.endpoint import Endpoint
from rudp.core.sender import PTO_PROBES
from rudp.core.state import (
    CLOSE_DONE,
    DEFERRING,
    ESTABLISHING,
    TRANSITIONS,
    ConnectionState,
    Input,
    StateMachine,
)
from rudp.events import Closed, Event, Failed, MessageAcknowledged, MessageReceived, PeerClosed
from rudp.testing import LinkProfile, Simulator, make_pair

CONFIG = Config(
    max_datagram_size=1200,  # the minimum (section 6.1); messages up to ~5 fragments
    receive_window=8,
    max_send_window=16,
    # Longer than all the steps' clock moves together (STEPS * MAX_ADVANCE), so no
    # give-up happens while hypothesis plays the network; finite, so a side whose peer
    # has left TIME_WAIT still ends after healing (specs/protocol.md 9.5, FIN_GIVE_UP).
    peer_timeout=600.0,
)
STEPS = 60
MAX_ADVANCE = 3.0
assert CONFIG.peer_timeout > STEPS * MAX_ADVANCE
SIDES = st.sampled_from(["client", "server"])
OTHER = {"client": "server", "server": "client"}
MAX_IN_FLIGHT = 400
"""The network's own buffer: beyond it, the oldest datagram is lost."""


class NetworkMachine(RuleBasedStateMachine):
    """A client and a server whose every datagram goes through hypothesis's hands."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.wire: dict[str, list[bytes]] = {"client": [], "server": []}
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.received: dict[str, list[bytes]] = {"client": [], "server": []}
        self.acked: dict[str, list[int]] = {"client": [], "server": []}
        self.other_events: dict[str, list[Event]] = {"client": [], "server": []}
        self.closing: set[str] = set()
        self.opened: set[str] = set()

    @initialize(seed=st.integers(0, 2**64 - 1))
    def connect(self, seed: int) -> None:
        client, server = make_pair(CONFIG, seed=seed)
        self.conns = {"client": client, "server": server}
        self.seed = seed
        client.connect(self.now)
        self._flush()

    # --- plumbing --------------------------------------------------------------------

    def _flush(self) -> None:
        for side, conn in self.conns.items():
            self.wire[side].extend(conn.datagrams_to_send(self.now))
            del self.wire[side][:-MAX_IN_FLIGHT]
            event = conn.next_event()
            while event is not None:
                if isinstance(event, MessageReceived):
                    self.received[side].append(event.data)
                elif isinstance(event, MessageAcknowledged):
                    self.acked[side].append(event.message_id)
                else:
                    self.other_events[side].append(event)
                event = conn.next_event()

    def _deliver(self, side: str, datagram: bytes) -> None:
        self.conns[OTHER[side]].receive_datagram(datagram, self.now)

    # --- rules -----------------------------------------------------------------------

    @rule(side=SIDES, size=st.integers(0, 5400), tag=st.integers(0, 2**16))
    def send(self, side: str, size: int, tag: int) -> None:
        if side in self.closing or any(isinstance(e, PeerClosed) for e in self.other_events[side]):
            return  # send() after close() or the peer's close is a local error, tested elsewhere
        message = random.Random(tag).randbytes(size)
        message_id = self.conns[side].send(message)
        assert message_id == len(self.sent[side])
        self.sent[side].append(message)
        self._flush()

    @rule(side=SIDES, index=st.integers(0, MAX_IN_FLIGHT))
    def deliver_one(self, side: str, index: int) -> None:
        # Any index, not just the oldest: this is where reordering happens.
        wire = self.wire[side]
        if wire:
            self._deliver(side, wire.pop(index % len(wire)))
        self._flush()

    @rule(side=SIDES)
    def deliver_all(self, side: str) -> None:
        wire, self.wire[side] = self.wire[side], []
        for datagram in wire:
            self._deliver(side, datagram)
        self._flush()

    @rule(side=SIDES, index=st.integers(0, MAX_IN_FLIGHT))
    def drop(self, side: str, index: int) -> None:
        wire = self.wire[side]
        if wire:
            wire.pop(index % len(wire))

    @rule(side=SIDES, index=st.integers(0, MAX_IN_FLIGHT))
    def duplicate(self, side: str, index: int) -> None:
        wire = self.wire[side]
        if wire:
            wire.append(wire[index % len(wire)])
            del wire[:-MAX_IN_FLIGHT]

    @rule(side=SIDES, index=st.integers(0, MAX_IN_FLIGHT), bit=st.integers(0, 2**20))
    def corrupt(self, side: str, index: int, bit: int) -> None:
        wire = self.wire[side]
        if wire:
            i = index % len(wire)
            data = bytearray(wire[i])
            bit %= len(data) * 8
            data[bit >> 3] ^= 1 << (bit & 7)
            wire[i] = bytes(data)

    @rule(dt=st.floats(0.0, MAX_ADVANCE))
    def advance(self, dt: float) -> None:
        end = self.now + dt
        for _ in range(10_000):
            timers = [t for c in self.conns.values() if (t := c.get_timer()) is not None]
            if not timers or min(timers) > end:
                break
            self.now = max(self.now, min(timers))
            for conn in self.conns.values():
                timer = conn.get_timer()
                if timer is not None and timer <= self.now:
                    conn.handle_timer(self.now)
            self._flush()
        else:
            raise AssertionError("timers keep firing without the clock moving")
        self.now = end
        self._flush()

    @precondition(lambda self: len(self.closing) < 2)
    @rule(side=SIDES)
    def close(self, side: str) -> None:
        # A server closed before any SYN reached it just stops listening (nothing to test
        # here); once a connection exists, close() from either side must end it cleanly.
        if side == "server" and self.conns[side].state is ConnectionState.LISTEN:
            return
        if side not in self.closing:
            self.closing.add(side)
            self.conns[side].close(self.now)
            self._flush()

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def delivered_is_a_prefix_of_sent(self) -> None:
        for side in ("client", "server"):
            received = self.received[OTHER[side]]
            assert received == self.sent[side][: len(received)]

    @invariant()
    def acknowledged_ids_are_a_prefix_in_order(self) -> None:
        for side in ("client", "server"):
            acked = self.acked[side]
            assert acked == list(range(len(acked)))
            assert len(acked) <= len(self.sent[side])
            # Acknowledged means deliverable at the peer, which reports it at once.
            assert len(acked) <= len(self.received[OTHER[side]])

    @invariant()
    def nothing_fails(self) -> None:
        for side in ("client", "server"):
            failures = [e for e in self.other_events[side] if isinstance(e, Failed)]
            failures = [f for f in failures if not self._peer_left_first(side, f)]
            assert not failures, failures

    def _peer_left_first(self, side: str, failure: Failed) -> bool:
        """The one failure a clean close can end in: the two generals' problem.

        The peer delivered everything and our FIN, acknowledged it, and left TIME_WAIT
        after ``close_linger`` while hypothesis held (or corrupted) every ack and every
        retransmission of ours.  Nobody will ever acknowledge what we sent, so after
        ``peer_timeout`` we give up; ``Failed.undelivered`` honestly lists the messages
        whose ack never came, and each of them did reach the peer (nothing was lost).
        """
        other = OTHER[side]
        unacked = tuple(range(len(self.acked[side]), len(self.sent[side])))
        return (
            failure.reason.startswith("peer unreachable")
            and self.conns[other].state is ConnectionState.CLOSED
            and failure.undelivered == unacked
            and len(self.received[other]) == len(self.sent[side])
        )

    @invariant()
    def established_stays_established(self) -> None:
        for side, conn in self.conns.items():
            if side in self.opened:
                assert conn.is_established
            elif conn.is_established:
                self.opened.add(side)

    @invariant()
    def a_done_close_left_nothing_unacknowledged(self) -> None:
        """``close_done`` is what a blocking close() waits for: unless the connection
        failed, everything sent (and so the FIN) was acknowledged."""
        for side, conn in self.conns.items():
            assert conn.close_done == (conn.state in CLOSE_DONE)
            if conn.close_done and conn.state is not ConnectionState.FAILED:
                assert conn.send_queue_bytes == 0
                assert len(self.acked[side]) == len(self.sent[side])

    @invariant()
    def memory_and_windows_are_bounded(self) -> None:
        for conn in self.conns.values():
            stats = conn.stats
            assert 0 <= stats.local_window <= CONFIG.receive_window
            # The send window bounds the sequence numbers outstanding; transmissions in
            # flight may exceed it by the probes of each timeout, which repeat old data and
            # stay in flight until acknowledged or declared lost (RFC 9002 section 6.2.4).
            sender = conn._sender
            assert 0 <= sender.snd_nxt - sender.snd_una <= CONFIG.max_send_window + 1  # + FIN
            probes = PTO_PROBES * stats.timeouts
            assert 0 <= stats.packets_in_flight <= CONFIG.max_send_window + 1 + probes

    def teardown(self) -> None:
        if not hasattr(self, "conns"):
            return
        # Heal the network: deliver what is in flight, then run over perfect links.
        for side in ("client", "server"):
            wire, self.wire[side] = self.wire[side], []
            for datagram in wire:
                self._deliver(side, datagram)
        # (No _flush here: the simulator takes the answers to these datagrams onto its links.)
        client, server = self.conns["client"], self.conns["server"]
        sim = Simulator(
            client,
            server,
            profile_ab=LinkProfile.perfect(0.01),
            profile_ba=LinkProfile.perfect(0.01),
            seed=self.seed,
            start_time=self.now,
        )
        names = {"a": "client", "b": "server"}
        sim.on_event = lambda side, event: self._record(names[side], event)

        def delivered() -> bool:
            # Acknowledged, or the sender ended (a peer gone after TIME_WAIT never acks;
            # nothing_fails() then checks that each unacked message did arrive).
            return all(
                len(self.received[OTHER[side]]) == len(self.sent[side])
                and (
                    len(self.acked[side]) == len(self.sent[side])
                    or self.conns[side].state is ConnectionState.FAILED
                )
                for side in ("client", "server")
            )

        # Liveness, part 1: every message is delivered and acknowledged.
        assert sim.run_until(delivered, max_time=3600.0, max_steps=200_000), (
            f"messages stuck after healing: {self._summary()}"
        )
        self.delivered_is_a_prefix_of_sent()
        self.acknowledged_ids_are_a_prefix_in_order()
        self.nothing_fails()
        if self.closing:
            self.check_close_completes(sim)

    def check_close_completes(self, sim: Simulator) -> None:
        """Liveness, part 2: a close() on either side ends both sides with ``Closed``."""
        client, server = self.conns["client"], self.conns["server"]
        assert sim.run_until(
            lambda: client.is_closed and server.is_closed, max_time=3600.0, max_steps=200_000
        ), f"close stuck after healing: {self._summary()}"
        self.nothing_fails()
        for side in ("client", "server"):
            assert any(isinstance(e, (Closed, Failed)) for e in self.other_events[side]), (
                self._summary()
            )

    def _summary(self) -> str:
        return (
            f"seed={self.seed} sent={[len(s) for s in self.sent.values()]} "
            f"received={[len(r) for r in self.received.values()]} "
            f"acked={[len(a) for a in self.acked.values()]} "
            f"states={self.conns['client'].state.name}/{self.conns['server'].state.name} "
            f"events={self.other_events}"
        )

    def _record(self, side: str, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.received[side].append(event.data)
        elif isinstance(event, MessageAcknowledged):
            self.acked[side].append(event.message_id)
        else:
            self.other_events[side].append(event)


NetworkMachine.TestCase.settings = settings(
    NetworkMachine.TestCase.settings, stateful_step_count=STEPS
)
TestNetwork = NetworkMachine.TestCase


# --- rudp.core.state.StateMachine: the table plus the two facts no state holds ----------


@pytest.mark.parametrize(("pair", "target"), sorted(TRANSITIONS.items()))
def test_machine_follows_the_table(
    pair: tuple[ConnectionState, Input], target: ConnectionState
) -> None:
    """§5: a fresh machine in any state takes exactly the table's pairs, to their target."""
    state, inp = pair
    machine = StateMachine(state)
    assert machine.allows(inp)
    assert machine.apply(inp)
    assert machine.state is target
    assert machine.close_deferred == (pair in DEFERRING)
    assert machine.connected == (pair in ESTABLISHING)


@pytest.mark.parametrize("state", list(ConnectionState))
def test_machine_refuses_pairs_outside_the_table(state: ConnectionState) -> None:
    """§5: a pair missing from the table changes nothing."""
    for inp in Input:
        if (state, inp) not in TRANSITIONS:
            machine = StateMachine(state)
            assert not machine.allows(inp)
            assert not machine.apply(inp)
            assert machine.state is state and not machine.connected


@pytest.mark.parametrize("pair", sorted(ESTABLISHING))
def test_a_close_deferred_during_the_handshake_is_taken_when_it_ends(
    pair: tuple[ConnectionState, Input],
) -> None:
    """§5: CLOSE during the handshake refuses SEND, then lands in CLOSING, not ESTABLISHED."""
    state, finishing = pair
    machine = StateMachine(state)
    assert machine.apply(Input.CLOSE)
    assert machine.state is state and machine.close_deferred
    assert not machine.allows(Input.SEND)
    assert not machine.apply(Input.SEND)
    assert machine.apply(finishing)
    assert machine.state is ConnectionState.CLOSING
    assert machine.connected and not machine.close_deferred


def test_connected_outlives_the_connection() -> None:
    """``connected`` tells a connection that failed after opening from one that never did."""
    opened = StateMachine(ConnectionState.SYN_SENT)
    assert opened.apply(Input.RECV_SYN_ACK) and opened.apply(Input.RECV_RESET)
    never = StateMachine(ConnectionState.SYN_SENT)
    assert never.apply(Input.RECV_RESET)
    assert opened.state is never.state is ConnectionState.FAILED
    assert opened.connected and not never.connected


def test_close_done_turns_true_when_our_fin_is_acknowledged() -> None:
    """``Association.close_done`` (what a blocking close() waits for) follows the core."""
    client_ep = Endpoint(rng=random.Random(1))
    server_ep = Endpoint(accepting=True, rng=random.Random(2))
    assoc = client_ep.connect("server", 0.0)

    def exchange() -> None:
        for _ in range(10):
            for data, _address in client_ep.datagrams_to_send(0.0):
                server_ep.receive_datagram(data, "client", 0.0)
            for data, _address in server_ep.datagrams_to_send(0.0):
                client_ep.receive_datagram(data, "server", 0.0)

    exchange()
    assoc.send(b"last words")
    assoc.close(0.0)
    assert assoc.connection.state is ConnectionState.CLOSING and not assoc.close_done
    exchange()  # our FIN is acknowledged, and the server closes in turn
    assert assoc.connection.state is ConnectionState.TIME_WAIT
    assert assoc.close_done and assoc.connection.send_queue_bytes == 0
