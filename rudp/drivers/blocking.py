"""The blocking I/O engine under ``rudp.socket`` and ``rudp.connect`` / ``rudp.listen``.

Threading model
===============

One ``Engine`` owns one UDP socket and one ``rudp.core.endpoint.Endpoint``.  A
background *I/O thread* waits in ``select`` on the socket and on a wake-up
socketpair, with the endpoint's earliest timer as its timeout.  On every wake-up
it drains the socket (non-blocking ``recvfrom`` until ``BlockingIOError``, at
most ``RECV_BATCH`` datagrams), feeds the batch to the endpoint, fires due
timers, sends every queued datagram and sorts events into per-connection
``Channel`` objects.

User threads never touch the socket for reading.  They take ``engine.cond`` (a
``threading.Condition``; its lock guards the endpoint and every channel), mutate
the endpoint through its associations, call ``pump()`` to push the resulting
datagrams out at once (no thread hop on the send path), and wait on the
condition; the I/O thread ``notify_all()``s after each round.  ``pump`` wakes
the I/O thread only when the earliest timer moved before the deadline it is
sleeping towards.  Any number of threads may wait at once, so one thread can
read while another writes.

Back-pressure: a channel holding ``recv_limit`` unread messages or
``recv_buffer`` unread bytes is *paused*
(the endpoint stops taking its events, so the core counts them against the
receive window and the peer slows down); reading below the limit resumes it.

OS errors: ICMP-induced ``ConnectionRefusedError`` and other transient send or
receive errors are ignored -- they are loss as far as the protocol is concerned,
and the retransmission machinery (or the give-up budget) deals with them.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket as _socket
import threading
import time
from collections.abc import Callable
from typing import Any

from rudp.config import Config
from rudp.core.endpoint import Association, Endpoint
from rudp.errors import Timeout
from rudp.events import Closed, Connected, Failed, MessageAcknowledged, MessageReceived, PeerClosed

__all__ = ["RECV_BATCH", "Channel", "Engine"]

RECV_BATCH = 512
"""Most datagrams read per wake-up, so timers and senders are not starved by a flood."""

_SOCKET_BUFFER = 4 * 1024 * 1024
"""Requested SO_RCVBUF / SO_SNDBUF: a full window of 1400-byte datagrams is ~1.4 MB,
and loopback drops rather than blocks when the buffer is full."""


class Channel:
    """Driver-side state of one association (``assoc.context``)."""

    __slots__ = (
        "connected",
        "failure",
        "inbox",
        "inbox_bytes",
        "payloads",
        "peer_closed",
        "terminated",
        "undelivered",
    )

    def __init__(self) -> None:
        self.inbox: collections.deque[bytes] = collections.deque()
        """Messages received and not yet read, in order (take them with ``pop``)."""
        self.inbox_bytes = 0
        """Total size of the messages in ``inbox``."""
        self.payloads: dict[int, bytes] = {}
        """Message id -> payload until acknowledged (for ``PeerUnreachable.undelivered``)."""
        self.connected = False
        """The handshake completed."""
        self.peer_closed = False
        """The peer closed gracefully (every message it sent is in ``inbox`` or was read)."""
        self.terminated = False
        """``Closed`` or ``Failed`` was seen."""
        self.failure: Failed | None = None
        """The ``Failed`` event, if the connection failed."""
        self.undelivered: tuple[bytes, ...] = ()
        """Payloads of ``failure.undelivered``, in send order."""

    def pop(self) -> bytes:
        """Take the oldest unread message."""
        message = self.inbox.popleft()
        self.inbox_bytes -= len(message)
        return message

    @property
    def lost_messages(self) -> bool:
        """The connection failed with messages the peer never acknowledged."""
        return self.failure is not None and bool(self.failure.undelivered)


def channel(assoc: Association) -> Channel:
    """The channel of an association, created on first use."""
    ch = assoc.context
    if ch is None:
        ch = assoc.context = Channel()
    assert isinstance(ch, Channel)
    return ch


class Engine:
    """One UDP socket, one endpoint, one I/O thread (see the module docs).

    Every method whose name does not start with ``close`` or ``start`` must be
    called with ``cond`` held.
    """

    def __init__(
        self,
        family: int,
        config: Config,
        *,
        accepting: bool = False,
        backlog: int = 128,
        recv_limit: int | None = None,
        recv_buffer: int | None = None,
        on_event: Callable[[Association, Any], None] | None = None,
    ) -> None:
        self.family = family
        self.config = config
        self.recv_limit = recv_limit if recv_limit is not None else config.receive_window
        """Unread messages per channel before it is paused (back-pressure)."""
        self.recv_buffer = (
            recv_buffer
            if recv_buffer is not None
            else config.receive_window * config.max_datagram_size
        )
        """Unread bytes per channel before it is paused: about one receive window, so
        the driver adds at most as much buffering as the core's window allows."""
        self.sock = _socket.socket(family, _socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            for option in (_socket.SO_RCVBUF, _socket.SO_SNDBUF):
                with contextlib.suppress(OSError):  # capped by the OS; best effort
                    self.sock.setsockopt(_socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            self._wake_r, self._wake_w = _socket.socketpair()
        except BaseException:
            self.sock.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.endpoint = Endpoint(config, accepting=accepting, backlog=backlog)
        self.cond = threading.Condition(threading.Lock())
        self.on_event = on_event
        """Called (cond held) for every event after the channel is updated."""
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._sleep_until: float | None = None  # the I/O thread's current select deadline
        self._sleeping = False
        self.io_error: BaseException | None = None
        """Set if the I/O thread died of an unexpected exception (a bug)."""

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread (idempotent)."""
        with self.cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="rudp-io", daemon=True)
            self._thread.start()

    @property
    def closed(self) -> bool:
        """``close()`` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the I/O thread and close the sockets (no linger: callers linger first)."""
        with self.cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            thread = self._thread
            self._wake()
            self.cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- helpers for the API layers (cond held) -------------------------------

    def now(self) -> float:
        """The engine's clock (monotonic seconds)."""
        return time.monotonic()

    def pump(self) -> None:
        """Send what the endpoint queued, sort its events, wake waiters."""
        now = time.monotonic()
        self._dispatch_events()
        self._send(self.endpoint.datagrams_to_send(now))
        self.cond.notify_all()
        if self._sleeping:
            deadline = self.endpoint.get_timer()
            if deadline is not None and (self._sleep_until is None or deadline < self._sleep_until):
                self._wake()

    def wait_until(self, predicate: Callable[[], bool], deadline: float | None) -> None:
        """Wait (cond held) until ``predicate()``; raise ``Timeout`` at ``deadline``.

        Also returns if the engine was closed, so callers re-check their state.
        """
        while not predicate():
            if self._closed:
                return
            if deadline is None:
                self.cond.wait()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout("timed out")
                self.cond.wait(remaining)

    def resume(self, assoc: Association) -> None:
        """Un-pause a channel whose inbox fell below the limit, and take its events."""
        ch = channel(assoc)
        if assoc.paused and len(ch.inbox) < self.recv_limit and ch.inbox_bytes < self.recv_buffer:
            assoc.paused = False
            self.pump()

    def sendto_raw(self, data: bytes, address: Any) -> None:
        """Send one raw datagram (tests: garbage, spoofed packets)."""
        self._send([(data, address)])

    # --- the I/O thread ----------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: a wake-up is already pending
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                with self.cond:
                    if self._stopping:
                        return
                    deadline = self.endpoint.get_timer()
                    self._sleep_until = deadline
                    self._sleeping = True
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                selector.select(timeout)
                with self.cond:
                    self._sleeping = False
                    if self._stopping:
                        return
                    self._drain_wake()
                    batch = self._recv_batch()
                    now = time.monotonic()
                    if batch:
                        self.endpoint.receive_datagrams(batch, now)
                    self.endpoint.handle_timer(now)
                    self.pump()
        except BaseException as exc:  # pragma: no cover - a bug; surface it to waiters
            with self.cond:
                self.io_error = exc
                self._closed = True
                self.cond.notify_all()
            raise
        finally:
            selector.close()

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _recv_batch(self) -> list[tuple[bytes, Any]]:
        batch: list[tuple[bytes, Any]] = []
        recvfrom = self.sock.recvfrom
        for _ in range(RECV_BATCH):
            try:
                data, address = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # ConnectionRefusedError and friends: an ICMP error for some
                # earlier datagram.  Loss, as far as the protocol cares.
                continue
            batch.append((data, address))
        return batch

    def _send(self, datagrams: list[tuple[bytes, Any]]) -> None:
        sendto = self.sock.sendto
        for data, address in datagrams:
            try:
                sendto(data, address)
            except OSError:
                # Full socket buffer, ICMP-refused, unreachable network: the
                # datagram is lost and will be retransmitted (or the peer given up).
                continue

    def _dispatch_events(self) -> None:
        endpoint = self.endpoint
        limit = self.recv_limit
        byte_limit = self.recv_buffer
        on_event = self.on_event
        while (item := endpoint.next_event()) is not None:
            assoc, event = item
            ch = channel(assoc)
            if isinstance(event, MessageReceived):
                ch.inbox.append(event.data)
                ch.inbox_bytes += len(event.data)
                if len(ch.inbox) >= limit or ch.inbox_bytes >= byte_limit:
                    assoc.paused = True
            elif isinstance(event, MessageAcknowledged):
                ch.payloads.pop(event.message_id, None)
            elif isinstance(event, Connected):
                ch.connected = True
            elif isinstance(event, PeerClosed):
                ch.peer_closed = True
            elif isinstance(event, Closed):
                ch.terminated = True
                ch.payloads.clear()
            elif isinstance(event, Failed):
                ch.terminated = True
                ch.failure = event
                ch.undelivered = tuple(
                    ch.payloads[i] for i in event.undelivered if i in ch.payloads
                )
                ch.payloads.clear()
            if on_event is not None:
                on_event(assoc, event)
