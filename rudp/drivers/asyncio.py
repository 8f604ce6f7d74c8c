"""The asyncio driver: one UDP socket, one sans-IO ``Endpoint``, many connections.

All protocol logic lives in the sans-IO core (``rudp.core.connection``) and the
multiplexer (``rudp.core.endpoint``).  This module only moves bytes and time:

* :class:`EndpointProtocol`, an ``asyncio.DatagramProtocol``, owns the UDP
  transport and the ``Endpoint``.  Every wakeup (a readable socket, the timer,
  or a local ``send``/``close``) ends in one *service pass*, in the order the
  endpoint asks for: feed the received batch, fire the timer if due, read the
  events (and accept new connections), send everything queued in one go, and
  re-arm a single ``loop.call_at`` timer at ``Endpoint.get_timer()``.
* asyncio's selector transport reads one datagram per readiness callback.  We
  create the socket ourselves and keep a reference, so ``datagram_received``
  drains what else the kernel holds (non-blocking ``recvfrom`` until
  ``EAGAIN``, at most ``recv_batch``) before any protocol work.
* Local calls (:meth:`Connection.send`, :meth:`Connection.close`) only mutate
  the core and schedule a service pass with ``loop.call_soon``: a burst of
  sends made in one loop iteration costs one flush, not one per message.
* :class:`Connection` turns events into awaitable state: it folds them into a
  ``ConnectionLedger`` (``rudp.drivers._common``, shared with the blocking
  driver: inbox, unacknowledged payloads, outcome) and wakes the tasks waiting
  on it through futures.

Back-pressure.  Sending: ``send()`` waits while the core's
``send_queue_bytes`` is at least ``send_buffer``.  Receiving: when the inbox
holds ``recv_buffer`` bytes (or ``receive_window`` messages) the association
is *paused*: the endpoint stops handing us its events, so unread messages stay
in the core and count against the receive window the peer sees
(specs/protocol.md section 13.4).  Because events share one queue, a paused
connection would also hide ``MessageAcknowledged``; so a connection is never
paused while a task waits in ``flush()``/``close()`` or for the handshake (that
waiter would otherwise wait on the reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from rudp.config import Config
from rudp.drivers._common import (
    Address,
    ConnectionLedger,
    DriverOptions,
    drain,
    normalise_address,
    udp_socket,
)
from rudp.errors import ConnectionClosed, LocalProtocolError, MessageTooLarge
from rudp.events import Closed, Event, Failed, FailureKind, MessageReceived

if TYPE_CHECKING:
    from rudp.core.endpoint import Association, Endpoint

__all__ = ["Connection", "EndpointProtocol", "open_endpoint"]

logger = logging.getLogger("rudp.aio")


def _release(waiters: list[asyncio.Future[None]]) -> None:
    """Wake every task waiting on one of ``waiters`` (the asyncio wake-up mechanism)."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


# --- per-connection state -------------------------------------------------------


