"""The asyncio API: reliable, ordered, exactly-once messages over UDP.

Client::

    conn = await rudp.aio.connect(("127.0.0.1", 9000))
    await conn.send(b"hello")
    reply = await conn.recv()
    await conn.close()

Server (every connection shares the one UDP socket)::

    async def echo(conn: rudp.aio.Connection) -> None:
        async for message in conn:
            await conn.send(message)

    async with rudp.aio.serve(echo, "127.0.0.1", 9000) as server:
        await server.serve_forever()

``**options`` are ``rudp.config.Config`` field names (``peer_timeout=5.0``,
``max_message_size=...``; or ``config=Config(...)``) plus the driver options of
``rudp.drivers.DriverOptions``, the same for every rudp API: ``send_buffer``,
``recv_buffer``, ``linger`` (bound of ``close()``; default None: until every
message is acknowledged or the core gives up), ``timeout`` (bound of the
handshake in ``connect()``), ``backlog``, ``retry``, ``retry_threshold``,
``local_addr``, ``socket_buffer``, ``recv_batch``.

A failed connection raises a ``rudp.ConnectionFailed``: ``PeerUnreachable``
(silence), ``ConnectionReset`` (the peer reset it), ``ConnectionAborted``
(aborted locally), ``PeerProtocolError``.

The driver is thin: the protocol lives in the sans-IO core, and the mechanics
(socket, timers, batching) in ``rudp.drivers.asyncio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from rudp.drivers._common import (
    Address,
    default_local_address,
    normalise_address,
    split_options,
)
from rudp.drivers.asyncio import Connection, EndpointProtocol, open_endpoint
from rudp.errors import ConnectionClosed, ConnectionFailed, Timeout

__all__ = ["Connection", "Handler", "Server", "Serving", "connect", "serve"]

logger = logging.getLogger("rudp.aio")

Handler = Callable[[Connection], Awaitable[None]]
"""A coroutine function run once per accepted connection."""


async def connect(address: Address, **options: Any) -> Connection:
    """Open a connection to ``address`` (host, port) and wait for the handshake.

    Each client connection gets its own UDP socket, closed once the connection
    has ended.  Raises ``rudp.Timeout`` after ``timeout`` seconds (default 10)
    without a handshake, ``PeerUnreachable`` if the core gives up first
    (``ConnectionReset`` if the peer refuses).
    """
    config, driver_options = split_options(options)
    family, remote = await _resolve(address[0], address[1])
    local = driver_options.local_addr or default_local_address(family, remote)
    protocol = await open_endpoint(family, local, config, driver_options, server=False)
    conn = protocol.open(remote)
    bound = driver_options.timeout
    try:
        async with asyncio.timeout(bound):
            await conn._wait_connected()
    except TimeoutError:
        conn.abort("handshake timed out")
        raise Timeout(f"no handshake with {address!r} within {bound} s") from None
    except BaseException:
        conn.abort("connect() failed or was cancelled")
        raise
    return conn


async def _resolve(host: str | None, port: int, *, passive: bool = False) -> tuple[int, Address]:
    """Resolve ``host``/``port`` to (family, socket address), the first result."""
    loop = asyncio.get_running_loop()
    flags = socket.AI_PASSIVE if passive else 0
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    family, _, _, _, address = infos[0]
    return family, normalise_address(address)


def serve(handler: Handler, host: str | None, port: int, **options: Any) -> Serving:
    """Listen on ``host``:``port`` (port 0 picks one) and run ``handler(conn)`` per connection.

    ``server = await serve(...)``, or ``async with serve(...) as server:``
    (closes and waits on exit).  A handler gets a connection once its
    handshake is complete.  When the handler returns, the connection is closed
    gracefully; if it raises, the exception is logged (``rudp.aio`` logger) and
    the connection is aborted (the peer sees ``ConnectionReset``).
    """
    return Serving(handler, host, port, options)


class Serving:
    """What :func:`serve` returns: await it for the :class:`Server`, or use ``async with``."""

    def __init__(
        self, handler: Handler, host: str | None, port: int, options: dict[str, Any]
    ) -> None:
        self._args = (handler, host, port, options)
        self._server: Server | None = None

    async def _start(self) -> Server:
        handler, host, port, options = self._args
        config, driver_options = split_options(options)
        family, local = await _resolve(host, port, passive=True)
        server = Server(handler, driver_options.linger)
        server._protocol = await open_endpoint(
            family, local, config, driver_options, server=True, on_accept=server._start_handler
        )
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        """``await serve(...)`` starts the server and returns it."""
        return self._start().__await__()

    async def __aenter__(self) -> Server:
        """``async with serve(...) as server:`` starts it."""
        self._server = await self._start()
        return self._server

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the server and wait until it is closed."""
        assert self._server is not None
        await self._server.__aexit__(*exc_info)


