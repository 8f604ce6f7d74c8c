"""What every driver shares: options, the event fold, and failure -> exception.

Both drivers (``blocking``: an I/O thread per socket; ``asyncio``: a protocol on
the event loop) and the three public faces over them (``rudp.socket``,
``rudp.connect``/``rudp.listen``, ``rudp.aio``) take the same ``**options``,
fold the core's events into the same per-connection :class:`ConnectionLedger`,
and turn a ``Failed`` event into an exception through one table.  What differs
between drivers is only how a waiting caller is woken up (a condition variable,
futures), which each keeps to itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from rudp.config import MIB, Config
from rudp.errors import (
    ConnectionAborted,
    ConnectionFailed,
    ConnectionReset,
    PeerProtocolError,
    PeerUnreachable,
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
    pass

__all__ = [
    "FAILURE_EXCEPTIONS",
    "Address",
    "ConnectionLedger",
    "DriverOptions",
    "PlainIO",
    "attach_close_error",
    "default_local_address",
    "drain",
    "failure_error",
    "normalise_address",
    "split_options",
    "udp_socket",
]

logger = logging.getLogger("rudp")

Address: TypeAlias = tuple[Any, ...]
"""A socket address: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6."""


# --- options ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriverOptions:
    """Options of the drivers that are not protocol tunables (those are ``Config``).

    Every face accepts them as keyword ``**options`` beside ``Config``'s names;
    a face for which one makes no sense ignores it (``backlog`` on a client)
    or rejects it (``rudp.socket`` has ``settimeout`` and ``bind``).
    """

    send_buffer: int = 4 * MIB
    """Unacknowledged bytes per connection after which sending waits.  About
    three receive windows (1024 x 1400 B): enough to keep the pipe full while
    acknowledgements travel, small enough to bound a program's memory.
    ``rudp.socket``/``rudp.connect`` still accept one message when nothing is
    queued; ``rudp.aio`` when the queue is below the limit."""

    recv_buffer: int | None = None
    """Bytes of received, unread messages the driver holds per connection before
    it leaves the rest in the core, which counts them against the window the
    peer sees.  ``None``: a quarter of ``Config.receive_buffer`` (1 MiB by default),
    so a peer costs at most ``receive_buffer`` in the core plus this and one message
    (``max_message_size``) in the driver: 6 MiB with the defaults (specs/protocol.md
    section 13.4), and a reader that stops reading stops the sender.  (A connection
    also pauses at ``receive_window`` unread messages, which bounds empty ones.)"""

    linger: float | None = None
    """Longest ``close()`` waits for the peer to acknowledge everything sent.
    ``None``: until every message is acknowledged or the core's give-up budget
    (``peer_timeout``, ``max_retransmits``) ends the connection, which then
    raises the precise ``ConnectionFailed`` with ``undelivered``.  No fixed
    bound is right for every path, and one that runs out on a slow but live
    path would cut off data the protocol was still delivering.  A number
    shortens the wait: when it runs out with messages unacknowledged the
    connection is reset and ``close()`` raises ``rudp.LingerExpired`` (a
    ``PeerUnreachable``) listing them; ``0`` does not wait at all.  Once every
    message is acknowledged the close handshake is not the caller's data: the
    blocking faces wait at most ``Config.close_linger`` more for our FIN's
    acknowledgement, asyncio for the peer's FIN too (see ``rudp.aio``)."""

    timeout: float | None = 10.0
    """Longest ``connect()`` waits for the handshake (``rudp.Timeout`` after);
    ``None`` waits until ``peer_timeout`` gives up.  Not for ``rudp.socket``,
    which opens connections implicitly (use its ``settimeout``)."""

    backlog: int = 128
    """Server: most connections the endpoint keeps before they are accepted (a SYN
    beyond them is refused; nothing is evicted)."""

    retry: str = "under_load"
    """Server: when a SYN must prove its address with a RETRY round trip before it
    creates a connection (specs/protocol.md section 6.2.1): ``"under_load"`` (more than
    ``retry_threshold`` unvalidated handshakes at once, or a full backlog), ``"always"``
    or ``"never"``."""

    retry_threshold: int = 16
    """Server, ``retry="under_load"``: unvalidated handshakes that make the load."""

    local_addr: Address | None = None
    """Client: address to bind.  ``None``: the loopback address when the peer is
    a loopback address (the only source the kernel would pick anyway), else the
    wildcard address of the peer's family; port 0.  Not for ``rudp.socket``
    (use its ``bind``)."""

    socket_buffer: int | None = 4 * MIB
    """SO_RCVBUF / SO_SNDBUF requested for the UDP socket (best effort: the kernel
    caps it at ``net.core.rmem_max`` / ``wmem_max``); ``None`` keeps the system
    default.  A full window is 1024 datagrams of 1400 B.  Linux doubles the
    request and charges each such datagram ~2.3 KB, so (measured) 2 MiB holds
    1820 of them, under two windows, and 4 MiB 3640: room for a window plus
    retransmissions, or several connections of a listener bursting at once.
    Loopback drops rather than blocks, and every drop costs a retransmission."""

    recv_batch: int = 512
    """Most datagrams read from the socket per wake-up before protocol work:
    half a window, so timers, senders and (asyncio) other tasks wait a few
    milliseconds at most behind a flood.  Measured on loopback bulk transfers
    (64 KiB messages), 512 was 5-10% faster than 256 in both drivers and 1024
    no faster than 512."""

    static_key: bytes | None = None
    """The key the stateless-reset tokens of this endpoint's connections are made from
    (specs/protocol.md section 6.6), at least 16 bytes.  ``None``: the per-user key
    file of ``rudp.drivers.static_key`` (``$RUDP_STATIC_KEY_FILE``, else
    ``~/.local/state/rudp/static-key``), created on first use, so a restarted program
    answers its old peers' packets with resets they believe and they fail at once.
    Programs that must not share the user's key pass their own."""

    def __post_init__(self) -> None:
        if self.static_key is not None and (
            not isinstance(self.static_key, bytes) or len(self.static_key) < 16
        ):
            raise ValueError("static_key must be bytes, at least 16 of them")
        if self.send_buffer < 1 or (self.recv_buffer is not None and self.recv_buffer < 1):
            raise ValueError("send_buffer and recv_buffer must be positive")
        if (self.linger is not None and self.linger < 0) or (
            self.timeout is not None and self.timeout <= 0
        ):
            raise ValueError("linger must be >= 0 and timeout > 0 (or None)")
        if self.retry not in ("always", "under_load", "never") or self.retry_threshold < 0:
            raise ValueError('retry must be "always", "under_load" or "never"')
        if self.backlog < 1 or self.recv_batch < 1:
            raise ValueError("backlog and recv_batch must be positive")
        if self.socket_buffer is not None and self.socket_buffer < 1:
            raise ValueError("socket_buffer must be positive or None")

    def endpoint_static_key(self) -> bytes:
        """``static_key``, or the persistent per-user key when it is None."""
        if self.static_key is not None:
            return self.static_key
        from rudp.drivers.static_key import load_static_key

        return load_static_key()

    def recv_buffer_for(self, config: Config) -> int:
        """``recv_buffer`` with its default resolved against ``config``."""
        if self.recv_buffer is not None:
            return self.recv_buffer
        return config.receive_buffer // 4


