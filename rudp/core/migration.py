"""Connection migration, the endpoint's part (specs/protocol.md section 6.7; RFC 9000 section 9).

Datagrams are routed by connection id, so a peer whose address changed (a NAT
rebinding its port, a client moving networks) still reaches its connection.  When
the newest non-probing packet of an established connection arrives from a new
address, the endpoint sends there from then on and asks the core to validate the
path (``rudp.core.path.PathValidator``).  Until the peer has echoed a challenge, the
new address may be a victim's, spoofed by an attacker replaying one of the peer's
packets: RFC 9000 sections 8.1 and 9.3 then allow at most three times the bytes
received from it.  ``Migration`` is that budget for one association, with the
datagrams it holds back, and the validated address to return to if the validation
fails.

Held datagrams were already numbered by the core, which counts them in flight: if
the path validates soon they go out late, and if not they are dropped, like any
loss, and recovered by retransmission.  So the core's timers never see the hold and
cannot spin on it.  The hold is bounded by ``MAX_HELD_DATAGRAMS``.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from rudp.core.endpoint_stats import EndpointStats
from rudp.core.path import PathState
from rudp.core.wire import Packet, PacketType, peek_type

if TYPE_CHECKING:
    from rudp.core.endpoint import Association

__all__ = [
    "AMPLIFICATION_FACTOR",
    "MAX_HELD_DATAGRAMS",
    "PROBING_TYPES",
    "AddressBudget",
    "Migration",
    "follow_peer",
    "limit_output",
    "same_host",
]

AMPLIFICATION_FACTOR: Final = 3
"""Bytes sent to an unvalidated address per byte received from it (RFC 9000 section 8.1)."""

MAX_HELD_DATAGRAMS: Final = 256
"""Datagrams held back per association while the budget is spent; more are dropped
(the core repairs them as losses).  256 full datagrams are 358 kB."""

PROBING_TYPES: Final = frozenset({PacketType.PATH_CHALLENGE, PacketType.PATH_RESPONSE})
"""Packets that never move a connection to their source address (RFC 9000 section 9.1)."""

_PATH_CODES: Final = frozenset(int(ptype) for ptype in PROBING_TYPES)


def same_host(a: Any, b: Any) -> bool:
    """Only the port differs (a NAT rebinding, RFC 9000 section 9.4), for socket tuples."""
    return (
        isinstance(a, tuple)
        and isinstance(b, tuple)
        and len(a) >= 2
        and len(b) >= 2
        and a[0] == b[0]
        and a[2:] == b[2:]
    )


class AddressBudget:
    """What an unvalidated address sent us and what we sent it: the 3x limit of RFC 9000
    section 8.1, for a server's unvalidated client (``rudp.core.retry``) and for a
    migrated peer's new address (``Migration``)."""

    __slots__ = ("received", "sent")

    def __init__(self, received: int) -> None:
        self.received = received
        """Bytes received from the address."""
        self.sent = 0
        """Bytes sent to it."""

    @property
    def allowance(self) -> int:
        """Bytes that may still go to the address."""
        return AMPLIFICATION_FACTOR * self.received - self.sent

    def limit(self, datagrams: list[bytes], stats: EndpointStats) -> list[bytes]:
        """The datagrams that fit within the allowance, in order; the rest are dropped
        (a retransmission will come if the peer is genuine: its own resent SYN raises
        the budget)."""
        allowance = self.allowance
        out: list[bytes] = []
        for data in datagrams:
            if len(data) <= allowance:
                allowance -= len(data)
                self.sent += len(data)
                out.append(data)
            else:
                stats.amplification_dropped += 1
        return out