class Server:
    """A running rudp server: one UDP socket, any number of connections.

    Use as ``async with server:`` (or ``async with serve(...) as server:``);
    leaving the block closes it (see :meth:`close` and :meth:`wait_closed`).
    """

    def __init__(self, handler: Handler, linger: float | None) -> None:
        self._handler = handler
        self._linger = linger
        self._protocol: EndpointProtocol | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed: asyncio.Event = asyncio.Event()

    @property
    def address(self) -> Address:
        """The bound socket address, e.g. ``("127.0.0.1", 43117)``."""
        assert self._protocol is not None
        return self._protocol.address

    @property
    def connections(self) -> list[Connection]:
        """Connections that have not ended yet."""
        assert self._protocol is not None
        return self._protocol.connections

    @property
    def endpoint_stats(self) -> Any:
        """Routing counters of the shared socket (``rudp.core.endpoint.EndpointStats``)."""
        assert self._protocol is not None
        return self._protocol.endpoint.stats

    def is_serving(self) -> bool:
        """True until :meth:`close` is called."""
        return not self._closing

    def _start_handler(self, conn: Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._run_handler(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, conn: Connection) -> None:
        try:
            await self._handler(conn)
        except (ConnectionClosed, ConnectionFailed) as exc:
            # The peer closed, vanished or reset under the handler: a normal
            # ending for a network server; close() below finishes (or is a no-op).
            logger.debug("handler for %r ended by %r", conn.remote_address, exc)
        except asyncio.CancelledError:
            conn.abort("server closed")
            raise
        except Exception:
            logger.exception("handler for %r raised", conn.remote_address)
            conn.abort("handler raised")
            return
        try:
            await conn.close()
        except ConnectionFailed as exc:
            logger.debug("closing %r: %r", conn.remote_address, exc)

    def close(self) -> None:
        """Stop accepting and start closing every connection gracefully.

        Handlers see ``ConnectionClosed`` once their peer has finished closing.
        Call :meth:`wait_closed` to wait for them and release the socket.
        """
        if self._closing:
            return
        self._closing = True
        assert self._protocol is not None
        self._protocol.stop_accepting()
        for conn in self._protocol.connections:
            conn._closed_by_server = True
            task = asyncio.get_running_loop().create_task(self._close_quietly(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _close_quietly(conn: Connection) -> None:
        with contextlib.suppress(ConnectionFailed):
            await conn.close()

    async def wait_closed(self) -> None:
        """Wait for every handler and connection to finish, then close the socket.

        Connections get ``linger`` seconds to close; handlers still running
        after that are cancelled.  With ``linger=None`` (the default) there is
        no such bound: every connection closes when acknowledged or given up by
        the core, and the wait lasts until every handler has returned, as
        ``asyncio.Server.wait_closed`` waits for its connections (a handler
        must return once its connection has ended).  Closes the server first
        if needed.
        """
        self.close()
        assert self._protocol is not None
        protocol = self._protocol
        try:
            if self._tasks:
                _, pending = await asyncio.wait(set(self._tasks), timeout=self._linger)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending)
            # A connection that acknowledged the last FIN lingers briefly to
            # re-acknowledge a retransmission; give it that time, bounded.
            await protocol.wait_idle(protocol.config.close_linger)
        finally:
            protocol.close()
            await protocol.wait_closed()
            self._closed.set()

    async def serve_forever(self) -> None:
        """Wait until the server is closed (by another task) and fully shut down."""
        await self._closed.wait()

    async def __aenter__(self) -> Server:
        """``async with`` support."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close and wait until closed."""
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        where = self._protocol.address if self._protocol is not None else None
        return f"<rudp.aio.Server {where!r} connections={len(self._tasks)}>"
