"""One asyncio rudp connection: the core's events as awaitable state.

:class:`Connection` folds the events of its association into a
``ConnectionLedger`` (``rudp.drivers._common``, shared with the blocking
driver: inbox, unacknowledged payloads, outcome) and wakes the tasks waiting
on it through futures.  It never touches the socket: local calls mutate the
core through the association and ask the ``EndpointProtocol``
(``rudp.drivers.asyncio``) for a service pass, which moves the bytes.

Back-pressure is described in ``rudp.drivers.asyncio``; here it is
``_update_pause``: a connection is never paused while a task waits in
``flush()``/``close()`` or for the handshake, since its events (acks
included) would then wait on the reader.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from rudp.drivers._common import Address, ConnectionLedger, attach_close_error
from rudp.errors import ConnectionClosed, LingerExpired, LocalProtocolError, MessageTooLarge
from rudp.events import Event, FailureKind, MessageReceived

if TYPE_CHECKING:
    from rudp.core.endpoint import Association
    from rudp.drivers.asyncio import EndpointProtocol

__all__ = ["Connection", "release_waiters"]


def release_waiters(waiters: list[asyncio.Future[None]]) -> None:
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
        self._eof_written = False  # write_eof(): no more sending, reading goes on
        self._close_finished = False  # a close() returned or raised: later ones are no-ops
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
        release_waiters(waiters)

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
        if self._eof_written:
            raise LocalProtocolError("send() after write_eof()")
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

    def can_write_eof(self) -> bool:
        """Always True: a connection can be half-closed (as ``asyncio.Transport`` asks)."""
        return True

    async def write_eof(self) -> None:
        """Half-close: our FIN follows every queued message; receiving goes on.

        ``send()`` raises ``LocalProtocolError`` from now on, while ``recv()``
        and ``async for`` go on returning the peer's messages until its own FIN
        ends them.  Returns once the FIN is queued (``flush()`` or ``close()``
        wait for acknowledgements).  The peer's direction closes when it reads
        our FIN (the core has no half-closed state on that side,
        specs/protocol.md section 6.3): it must have queued what it still has
        to say by then.  Idempotent; raises the failure if the connection
        failed, ``LocalProtocolError`` after ``close()``.
        """
        led = self._ledger
        if led.failed is not None:
            raise led.error()
        if self._local_closed:
            raise LocalProtocolError("write_eof() after close()")
        if self._eof_written:
            return
        self._eof_written = True
        if not led.terminated:
            self._assoc.close(self._protocol.loop.time())
            self._protocol.schedule()

    async def close(self) -> None:
        """Close gracefully: wait until the peer acknowledged everything and closed too.

        By default (``linger=None``) waits until then or until the core gives
        up (``peer_timeout`` of silence, ``max_retransmits``).  Raises the
        ``ConnectionFailed`` the failure calls for (``PeerUnreachable``, ...,
        with the undelivered payloads) if any message was not acknowledged --
        also when an earlier call already reported the failure.  With a
        ``linger`` bound that runs out first the connection is aborted (the
        peer gets a RESET) and, if messages were unacknowledged, this raises
        ``LingerExpired`` (a ``PeerUnreachable``) listing them.  A close that
        loses nothing returns normally.  Once a close has finished, later
        calls return at once.
        """
        if self._close_finished:
            return
        led = self._ledger
        if not self._local_closed:
            self._local_closed = True
            if not led.terminated:
                # A full close (RFC 1122 section 4.2.2.13): nothing is read any more, and
                # messages left unread, or sent by the peer from now on, reset it.
                unread = bool(led.inbox)
                led.discard()
                self._assoc.close(self._protocol.loop.time(), reading=False, left_unread=unread)
                self._update_pause()
                self._protocol.schedule()
        linger = self._protocol.options.linger
        expired = False
        try:
            async with asyncio.timeout(linger):
                while not led.terminated:
                    await self._wait_for_events()
        except TimeoutError:
            expired = True
            self.abort(f"close(): linger of {linger:g} s ran out")
        self._close_finished = True
        if not led.lost:
            return
        if expired:
            reason = f"close(): linger of {linger:g} s ran out before the peer acknowledged"
            raise LingerExpired(reason, led.undelivered, address=self.remote_address, linger=linger)
        raise led.error(address=self.remote_address)

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: object,
    ) -> None:
        """Close gracefully (see :meth:`close`).

        Left by an exception, the block keeps it: an error from the close is
        added to it as a note and logged instead of replacing it.
        """
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except Exception as error:
            attach_close_error(exc, error, f"rudp.aio.Connection to {self.remote_address!r}")

    def __repr__(self) -> str:
        state = "closed" if self._ledger.terminated else "open"
        return f"<rudp.aio.Connection {state} peer={self._assoc.address!r}>"
