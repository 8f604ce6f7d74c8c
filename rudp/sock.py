"""``rudp.socket``: a drop-in for a UDP ``socket.socket`` that never loses a message.

Replace ``socket.socket(socket.AF_INET, socket.SOCK_DGRAM)`` with
``rudp.socket(rudp.AF_INET, rudp.SOCK_DGRAM)`` and the program keeps working,
with every message delivered exactly once and in order per peer.

Semantics, where they differ from UDP or need a choice
======================================================

- *Associations* open implicitly both ways: the first ``sendto`` to a new
  address starts a handshake (messages wait for it); a SYN from a new address
  creates one.  Replies go back on the association the peer opened, so a
  request/response exchange costs one handshake.
- ``recvfrom`` returns messages in arrival order across peers and in send order
  per peer.  After ``connect(address)`` ``recv``/``recvfrom`` return only that
  peer's messages and discard others, as the kernel does for a connected UDP
  socket.
- **bufsize**: a message longer than ``bufsize`` is *not* returned: the call
  raises ``BufferTooSmall`` (an ``OSError`` with ``errno.EMSGSIZE``, carrying
  ``message_size``) and the message stays at the head of the queue, so calling
  again with a large enough buffer gets it.  UDP would truncate silently; a
  reliable socket must not lose the tail of a message.
- ``sendto``/``send`` return ``len(data)`` and block only while the
  association's unacknowledged bytes exceed ``send_buffer`` (option, default
  4 MiB); a non-blocking socket raises ``BlockingIOError`` instead, a timeout
  raises ``rudp.Timeout``.
- **Errors**: when an association fails *with messages it never acknowledged*,
  the next call on the socket -- or a call blocked in it -- raises a
  ``rudp.ConnectionFailed`` with ``.undelivered`` = those payloads in send
  order and ``.address``: ``rudp.PeerUnreachable`` when the peer stopped
  answering within ``peer_timeout``, ``rudp.ConnectionReset`` when it reset
  the association, ``rudp.PeerProtocolError`` when it broke the protocol.
  Each is reported once.  A peer that merely went away with nothing owed to it
  is not an error, as with UDP.
- **close()** closes every association gracefully and lingers up to
  ``linger`` seconds (option, default 5.0) until queued messages are
  acknowledged and the closes complete; afterwards ``undelivered`` lists what
  never got through (empty in the normal case).  ``linger=0`` closes at once.
- Timeouts raise ``rudp.Timeout``, a ``TimeoutError``, i.e. ``socket.timeout``
  (a failure never is one, so ``except socket.timeout: retry`` cannot hide it).
- ``fileno()`` is not provided: the UDP socket's descriptor becomes readable for
  protocol traffic, not for whole messages, so ``select`` on it would lie.
- Options: any ``rudp.Config`` field name (or ``config=``), plus the driver
  options of ``rudp.drivers.DriverOptions`` except ``timeout`` and
  ``local_addr`` (``settimeout`` and ``bind`` do that here).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import socket as _socket
import time
from types import TracebackType
from typing import Any

from rudp.core.endpoint import Association
from rudp.drivers._common import failure_error, split_options
from rudp.drivers.blocking import (
    Engine,
    acknowledged,
    close_complete,
    has_room,
    ledger,
    register_for_exit,
)
from rudp.errors import (
    BufferTooSmall,
    ConnectionFailed,
    LocalProtocolError,
    MessageTooLarge,
    Timeout,
)
from rudp.events import Closed, Connected, Event, Failed, MessageReceived, PeerClosed

__all__ = ["AF_INET", "AF_INET6", "SOCK_DGRAM", "BufferTooSmall", "socket"]

AF_INET = _socket.AF_INET
AF_INET6 = _socket.AF_INET6
SOCK_DGRAM = _socket.SOCK_DGRAM

_RESOLVE_CACHE_SIZE = 256

_NOT_FOR_SOCKETS = ("timeout", "local_addr")
"""Driver options a socket has its own calls for: ``settimeout`` and ``bind``."""


def _closed_error() -> OSError:
    return OSError(errno.EBADF, "Bad file descriptor")


class socket:
    """A reliable, message-oriented replacement for a UDP socket (see the module docs)."""

    def __init__(
        self,
        family: int = AF_INET,
        type: int = SOCK_DGRAM,
        proto: int = 0,
        **options: Any,
    ) -> None:
        if family not in (AF_INET, AF_INET6):
            raise ValueError(f"rudp.socket supports AF_INET and AF_INET6, not {family!r}")
        if type != SOCK_DGRAM:
            raise ValueError(
                f"rudp.socket is message-oriented: type must be SOCK_DGRAM, not {type!r}"
            )
        if proto not in (0, _socket.IPPROTO_UDP):
            raise ValueError(f"rudp.socket runs over UDP; proto {proto!r} is not supported")
        config, driver_options = split_options(options, reject=_NOT_FOR_SOCKETS)
        self.linger = driver_options.linger
        """Seconds ``close()`` lingers for unacknowledged messages."""
        self.send_buffer = driver_options.send_buffer
        """Unacknowledged bytes per peer before a send blocks."""
        self.family = family
        """Address family, as for ``socket.socket``."""
        self.type = SOCK_DGRAM
        """Always ``SOCK_DGRAM``."""
        self.proto = proto
        """As given (0)."""
        self.undelivered: tuple[bytes, ...] = ()
        """After ``close()``: payloads that were still unacknowledged when ``linger`` ran out."""
        self._timeout: float | None = None
        self._peer: Any = None
        self._peers: dict[Any, Association] = {}
        self._ready: collections.deque[Association] = collections.deque()
        self._errors: collections.deque[ConnectionFailed] = collections.deque()
        self._resolved: dict[Any, Any] = {}
        self._engine = Engine(
            family, config, driver_options, accepting=True, on_event=self._on_event
        )
        self._engine.start()
        register_for_exit(self)

    # --- context manager, repr ------------------------------------------------

    def __enter__(self) -> socket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._engine.closed else f"laddr={self._engine.sock.getsockname()!r}"
        return f"<rudp.socket family={self.family!r} {state}>"

    # --- addresses ------------------------------------------------------------

    def bind(self, address: Any) -> None:
        """Bind the UDP socket, exactly as ``socket.bind``."""
        self._check_open()
        self._engine.sock.bind(address)

    def connect(self, address: Any) -> None:
        """Set the default peer for ``send``/``recv`` (no packet is sent yet).

        Like UDP's ``connect`` it binds an unbound socket and makes the kernel
        filter datagrams from other addresses, so ``getsockname()`` reports the
        local address the route to the peer uses.
        """
        self._check_open()
        peer = self._resolve(address)
        with self._engine.cond:
            self._engine.sock.connect(peer)
            self._peer = peer

    def getsockname(self) -> Any:
        """The bound address (``('0.0.0.0', 0)`` before bind or first send, like UDP)."""
        self._check_open()
        return self._engine.sock.getsockname()

    def getpeername(self) -> Any:
        """The ``connect()``-ed peer; ``OSError(ENOTCONN)`` if none."""
        self._check_open()
        if self._peer is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._peer

    def _resolve(self, address: Any) -> Any:
        """Normalise an address to what ``recvfrom`` reports, so associations match."""
        try:
            return self._resolved[address]
        except (KeyError, TypeError):
            pass
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
        host = address[0] or ("::1" if self.family == AF_INET6 else "127.0.0.1")
        infos = _socket.getaddrinfo(host, address[1], self.family, SOCK_DGRAM)
        resolved: Any = infos[0][4]
        if self.family == AF_INET6 and len(address) == 4:
            resolved = (resolved[0], resolved[1], address[2], address[3])
        if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
            self._resolved.clear()
        self._resolved[address] = resolved
        return resolved

    # --- timeouts -------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        """None: block; 0: non-blocking; > 0: raise ``rudp.Timeout`` after that long."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        """The current timeout (None when blocking)."""
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        """``setblocking(False)`` is ``settimeout(0.0)``, ``True`` is ``settimeout(None)``."""
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        """True unless the timeout is 0."""
        return self._timeout != 0.0

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    # --- sending ----------------------------------------------------------------

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        """Send one message to ``address`` (``sendto(data[, flags], address)``)."""
        target = flags_or_address if address is None else address
        return self._send(bytes(data), self._resolve(target))

    def send(self, data: Any, flags: int = 0) -> int:
        """Send one message to the ``connect()``-ed peer."""
        if self._peer is None:
            raise OSError(errno.EDESTADDRREQ, "Destination address required")
        return self._send(bytes(data), self._peer)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Same as ``send`` (a message is always sent whole)."""
        self.send(data, flags)

    def _send(self, data: bytes, address: Any) -> int:
        engine = self._engine
        deadline = self._deadline()
        if len(data) > engine.config.max_message_size:
            # Checked before an association is opened for nothing.
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds max_message_size "
                f"({engine.config.max_message_size})"
            )
        with engine.cond:
            self._check_open()
            self._raise_pending_error()
            assoc = self._association_for(address)
            size, limit = len(data), self.send_buffer
            if not has_room(assoc, size, limit):
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "send buffer full")
                engine.wait_until(
                    lambda: has_room(assoc, size, limit) or bool(self._errors), deadline
                )
                self._check_open()
                self._raise_pending_error()
                if ledger(assoc).terminated:
                    assoc = self._association_for(address)
            try:
                message_id = assoc.send(data)
            except MessageTooLarge:
                raise
            except LocalProtocolError:
                # The association is closing (the peer closed it): start a new one.
                self._forget(assoc)
                assoc = self._association_for(address)
                message_id = assoc.send(data)
            ledger(assoc).track(message_id, data)
            engine.pump()
        return len(data)

    def _association_for(self, address: Any) -> Association:
        assoc = self._peers.get(address)
        if assoc is not None:
            led = ledger(assoc)
            if not (led.terminated or led.peer_closed):
                return assoc
        assoc = self._engine.endpoint.connect(address, self._engine.now())
        ledger(assoc)
        self._peers[address] = assoc
        return assoc

    def _forget(self, assoc: Association) -> None:
        if self._peers.get(assoc.address) is assoc:
            del self._peers[assoc.address]

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every peer acknowledged every message sent so far (rudp extra).

        Raises ``rudp.ConnectionFailed`` (``PeerUnreachable``, ...) if an
        association fails meanwhile and ``rudp.Timeout`` after ``timeout`` seconds.
        """
        engine = self._engine
        deadline = None if timeout is None else time.monotonic() + timeout

        def flushed() -> bool:
            return bool(self._errors) or all(
                acknowledged(assoc) for assoc in engine.endpoint.associations
            )

        with engine.cond:
            self._check_open()
            engine.wait_until(flushed, deadline)
            self._check_open()
            self._raise_pending_error()

    # --- receiving --------------------------------------------------------------

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        """Next message and its sender's address (see the module docs for ``bufsize``)."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        engine = self._engine
        deadline = self._deadline()
        peek = bool(flags & _socket.MSG_PEEK)
        with engine.cond:
            while True:
                self._check_open()
                self._raise_pending_error()
                self._discard_foreign()
                if self._ready:
                    break
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                engine.wait_until(lambda: bool(self._ready or self._errors), deadline)
            assoc = self._ready[0]
            led = ledger(assoc)
            message = led.inbox[0]
            if len(message) > bufsize:
                raise BufferTooSmall(len(message), bufsize)
            if not peek:
                self._ready.popleft()
                led.pop()
                engine.resume(assoc)
            return message, assoc.address

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Next message (of the ``connect()``-ed peer, if connected)."""
        return self.recvfrom(bufsize, flags)[0]

    def _discard_foreign(self) -> None:
        """On a connected socket, drop messages from other peers (as UDP's kernel filter does)."""
        if self._peer is None:
            return
        while self._ready and self._ready[0].address != self._peer:
            assoc = self._ready.popleft()
            ledger(assoc).pop()
            self._engine.resume(assoc)

    # --- events and errors -------------------------------------------------------

    def _on_event(self, assoc: Association, event: Event) -> None:
        """Engine callback (cond held): track readiness, peers and failures."""
        if isinstance(event, MessageReceived):
            self._ready.append(assoc)
        elif isinstance(event, Connected):
            endpoint = self._engine.endpoint
            while endpoint.accept(established_only=True) is not None:
                pass  # every peer is accepted implicitly; only half-open ones wait
            current = self._peers.get(assoc.address)
            if current is None or (current is not assoc and acknowledged(current)):
                # Answer on the association the peer opened: no second handshake.
                # An older association to the same address is replaced only when
                # idle (the peer restarted, or both opened at once), so messages
                # to one peer never straddle two associations out of order.
                self._peers[assoc.address] = assoc
        elif isinstance(event, PeerClosed | Closed):
            self._forget(assoc)
        elif isinstance(event, Failed):
            self._forget(assoc)
            undelivered = ledger(assoc).undelivered
            if undelivered:  # a peer that owed us nothing is no error, as with UDP
                reason = f"{event.reason} (peer {assoc.address!r})"
                self._errors.append(
                    failure_error(reason, undelivered, event.kind, address=assoc.address)
                )

    def _raise_pending_error(self) -> None:
        if self._errors:
            raise self._errors.popleft()

    def _check_open(self) -> None:
        if self._engine.closed:
            raise _closed_error()

    # --- closing --------------------------------------------------------------

    def close(self) -> None:
        """Close every association gracefully, lingering up to ``linger`` seconds."""
        engine = self._engine
        with engine.cond:
            if engine.closed:
                return
            now = engine.now()
            live = [a for a in engine.endpoint.associations if not ledger(a).terminated]
            for assoc in live:
                with contextlib.suppress(LocalProtocolError):  # already closing
                    assoc.close(now)
            engine.pump()
            if self.linger > 0:
                with contextlib.suppress(Timeout):
                    engine.wait_until(
                        lambda: all(close_complete(a) for a in live),
                        time.monotonic() + self.linger,
                    )
            self.undelivered = tuple(
                payload for assoc in live for payload in ledger(assoc).unacknowledged()
            )
        engine.close()
        register_for_exit(self, False)

    def detach(self) -> int:
        """Not supported: the UDP descriptor is owned by the I/O thread."""
        raise OSError(errno.EOPNOTSUPP, "rudp.socket cannot be detached")
