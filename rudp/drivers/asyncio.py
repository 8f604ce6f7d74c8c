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
* :class:`Connection` (``rudp.drivers.aio_connection``, re-exported here)
  turns events into awaitable state: it folds them into a ``ConnectionLedger``
  (``rudp.drivers._common``, shared with the blocking driver: inbox,
  unacknowledged payloads, outcome) and wakes the tasks waiting on it through
  futures.

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
from typing import TYPE_CHECKING, cast

from rudp.config import Config
from rudp.drivers._common import (
    Address,
    DriverOptions,
    normalise_address,
    read_size,
    udp_socket,
)
from rudp.drivers.aio_connection import Connection, release_waiters
from rudp.drivers.mmsg import datagram_io
from rudp.events import Closed, Failed, FailureKind

if TYPE_CHECKING:
    from rudp.core.endpoint import Association, Endpoint

__all__ = ["Connection", "EndpointProtocol", "open_endpoint"]

logger = logging.getLogger("rudp.aio")


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
        self._read_size = read_size(config)
        """Protocol configuration of every connection on this endpoint."""
        self._io = datagram_io(sock, self._read_size)  # batched on Linux
        self.options = options
        """Driver options."""
        self.recv_buffer = options.recv_buffer_for(config)
        """Unread bytes per connection before it is paused (``DriverOptions.recv_buffer``)."""
        self.address: Address = sock.getsockname()
        """The bound socket address."""
        self.endpoint = endpoint
        """The sans-IO multiplexer (read ``endpoint.stats`` for routing counters)."""
        self._sock = sock
        # An IPv4 socket's addresses are (host, port) already: no copy per datagram.
        self._normalise = normalise_address if sock.family == socket.AF_INET6 else None
        self._transport: asyncio.DatagramTransport | None = None
        self._write_buffer_size: Callable[[], int] | None = None
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
        # What it holds back, for _transmit's fast path; asyncio's own datagram
        # transports have it (from WriteTransport), others may not.
        self._write_buffer_size = getattr(transport, "get_write_buffer_size", None)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Drain the socket, feed the endpoint once, then run a service pass."""
        first = (data, normalise_address(addr))
        batch = self._io.drain(self.options.recv_batch - 1, [first], self._normalise)
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
        # the endpoint's backlog, bounded there (a SYN flood draws stateless RETRYs).
        while (assoc := accept(established_only=True)) is not None:
            conn: Connection = assoc.context or self._adopt(assoc)
            if self._on_accept is None:
                conn.abort("not accepting connections")
            else:
                self._on_accept(conn)

    def _transmit(self, now: float) -> None:
        datagrams = self.endpoint.datagrams_to_send(now)
        transport = self._transport
        if not datagrams or transport is None or transport.is_closing():
            return
        sent = 0
        buffered = self._write_buffer_size
        if buffered is not None and not buffered():
            # While the transport holds nothing back, send on the socket directly: that is
            # what transport.sendto does then, less its checks per datagram.  A full socket
            # buffer hands this datagram and the rest to the transport, which queues them
            # in order until the socket is writable; any other error loses the datagram
            # (the transport would pass it to error_received, which only logs it).
            sent = self._io.send(datagrams, stop_when_full=True)
            if sent == len(datagrams):
                return
        sendto = transport.sendto
        for data, addr in datagrams[sent:] if sent else datagrams:
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
        release_waiters(waiters)

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
        endpoint = Endpoint(
            config,
            accepting=server,
            backlog=options.backlog,
            static_key=options.endpoint_static_key(),
            retry=options.retry,
            retry_threshold=options.retry_threshold,
        )
        protocol = EndpointProtocol(
            endpoint, sock, config, options, on_accept=on_accept, close_when_idle=not server
        )
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol
