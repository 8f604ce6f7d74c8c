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
- **bufsize**: a message longer than ``bufsize`` is *not* returned, nor
  truncated (UDP would cut it silently; a reliable socket must not lose the
  tail of a message).  The call raises ``BufferTooSmall`` (an ``OSError`` with
  ``errno.EMSGSIZE``, carrying ``message_size`` and the sender's ``address``)
  *once* for that message, which stays queued: the first later call whose
  ``bufsize`` is large enough returns it, in its place in arrival order.
  Meanwhile calls with smaller buffers go on returning *other* peers'
  messages in arrival order (or block for them) instead of raising again, so
  one peer's large message cannot stall the others; that peer's later
  messages wait behind it, since per-peer order is kept.  Nothing is dropped.
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
- **close()** closes every association gracefully and waits until every
  message is acknowledged, or the core gives up on a peer (``peer_timeout``
  ...), then at most ``close_linger`` (6 s) more for the FINs'
  acknowledgements.  If anything was never acknowledged it raises: the
  ``ConnectionFailed`` of the failure (``PeerUnreachable``...), or
  ``rudp.LingerExpired`` (a ``PeerUnreachable``) when the ``linger`` option
  (seconds; default None: no bound) ran out first -- those associations are
  reset, so nothing arrives after the error said it did not.  With several
  peers the error is the first failure's class, ``.undelivered`` holds every
  lost payload (per peer, in send order), ``.address`` is None and the
  reason names each peer.  ``undelivered`` on the socket keeps the same
  payloads.  A failure the socket already raised is not raised again.
  ``linger=0`` never waits.  The port is free when ``close()`` returns, as
  with UDP: there is no TIME_WAIT (a peer whose last acknowledgement from us
  was lost gives up on it and lists those messages as undelivered:
  conservative, never silent).  A ``with`` block left by an exception keeps
  that exception: a close error becomes a note on it (and a ``rudp`` log
  record).
- A socket dropped without ``close()`` is closed the same way in the
  background when it is garbage-collected (with a ``ResourceWarning``, as for
  an unclosed ``socket.socket``); its I/O thread and descriptors go once that
  is done.  One still open at interpreter exit is closed then.  Either way a
  message never acknowledged is named on stderr (``rudp: warning: rudp.socket
  ... N message(s) never acknowledged: ...``).
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
import errno
import socket as _socket
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from rudp.core.endpoint import Association
from rudp.drivers._common import attach_close_error, failure_error, split_options
from rudp.drivers.blocking import (
    Engine,
    acknowledged,
    finish_close,
    has_room,
    ledger,
)
from rudp.drivers.lifetime import finalize_dropped, register_for_exit
from rudp.errors import (
    BufferTooSmall,
    ConnectionFailed,
    LocalProtocolError,
    MessageTooLarge,
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


def _weak_callback(method: Callable[[Association, Event], None]) -> Callable[..., None]:
    """``method`` called through a weak reference to its object.

    The engine's I/O thread holds its ``on_event``; a bound method would keep
    the socket alive for as long as the thread runs, so it could never be
    garbage-collected (and finalised) while open.
    """
    ref = weakref.WeakMethod(method)

    def call(assoc: Association, event: Event) -> None:
        bound = ref()
        if bound is not None:
            bound(assoc, event)

    return call


def _label(engine: Engine) -> str:
    """How warnings name a socket: by its bound address, read when the warning is due."""
    try:
        return f"rudp.socket on {engine.sock.getsockname()!r}"
    except OSError:  # pragma: no cover - already closed
        return "rudp.socket"


def _combined(errors: list[ConnectionFailed]) -> ConnectionFailed:
    """One exception for the failures of several peers (see the module docs, close())."""
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    reason = "; ".join(f"{len(e.undelivered)} to {e.address!r}: {e.reason}" for e in errors)
    undelivered = tuple(payload for error in errors for payload in error.undelivered)
    return type(first)(reason, undelivered, first.kind)


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
        """After ``close()``: payloads never acknowledged (what its error listed)."""
        self._timeout: float | None = None
        self._peer: Any = None
        self._peers: dict[Any, Association] = {}
        self._ready: collections.deque[Association] = collections.deque()
        self._held: dict[Association, bytes] = {}  # reported too large, kept for a big buffer
        self._changes = 0  # bumped whenever _ready changes, for waiting readers
        self._errors: collections.deque[ConnectionFailed] = collections.deque()
        self._closing = False
        self._resolved: dict[Any, Any] = {}
        self._engine = engine = Engine(
            family,
            config,
            driver_options,
            accepting=True,
            on_event=_weak_callback(self._on_event),
            time_wait=False,  # close() frees the port at once, as UDP's does
        )
        with engine.cond:
            engine.acquire()
        engine.start()
        self._finalizer = finalize_dropped(
            self, engine, None, lambda: _label(engine), pending=self._errors
        )
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
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:
            attach_close_error(exc, error, self.label)

    @property
    def label(self) -> str:
        """How warnings name this socket."""
        return _label(self._engine)

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
                index = self._next_fitting(bufsize)
                if index is not None:
                    break
                if self._timeout == 0.0:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                # Wait for a change: a new message, or another reader taking a held one.
                engine.wait_until(self._changed_since(self._changes), deadline)
            assoc = self._ready[index]
            led = ledger(assoc)
            message = led.inbox[0]
            if not peek:
                del self._ready[index]
                self._changes += 1
                self._held.pop(assoc, None)
                led.pop()
                engine.resume(assoc)
            return message, assoc.address

    def _changed_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._changes != seen or bool(self._errors)

    def _next_fitting(self, bufsize: int) -> int | None:
        """Index in ``_ready`` of the message to return; raise ``BufferTooSmall`` once per message.

        ``_ready`` has one entry per received message in arrival order, naming
        its association; an association's first entry stands for the head of
        its inbox.  A head larger than ``bufsize`` is reported once and then
        *held*: the scan passes over that peer (its later messages must not
        overtake it) and goes on with the other peers'.
        """
        passed: set[Association] = set()
        for index, assoc in enumerate(self._ready):
            if assoc in passed:
                continue
            message = ledger(assoc).inbox[0]
            if len(message) <= bufsize:
                return index
            passed.add(assoc)
            if self._held.get(assoc) is not message:
                self._held[assoc] = message
                raise BufferTooSmall(len(message), bufsize, address=assoc.address)
        return None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Next message (of the ``connect()``-ed peer, if connected)."""
        return self.recvfrom(bufsize, flags)[0]

    def _discard_foreign(self) -> None:
        """On a connected socket, drop messages from other peers (as UDP's kernel filter does)."""
        if self._peer is None:
            return
        ready = self._ready
        if all(assoc.address == self._peer for assoc in ready):
            return
        kept: collections.deque[Association] = collections.deque()
        for assoc in ready:
            if assoc.address == self._peer:
                kept.append(assoc)
            else:
                ledger(assoc).pop()
                self._held.pop(assoc, None)
                self._engine.resume(assoc)
        self._ready = kept
        self._changes += 1

    # --- events and errors -------------------------------------------------------

    def _on_event(self, assoc: Association, event: Event) -> None:
        """Engine callback (cond held): track readiness, peers and failures."""
        if isinstance(event, MessageReceived):
            self._ready.append(assoc)
            self._changes += 1
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
            # A peer that owed us nothing is no error, as with UDP; during close()
            # finish_close reports each association itself.
            if undelivered and not self._closing:
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
        """Close every association gracefully; raise if a message was never acknowledged.

        Waits until every message and FIN is acknowledged or the core gives up
        on the peer, at most ``linger`` seconds if set (see the module docs).
        A second call returns at once.
        """
        errors = self._close_all()
        if errors:
            raise _combined(errors)

    def _close_all(self) -> list[ConnectionFailed]:
        """``close()`` returning, instead of raising, each peer's loss (at-exit closes)."""
        engine = self._engine
        try:
            with engine.cond:
                if engine.closed:
                    return []
                # Failures the socket never got to raise, then what the close itself loses;
                # _on_event stops queueing errors so none is counted twice.
                errors = list(self._errors)
                self._errors.clear()
                self._closing = True
                live = [a for a in engine.endpoint.associations if not ledger(a).terminated]
                errors += finish_close(engine, live, self.linger)
                self.undelivered = tuple(
                    cast(bytes, payload) for error in errors for payload in error.undelivered
                )
        finally:
            if self._finalizer.detach() is not None:
                register_for_exit(self, False)
                engine.release()
        return errors

    def detach(self) -> int:
        """Not supported: the UDP descriptor is owned by the I/O thread."""
        raise OSError(errno.EOPNOTSUPP, "rudp.socket cannot be detached")