_DRIVER_NAMES = frozenset(f.name for f in fields(DriverOptions))
_CONFIG_NAMES = frozenset(f.name for f in fields(Config))


def split_options(
    options: Mapping[str, Any], *, reject: Iterable[str] = ()
) -> tuple[Config, DriverOptions]:
    """Split ``**options`` into the protocol ``Config`` and the ``DriverOptions``.

    ``config=`` may pass a whole ``Config``; protocol options given beside it
    override its fields.  Unknown names, and the names in ``reject`` (driver
    options the calling face does not support), raise ``TypeError``.
    """
    options = dict(options)
    base = options.pop("config", None)
    unknown = set(options) - _DRIVER_NAMES - _CONFIG_NAMES
    if unknown:
        raise TypeError(f"unknown rudp option(s): {', '.join(sorted(unknown))}")
    refused = set(options) & set(reject)
    if refused:
        raise TypeError(f"option(s) not supported here: {', '.join(sorted(refused))}")
    driver = {name: options.pop(name) for name in list(options) if name in _DRIVER_NAMES}
    if base is not None and not isinstance(base, Config):
        raise TypeError("config= must be a rudp.config.Config")
    config = replace(base, **options) if base is not None else Config(**options)
    return config, DriverOptions(**driver)


# --- sockets -----------------------------------------------------------------------------

MAX_DATAGRAM = 65535
"""recvfrom buffer: the largest UDP payload, so the kernel never truncates one."""


