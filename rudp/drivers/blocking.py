"""The blocking I/O engine under ``rudp.socket`` and ``rudp.connect`` / ``rudp.listen``.

Threading model
===============

One ``Engine`` owns one UDP socket and one ``rudp.core.endpoint.Endpoint``.  A
background *I/O thread* waits in ``select`` on the socket and on a wake-up
socketpair, with the endpoint's earliest timer as its timeout.  On every wake-up
it drains the socket (non-blocking ``recvfrom`` until ``BlockingIOError``, at
most ``recv_batch`` datagrams), feeds the batch to the endpoint, fires due
timers, sends every queued datagram and folds events into per-association
``ConnectionLedger`` objects (``rudp.drivers._common``, shared with asyncio).

User threads never touch the socket for reading.  They take ``engine.cond`` (a
``threading.Condition``; its lock guards the endpoint and every ledger), mutate
the endpoint through its associations, call ``pump()`` to push the resulting
datagrams out at once (no thread hop on the send path), and wait on the
condition; the I/O thread ``notify_all()``s after each round.  ``pump`` wakes
the I/O thread only when the earliest timer moved before the deadline it is
sleeping towards.  Any number of threads may wait at once, so one thread can
read while another writes.

Back-pressure: an association holding ``receive_window`` unread messages or
``recv_buffer`` unread bytes is *paused* (the endpoint stops taking its
events, so the core counts them against the receive window and the peer slows
down); reading below the limits resumes it.

The helpers at the top (``has_room``, ``acknowledged``, ``close_complete``,
``register_for_exit``) are the blocking semantics both faces share: when a
send may proceed, when a flush or a lingering close is done, closing at exit.

OS errors: ICMP-induced ``ConnectionRefusedError`` and other transient send or
receive errors are ignored -- they are loss as far as the protocol is concerned,
and the retransmission machinery (or the give-up budget) deals with them.
"""

from __future__ import annotations

import atexit
import contextlib
import selectors
import socket as _socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from rudp.config import Config
from rudp.core.endpoint import Association, Endpoint
from rudp.drivers._common import ConnectionLedger, DriverOptions, drain, udp_socket
from rudp.errors import Timeout
from rudp.events import MessageReceived

__all__ = [
    "Engine",
    "acknowledged",
    "close_complete",
    "has_room",
    "ledger",
    "register_for_exit",
]


def ledger(assoc: Association) -> ConnectionLedger:
    """The ledger of an association (``assoc.context``), created on first use."""
    led = assoc.context
    if led is None:
        led = assoc.context = ConnectionLedger()
    assert isinstance(led, ConnectionLedger)
    return led


def has_room(assoc: Association, size: int, limit: int) -> bool:
    """A message of ``size`` bytes may be queued under the ``send_buffer`` ``limit``.

    One message larger than the limit is accepted when nothing is queued (it
    could never be sent otherwise); an ended association has room, so the
    caller wakes up and reports the end.
    """
    queued: int = assoc.connection.send_queue_bytes
    return queued == 0 or queued + size <= limit or ledger(assoc).terminated


def acknowledged(assoc: Association) -> bool:
    """Nothing sent on the association waits for an acknowledgement (``flush``)."""
    led = ledger(assoc)
    if led.terminated or assoc.connection.send_queue_bytes:
        return led.terminated
    # A paused association's acknowledgements wait behind unread messages:
    # trust the core's byte count then (it misses only empty messages).
    return not led.outstanding or assoc.paused


def close_complete(assoc: Association) -> bool:
    """A lingering ``close()`` may stop waiting: our FIN is acknowledged, or the end came."""
    return ledger(assoc).terminated or assoc.close_done


class _Closeable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closeable] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Give what the program never closed its graceful close (and linger).

    A UDP program may exit right after its last ``sendto``; the kernel would
    still transmit that datagram, so a drop-in must still deliver the message.
    """
    for item in list(_open):
        item.close()


def register_for_exit(item: _Closeable, register: bool = True) -> None:
    """Close ``item`` at interpreter exit unless it is closed first (``register=False``)."""
    if register:
        _open.add(item)
    else:
        _open.discard(item)


class Engine:
    """One UDP socket, one endpoint, one I/O thread (see the module docs).

    Every method whose name does not start with ``close`` or ``start`` must be
    called with ``cond`` held.
    """

    def __init__(
        self,
        family: int,
        config: Config,
        options: DriverOptions,
        *,
        accepting: bool = False,
        on_event: Callable[[Association, Any], None] | None = None,
    ) -> None:
        self.family = family
        self.config = config
        self.options = options
        """The driver options (``send_buffer``, ``linger``, ... for the faces)."""
        self.recv_limit = config.receive_window
        """Unread messages per association before it is paused (back-pressure)."""
        self.recv_buffer = options.recv_buffer_for(config)
        """Unread bytes per association before it is paused."""
        self.sock = udp_socket(family, options)
        try:
            self._wake_r, self._wake_w = _socket.socketpair()
        except BaseException:
            self.sock.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.endpoint = Endpoint(config, accepting=accepting, backlog=options.backlog)
        self.cond = threading.Condition(threading.Lock())
        self.on_event = on_event
        """Called (cond held) for every event after the ledger is updated."""
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
        """Un-pause an association whose inbox fell below the limits, and take its events."""
        if assoc.paused and not ledger(assoc).full(self.recv_buffer, self.recv_limit):
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
                    batch = drain(self.sock, self.options.recv_batch, [])
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
        byte_limit = self.recv_buffer
        limit = self.recv_limit
        on_event = self.on_event
        while (item := endpoint.next_event()) is not None:
            assoc, event = item
            led = ledger(assoc)
            led.apply(event)
            if isinstance(event, MessageReceived) and led.full(byte_limit, limit):
                assoc.paused = True
            if on_event is not None:
                on_event(assoc, event)
