"""Objects dropped without ``close()`` give their thread and descriptors back when collected.

A ``rudp.Connection`` or ``rudp.socket`` owns an I/O thread and four
descriptors (the UDP socket, a wake-up socketpair and the thread's selector).
Dropped unclosed, its finaliser warns (``ResourceWarning``, as
``socket.socket`` does) and hands its associations to the I/O thread, which
closes them gracefully -- the peer is told -- and then stops and closes the
descriptors.  Each test counts threads and open fds before and after, and
waits (bounded) for the thread itself to end.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
from collections.abc import Iterator

import pytest

import rudp

WAIT = 10.0
QUICK = {"close_linger": 0.2}
"""A short TIME_WAIT: a closed engine's thread may sit one out before it stops."""


def open_fds() -> set[str]:
    """Open descriptors, without the one ``listdir`` itself used (closed by now)."""
    return {fd for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}


def io_thread(obj: object) -> threading.Thread:
    """The I/O thread behind a face (to wait for it to end, bounded)."""
    thread = obj._engine._thread  # type: ignore[attr-defined]
    assert isinstance(thread, threading.Thread) and thread.is_alive()
    return thread


@pytest.fixture
def baseline() -> Iterator[tuple[int, set[str]]]:
    """Thread count and open fds before the test creates anything of its own."""
    gc.collect()
    yield threading.active_count(), open_fds()


def assert_back_to(baseline: tuple[int, set[str]], thread: threading.Thread) -> None:
    thread.join(WAIT)
    assert not thread.is_alive()
    threads, fds = baseline
    assert threading.active_count() == threads
    now = open_fds()
    leaked = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in now - fds}
    assert now == fds, leaked


def test_a_dropped_connection_stops_its_thread_closes_its_fds_and_tells_the_peer(
    baseline: tuple[int, set[str]],
) -> None:
    listener = rudp.listen(("127.0.0.1", 0), **QUICK)
    try:
        with_listener = threading.active_count(), open_fds()
        conn = rudp.connect(listener.address, **QUICK)
        server = listener.accept(timeout=WAIT)
        conn.send(b"last words")
        thread = io_thread(conn)
        assert threading.active_count() == with_listener[0] + 1
        assert len(open_fds() - with_listener[1]) == 4
        with pytest.warns(ResourceWarning, match="unclosed rudp.Connection"):
            del conn
            gc.collect()
        assert_back_to(with_listener, thread)
        # The peer got a graceful close: the message, then the end of the stream.
        assert list(server) == [b"last words"]
        server.close()
        listener_thread = io_thread(listener)
    finally:
        listener.close()
    # Its thread may sit out a TIME_WAIT (at most close_linger) before it stops.
    assert_back_to(baseline, listener_thread)


def test_a_dropped_listener_and_its_connections_release_the_shared_thread(
    baseline: tuple[int, set[str]],
) -> None:
    with rudp.socket() as probe:  # a plain client, closed explicitly: only the listener leaks
        listener = rudp.listen(("127.0.0.1", 0), **QUICK)
        probe.sendto(b"hi", listener.address)
        accepted = listener.accept(timeout=WAIT)
        assert accepted.recv(timeout=WAIT) == b"hi"
        thread = io_thread(listener)
        with pytest.warns(ResourceWarning, match="unclosed rudp.Listener"):
            del listener
            gc.collect()
        assert thread.is_alive()  # the accepted connection still uses it
        with pytest.warns(ResourceWarning, match="unclosed rudp.Connection"):
            del accepted
            gc.collect()
        thread.join(WAIT)
        assert not thread.is_alive()
        probe.flush(WAIT)
    assert_back_to(baseline, thread)


def test_a_dropped_socket_stops_its_thread_closes_its_fds_and_delivers(
    baseline: tuple[int, set[str]],
) -> None:
    with rudp.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(WAIT)
        with_server = threading.active_count(), open_fds()
        sock = rudp.socket(**QUICK)
        sock.sendto(b"sent, then dropped", server.getsockname())
        thread = io_thread(sock)
        with pytest.warns(ResourceWarning, match="unclosed rudp.socket"):
            del sock
            gc.collect()
        assert_back_to(with_server, thread)
        # As with a UDP socket, what was sent before the drop still arrives.
        assert server.recvfrom(100)[0] == b"sent, then dropped"
    gc.collect()
    threads, fds = baseline
    assert threading.active_count() == threads and open_fds() == fds


def test_a_dropped_socket_names_what_it_could_not_deliver(
    capfd: pytest.CaptureFixture[str],
) -> None:
    gc.collect()
    threads, fds = threading.active_count(), open_fds()  # after capfd's own files
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = silent.getsockname()
        sock = rudp.socket(peer_timeout=0.5)
        sock.sendto(b"into the void", target)
        thread = io_thread(sock)
        with pytest.warns(ResourceWarning):
            del sock
            gc.collect()
        thread.join(WAIT)  # the background close gives up after peer_timeout
        assert not thread.is_alive()
    err = capfd.readouterr().err
    assert "rudp: warning: rudp.socket on" in err
    assert f"dropped without close() with 1 message(s) never acknowledged: 1 to {target!r}" in err
    assert threading.active_count() == threads and open_fds() == fds