class Migration:
    """An association's unvalidated new address: its budget and held output (module docs)."""

    __slots__ = ("budget", "dropped", "held", "previous")

    def __init__(self, previous: Any, received: int) -> None:
        self.previous = previous
        """The last validated address: where the association returns if validation fails."""
        self.budget = AddressBudget(received)
        """The new address's 3x budget (the datagram that moved us counts as received)."""
        self.held: deque[bytes] = deque()
        """Datagrams the budget holds back, oldest first."""
        self.dropped = 0
        """Datagrams dropped because the hold was full."""

    def retarget(self, received: int) -> None:
        """The peer moved again before the validation finished: a new budget, same hold."""
        self.budget = AddressBudget(received)

    def admit(self, datagrams: list[bytes]) -> tuple[list[bytes], int]:
        """Release what the budget allows of the hold and ``datagrams``, path packets first.

        Returns (datagrams to send now, how many of ``datagrams`` stay held).  Path
        packets go ahead of held data: they are what ends the wait.
        """
        held = self.held
        added = 0
        for datagram in datagrams:
            if peek_type(datagram) in _PATH_CODES:
                held.appendleft(datagram)
            elif len(held) < MAX_HELD_DATAGRAMS:
                held.append(datagram)
            else:
                self.dropped += 1
                continue
            added += 1
        out: list[bytes] = []
        budget = self.budget
        allowance = budget.allowance
        while held and len(held[0]) <= allowance:
            datagram = held.popleft()
            allowance -= len(datagram)
            budget.sent += len(datagram)
            out.append(datagram)
        # The newest datagrams are at the tail: those still held are the last ones added.
        return out, min(len(held), added)

    def release(self) -> list[bytes]:
        """The path is validated: everything held goes out."""
        out = list(self.held)
        self.held.clear()
        return out


# --- the endpoint's two hooks -------------------------------------------------------------


def follow_peer(
    assoc: Association, packet: Packet, size: int, address: Any, now: float, stats: EndpointStats
) -> bool:
    """A packet of ``size`` bytes for ``assoc`` from ``address``, not its peer's address.

    False if it was dropped.  Only an established connection follows its peer, and only
    for the newest non-probing packet (RFC 9000 section 9.3): a reordered or replayed
    older one, or a probe, is processed without moving anything.
    """
    connection = assoc.connection
    if not (assoc.established or connection.is_established):
        stats.wrong_address += 1  # RFC 9000 section 9: not during the handshake
        return False
    before = connection.largest_packet_number
    connection.receive_packet(packet, now)
    if packet.type in PROBING_TYPES or connection.largest_packet_number <= before:
        return True
    migration = assoc.migration
    previous = assoc.address if migration is None else migration.previous
    if address == previous:
        # Back to the validated address: the move was a NAT's flap or an attacker's
        # replayed copy, and the genuine peer spoke again (RFC 9000 section 9.3.3).
        assoc.address = address
        assoc.migration = None
        stats.migrations_reverted += 1
        if migration is not None:
            stats.amplification_dropped += len(migration.held)
        return True
    if not connection.path.start(now):
        stats.wrong_address += 1  # no validation possible in this state: stay put
        return True
    if migration is None:
        assoc.migration = Migration(previous, size)
    else:
        migration.retarget(size)
    stats.migrations += 1
    if same_host(address, assoc.address):
        # RFC 9000 section 9.4: the congestion state is kept on a port-only change.  It is
        # kept on an IP change as well (specs/protocol.md section 6.7 says why).
        stats.nat_rebindings += 1
    assoc.address = address
    return True


def limit_output(assoc: Association, datagrams: list[bytes], stats: EndpointStats) -> list[bytes]:
    """What of ``datagrams`` may go to ``assoc``'s address while it is being validated.

    Ends the migration once the core's validation has an outcome: everything held goes
    out if it succeeded; if it failed, the association returns to its validated address
    and what was held is dropped (the core resends it as lost).
    """
    migration = assoc.migration
    if migration is None:
        return datagrams
    state = assoc.connection.path.state
    if state is PathState.VALIDATING:
        released, held = migration.admit(datagrams)
        stats.amplification_held += held
        stats.amplification_dropped += migration.dropped
        migration.dropped = 0
        return released
    assoc.migration = None
    if state is PathState.VALIDATED:
        stats.paths_validated += 1
        return migration.release() + datagrams
    stats.path_validations_failed += 1
    stats.amplification_dropped += len(migration.held)
    assoc.address = migration.previous
    return datagrams
