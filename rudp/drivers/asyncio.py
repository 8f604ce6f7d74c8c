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
* :class:`Connection` turns events into awaitable state: an inbox of whole
  messages, the payloads not yet acknowledged (for
  ``ConnectionFailed.undelivered``), and the terminal outcome.

Back-pressure.  Sending: ``send()`` waits while the core's
``send_queue_bytes`` is at least ``send_buffer``.  Receiving: when the inbox
holds ``recv_buffer`` bytes the association is *paused*: the endpoint stops
handing us its events, so unread messages stay in the core and count against
the receive window the peer sees (specs/protocol.md section 13.4).  Because events
share one queue, a paused connection would also hide ``MessageAcknowledged``;
so a connection is never paused while a task waits in ``flush()``/``close()``
or for the handshake (that waiter would otherwise wait on the reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from rudp.config import MIB, Config
from rudp.drivers._common import failure_error
from rudp.errors import (
    ConnectionClosed,
    ConnectionFailed,
    LocalProtocolError,
    MessageTooLarge,
    Timeout,
)
from rudp.events import (
    Closed,
    Connected,
    Event,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)

if TYPE_CHECKING:
    from rudp.core.endpoint import Association, Endpoint

__all__ = [
    "Connection",
    "DriverOptions",
    "EndpointProtocol",
    "open_connection",
    "open_endpoint",
    "resolve",
    "split_options",
]

logger = logging.getLogger("rudp.aio")

Address: TypeAlias = tuple[Any, ...]
"""A socket address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6."""

_MAX_DATAGRAM = 65535
"""recvfrom buffer: the largest UDP payload, so the kernel never truncates one."""

# --- options ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """Options of the asyncio driver that are not protocol tunables (``Config``)."""

    send_buffer: int = 4 * MIB
    """``send()`` waits while the core holds at least this many bytes queued or
    in flight and not yet acknowledged.  A single message larger than the buffer
    is still accepted when the buffer is below the limit."""

    recv_buffer: int = 4 * MIB
    """Bytes of received, unread messages the driver holds per connection
    before it leaves the rest in the core (which then shrinks the window)."""

    linger: float = 5.0
    """Longest ``close()`` waits for the peer to acknowledge everything; after
    that the connection is aborted."""

    timeout: float = 10.0
    """Longest ``connect()`` waits for the handshake (``rudp.Timeout`` after)."""

    backlog: int = 128
    """Server: most connections the endpoint keeps before the handler gets them
    (handshaking ones are evicted first: SYN-flood bound)."""

    local_addr: Address | None = None
    """Client: address to bind.  Default: the loopback address when the peer is
    a loopback address (the only source the kernel would pick anyway), else the
    wildcard address of the peer's family; port 0."""

    socket_buffer: int | None = 2 * MIB
    """SO_RCVBUF / SO_SNDBUF of the UDP socket (capped by the kernel's
    ``rmem_max`` / ``wmem_max``); ``None`` keeps the system default."""

    recv_batch: int = 256
    """Most datagrams read from the socket per wakeup before doing protocol
    work, so one busy socket cannot starve the rest of the event loop."""

    def __post_init__(self) -> None:
        if self.send_buffer < 1 or self.recv_buffer < 1:
            raise ValueError("send_buffer and recv_buffer must be positive")
        if self.linger < 0 or self.timeout <= 0:
            raise ValueError("linger must be >= 0 and timeout > 0")
        if self.backlog < 1 or self.recv_batch < 1:
            raise ValueError("backlog and recv_batch must be positive")


_DRIVER_OPTION_NAMES = frozenset(f.name for f in fields(DriverOptions))


def split_options(options: dict[str, Any]) -> tuple[Config, DriverOptions]:
    """Split ``**options`` into the protocol ``Config`` and the driver's own options.

    ``config=`` may pass a whole ``Config``; protocol options given beside it
    override its fields.  Unknown names raise ``TypeError``.
    """
    options = dict(options)
    base = options.pop("config", None)
    driver = {name: options.pop(name) for name in list(options) if name in _DRIVER_OPTION_NAMES}
    if base is None:
        config = Config.from_options(options)
    elif not isinstance(base, Config):
        raise TypeError("config= must be a rudp.config.Config")
    else:
        unknown = set(options) - {f.name for f in fields(Config)}
        if unknown:
            raise TypeError(f"unknown rudp option(s): {', '.join(sorted(unknown))}")
        config = replace(base, **options)
    return config, DriverOptions(**driver)


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
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        # (message id, payload) not yet acknowledged, in send order: the core
        # acknowledges in send order (MessageAcknowledged), so popleft suffices.
        self._outstanding: deque[tuple[int, bytes]] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._needs_events = 0  # tasks in flush()/close()/handshake: never pause then
        self._connected = False
        self._peer_closed = False
        self._local_closed = False
        self._closed_by_server = False  # Server.close() closed it, not the handler
        self._finished = False
        self._failure: tuple[str, tuple[bytes, ...], FailureKind] | None = None

    # -- driver side -------------------------------------------------------------

    def _handle_event(self, event: Event) -> None:
        """Apply one event; the protocol wakes the waiters after the whole batch."""
        if isinstance(event, MessageReceived):
            self._inbox.append(event.data)
            self._inbox_bytes += len(event.data)
            if self._inbox_bytes >= self._protocol.options.recv_buffer:
                self._update_pause()
        elif isinstance(event, MessageAcknowledged):
            outstanding = self._outstanding
            while outstanding and outstanding[0][0] <= event.message_id:
                outstanding.popleft()
        elif isinstance(event, Connected):
            self._connected = True
        elif isinstance(event, PeerClosed):
            self._peer_closed = True
        elif isinstance(event, Closed):
            self._finished = True
            self._outstanding.clear()
        elif isinstance(event, Failed):
            self._fail(event.reason, event.undelivered, event.kind)

    def _fail(self, reason: str, undelivered_ids: tuple[int, ...], kind: FailureKind) -> None:
        if self._finished:
            return
        self._finished = True
        payloads = dict(self._outstanding)
        self._outstanding.clear()
        undelivered = tuple(payloads[i] for i in undelivered_ids if i in payloads)
        self._failure = (reason, undelivered, kind)

    def _update_pause(self) -> None:
        paused = self._inbox_bytes >= self._protocol.options.recv_buffer and not (
            self._needs_events or self._local_closed
        )
        if paused != self._assoc.paused:
            self._assoc.paused = paused
            if not paused:
                self._protocol.schedule()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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

    def _error(self) -> ConnectionFailed:
        assert self._failure is not None
        return failure_error(*self._failure)

    async def _wait_connected(self) -> None:
        while not self._connected:
            if self._failure is not None:
                raise self._error()
            if self._finished:
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
        return self._finished

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
        self._outstanding.append((message_id, payload))
        self._protocol.schedule()

    def _check_can_send(self) -> None:
        if self._failure is not None:
            raise self._error()
        if self._closed_by_server:
            # Not the handler's mistake: report it like the end of the connection.
            raise ConnectionClosed("the server is closing")
        if self._local_closed:
            raise LocalProtocolError("send() after close()")
        if self._finished or self._peer_closed:
            raise ConnectionClosed("the peer closed the connection")

    async def recv(self) -> bytes:
        """Wait for the next whole message.

        Raises ``ConnectionClosed`` once the peer closed gracefully and every
        message it sent has been returned; a ``ConnectionFailed``
        (``PeerUnreachable``, ``ConnectionReset``, ...; its ``undelivered``
        holds our unacknowledged payloads, in send order) if the connection
        failed.  Messages that arrived before a failure are returned first.
        """
        while True:
            if self._inbox:
                data = self._inbox.popleft()
                self._inbox_bytes -= len(data)
                if self._assoc.paused:
                    self._update_pause()
                return data
            if self._peer_closed:
                raise ConnectionClosed("the peer closed the connection")
            if self._failure is not None:
                raise self._error()
            if self._finished:
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
        while self._outstanding:
            if self._failure is not None:
                raise self._error()
            await self._wait_for_events()
        if self._failure is not None and self._failure[1]:
            raise self._error()

    async def close(self) -> None:
        """Close gracefully: wait until the peer acknowledged everything and closed too.

        Waits at most ``linger`` seconds, then aborts.  Raises a
        ``ConnectionFailed`` (with the undelivered payloads) only if some
        message was not acknowledged; a close that loses nothing returns
        normally.  Safe to call more than once.
        """
        if not self._finished and not self._local_closed:
            self._local_closed = True
            self._assoc.close(self._protocol.loop.time())
            self._update_pause()
            self._protocol.schedule()
        try:
            async with asyncio.timeout(self._protocol.options.linger):
                while not self._finished:
                    await self._wait_for_events()
        except TimeoutError:
            self.abort("close timed out: the peer did not finish closing within linger")
        if self._failure is not None and self._failure[1]:
            raise self._error()

    def abort(self, reason: str = "aborted by the application") -> None:
        """End the connection at once (the peer gets a RESET); unsent messages are dropped."""
        if self._finished:
            return
        self._local_closed = True
        self._assoc.paused = False
        if not self._assoc.connection.is_closed:
            self._assoc.abort(reason)
        self._protocol.service()  # reads the Failed event and sends the RESET now
        # if no event came
        self._fail(reason, tuple(i for i, _ in self._outstanding), FailureKind.ABORTED)
        self._wake()

    async def __aenter__(self) -> Connection:
        """``async with conn:`` closes it gracefully on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close gracefully (see :meth:`close`)."""
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._finished else "open"
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
        batch = [(data, _normalise(addr))]
        recvfrom = self._sock.recvfrom
        try:
            for _ in range(self.options.recv_batch - 1):
                more, source = recvfrom(_MAX_DATAGRAM)
                batch.append((more, _normalise(source)))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # an ICMP error queued on the socket
            self.error_received(exc)
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
            outstanding = tuple(i for i, _ in conn._outstanding)
            conn._fail("socket closed", outstanding, FailureKind.ABORTED)
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
                conn = assoc.context = Connection(self, assoc)
                self._connections[assoc] = conn
            conn._handle_event(event)
            touched[conn] = None
        for conn in touched:
            conn._wake()
            if conn._finished:
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
            conn: Connection | None = assoc.context
            if conn is None:
                conn = assoc.context = Connection(self, assoc)
                self._connections[assoc] = conn
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
        assoc = self.endpoint.connect(_normalise(address), self.loop.time())
        conn = assoc.context = Connection(self, assoc)
        self._connections[assoc] = conn
        self.schedule()
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
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

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


# --- opening endpoints ------------------------------------------------------------


def _normalise(address: Address) -> Address:
    """One spelling per peer: (host, port), or (host, port, 0, scope_id) for IPv6."""
    if len(address) == 2:
        return (address[0], address[1])
    return (address[0], address[1], 0, address[3])


async def resolve(host: str | None, port: int, *, passive: bool = False) -> tuple[int, Address]:
    """Resolve ``host``/``port`` to (family, socket address), the first result."""
    loop = asyncio.get_running_loop()
    flags = socket.AI_PASSIVE if passive else 0
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    family, _, _, _, address = infos[0]
    return family, _normalise(address)


def _default_local(family: int, remote: Address) -> Address:
    try:
        loopback = ipaddress.ip_address(remote[0]).is_loopback
    except ValueError:
        loopback = False
    if family == socket.AF_INET6:
        return ("::1" if loopback else "::", 0)
    return ("127.0.0.1" if loopback else "0.0.0.0", 0)


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
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # An IPv6 address means IPv6 only; dual-stack would make one peer two addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if options.socket_buffer is not None:
            # Loopback bursts of a full window overflow the default ~200 KiB
            # receive buffer; every drop costs a retransmission.  The kernel
            # caps the value at net.core.rmem_max / wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.socket_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, options.socket_buffer)
        sock.bind(local)
        sock.setblocking(False)
        endpoint = Endpoint(config, accepting=server, backlog=options.backlog)
        protocol = EndpointProtocol(
            endpoint, sock, config, options, on_accept=on_accept, close_when_idle=not server
        )
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return protocol


async def open_connection(address: Address, config: Config, options: DriverOptions) -> Connection:
    """Open a client endpoint on its own socket and complete the handshake."""
    family, remote = await resolve(address[0], address[1])
    local = options.local_addr or _default_local(family, remote)
    protocol = await open_endpoint(family, local, config, options, server=False)
    conn = protocol.open(remote)
    try:
        async with asyncio.timeout(options.timeout):
            await conn._wait_connected()
    except TimeoutError:
        conn.abort("handshake timed out")
        raise Timeout(f"no handshake with {address!r} within {options.timeout} s") from None
    except BaseException:
        conn.abort("connect() failed or was cancelled")
        raise
    return conn