class Connection:
    """One rudp connection driven by asyncio.

    Obtained from ``rudp.aio.connect()`` or passed to a ``rudp.aio.serve()``
    handler.  Messages are whole ``bytes`` objects, delivered in order, exactly
    once.  One task may read while another writes; concurrent ``send`` calls
    queue their messages in the order they get buffer space.
    """

    def __init__(self, protocol: EndpointProtocol, assoc: Association) -> None:
        self._protocol = protocol
        self._assoc = assoc
        self._ledger = ConnectionLedger()
        self._waiters: list[asyncio.Future[None]] = []
        self._needs_events = 0  # tasks in flush()/close()/handshake: never pause then
        self._local_closed = False
        self._closed_by_server = False  # Server.close() closed it, not the handler

    # -- driver side -------------------------------------------------------------

    def _handle_event(self, event: Event) -> None:
        """Apply one event; the protocol wakes the waiters after the whole batch."""
        self._ledger.apply(event)
        if isinstance(event, MessageReceived):
            self._update_pause()

    def _update_pause(self) -> None:
        protocol = self._protocol
        paused = self._ledger.full(protocol.recv_buffer, protocol.config.receive_window) and not (
            self._needs_events or self._local_closed
        )
        if paused != self._assoc.paused:
            self._assoc.paused = paused
            if not paused:
                protocol.schedule()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        _release(waiters)

    async def _wait(self) -> None:
        """Sleep until the next batch of events for this connection (or socket loss)."""
        waiter = self._protocol.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def _wait_for_events(self) -> None:
        """Like ``_wait`` but keeps the events flowing even if the inbox is full."""
        self._needs_events += 1
        self._update_pause()
        try:
            await self._wait()
        finally:
            self._needs_events -= 1
            self._update_pause()

    async def _wait_connected(self) -> None:
        led = self._ledger
        while not led.connected:
            if led.failed is not None:
                raise led.error()
            if led.terminated:
                raise ConnectionClosed("connection closed during the handshake")
            await self._wait_for_events()

    # -- public API --------------------------------------------------------------

    @property
    def remote_address(self) -> Address:
        """The peer's socket address."""
        address: Address = self._assoc.address
        return address

    @property
    def local_address(self) -> Address:
        """The address of the UDP socket this connection uses."""
        return self._protocol.address

    @property
    def stats(self) -> Any:
        """A snapshot of the core's counters (``SansIOConnection.stats``)."""
        return self._assoc.connection.stats

    @property
    def is_closed(self) -> bool:
        """True once the connection ended, cleanly or not."""
        return self._ledger.terminated

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue one message; waits only while the send buffer is full.

        Returns once the message is queued, not when it is delivered (see
        :meth:`flush`).  Raises ``MessageTooLarge``; ``LocalProtocolError``
        after ``close()``; ``ConnectionClosed`` once the peer has closed;
        a ``ConnectionFailed`` (``PeerUnreachable``, ...) after a failure.
        """
        # bytes is immutable, so the core and ``undelivered`` share it; anything
        # mutable is copied once, here.
        payload = data if type(data) is bytes else bytes(data)
        max_size = self._protocol.config.max_message_size
        if len(payload) > max_size:
            raise MessageTooLarge(
                f"message of {len(payload)} bytes exceeds max_message_size {max_size}"
            )
        limit = self._protocol.options.send_buffer
        while True:
            self._check_can_send()
            # send_queue_bytes drops as acks arrive, whether or not events are read.
            if self._assoc.connection.send_queue_bytes < limit:
                break
            self._protocol.watch_send_space(self)
            await self._wait()
        message_id = self._assoc.send(payload)
        self._ledger.track(message_id, payload)
        self._protocol.schedule()

    def _check_can_send(self) -> None:
        led = self._ledger
        if led.failed is not None:
            raise led.error()
        if self._closed_by_server:
            # Not the handler's mistake: report it like the end of the connection.
            raise ConnectionClosed("the server is closing")
        if self._local_closed:
            raise LocalProtocolError("send() after close()")
        if led.terminated or led.peer_closed:
            raise ConnectionClosed("the peer closed the connection")

    async def recv(self) -> bytes:
        """Wait for the next whole message.

        Raises ``ConnectionClosed`` once the peer closed gracefully and every
        message it sent has been returned; a ``ConnectionFailed``
        (``PeerUnreachable``, ``ConnectionReset``, ...; its ``undelivered``
        holds our unacknowledged payloads, in send order) if the connection
        failed.  Messages that arrived before a failure are returned first.
        """
        led = self._ledger
        while True:
            if led.inbox:
                data = led.pop()
                if self._assoc.paused:
                    self._update_pause()
                return data
            if led.peer_closed:
                raise ConnectionClosed("the peer closed the connection")
            if led.failed is not None:
                raise led.error()
            if led.terminated:
                raise ConnectionClosed("the connection is closed")
            await self._wait()

    def __aiter__(self) -> Connection:
        """Iterate over incoming messages until the peer closes."""
        return self

    async def __anext__(self) -> bytes:
        """The next message; iteration ends on the peer's graceful close."""
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def flush(self) -> None:
        """Wait until the peer has acknowledged every message sent so far.

        Raises a ``ConnectionFailed`` (with the undelivered payloads) if the
        connection fails first.
        """
        led = self._ledger
        while led.outstanding:
            await self._wait_for_events()
        if led.lost:
            raise led.error()

    async def close(self) -> None:
        """Close gracefully: wait until the peer acknowledged everything and closed too.

        Waits at most ``linger`` seconds, then aborts.  Raises a
        ``ConnectionFailed`` (with the undelivered payloads) only if some
        message was not acknowledged; a close that loses nothing returns
        normally.  Safe to call more than once.
        """
        led = self._ledger
        if not led.terminated and not self._local_closed:
            self._local_closed = True
            self._assoc.close(self._protocol.loop.time())
            self._update_pause()
            self._protocol.schedule()
        try:
            async with asyncio.timeout(self._protocol.options.linger):
                while not led.terminated:
                    await self._wait_for_events()
        except TimeoutError:
            self.abort("close timed out: the peer did not finish closing within linger")
        if led.lost:
            raise led.error()

    def abort(self, reason: str = "aborted by the application") -> None:
        """End the connection at once (the peer gets a RESET); unsent messages are dropped."""
        if self._ledger.terminated:
            return
        self._local_closed = True
        self._assoc.paused = False
        if not self._assoc.connection.is_closed:
            self._assoc.abort(reason)
        self._protocol.service()  # reads the Failed event and sends the RESET now
        self._ledger.fail(reason, FailureKind.ABORTED)  # if no event came
        self._wake()

    async def __aenter__(self) -> Connection:
        """``async with conn:`` closes it gracefully on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close gracefully (see :meth:`close`)."""
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._ledger.terminated else "open"
        return f"<rudp.aio.Connection {state} peer={self._assoc.address!r}>"


# --- the endpoint protocol ---------------------------------------------------------


class EndpointProtocol(asyncio.DatagramProtocol):
    """Owns one UDP transport and one sans-IO ``Endpoint``; serves every connection on it."""

    def __init__(
        self,
        endpoint: Endpoint,
        sock: socket.socket,
        config: Config,
        options: DriverOptions,
        *,
        on_accept: Callable[[Connection], None] | None = None,
        close_when_idle: bool = False,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.config = config
        """Protocol configuration of every connection on this endpoint."""
        self.options = options
        """Driver options."""
        self.recv_buffer = options.recv_buffer_for(config)
        """Unread bytes per connection before it is paused (``DriverOptions.recv_buffer``)."""
        self.address: Address = sock.getsockname()
        """The bound socket address."""
        self.endpoint = endpoint
        """The sans-IO multiplexer (read ``endpoint.stats`` for routing counters)."""
        self._sock = sock
        self._transport: asyncio.DatagramTransport | None = None
        self._connections: dict[Association, Connection] = {}  # not yet finished
        self._send_blocked: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._scheduled = False
        self._on_accept = on_accept
        self._close_when_idle = close_when_idle
        self._closing = False
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._linger_task: asyncio.Task[None] | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []

    # -- asyncio callbacks ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio callback)."""
        # The selector transport does not subclass DatagramTransport (3.11).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Drain the socket, feed the endpoint once, then run a service pass."""
        first = (data, normalise_address(addr))
        batch = drain(self._sock, self.options.recv_batch - 1, [first], normalise_address)
        self.endpoint.receive_datagrams(batch, self.loop.time())
        self.service()

    def error_received(self, exc: Exception) -> None:
        """ICMP errors are advisory: the core's timers decide when a peer is gone."""
        logger.debug("socket error ignored: %r", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed: every connection still open fails."""
        self._closing = True
        self._cancel_timer()
        for conn in list(self._connections.values()):
            # The local program closed the socket under it: an abort, locally.
            conn._ledger.fail("socket closed", FailureKind.ABORTED)
            conn._wake()
        self._connections.clear()
        self._send_blocked.clear()
        self._wake_idle()
        if not self._lost.done():
            self._lost.set_result(None)

    # -- service pass ----------------------------------------------------------------

    def schedule(self) -> None:
        """Run one service pass soon (coalesces every local call of this loop iteration)."""
        if not self._scheduled and not self._closing:
            self._scheduled = True
            self.loop.call_soon(self._scheduled_service)

    def _scheduled_service(self) -> None:
        self._scheduled = False
        self.service()

    def _on_timer(self) -> None:
        when = self._timer_when
        self._timer = None
        self._timer_when = None
        self.service(timer_deadline=when)

    def service(self, timer_deadline: float | None = None) -> None:
        """Fire due timers, read events, accept, send, and re-arm the timer."""
        if self._closing:
            return
        endpoint = self.endpoint
        now = self.loop.time()
        if timer_deadline is not None:
            # call_at may fire up to one clock resolution early: never hand the
            # core a time before the deadline it asked for.
            now = max(now, timer_deadline)
        deadline = endpoint.get_timer()
        if deadline is not None and deadline <= now:
            endpoint.handle_timer(now)
        self._dispatch()
        self._accept()
        # Reading events may re-open a receive window: send after dispatching.
        self._transmit(now)
        self._arm_timer()
        if self._idle_waiters and self._is_idle():
            self._wake_idle()
        self._check_idle()

    def _dispatch(self) -> None:
        touched: dict[Connection, None] = {}
        next_event = self.endpoint.next_event
        while (item := next_event()) is not None:
            assoc, event = item
            conn: Connection | None = assoc.context
            if conn is None:
                if not assoc.established and isinstance(event, Failed | Closed):
                    continue  # a handshake that never completed: nobody to tell
                conn = self._adopt(assoc)
            conn._handle_event(event)
            touched[conn] = None
        for conn in touched:
            conn._wake()
            if conn._ledger.terminated:
                self._connections.pop(conn._assoc, None)
                self._send_blocked.discard(conn)
        if self._send_blocked:
            limit = self.options.send_buffer
            ready = [c for c in self._send_blocked if c._assoc.connection.send_queue_bytes < limit]
            for conn in ready:
                self._send_blocked.discard(conn)
                conn._wake()

    def _accept(self) -> None:
        accept = self.endpoint.accept
        # Only established connections reach a handler: half-open ones stay in
        # the endpoint's backlog, where a SYN flood can only evict its own kind.
        while (assoc := accept(established_only=True)) is not None:
            conn: Connection = assoc.context or self._adopt(assoc)
            if self._on_accept is None:
                conn.abort("not accepting connections")
            else:
                self._on_accept(conn)

    def _transmit(self, now: float) -> None:
        datagrams = self.endpoint.datagrams_to_send(now)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        sendto = transport.sendto
        for data, addr in datagrams:
            sendto(data, addr)

    def _arm_timer(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._timer_when:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer_when = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = None

    # -- connections -------------------------------------------------------------------

    def open(self, address: Address) -> Connection:
        """Start a client connection to ``address`` on this endpoint."""
        conn = self._adopt(self.endpoint.connect(normalise_address(address), self.loop.time()))
        self.schedule()
        return conn

    def _adopt(self, assoc: Association) -> Connection:
        conn = assoc.context = Connection(self, assoc)
        self._connections[assoc] = conn
        return conn

    def watch_send_space(self, conn: Connection) -> None:
        """Wake ``conn`` once its send queue drops below ``send_buffer``."""
        self._send_blocked.add(conn)

    def stop_accepting(self) -> None:
        """Refuse new connections; abort those not yet handed to a handler."""
        self._on_accept = None
        self.endpoint.accepting = False
        while (assoc := self.endpoint.accept()) is not None:
            assoc.abort("the server is closing")
        self.schedule()

    @property
    def connections(self) -> list[Connection]:
        """Connections that have not ended yet."""
        return list(self._connections.values())

    # -- shutdown ------------------------------------------------------------------------

    def _is_idle(self) -> bool:
        return not self._connections and len(self.endpoint) == 0

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        _release(waiters)

    def _check_idle(self) -> None:
        if not self._close_when_idle or self._connections:
            return
        if len(self.endpoint) == 0:
            self.close()
        elif self._linger_task is None:
            # The connection ended but the core still lingers (re-acknowledging
            # a retransmitted FIN).  A task, not a bare timer, holds the socket
            # meanwhile: asyncio.run() cancels it at shutdown and its finally
            # closes the transport, so no transport is ever left unclosed.
            self._linger_task = self.loop.create_task(self._close_after_linger())

    async def _close_after_linger(self) -> None:
        try:
            await self._lost
        finally:
            self.close()

    def close(self) -> None:
        """Close the socket now; connections still open fail."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
        elif transport is None and not self._lost.done():
            self._sock.close()
            self.connection_lost(None)
        self._closing = True
        self._cancel_timer()

    async def wait_closed(self) -> None:
        """Wait until the socket is closed."""
        await asyncio.shield(self._lost)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every connection to end and every timer to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._is_idle() and not self._lost.done():
                    waiter = self.loop.create_future()
                    self._idle_waiters.append(waiter)
                    await waiter
        return self._is_idle() or self._lost.done()


# --- opening an endpoint ------------------------------------------------------------


async def open_endpoint(
    family: int,
    local: Address,
    config: Config,
    options: DriverOptions,
    *,
    server: bool,
    on_accept: Callable[[Connection], None] | None = None,
) -> EndpointProtocol:
    """Bind a UDP socket to ``local`` and start an ``EndpointProtocol`` on it.

    A client endpoint (``server=False``) closes its socket by itself once its
    connections have ended.
    """
    from rudp.core.endpoint import Endpoint

    loop = asyncio.get_running_loop()
    sock = udp_socket(family, options)
    try:
        if family == socket.AF_INET6:
            # An IPv6 address means IPv6 only; dual-stack would make one peer two addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(local)
        endpoint = Endpoint(config, accepting=server, backlog=options.backlog)
        protocol = EndpointProtocol(
            endpoint, sock, config, options, on_accept=on_accept, close_when_idle=not server
        )
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol
