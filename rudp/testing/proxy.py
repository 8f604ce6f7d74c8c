"""A lossy UDP proxy on real sockets, for trying rudp over a bad network.

The proxy listens on one UDP address and relays every client's datagrams to an
upstream address, and the replies back, through the simulator's link model
(:class:`rudp.testing.link.Link`): loss, bursts, duplication, reordering,
corruption, truncation, delay, jitter, a rate limit and a bounded queue, exactly
as in the deterministic simulator, but on the wall clock.

Each client address gets its own upstream socket, so the server sees one
distinct peer per client (as behind a NAT), and its own pair of links, one per
direction.  With a seed, the random stream of every link is derived from the
seed, the client's index (order of first appearance) and the direction, so a
rerun makes the same drop/duplicate/corrupt decisions for the same sequence of
datagrams.  Only the timing of real sockets is not reproducible.

The mapping table is bounded (``max_clients``) and idle mappings expire, so a
stray scanner cannot make the proxy hold sockets forever.

``rebind_after=N`` (``rudp proxy --rebind-after N``), or a call to :meth:`LossyProxy.rebind`,
simulates a NAT rebinding: a client's upstream socket is replaced by a new one on
another local port, so the server sees the same peer arrive from a new address
(specs/protocol.md section 6.7).  Replies still in flight to the old port are lost,
as behind a real NAT.

Use it in-process::

    with LossyProxy(("127.0.0.1", 9000), LinkProfile(loss=0.1), seed=1) as proxy:
        rudp.connect(proxy.address)  # talks to 127.0.0.1:9000 through the proxy

or from the command line: ``rudp proxy --listen 127.0.0.1:9001 --upstream
127.0.0.1:9000 --loss 0.1 --delay 20ms``.

This module is the relay.  Its counters are in ``rudp.testing.proxy_stats`` and the
parsing of addresses, durations and rates it shares with the CLI in
``rudp.testing.proxy_parsing``; every name is importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import selectors
import socket
import threading
import time
from collections.abc import Callable

from rudp.testing.link import Link, LinkProfile
from rudp.testing.proxy_parsing import (
    Address,
    format_address,
    parse_address,
    parse_duration,
    parse_rate,
)
from rudp.testing.proxy_stats import DirectionStats, ProxyStats, add_counters, link_counters

__all__ = [
    "DirectionStats",
    "LossyProxy",
    "ProxyStats",
    "format_address",
    "parse_address",
    "parse_duration",
    "parse_rate",
]

_MAX_DATAGRAM = 65535
_SOCKET_BUFFER = 4 * 1024 * 1024
"""Requested SO_RCVBUF/SO_SNDBUF.  The kernel may cap it (net.core.rmem_max), but
asking for more keeps the proxy's own socket drops rare: every loss should come
from the link model, where it is counted."""


class _Client:
    """One client address: its upstream socket and a link per direction."""

    __slots__ = (
        "address",
        "last_active",
        "rebound",
        "reverse",
        "sent_upstream",
        "sock",
        "to_server",
    )

    def __init__(self, address: Address, sock: socket.socket, to_server: Link, reverse: Link):
        self.address = address
        self.sock = sock
        self.sent_upstream = 0
        self.rebound = False
        self.to_server = to_server
        self.reverse = reverse
        self.last_active = 0.0


class LossyProxy:
    """Relay UDP datagrams between clients and ``upstream`` through lossy links.

    ``profile`` applies to both directions unless ``reverse_profile`` (server to
    client) is given.  ``seed`` makes every link's random decisions reproducible;
    without it the links draw from fresh system entropy.

    Run it on a background thread with :meth:`start` / :meth:`stop` (or as a
    context manager), or in the calling thread with :meth:`serve_forever`,
    which returns after :meth:`shutdown` (safe to call from a signal handler).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        profile: LinkProfile | None = None,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        reverse_profile: LinkProfile | None = None,
        seed: int | None = None,
        max_clients: int = 64,
        idle_timeout: float = 60.0,
        batch: int = 256,
        clock: Callable[[], float] = time.monotonic,
        rebind_after: int | None = None,
    ) -> None:
        if rebind_after is not None and rebind_after < 1:
            raise ValueError("rebind_after must be positive")
        self._rebind_after = rebind_after
        self._rebind_requested = False
        if max_clients < 1:
            raise ValueError("max_clients must be positive")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self._profile = profile if profile is not None else LinkProfile()
        self._reverse_profile = reverse_profile if reverse_profile is not None else self._profile
        self._seed = seed
        self._max_clients = max_clients
        self._idle_timeout = idle_timeout
        self._batch = batch
        self._clock = clock

        family, _, _, _, listen_addr = socket.getaddrinfo(
            listen[0], listen[1], type=socket.SOCK_DGRAM
        )[0]
        up_family, _, _, _, up_addr = socket.getaddrinfo(
            upstream[0], upstream[1], type=socket.SOCK_DGRAM
        )[0]
        self._upstream: Address = up_addr
        self._upstream_family = up_family
        self._sock = self._make_socket(family)
        try:
            self._sock.bind(listen_addr)
        except OSError:
            self._sock.close()
            raise
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")

        self._clients: dict[Address, _Client] = {}
        self._busy: set[tuple[_Client, bool]] = set()
        """Links holding datagrams in flight: (client, is_reverse)."""
        self._stats = ProxyStats()
        self._lock = threading.Lock()
        """Guards ``_stats`` and ``_clients`` against a concurrent ``stats`` read."""
        self._stopping = False
        self._closed = False
        self._next_expiry_check = clock() + min(1.0, idle_timeout / 4)
        self._thread: threading.Thread | None = None

    # --- public API --------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The address clients send to (as bound, with the real port)."""
        return tuple(self._sock.getsockname())

    @property
    def upstream(self) -> Address:
        """The address every client's datagrams are relayed to."""
        return self._upstream

    @property
    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters (safe from any thread)."""
        with self._lock:
            snap = dataclasses.replace(
                self._stats,
                to_server=dataclasses.replace(
                    self._stats.to_server, link=dict(self._stats.to_server.link)
                ),
                to_client=dataclasses.replace(
                    self._stats.to_client, link=dict(self._stats.to_client.link)
                ),
            )
            snap.clients_active = len(self._clients)
            for client in self._clients.values():
                add_counters(snap.to_server.link, link_counters(client.to_server))
                add_counters(snap.to_client.link, link_counters(client.reverse))
        return snap

    def rebind(self) -> None:
        """Move every client's upstream socket to a new local port (a NAT rebinding).

        Safe from any thread: the serving loop does it on its next round.
        """
        self._rebind_requested = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def start(self) -> LossyProxy:
        """Serve on a daemon thread; returns self so ``proxy = LossyProxy(...).start()``."""
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._thread = threading.Thread(target=self.serve_forever, name="rudp-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, wait for the thread (at most ``timeout``) and close every socket."""
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("proxy thread did not stop")
        self.close()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to return soon.  Async-signal safe enough for Python."""
        self._stopping = True
        # Already closed, or the wake buffer is full: the flag suffices then.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        """Close every socket.  Call after :meth:`serve_forever` has returned."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for client in list(self._clients.values()):
                self._drop_client(client, expired=False)
        self._selector.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the event loop ----------------------------------------------------------

    def serve_forever(self) -> None:
        """Relay datagrams until :meth:`shutdown`.

        Each wait is bounded by the next link arrival and by one second, so idle
        mappings expire and a shutdown is seen even without the wake-up byte.
        """
        while not self._stopping:
            self.poll(1.0)

    def poll(self, timeout: float = 0.0) -> None:
        """Run one round: wait up to ``timeout`` (less if a link has a datagram due)
        for input, read every ready socket, forward every due datagram and expire
        idle mappings.  Tests drive the proxy with it, without a thread."""
        now = self._clock()
        for client, reverse in self._busy:
            due = (client.reverse if reverse else client.to_server).next_arrival()
            if due is not None:
                timeout = min(timeout, due - now)
        for key, _ in self._selector.select(max(timeout, 0.0)):
            if key.data == "wake":
                self._drain_wake()
            elif key.data is None:
                self._read_clients()
            else:
                self._read_upstream(key.data)
        now = self._clock()
        if self._rebind_requested:
            self._rebind_requested = False
            for client in list(self._clients.values()):
                self._rebind(client)
        self._deliver_due(now)
        if now >= self._next_expiry_check:
            self._expire_idle(now)
            # Expiry is coarse on purpose: scanning every mapping each round would
            # cost O(clients) per datagram burst.
            self._next_expiry_check = now + min(1.0, self._idle_timeout / 4)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except OSError:
            pass  # BlockingIOError: drained

    def _read_clients(self) -> None:
        for _ in range(self._batch):
            try:
                data, address = self._sock.recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # e.g. a stale ICMP error on some platforms: skip it
            now = self._clock()
            client = self._clients.get(address)
            if client is None:
                client = self._new_client(address)
                if client is None:
                    continue
            with self._lock:
                self._stats.to_server.received += 1
                self._stats.to_server.received_bytes += len(data)
            client.last_active = now
            client.to_server.send(data, now)
            self._busy.add((client, False))

    def _read_upstream(self, client: _Client) -> None:
        for _ in range(self._batch):
            try:
                data = client.sock.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                # ICMP port unreachable from a connected socket: the server is not
                # (yet) listening.  The datagram is lost, as on a real network.
                with self._lock:
                    self._stats.to_server.send_errors += 1
                continue
            now = self._clock()
            with self._lock:
                self._stats.to_client.received += 1
                self._stats.to_client.received_bytes += len(data)
            client.last_active = now
            client.reverse.send(data, now)
            self._busy.add((client, True))

    def _deliver_due(self, now: float) -> None:
        idle: list[tuple[_Client, bool]] = []
        for item in list(self._busy):
            client, reverse = item
            link = client.reverse if reverse else client.to_server
            due = link.next_arrival()
            if due is not None and due <= now:
                for datagram in link.deliver(now):
                    self._emit(client, reverse, datagram)
                due = link.next_arrival()
            if due is None:
                idle.append(item)
        self._busy.difference_update(idle)

    def _emit(self, client: _Client, reverse: bool, datagram: bytes) -> None:
        direction = self._stats.to_client if reverse else self._stats.to_server
        try:
            if reverse:
                self._sock.sendto(datagram, client.address)
            else:
                client.sock.send(datagram)
                client.sent_upstream += 1
                if client.sent_upstream == self._rebind_after and not client.rebound:
                    self._rebind(client)
        except OSError:
            # A full socket buffer or an ICMP error: a real, unmodelled loss.
            with self._lock:
                direction.send_errors += 1
            return
        with self._lock:
            direction.forwarded += 1
            direction.forwarded_bytes += len(datagram)

    # --- client mappings -----------------------------------------------------------

    def _rng(self, index: int, direction: str) -> random.Random:
        if self._seed is None:
            return random.Random()  # seeded from os.urandom
        # A string seed is hashed with SHA-512 by random.seed (version 2), so
        # every (seed, client, direction) gets an independent, stable stream.
        return random.Random(f"rudp-proxy:{self._seed}:{index}:{direction}")

    def _new_client(self, address: Address) -> _Client | None:
        if len(self._clients) >= self._max_clients:
            self._expire_idle(self._clock())
        if len(self._clients) >= self._max_clients:
            with self._lock:
                self._stats.clients_rejected += 1
            return None
        sock = self._make_socket(self._upstream_family)
        try:
            # Connected, so the kernel filters out datagrams not from upstream.
            sock.connect(self._upstream)
        except OSError:
            sock.close()
            with self._lock:
                self._stats.to_server.send_errors += 1
            return None
        index = self._stats.clients_seen
        client = _Client(
            address,
            sock,
            Link(self._profile, self._rng(index, "to_server")),
            Link(self._reverse_profile, self._rng(index, "to_client")),
        )
        self._selector.register(sock, selectors.EVENT_READ, client)
        with self._lock:
            self._clients[address] = client
            self._stats.clients_seen += 1
        return client

    def _rebind(self, client: _Client) -> None:
        """Replace ``client``'s upstream socket by one on a new local port."""
        sock = self._make_socket(self._upstream_family)
        try:
            sock.connect(self._upstream)
        except OSError:
            sock.close()
            return
        old = client.sock
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(old)
        old.close()
        client.sock = sock
        client.rebound = True
        self._selector.register(sock, selectors.EVENT_READ, client)
        with self._lock:
            self._stats.rebinds += 1

    def _expire_idle(self, now: float) -> None:
        stale = [
            client
            for client in self._clients.values()
            if now - client.last_active > self._idle_timeout
            and (client, False) not in self._busy
            and (client, True) not in self._busy
        ]
        if stale:
            with self._lock:
                for client in stale:
                    self._drop_client(client, expired=True)

    def _drop_client(self, client: _Client, *, expired: bool) -> None:
        """Forget a mapping, keeping its link counters.  Caller holds the lock."""
        del self._clients[client.address]
        self._busy.discard((client, False))
        self._busy.discard((client, True))
        add_counters(self._stats.to_server.link, link_counters(client.to_server))
        add_counters(self._stats.to_client.link, link_counters(client.reverse))
        if expired:
            self._stats.clients_expired += 1
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()

    @staticmethod
    def _make_socket(family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # A smaller buffer only means more real (counted) drops.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.setblocking(False)
        return sock