def udp_socket(family: int, options: DriverOptions) -> socket.socket:
    """A non-blocking UDP socket with the buffers ``options.socket_buffer`` asks for."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if options.socket_buffer is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                # The kernel caps the value at rmem_max / wmem_max; some systems
                # refuse a large value instead: best effort either way.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, options.socket_buffer)
    except BaseException:
        sock.close()
        raise
    return sock


def read_size(config: Config) -> int:
    """The ``recvfrom`` buffer for an endpoint of ``config``: one byte above the largest
    datagram it accepts.  Nothing longer is valid (specs/protocol.md section 6.1: no peer
    may exceed the size we announce), so a longer one arrives truncated and fails its
    checks; a hostile peer's 64 KiB datagrams then cost 1.2 KiB each, not 64, in a batch
    of ``recv_batch`` (section 17.5)."""
    return min(config.max_datagram_size + 1, MAX_DATAGRAM)


def drain(
    sock: socket.socket,
    limit: int,
    batch: list[tuple[bytes, Any]],
    normalise: Callable[[Any], Any] | None = None,
    bufsize: int = MAX_DATAGRAM,
) -> list[tuple[bytes, Any]]:
    """Append to ``batch`` up to ``limit`` datagrams the kernel holds, without blocking.

    OS errors are skipped: ``ConnectionRefusedError`` and friends report an ICMP
    error for some earlier datagram, which is loss as far as the protocol cares
    (its timers decide when a peer is gone).  ``bufsize`` (see ``read_size``) bounds
    the bytes read per datagram.
    """
    recvfrom = sock.recvfrom
    for _ in range(limit):
        try:
            data, address = recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue
        batch.append((data, address if normalise is None else normalise(address)))
    return batch


class PlainIO:
    """``sendto`` and ``recvfrom``, a syscall per datagram: what ``rudp.drivers.mmsg.BatchIO``
    does in batches, for systems without ``sendmmsg``/``recvmmsg`` (same interface)."""

    def __init__(self, sock: socket.socket, bufsize: int) -> None:
        self._sock = sock
        self._bufsize = bufsize

    def send(self, datagrams: Sequence[tuple[bytes, Any]], *, stop_when_full: bool = False) -> int:
        """Send the datagrams in order; returns how many were dealt with (all, unless
        ``stop_when_full`` and the socket buffer filled: the rest is the caller's).

        Any other ``OSError`` (ICMP-refused, unreachable network; a full buffer without
        ``stop_when_full``) loses that datagram: it will be retransmitted, or the peer
        given up, like any loss.
        """
        sendto = self._sock.sendto
        for index, (data, address) in enumerate(datagrams):
            try:
                sendto(data, address)
            except BlockingIOError:
                if stop_when_full:
                    return index
            except OSError:
                continue
        return len(datagrams)

    def drain(
        self,
        limit: int,
        batch: list[tuple[bytes, Any]],
        normalise: Callable[[Any], Any] | None = None,
    ) -> list[tuple[bytes, Any]]:
        """``drain`` on this socket."""
        return drain(self._sock, limit, batch, normalise, self._bufsize)


def normalise_address(address: Address) -> Address:
    """One spelling per peer: (host, port), or (host, port, 0, scope_id) for IPv6."""
    if len(address) == 2:
        return (address[0], address[1])
    return (address[0], address[1], 0, address[3])


def default_local_address(family: int, remote: Address) -> Address:
    """The address a client binds when ``local_addr`` is not given (see ``DriverOptions``)."""
    try:
        loopback = ipaddress.ip_address(remote[0]).is_loopback
    except ValueError:
        loopback = False
    if family == socket.AF_INET6:
        return ("::1" if loopback else "::", 0)
    return ("127.0.0.1" if loopback else "0.0.0.0", 0)


# --- failures ------------------------------------------------------------------------------

FAILURE_EXCEPTIONS: Mapping[FailureKind, type[ConnectionFailed]] = MappingProxyType(
    {
        FailureKind.UNREACHABLE: PeerUnreachable,
        FailureKind.RESET_BY_PEER: ConnectionReset,
        FailureKind.PROTOCOL_ERROR: PeerProtocolError,
        FailureKind.ABORTED: ConnectionAborted,
        FailureKind.CLOSED_BY_APPLICATION: ConnectionAborted,
    }
)
"""The exception every face raises for a ``Failed`` event of each kind: the only
place that decides it (nothing parses ``Failed.reason``)."""


def attach_close_error(original: BaseException, error: BaseException, what: str) -> None:
    """A ``with`` block is left by ``original`` and the close raised ``error``: keep ``original``.

    Raising ``error`` would replace the exception that explains what went
    wrong (it would survive only as ``__context__``), so ``__exit__`` lets
    ``original`` propagate and records ``error`` -- undelivered messages and
    all -- as a note on it (shown in its traceback) and in the ``rudp`` log,
    for the handler that swallows ``original``.
    """
    original.add_note(f"rudp: closing {what} after this exception raised {error!r}")
    logger.warning("closing %s while an exception propagated: %r", what, error)


def failure_error(
    reason: str, undelivered: tuple[object, ...], kind: FailureKind, *, address: Any = None
) -> ConnectionFailed:
    """A fresh exception for a failure (re-raising one instance would chain tracebacks)."""
    return FAILURE_EXCEPTIONS[kind](reason, undelivered, kind, address=address)


# --- the event fold ------------------------------------------------------------------------


class ConnectionLedger:
    """Driver-side state of one connection, folded from the core's events.

    The messages received and not yet read, the payloads sent and not yet
    acknowledged (so a failure can hand them back), and how the connection
    ended.  Drivers call :meth:`apply` for every event and then wake their own
    waiters; nothing here blocks or knows about threads or loops.
    """

    __slots__ = (
        "connected",
        "discarding",
        "failed",
        "inbox",
        "inbox_bytes",
        "outstanding",
        "peer_closed",
        "terminated",
        "undelivered",
    )

    def __init__(self) -> None:
        self.inbox: deque[bytes] = deque()
        """Messages received and not yet read, in order (take them with :meth:`pop`)."""
        self.inbox_bytes = 0
        """Total size of the messages in ``inbox``."""
        self.outstanding: deque[tuple[int, bytes]] = deque()
        """(message id, payload) sent and not yet acknowledged, in send order."""
        self.connected = False
        """The handshake completed."""
        self.peer_closed = False
        """The peer closed gracefully (every message it sent is in ``inbox`` or was read)."""
        self.terminated = False
        """``Closed`` or ``Failed`` was seen: nothing more will happen."""
        self.failed: Failed | None = None
        """The ``Failed`` event, if the connection failed."""
        self.undelivered: tuple[bytes, ...] = ()
        """After a failure: the payloads of ``failed.undelivered``, in send order."""
        self.discarding = False
        """Nobody will read any more (see :meth:`discard`)."""

    def track(self, message_id: int, payload: bytes) -> None:
        """Remember a message just sent until the peer acknowledges it."""
        self.outstanding.append((message_id, payload))

    def apply(self, event: Event) -> None:
        """Fold one event in.  Terminal events after the first are ignored."""
        if isinstance(event, MessageReceived):
            if not self.discarding:
                self.inbox.append(event.data)
                self.inbox_bytes += len(event.data)
        elif isinstance(event, MessageAcknowledged):
            # Acknowledgements come in send order (see MessageAcknowledged), so
            # everything up to this id is acknowledged too.
            outstanding = self.outstanding
            while outstanding and outstanding[0][0] <= event.message_id:
                outstanding.popleft()
        elif isinstance(event, Connected):
            self.connected = True
        elif isinstance(event, PeerClosed):
            self.peer_closed = True
        elif isinstance(event, Closed | Failed) and not self.terminated:
            self.terminated = True
            if isinstance(event, Failed):
                self.failed = event
                payloads = dict(self.outstanding)
                self.undelivered = tuple(payloads[i] for i in event.undelivered if i in payloads)
            self.outstanding.clear()

    def fail(self, reason: str, kind: FailureKind) -> None:
        """End as failed without a core event (the socket closed under it, say)."""
        self.apply(Failed(reason, tuple(i for i, _ in self.outstanding), kind))

    def discard(self) -> None:
        """The application closed or dropped the connection: drop unread and later messages.

        Keeping them would only fill the inbox until the driver pauses the
        association, and a paused association never lets the peer's FIN in,
        so the close that is under way would never finish on the peer's side.
        """
        self.discarding = True
        self.inbox.clear()
        self.inbox_bytes = 0

    def pop(self) -> bytes:
        """Take the oldest unread message."""
        message = self.inbox.popleft()
        self.inbox_bytes -= len(message)
        return message

    def full(self, byte_limit: int, message_limit: int) -> bool:
        """The inbox holds ``byte_limit`` bytes or ``message_limit`` messages (pause it)."""
        return self.inbox_bytes >= byte_limit or len(self.inbox) >= message_limit

    @property
    def lost(self) -> bool:
        """The connection failed with messages the peer never acknowledged."""
        return self.failed is not None and bool(self.undelivered)

    def unacknowledged(self) -> tuple[bytes, ...]:
        """The payloads the peer has not acknowledged (yet, or ever if it failed)."""
        if self.failed is not None:
            return self.undelivered
        return tuple(payload for _, payload in self.outstanding)

    def error(self, *, address: Any = None) -> ConnectionFailed:
        """A fresh exception for the failure (only once ``failed`` is set)."""
        failed = self.failed
        assert failed is not None
        return failure_error(failed.reason, self.undelivered, failed.kind, address=address)
