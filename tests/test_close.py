"""A close never loses data silently: connection API, ``rudp.socket`` and asyncio.

By default (``linger=None``) ``close()`` waits until every message is
acknowledged or the core gives up (``peer_timeout``), and raises the precise
``ConnectionFailed`` with ``.undelivered`` when something never got through.
An explicit ``linger`` bounds the wait and raises ``LingerExpired`` (a
``PeerUnreachable``) after resetting the connection.  ``with`` blocks keep
the exception that left them.  At interpreter exit, what is lost is named on
stderr.  Loopback, port 0; a "dead path" is a ``LossyProxy`` that was stopped,
so the peer simply goes silent.  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from subprocs import Proc

import rudp
import rudp.aio
from rudp.drivers import DriverOptions
from rudp.testing import LinkProfile
from rudp.testing.proxy import LossyProxy

WAIT = 30.0
SILENCE = 1.0  # peer_timeout for the tests whose peer goes silent
LOSSY = LinkProfile(loss=0.2, duplicate=0.02, reorder=0.05, delay=0.002)


@pytest.fixture
def proxies() -> Iterator[list[LossyProxy]]:
    started: list[LossyProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def proxy(started: list[LossyProxy], upstream: Any, profile: LinkProfile | None = None) -> Any:
    relay = LossyProxy(upstream, profile or LinkProfile(), seed=len(started) + 1)
    relay.start()
    started.append(relay)
    return relay


# --- the default: until acknowledged or given up -----------------------------------------


def test_the_default_linger_is_until_acknowledged_or_given_up() -> None:
    assert DriverOptions().linger is None


def test_connection_close_returns_once_everything_is_acknowledged(
    proxies: list[LossyProxy],
) -> None:
    sent = [b"%d" % i + bytes(i * 31 % 3000) for i in range(150)]
    with rudp.listen(("127.0.0.1", 0)) as listener:
        lossy = proxy(proxies, listener.address, LOSSY)
        client = rudp.connect(lossy.address, timeout=WAIT)
        server = listener.accept(timeout=WAIT)
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.extend(server))
        reader.start()
        for message in sent:
            client.send(message)
        client.close()  # through 20% loss: returns only when all is acknowledged
        stats = client.stats
        assert stats.messages_acked == stats.messages_sent == len(sent)
        assert stats.retransmissions > 0
        reader.join(WAIT)
        assert not reader.is_alive() and received == sent
        server.close()


def test_connection_close_to_a_silent_peer_raises_peer_unreachable(
    proxies: list[LossyProxy],
) -> None:
    with rudp.listen(("127.0.0.1", 0), peer_timeout=SILENCE) as listener:
        path = proxy(proxies, listener.address)
        client = rudp.connect(path.address, timeout=WAIT, peer_timeout=SILENCE)
        with listener.accept(timeout=WAIT) as server:
            client.send(b"delivered")
            assert server.recv(timeout=WAIT) == b"delivered"
            client.flush(timeout=WAIT)
            address = path.address
            path.stop()  # the peer goes silent
            client.send(b"lost 1")
            client.send(b"lost 2")
            started = time.monotonic()
            with pytest.raises(rudp.PeerUnreachable) as info:
                client.close()
            # Given up by the core's budget, not cut short by a fixed linger.
            assert type(info.value) is rudp.PeerUnreachable
            assert time.monotonic() - started >= SILENCE * 0.9
            assert info.value.undelivered == (b"lost 1", b"lost 2")
            assert info.value.kind is rudp.FailureKind.UNREACHABLE
            assert info.value.address == address
            client.close()  # reported once; a second close returns at once


def test_socket_close_to_a_silent_peer_raises_with_the_address() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = silent.getsockname()
        sock = rudp.socket(peer_timeout=SILENCE)
        sock.sendto(b"one", target)
        sock.sendto(b"two", target)
        with pytest.raises(rudp.PeerUnreachable) as info:
            sock.close()
        assert type(info.value) is rudp.PeerUnreachable
        assert info.value.undelivered == sock.undelivered == (b"one", b"two")
        assert info.value.address == target


def test_socket_close_combines_the_losses_of_several_peers() -> None:
    import socket

    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second,
    ):
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        sock = rudp.socket(peer_timeout=SILENCE)
        sock.sendto(b"a1", first.getsockname())
        sock.sendto(b"b1", second.getsockname())
        sock.sendto(b"a2", first.getsockname())
        with pytest.raises(rudp.PeerUnreachable) as info:
            sock.close()
        error = info.value
        assert error.address is None  # several peers
        assert sorted(error.undelivered) == [b"a1", b"a2", b"b1"]
        # per peer, in send order
        assert [m for m in error.undelivered if m.startswith(b"a")] == [b"a1", b"a2"]
        for address in (first.getsockname(), second.getsockname()):
            assert repr(address) in error.reason


def test_socket_close_does_not_repeat_a_failure_it_already_raised() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        sock = rudp.socket(peer_timeout=SILENCE)
        sock.sendto(b"lost", silent.getsockname())
        with pytest.raises(rudp.PeerUnreachable):
            sock.flush(WAIT)
        sock.close()  # already reported: the socket's rule is once per failure


# --- an explicit linger ---------------------------------------------------------------------


def test_linger_runs_out_resets_and_lists_exactly_what_was_not_delivered() -> None:
    """The reader stops reading, so the window closes; linger runs out; nothing is silent.

    What the server read and what the error lists together are everything
    sent, in order; after the error nothing more arrives (the RESET ends it).
    """
    sent = [b"%04d" % i + bytes(1000) for i in range(200)]
    small = {"receive_window": 16, "recv_buffer": 16_000}
    with rudp.listen(("127.0.0.1", 0), **small) as listener:
        client = rudp.connect(listener.address, linger=0.3)
        server = listener.accept(timeout=WAIT)
        for message in sent:
            client.send(message)
        started = time.monotonic()
        with pytest.raises(rudp.LingerExpired) as info:
            client.close()
        assert time.monotonic() - started < WAIT / 2  # bounded by linger, not by give-up
        error = info.value
        assert isinstance(error, rudp.PeerUnreachable) and error.linger == 0.3
        undelivered = list(error.undelivered)
        assert undelivered and sent[-len(undelivered) :] == undelivered
        received: list[bytes] = []
        with pytest.raises(rudp.ConnectionReset):  # the peer is told
            while True:
                received.append(server.recv(timeout=WAIT))
        assert received == sent[: len(received)]
        # Conservative: a message whose ack was still in flight may be in both.
        assert len(received) + len(undelivered) >= len(sent)
        server.close()


def test_linger_zero_with_everything_acknowledged_sends_the_fin_and_returns() -> None:
    with rudp.listen(("127.0.0.1", 0), peer_timeout=SILENCE) as listener:
        client = rudp.connect(listener.address, linger=0)
        server = listener.accept(timeout=WAIT)
        client.send(b"all acknowledged")
        client.flush(timeout=WAIT)
        client.close()  # only the FIN is in flight: no error, no wait
        assert list(server) == [b"all acknowledged"]  # a clean end, not a reset
        server.close()  # its FIN is never acknowledged, but nothing was lost


def test_asyncio_close_raises_at_give_up_or_when_linger_runs_out(
    proxies: list[LossyProxy],
) -> None:
    async def main() -> None:
        async def sink(conn: rudp.aio.Connection) -> None:
            async for _ in conn:
                pass

        async with await rudp.aio.serve(sink, "127.0.0.1", 0, peer_timeout=SILENCE) as server:
            for linger, expected in ((None, rudp.PeerUnreachable), (0.3, rudp.LingerExpired)):
                path = proxy(proxies, server.address)
                conn = await rudp.aio.connect(path.address, peer_timeout=SILENCE, linger=linger)
                await conn.send(b"ok")
                await conn.flush()
                address = path.address
                path.stop()
                await conn.send(b"lost")
                with pytest.raises(expected) as info:
                    await conn.close()
                assert type(info.value) is expected
                assert info.value.undelivered == (b"lost",)
                assert info.value.address == address
                await conn.close()  # once

    asyncio.run(asyncio.wait_for(main(), WAIT))


# --- with blocks keep their exception ----------------------------------------------------


def test_with_block_exception_is_not_masked_by_the_close_error(
    proxies: list[LossyProxy], caplog: pytest.LogCaptureFixture
) -> None:
    with rudp.listen(("127.0.0.1", 0), peer_timeout=SILENCE) as listener:
        path = proxy(proxies, listener.address)
        server: list[rudp.Connection] = []
        with (
            pytest.raises(ValueError, match="application bug") as info,
            rudp.connect(path.address, linger=0.2) as conn,
        ):
            server.append(listener.accept(timeout=WAIT))
            path.stop()
            conn.send(b"never acknowledged")
            raise ValueError("application bug")
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert "LingerExpired" in notes and "1 message(s) undelivered" in notes
        assert any("LingerExpired" in record.getMessage() for record in caplog.records)
        server[0].close()


def test_socket_with_block_exception_is_not_masked() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(KeyError) as info, rudp.socket(linger=0.1) as sock:
            sock.sendto(b"lost", silent.getsockname())
            raise KeyError("application bug")
        assert "LingerExpired" in "\n".join(info.value.__notes__)


def test_async_with_block_exception_is_not_masked(proxies: list[LossyProxy]) -> None:
    async def main() -> None:
        async def sink(conn: rudp.aio.Connection) -> None:
            async for _ in conn:
                pass

        async with await rudp.aio.serve(sink, "127.0.0.1", 0, peer_timeout=SILENCE) as server:
            path = proxy(proxies, server.address)
            conn = await rudp.aio.connect(path.address, linger=0.2, peer_timeout=SILENCE)
            with pytest.raises(RuntimeError) as info:
                async with conn:
                    path.stop()
                    await conn.send(b"lost")
                    raise RuntimeError("application bug")
            assert "LingerExpired" in "\n".join(info.value.__notes__)

    asyncio.run(asyncio.wait_for(main(), WAIT))


# --- at exit ----------------------------------------------------------------------------------


AT_EXIT = textwrap.dedent(
    """
    import socket
    import rudp
    from rudp.testing.proxy import LossyProxy
    from rudp.testing import LinkProfile

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    sock = rudp.socket(peer_timeout=0.5)
    sock.sendto(b"one", silent.getsockname())
    sock.sendto(b"two", silent.getsockname())

    listener = rudp.listen(("127.0.0.1", 0), peer_timeout=0.5)
    path = LossyProxy(listener.address, LinkProfile(), seed=1).start()
    conn = rudp.connect(path.address, peer_timeout=0.5)
    accepted = listener.accept(timeout=10)
    conn.send(b"delivered")
    conn.flush(timeout=10)
    path_address = path.address
    path.stop()
    conn.send(b"lost")

    print("silent", silent.getsockname(), "path", path_address, flush=True)
    # exit without closing anything
    """
)


def test_exit_with_unacknowledged_messages_names_them_on_stderr() -> None:
    proc = Proc([sys.executable, "-c", AT_EXIT])
    assert proc.finish(WAIT) == 0, proc.text
    err = "".join(proc.err)
    lines = [line for line in err.splitlines() if line.startswith("rudp: warning:")]
    socket_lines = [line for line in lines if "rudp.socket on" in line]
    conn_lines = [line for line in lines if "rudp.Connection on" in line]
    assert len(socket_lines) == 1 and len(conn_lines) == 1, err
    assert "closed at exit with 2 message(s) never acknowledged: 2 to (" in socket_lines[0]
    assert "closed at exit with 1 message(s) never acknowledged: 1 to (" in conn_lines[0]
    assert "peer unreachable" in socket_lines[0] and "peer unreachable" in conn_lines[0]
    assert len(lines) == 2, err  # b"delivered" was acknowledged: not named
