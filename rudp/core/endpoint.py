"""Many rudp connections on one UDP socket, sans-IO.

``Endpoint`` is the multiplexer every driver puts between its socket and the
per-connection sans-IO cores (``rudp.core.connection.SansIOConnection``).  Like the
core it does no I/O and reads no clock: the driver passes in what the socket
received and the current monotonic time, and takes out what to send and when to
wake up next.

API contract
============

Addresses are opaque hashable values (the driver normalises them, e.g. IPv6
4-tuples from ``recvfrom``); the endpoint only compares them for equality.

``Endpoint(config=None, *, accepting=False, backlog=128, rng=None, connection_factory=None,
static_key=None, stateless_reset_rate=100.0, stateless_reset_burst=100, retry="under_load",
retry_threshold=16)``
    ``accepting``: create a server-side connection when a SYN arrives from a new
    (address, client connection id) -- at once, or only once its address is validated
    by a RETRY round trip (``retry``, ``retry_threshold``: ``rudp.core.retry``).
    ``backlog``: most such connections not yet taken with ``accept()``.  ``rng`` is
    handed to every connection (seeded in simulations).
    ``connection_factory(config, is_client=..., rng=..., static_key=...)`` makes the
    cores (default ``SansIOConnection``; tests may inject another).
    ``static_key`` makes every connection's stateless-reset token (section 6.6; the
    drivers keep one on disk so a restarted program answers with the same tokens);
    None draws one from ``rng`` (or the system CSPRNG).  The two rates bound the
    stateless resets sent (``rudp.core.stateless_reset``).

``connect(address, now, config=None) -> Association``
    Open a client connection; its SYN is in the next ``datagrams_to_send``.

``receive_datagram(data, address, now)`` / ``receive_datagrams(pairs, now)``
    Route what the socket read.  The datagram is decoded once with
    ``rudp.core.wire.decode`` (a SYN's handshake block too, handed to the core with
    it); a SYN (connection id 0) goes to the connection made for (address, the
    SYN's source connection id), created if accepting; a STATELESS_RESET to the
    connection whose *peer* id it names; any other packet to the connection whose
    *local* id is in its header, whatever its source address (an established
    connection follows its peer to a new address and validates it:
    ``rudp.core.migration``).  A packet for an unknown or closed connection id is
    answered with a rate-limited stateless reset (``rudp.core.stateless_reset``).
    An undecodable datagram, an unknown id and a SYN refused by a full backlog are
    dropped and counted in ``stats``.  Never raises for network input.

``datagrams_to_send(now) -> list[tuple[bytes, address]]``
    Everything queued by every connection touched since the last call, and the
    stateless resets and RETRYs owed, less what the anti-amplification limit holds back
    for a connection whose new address is not validated yet, and less what exceeds three
    times the bytes received for a server connection whose address is not validated.

``get_timer() -> float | None`` / ``handle_timer(now)``
    Earliest deadline over all connections; fire every connection whose
    deadline is ``<= now``.

``next_event() -> tuple[Association, Event] | None``
    Next event of any connection, tagged with its association.  Associations
    whose ``paused`` flag is set are skipped (a driver pauses one whose
    application-side queue is full, so the core keeps counting unread messages
    against its receive window: back-pressure) unless their connection is
    terminated.  Clearing ``paused`` makes them eligible again.

``accept(established_only=False) -> Association | None``
    Oldest not-yet-accepted server connection (possibly still handshaking, or
    already closed by a peer that sent and left: its messages are still there).
    ``len(endpoint)`` counts live associations (a client driver may close its
    socket when it reaches 0).

``Association``
    ``.connection`` (the core: read ``state``, ``stats``, ``send_queue_bytes``,
    ``is_closed`` directly), ``.address``, ``.initiated_locally``,
    ``.accepted``, ``.established``, ``.paused``, ``.context`` (free for the
    driver).  *Mutate the core only through the association* --
    ``send(data)``, ``close(now)``, ``abort(reason)``, ``next_event()`` -- so
    the endpoint knows to collect its output and re-read its timer.

The driver loop, in this order (output and timers are re-read after input)::

    endpoint.receive_datagrams(batch, now)
    endpoint.handle_timer(now)
    for data, address in endpoint.datagrams_to_send(now): sock.sendto(data, address)
    while (item := endpoint.next_event()) is not None: ...
    deadline = endpoint.get_timer()

Costs
=====

Work is proportional to the connections *touched*, not to all connections:
input, timers and API calls put an association on a dirty list;
``datagrams_to_send`` visits only that list and re-reads those connections'
timers.  Timers live in a binary heap with lazy deletion: each change pushes a
new entry (O(log n)); ``get_timer`` discards stale entries at the top
(amortised O(log n)); the heap is rebuilt when stale entries outnumber live ones,
so it stays O(connections).

Memory bounds
=============

Terminated connections leave the routing tables as soon as they are seen
terminated with no timer left (a cleanly closed one first sits out its
TIME_WAIT, re-acknowledging retransmitted FINs); once their last event has been
read the endpoint holds no reference to them.  Server connections not yet accepted are bounded by
``backlog``, unvalidated ones (their address not proved by a retry token or by the
handshake's end) by ``retry_threshold``: beyond it a SYN draws a stateless RETRY and
creates nothing (section 6.2.1).  When the backlog is full a new SYN is refused,
never an existing connection evicted, so no legitimate client is ever reset to make
room (with ``retry="never"``, version 3's eviction of the oldest half-open one stays).
A connection that fails before it was accepted and
before it delivered a message (a failed handshake, or one that went silent until
``peer_timeout``) leaves the backlog at once: it has nothing to hand out.  The
peer-id table (routing stateless resets) has one entry per live association; the
stateless resets owed wait for the next output, bounded by their token bucket;
a migrating association holds at most ``migration.MAX_HELD_DATAGRAMS``.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable
from typing import Any

from rudp.config import Config
from rudp.core.answer_tags import AnswerTags
from rudp.core.association import Address, Association
from rudp.core.connection_like import ConnectionFactory as ConnectionFactory
from rudp.core.connection_like import ConnectionLike as ConnectionLike
from rudp.core.connection_like import default_factory
from rudp.core.endpoint_stats import EndpointStats
from rudp.core.migration import follow_peer, limit_output
from rudp.core.receiver import Budget
from rudp.core.retry import DEFAULT_RETRY_THRESHOLD, REFUSED, VALIDATED, AddressBudget, RetryGate
from rudp.core.state import ConnectionState
from rudp.core.stateless_reset import DEFAULT_RESET_BURST, DEFAULT_RESET_RATE, StatelessResets
from rudp.core.tokens import STATIC_KEY_SIZE
from rudp.core.wire import (
    NO_RESET_TOKEN,
    Handshake,
    Packet,
    PacketType,
    decode,
    decode_handshake,
    noise_message,
)
from rudp.errors import BadPacket, ConnectionLimitExceeded
from rudp.events import Connected, Event, Failed, MessageReceived

__all__ = ["Association", "ConnectionFactory", "ConnectionLike", "Endpoint", "EndpointStats"]
# EndpointStats lives in rudp.core.endpoint_stats (shared with the helpers) and is re-exported.
_SYN, _STATELESS_RESET = PacketType.SYN, PacketType.STATELESS_RESET


class Endpoint:
    """Sans-IO multiplexer of many connections over one UDP socket (see the module docs)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        accepting: bool = False,
        backlog: int = 128,
        rng: random.Random | None = None,
        connection_factory: ConnectionFactory | None = None,
        static_key: bytes | None = None,
        stateless_reset_rate: float = DEFAULT_RESET_RATE,
        stateless_reset_burst: int = DEFAULT_RESET_BURST,
        retry: str = "under_load",
        retry_threshold: int = DEFAULT_RETRY_THRESHOLD,
    ) -> None:
        if backlog < 1:
            raise ValueError("backlog must be at least 1")
        if static_key is None:
            # Seeded simulations draw it from their rng, so they replay exactly.
            source = rng if rng is not None else random.SystemRandom()
            static_key = source.getrandbits(8 * STATIC_KEY_SIZE).to_bytes(STATIC_KEY_SIZE, "big")
        self.config = config if config is not None else Config()
        """Config of every connection (``connect`` may override it per connection)."""
        self.accepting = accepting
        """Create server connections for SYNs from new peers."""
        self.backlog = backlog
        """Most server connections waiting for ``accept()``."""
        self.stats = EndpointStats()
        """Endpoint-level counters."""
        self.budget = Budget(self.config.max_buffered_bytes)
        """Receive bytes all connections share (``Config.max_buffered_bytes``, 13.4)."""
        self.static_key = static_key
        """The key every connection's stateless-reset token is made from (section 6.6)."""
        self._resets = StatelessResets(
            static_key, self.stats, stateless_reset_rate, stateless_reset_burst
        )
        psk = self.config.psk
        self._tags = None if psk is None else AnswerTags(psk)
        self._retry = RetryGate(static_key, retry, retry_threshold, self._tags)
        self._reset_output: list[tuple[bytes, Address]] = []
        self._rng = rng
        self._factory: ConnectionFactory = connection_factory or default_factory
        self._by_id: dict[int, Association] = {}
        self._by_syn: dict[tuple[Address, int], Association] = {}
        # Insertion-ordered dicts used as ordered sets.
        self._pending: dict[Association, None] = {}  # server connections not yet accepted
        self._unvalidated: dict[Association, None] = {}  # server, address not validated
        self._dirty: dict[Association, None] = {}  # output / timer may have changed
        self._eventful: dict[Association, None] = {}  # may have events
        self._heap: list[tuple[float, int, Association]] = []
        self._tiebreak = itertools.count()

    # --- introspection ---------------------------------------------------

    @property
    def associations(self) -> list[Association]:
        """Live (not yet terminated) associations."""
        return list(self._by_id.values())

    def __len__(self) -> int:
        """Number of live (not yet terminated) associations."""
        return len(self._by_id)

    @property
    def pending_count(self) -> int:
        """Server connections waiting for ``accept()``."""
        return len(self._pending)

    @property
    def unvalidated_count(self) -> int:
        """Server connections whose peer's address is not validated yet."""
        return len(self._unvalidated)

    @property
    def retry(self) -> str:
        """``"always"``, ``"under_load"`` or ``"never"`` (``rudp.core.retry``)."""
        return self._retry.mode

    # --- opening ---------------------------------------------------------

    def connect(self, address: Address, now: float, config: Config | None = None) -> Association:
        """Open a client connection to ``address``; its SYN goes out with the next output.

        Raises ``ConnectionLimitExceeded`` at ``Config.max_connections`` (section 13.4).
        """
        if not self._room_for_connection(buffers=False):
            cap = self.config.max_connections
            raise ConnectionLimitExceeded(f"endpoint holds max_connections={cap} connections")
        connection = self._new_connection(config or self.config, is_client=True)
        connection.connect(now)
        assoc = Association(self, connection, address, initiated_locally=True)
        self._register(assoc)
        self.stats.connections_opened += 1
        self._touch(assoc)
        return assoc

    def accept(self, *, established_only: bool = False) -> Association | None:
        """The oldest server connection not yet accepted, or None.

        With ``established_only`` skip connections whose ``Connected`` event has
        not been read yet (a TCP-like ``accept``); they stay pending.
        """
        for assoc in self._pending:
            if established_only and not assoc.established:
                continue
            del self._pending[assoc]
            assoc.accepted = True
            return assoc
        return None

    def _room_for_connection(self, *, buffers: bool = True) -> bool:
        """Below ``max_connections`` and, for a SYN, with shared receive bytes left."""
        if len(self._by_id) >= self.config.max_connections:
            return False
        return not buffers or self.budget.free >= self.config.max_datagram_size

    def _refuse_syn(
        self, packet: Packet, handshake: Handshake, address: Address, now: float
    ) -> None:
        # Section 6.8.1-1: with a key, the refusal carries the answer tag of the SYN's Noise
        # message, so that a keyed client can believe it (it takes nothing else unsealed).
        tags = self._tags
        message = noise_message(packet.payload) if tags is not None else None
        token = NO_RESET_TOKEN if tags is None or message is None else tags.refusal(message)
        reset = self._resets.refuse(packet, handshake, now, token)
        if reset is not None:
            self._reset_output.append((reset, address))

    def _new_connection(self, config: Config, *, is_client: bool) -> Any:
        # Connection ids are 64-bit random: a collision is a 2**-64 event per
        # pair, but routing must never hand one peer's packets to another.
        for _ in range(8):
            connection = self._factory(
                config, is_client=is_client, rng=self._rng, static_key=self.static_key
            )
            cid = connection.local_connection_id
            if cid is None or cid not in self._by_id:
                attach = getattr(connection, "attach_budget", None)
                if attach is not None:
                    attach(self.budget)
                return connection
        raise RuntimeError("could not draw a unique connection id (broken rng?)")

    def _register(self, assoc: Association) -> None:
        cid = assoc.connection.local_connection_id
        if cid is not None:
            self._by_id[cid] = assoc

    # --- input -----------------------------------------------------------

    def receive_datagrams(self, datagrams: Iterable[tuple[bytes, Address]], now: float) -> None:
        """Route a batch of (datagram, source address) pairs."""
        for data, address in datagrams:
            self.receive_datagram(data, address, now)

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        """Route one datagram read from the socket.  Never raises for network input."""
        self.stats.datagrams_received += 1
        try:
            packet = decode(data)
        except BadPacket:
            self.stats.bad_datagrams += 1
            return
        ptype = packet.type  # compared with module globals: see connection._receive
        if ptype is _SYN and packet.connection_id == 0:
            refused = self.stats.syn_refused_limit
            try:
                handshake = decode_handshake(packet.payload)
            except BadPacket:
                self.stats.bad_datagrams += 1
                return
            assoc = self._route_syn(packet, handshake, address, len(data), now)
            if assoc is None:
                if self.stats.syn_refused_limit != refused:  # section 13.4-5: say so
                    self._refuse_syn(packet, handshake, address, now)
                return
            # The core gets the block decoded here: a SYN's handshake is decoded once.
            assoc.connection.receive_packet(packet, now, handshake)
            if assoc.connection.state is ConnectionState.LISTEN:
                # The core refused the SYN that made it (with a key: its Noise message did
                # not authenticate, section 6.8-1): no state is kept for it.
                self.stats.syn_unauthenticated += 1
                self._unroute(assoc)
                return
        elif ptype is _STATELESS_RESET:
            found = self._resets.route(packet.connection_id)  # it names our *peer's* id
            if found is None:
                self.stats.unknown_connection += 1  # never answered (section 6.6.2)
                return
            # Any source address: a restarted peer may answer from another one.
            self.stats.stateless_resets_routed += 1
            assoc = found
            assoc.connection.receive_packet(packet, now)  # the core checks the token
        else:
            found = self._by_id.get(packet.connection_id)
            if found is None:
                self.stats.unknown_connection += 1
                self._answer_unknown(packet, address, now)
                return
            assoc = found
            if assoc.address == address:
                budget = assoc.budget if assoc.migration is None else assoc.migration.budget
                if budget is not None:
                    budget.received += len(data)  # the unvalidated address's 3x budget
                assoc.connection.receive_packet(packet, now, None, len(data))  # decoded once
            elif not follow_peer(assoc, packet, len(data), address, now, self.stats):
                return
        if assoc._remote_id is None:
            self._learn_remote_id(assoc)
        self._touch(assoc)

    def _answer_unknown(self, packet: Packet, address: Address, now: float) -> None:
        """Section 6.6.2: a stateless reset, so a peer of ours before a restart fails fast."""
        reset = self._resets.answer(packet, now)
        if reset is not None:
            self._reset_output.append((reset, address))

    def _learn_remote_id(self, assoc: Association) -> None:
        remote_id = assoc.connection.remote_connection_id
        if remote_id is not None:
            assoc._remote_id = remote_id
            self._resets.learn(remote_id, assoc)

    def _route_syn(
        self, packet: Packet, handshake: Handshake, address: Address, size: int, now: float
    ) -> Association | None:
        client_id = handshake.source_connection_id
        key = (address, client_id)
        assoc = self._by_syn.get(key)
        if assoc is not None:
            if assoc.budget is not None:
                assoc.budget.received += size
            return assoc  # retransmitted SYN: the core resends its SYN_ACK
        stats = self.stats
        if not self.accepting:
            stats.unknown_connection += 1
            return None
        if not self._room_for_connection():
            stats.syn_refused_limit += 1  # section 13.4: the caller answers with a RESET
            return None
        full = len(self._pending) >= self.backlog
        admitted = self._retry.admit(
            packet, client_id, address, now, len(self._unvalidated), full, stats
        )
        if admitted == REFUSED:
            return None  # a RETRY may be owed: the gate's output, collected with ours
        validated = admitted == VALIDATED
        if full and not (self._retry.mode == "never" and self._evict_half_open()):
            stats.syn_refused += 1  # no eviction: nobody legitimate is reset to make room
            return None
        connection = self._new_connection(self.config, is_client=False)
        assoc = Association(self, connection, address, initiated_locally=False, syn_key=key)
        if validated:
            stats.addresses_validated += 1
        else:
            assoc.budget = AddressBudget(size)
            self._unvalidated[assoc] = None
        self._by_syn[key] = assoc
        self._register(assoc)
        self._pending[assoc] = None
        stats.connections_created += 1
        return assoc

    def _evict_half_open(self) -> bool:
        for assoc in self._pending:
            if not self._is_established(assoc):
                del self._pending[assoc]
                assoc.abort("evicted from a full accept backlog")
                self._refresh(assoc)
                self.stats.half_open_evicted += 1
                return True
        return False

    @staticmethod
    def _is_established(assoc: Association) -> bool:
        """Handshake done (its ``Connected`` was read, or the core says so)."""
        return assoc.established or assoc.connection.is_established

    # --- output and timers -------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram queued by the connections touched since the last call."""
        out: list[tuple[bytes, Address]] = []
        if self._reset_output:
            out, self._reset_output = self._reset_output, []
        if self._retry.output:
            out += self._retry.output
            self._retry.output = []
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for assoc in dirty:
                datagrams = assoc.connection.datagrams_to_send(now)
                if assoc.migration is not None:
                    datagrams = limit_output(assoc, datagrams, self.stats)
                elif assoc.budget is not None:
                    if assoc.connection.is_established:  # it acknowledged our SYN_ACK
                        self._validated(assoc)
                    else:
                        datagrams = assoc.budget.limit(datagrams, self.stats)
                address = assoc.address
                out.extend([(data, address) for data in datagrams])
                self._refresh(assoc)
        self.stats.datagrams_sent += len(out)
        return out

    def _validated(self, assoc: Association) -> None:
        assoc.budget = None
        self._unvalidated.pop(assoc, None)

    def get_timer(self) -> float | None:
        """Earliest absolute deadline over all connections, or None."""
        for assoc in self._dirty:
            self._refresh_timer(assoc)
        heap = self._heap
        while heap:
            deadline, _, assoc = heap[0]
            if assoc._timer == deadline:
                return deadline
            heapq.heappop(heap)  # stale: that connection's timer moved
        return None

    def handle_timer(self, now: float) -> None:
        """Fire the timer of every connection whose deadline is ``<= now``."""
        for assoc in list(self._dirty):
            self._refresh_timer(assoc)
        heap = self._heap
        due: list[Association] = []
        while heap and heap[0][0] <= now:
            deadline, _, assoc = heapq.heappop(heap)
            if assoc._timer == deadline:
                assoc._timer = None
                due.append(assoc)
        for assoc in due:
            assoc.connection.handle_timer(now)
            self._touch(assoc)

    def _touch(self, assoc: Association) -> None:
        self._dirty[assoc] = None
        self._eventful[assoc] = None

    def _refresh(self, assoc: Association) -> None:
        """Re-read the timer; unroute the connection once it is over.

        A cleanly closed connection may still have a timer (TIME_WAIT: it
        re-acknowledges a retransmitted FIN for ``close_linger``), so it stays
        routable until that timer is gone too.
        """
        self._refresh_timer(assoc)
        if assoc._timer is None and assoc.connection.is_closed:
            self._unroute(assoc)

    def _refresh_timer(self, assoc: Association) -> None:
        deadline = assoc.connection.get_timer()
        if deadline != assoc._timer:
            assoc._timer = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, next(self._tiebreak), assoc))
                if len(self._heap) > 2 * len(self._by_id) + 64:
                    self._compact_heap()

    def _compact_heap(self) -> None:
        self._heap = [entry for entry in self._heap if entry[2]._timer == entry[0]]
        heapq.heapify(self._heap)

    def _unroute(self, assoc: Association) -> None:
        cid = assoc.connection.local_connection_id
        if cid is not None and self._by_id.get(cid) is assoc:
            del self._by_id[cid]
            self.stats.connections_removed += 1
        if assoc._syn_key is not None and self._by_syn.get(assoc._syn_key) is assoc:
            del self._by_syn[assoc._syn_key]
        if assoc._remote_id is not None:
            self._resets.forget(assoc._remote_id, assoc)
        assoc.migration = None
        self._validated(assoc)  # out of the count of unvalidated half-open connections
        assoc._timer = None
        release = getattr(assoc.connection, "release_budget", None)
        if release is not None:
            release()
        if not self._is_established(assoc):
            # A handshake that failed has nothing for accept() to hand out.
            self._pending.pop(assoc, None)

    # --- events ------------------------------------------------------------

    def next_event(self) -> tuple[Association, Event] | None:
        """Next event of any connection (paused ones skipped unless terminated)."""
        eventful = self._eventful
        while eventful:
            assoc = next(iter(eventful))
            connection = assoc.connection
            if assoc._paused and not connection.is_closed:
                del eventful[assoc]
                continue
            event: Event | None = connection.next_event()
            if event is None:
                del eventful[assoc]
                continue
            self._on_event(assoc, event)
            return assoc, event
        return None

    def _on_event(self, assoc: Association, event: Event) -> None:
        # Reading an event may re-open the receive window (a window update to send).
        self._dirty[assoc] = None
        if isinstance(event, Connected):
            assoc.established = True
        elif isinstance(event, MessageReceived):
            assoc.received = True
        elif isinstance(event, Failed) and not assoc.received:
            # A failed handshake, or a connection that went silent before sending a
            # single message (peer_timeout ended it), has nothing for accept() to hand
            # out: it leaves the backlog so live handshakes are not locked out.  One
            # with messages stays, so they reach the application with the failure.
            self._pending.pop(assoc, None)
