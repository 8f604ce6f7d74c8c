"""The blocking I/O engine under ``rudp.socket`` and ``rudp.connect`` / ``rudp.listen``.

Threading model
===============

One ``Engine`` owns one UDP socket and one ``rudp.core.endpoint.Endpoint``.  A
background *I/O thread* waits in ``select`` on the socket and on a wake-up
socketpair, with the endpoint's earliest timer as its timeout.  On every wake-up
it drains the socket (at most ``recv_batch`` datagrams, without blocking; on Linux
``recvmmsg``, 64 a syscall, and bursts go out with ``sendmmsg``: ``rudp.drivers.mmsg``,
which keeps the GIL that ``recvfrom``/``sendto`` would hand to another thread per
datagram), feeds the batch to the endpoint, fires due
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
``finish_close``) are the blocking semantics both faces share: when a send
may proceed, when a flush or a close is done, how a close waits and what it
reports.  What becomes of a face that is never closed (at exit, or dropped)
is ``rudp.drivers.lifetime``.

Lifetime
========

An engine counts its *users* (``acquire``/``release``: a ``Connection``, a
``Listener``, a ``rudp.socket``); the last ``release`` stops it -- for a
connection's engine after at most ``close_linger`` more, while closed
associations finish their close handshake (TCP's TIME_WAIT; see
``release``).  A user
dropped without ``close()`` is finalised (``weakref.finalize``,
``rudp.drivers.lifetime``) by ``retire``,
which only queues work for the I/O thread and wakes it -- a finaliser may run
in any thread, even in this one while it holds ``cond`` (cyclic GC), so it must
neither lock nor join.  The I/O thread then closes the dropped user's
associations gracefully in the background, prints a warning to stderr for any
message that is never acknowledged, and, once no user is left and every such
close is done, stops itself and closes its descriptors.  Nothing the I/O thread
holds refers back to a user object, so dropping one really frees it.

OS errors: ICMP-induced ``ConnectionRefusedError`` and other transient send or
receive errors are ignored -- they are loss as far as the protocol is concerned,
and the retransmission machinery (or the give-up budget) deals with them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket as _socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from rudp.config import Config
from rudp.core.endpoint import Association, Endpoint
from rudp.drivers._common import ConnectionLedger, DriverOptions, read_size, udp_socket
from rudp.drivers.lifetime import running_engines, undelivered_warning, warn
from rudp.drivers.mmsg import datagram_io
from rudp.errors import ConnectionFailed, LingerExpired, LocalProtocolError, Timeout
from rudp.events import MessageReceived

__all__ = [
    "Engine",
    "acknowledged",
    "all_acknowledged",
    "close_complete",
    "finish_close",
    "has_room",
    "ledger",
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


def all_acknowledged(assoc: Association) -> bool:
    """The peer acknowledged every message (the FIN aside), by the core's own counters.

    Unlike the ledger these are right even while the association is paused
    (its ``MessageAcknowledged`` events then wait unread) and count empty
    messages; used only when a ``linger`` runs out, so building a ``Stats``
    snapshot is cheap enough.
    """
    stats = assoc.connection.stats
    return bool(stats.messages_acked >= stats.messages_sent)


def close_complete(assoc: Association) -> bool:
    """A close may stop waiting: our FIN is acknowledged, or the end came."""
    return ledger(assoc).terminated or assoc.close_done


def finish_close(
    engine: Engine, assocs: Sequence[Association], linger: float | None
) -> list[ConnectionFailed]:
    """Close ``assocs`` gracefully and wait; return one error per association that lost data.

    Called with ``engine.cond`` held.  Every association gets its FIN after
    its queued messages.  Then two waits:

    1. Until every message is acknowledged or the connection ended.  With
       ``linger=None`` nothing else ends it, so only the core's give-up budget
       stops a close to a dead peer, and the error is the one its ``Failed``
       kind calls for.  When ``linger`` runs out first, an association with
       messages still unacknowledged is aborted (the peer gets a RESET, so
       nothing is delivered behind the back of the error raised) and reported
       as ``LingerExpired``.
    2. Until our FIN is acknowledged too, at most ``close_linger`` more (and
       within ``linger``): the peer then knows we are done.  Nothing of the
       caller's is at stake any more, so running out is no error -- and
       waiting the whole give-up budget here would make a close block for
       ``peer_timeout`` whenever the peer went away after its last ack, which
       loses nothing (its core ends such a close as ``Closed``, FIN_GIVE_UP).

    Associations that failed earlier with unacknowledged messages are
    reported too.
    """
    now = engine.now()
    live = [assoc for assoc in assocs if not ledger(assoc).terminated]
    for assoc in live:
        # A full close: nobody reads after close (RFC 1122 section 4.2.2.13), so messages
        # left unread make the core reset the peer.  A full inbox would also pause the
        # association and hide its acknowledgements, and keep the peer's FIN out.
        led = ledger(assoc)
        unread = bool(led.inbox)
        led.discard()
        assoc.paused = False
        with contextlib.suppress(LocalProtocolError):  # already closing
            assoc.close(now, reading=False, left_unread=unread)
    engine.pump()
    deadline = None if linger is None else time.monotonic() + linger
    expired: set[Association] = set()
    try:
        engine.wait_until(lambda: all(acknowledged(a) for a in live), deadline)
    except Timeout:
        for assoc in live:
            if not acknowledged(assoc) and not all_acknowledged(assoc):
                assoc.abort(f"close(): linger of {linger:g} s ran out")
                expired.add(assoc)
        engine.pump()  # sends the RESETs and folds the Failed events in
    else:
        fin_deadline = time.monotonic() + engine.config.close_linger
        if deadline is not None:
            fin_deadline = min(fin_deadline, deadline)
        with contextlib.suppress(Timeout):
            engine.wait_until(lambda: all(close_complete(a) for a in live), fin_deadline)
    errors: list[ConnectionFailed] = []
    for assoc in assocs:
        led = ledger(assoc)
        if not led.lost:
            continue
        if assoc in expired:
            reason = f"close(): linger of {linger:g} s ran out before the peer acknowledged"
            errors.append(
                LingerExpired(reason, led.undelivered, address=assoc.address, linger=linger)
            )
        else:
            errors.append(led.error(address=assoc.address))
    return errors


class Engine:
    """One UDP socket, one endpoint, one I/O thread (see the module docs).

    Every method whose name does not start with ``release``, ``retire``,
    ``close``, ``start`` or ``wait`` must be called with ``cond`` held.
    """

    def __init__(
        self,
        family: int,
        config: Config,
        options: DriverOptions,
        *,
        accepting: bool = False,
        on_event: Callable[[Association, Any], None] | None = None,
        time_wait: bool = True,
    ) -> None:
        self.family = family
        self.config = config
        self._read_size = read_size(config)
        self.options = options
        """The driver options (``send_buffer``, ``linger``, ... for the faces)."""
        self.recv_limit = config.receive_window
        """Unread messages per association before it is paused (back-pressure)."""
        self.recv_buffer = options.recv_buffer_for(config)
        """Unread bytes per association before it is paused."""
        self.sock = udp_socket(family, options)
        self._io = datagram_io(self.sock, self._read_size)
        try:
            self._wake_r, self._wake_w = _socket.socketpair()
        except BaseException:
            self.sock.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            # Made here, not in the I/O thread, so every descriptor the engine
            # owns exists once it is constructed (and is closed in one place).
            self._selector = selectors.DefaultSelector()
            self._selector.register(self.sock, selectors.EVENT_READ)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
        except BaseException:
            for closeable in (self.sock, self._wake_r, self._wake_w):
                closeable.close()
            raise
        self.endpoint = Endpoint(
            config,
            accepting=accepting,
            backlog=options.backlog,
            static_key=options.endpoint_static_key(),
            retry=options.retry,
            retry_threshold=options.retry_threshold,
        )
        self.cond = threading.Condition(threading.Lock())
        self.on_event = on_event
        """Called (cond held) for every event after the ledger is updated."""
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._sleep_until: float | None = None  # the I/O thread's current select deadline
        self._sleeping = False
        self._users = 0
        # Work from finalisers, run by the I/O thread: deque.append needs no lock.
        self._posted: deque[Callable[[], None]] = deque()
        # Dropped users' closes: assoc -> (label, deadline for our FIN's ack once all is acked).
        self._retiring: dict[Association, tuple[str, float | None]] = {}
        self._orphaned = False  # no user left: stop once _retiring is empty (and TIME_WAIT)
        self._time_wait = time_wait
        self._linger_until: float | None = None  # orphaned: last moment to keep serving
        self._losses: list[tuple[str, list[ConnectionFailed]]] = []  # to warn about, by label
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
            running_engines.add(self)

    @property
    def closed(self) -> bool:
        """``close()`` was called, or the engine stopped itself."""
        return self._closed

    def acquire(self) -> None:
        """One more user (a connection, listener or socket) shares the engine (cond held)."""
        self._users += 1

    def release(self) -> None:
        """A user closed; the last one stops the engine.

        If dropped users' closes are still running in the background, the I/O
        thread finishes them first and then stops by itself.  So it does, with
        ``time_wait``, while closed associations still finish their close
        handshake -- for at most ``close_linger``: the TIME_WAIT of TCP, where
        the side that acknowledged last stays to acknowledge a retransmission
        (of the peer's FIN, or of data sent after our FIN) whose first
        acknowledgement was lost.  Without it the peer could never learn that
        its last messages arrived; it would give up and list them as
        undelivered.  ``rudp.socket`` passes ``time_wait=False``: its close
        must free the port at once, as a UDP socket's does.
        """
        with self.cond:
            self._users -= 1
            if self._users > 0:
                return
            if not self._closed and (self._retiring or (self._time_wait and len(self.endpoint))):
                self._orphaned = True
                self._wake()
                return
        self.close()

    def retire(
        self,
        assocs: list[Association] | None,
        label: str | Callable[[], str],
        *,
        pending: Sequence[ConnectionFailed] = (),
        stop_accepting: bool = False,
    ) -> None:
        """A user was dropped without ``close()``: close its associations in the background.

        Safe from a finaliser in any thread (no lock is taken, nothing waits):
        the work is queued for the I/O thread, which closes ``assocs`` (every
        association when None) gracefully, releases the user, and warns on
        stderr, under ``label``, about any message never acknowledged --
        including the failures in ``pending`` the user never got to report.
        ``stop_accepting``: a listener's, abort what it never accepted.
        """
        self._posted.append(lambda: self._retire(assocs, label, pending, stop_accepting))
        self._wake()

    def wait_retired(self, timeout: float) -> None:
        """Wait until the background closes of dropped users are done (at exit).

        Not for TIME_WAIT: nothing of the program's is at stake there, and an
        exit should not wait ``close_linger`` for it.
        """
        if self._thread is None or self._thread is threading.current_thread():
            return
        with self.cond:
            self.cond.wait_for(lambda: not self._retiring or self._closed, timeout)

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
        self._close_descriptors()

    def _close_descriptors(self) -> None:
        self._selector.close()
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
        selector = self._selector
        stopped_itself = False
        try:
            while True:
                with self.cond:
                    if self._stopping:
                        return
                    deadline = self.endpoint.get_timer()
                    until = self._linger_until
                    if until is not None and (deadline is None or until < deadline):
                        deadline = until
                    self._sleep_until = deadline
                    self._sleeping = True
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = [key.fileobj for key, _ in selector.select(timeout)]
                with self.cond:
                    self._sleeping = False
                    if self._stopping:
                        return
                    # Read only what select reported readable: an empty socket costs a
                    # failing recv (a syscall and an exception) per wake-up otherwise, and
                    # most wake-ups are for one of the two only.  A datagram arriving
                    # after select is read at the next round (select returns at once).
                    if self._wake_r in ready:
                        self._drain_wake()
                    while self._posted:
                        self._posted.popleft()()
                    batch = self._drain() if self.sock in ready else []
                    now = time.monotonic()
                    if batch:
                        self.endpoint.receive_datagrams(batch, now)
                    self.endpoint.handle_timer(now)
                    self.pump()
                    if self._retiring:
                        self._reap_retired()
                    lost, self._losses = self._losses, []
                    if self._orphaned and not self._retiring and self._served_out(now):
                        # Every user is gone and every background close is done.
                        self._stopping = self._closed = stopped_itself = True
                        self.cond.notify_all()
                for label, errors in lost:  # outside the lock: stderr may block
                    warn(undelivered_warning(label, "dropped without close()", errors))
                if stopped_itself:
                    return
        except BaseException as exc:  # pragma: no cover - a bug; surface it to waiters
            with self.cond:
                self.io_error = exc
                self._closed = True
                self.cond.notify_all()
            raise
        finally:
            if stopped_itself:
                self._close_descriptors()

    def _retire(
        self,
        assocs: list[Association] | None,
        label: str | Callable[[], str],
        pending: Sequence[ConnectionFailed],
        stop_accepting: bool,
    ) -> None:
        """The I/O thread's half of ``retire`` (cond held)."""
        name = label if isinstance(label, str) else label()
        if pending:
            self._losses.append((name, list(pending)))
        if stop_accepting:
            self.endpoint.accepting = False
            while (unaccepted := self.endpoint.accept()) is not None:
                unaccepted.abort("listener closed")
        now = time.monotonic()
        for assoc in self.endpoint.associations if assocs is None else assocs:
            led = ledger(assoc)
            if led.terminated and not led.lost:
                continue
            unread = bool(led.inbox)
            led.discard()  # nobody will read them; keep the peer's FIN from stalling
            assoc.paused = False
            with contextlib.suppress(LocalProtocolError):  # a full close, as finish_close's
                assoc.close(now, reading=False, left_unread=unread)
            self._retiring[assoc] = (name, None)
        self._users -= 1
        if self._users <= 0:
            self._orphaned = True

    def _served_out(self, now: float) -> bool:
        """Orphaned, nothing retiring: may stop (every association over, or TIME_WAIT spent)."""
        if len(self.endpoint) == 0:
            return True
        if self._linger_until is None:
            self._linger_until = now + self.config.close_linger
        return now >= self._linger_until

    def _reap_retired(self) -> None:
        """Forget background closes that are done; note what each lost (cond held).

        Done as ``finish_close`` is: every message acknowledged (or the end
        came), then our FIN's acknowledgement or ``close_linger``, whichever
        is first.  (Checked after every wake-up; the FIN's retransmission timer
        wakes the thread while it waits.)
        """
        now = time.monotonic()
        lost: dict[str, list[ConnectionFailed]] = {}
        for assoc, (label, fin_deadline) in list(self._retiring.items()):
            if not close_complete(assoc):
                if not acknowledged(assoc):
                    continue
                if fin_deadline is None:
                    self._retiring[assoc] = (label, now + self.config.close_linger)
                    continue
                if now < fin_deadline:
                    continue
            del self._retiring[assoc]
            led = ledger(assoc)
            if led.lost:
                lost.setdefault(label, []).append(led.error(address=assoc.address))
        self._losses.extend(lost.items())

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _drain(self) -> list[tuple[bytes, Any]]:
        return self._io.drain(self.options.recv_batch, [])

    def _send(self, datagrams: list[tuple[bytes, Any]]) -> None:
        # A datagram the kernel refuses (full buffer, ICMP-refused, unreachable network) is
        # lost: it will be retransmitted, or the peer given up.
        if datagrams:
            self._io.send(datagrams)

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
