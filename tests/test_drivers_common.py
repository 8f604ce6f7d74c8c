"""rudp.drivers._common: one options parser, one event fold.

Pure unit tests (no sockets), except the last ones, which check that every
public face really runs on the one set of defaults.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import rudp
import rudp.aio
from rudp.config import Config
from rudp.core.endpoint import Endpoint
from rudp.drivers import DriverOptions, split_options
from rudp.drivers._common import ConnectionLedger, default_local_address, drain, read_size
from rudp.errors import ConnectionAborted, PeerUnreachable
from rudp.events import (
    Closed,
    Connected,
    Failed,
    FailureKind,
    MessageAcknowledged,
    MessageReceived,
    PeerClosed,
)

# --- options ------------------------------------------------------------------------


def test_split_options_sorts_names_into_config_and_driver_options() -> None:
    config, options = split_options({"peer_timeout": 3.0, "linger": 1.0, "recv_batch": 64})
    assert config == Config(peer_timeout=3.0)
    assert options == DriverOptions(linger=1.0, recv_batch=64)
    assert split_options({}) == (Config(), DriverOptions())


def test_split_options_takes_a_whole_config_and_overrides_its_fields() -> None:
    base = Config(peer_timeout=3.0, initial_window=4)
    config, _ = split_options({"config": base, "initial_window": 8})
    assert config == Config(peer_timeout=3.0, initial_window=8)
    with pytest.raises(TypeError, match="Config"):
        split_options({"config": {"peer_timeout": 3.0}})


def test_split_options_rejects_unknown_and_refused_names() -> None:
    with pytest.raises(TypeError, match=r"unknown rudp option.*bogus"):
        split_options({"bogus": 1, "linger": 1.0})
    with pytest.raises(TypeError, match="not supported here: timeout"):
        split_options({"timeout": 1.0}, reject=("timeout", "local_addr"))
    assert split_options({"linger": 0.0}, reject=("timeout",))[1].linger == 0.0
    assert split_options({"linger": None})[1].linger is None  # until acknowledged or given up


@pytest.mark.parametrize(
    "bad",
    [
        {"send_buffer": 0},
        {"recv_buffer": 0},
        {"linger": -1.0},
        {"timeout": 0.0},
        {"backlog": 0},
        {"recv_batch": 0},
        {"socket_buffer": 0},
    ],
    ids=lambda d: next(iter(d)),
)
def test_driver_options_are_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        split_options(bad)


def test_recv_buffer_defaults_to_a_quarter_of_the_receive_buffer() -> None:
    config = Config(receive_buffer=400_000, max_message_size=1000)
    assert DriverOptions().recv_buffer_for(config) == 100_000
    assert DriverOptions(recv_buffer=5).recv_buffer_for(config) == 5


def test_default_local_address_follows_the_peer() -> None:
    import socket

    assert default_local_address(socket.AF_INET, ("127.0.0.1", 9)) == ("127.0.0.1", 0)
    assert default_local_address(socket.AF_INET, ("192.0.2.1", 9)) == ("0.0.0.0", 0)
    assert default_local_address(socket.AF_INET6, ("::1", 9, 0, 0)) == ("::1", 0)
    assert default_local_address(socket.AF_INET, ("example.invalid", 9)) == ("0.0.0.0", 0)


# --- the event fold -----------------------------------------------------------------------


def test_ledger_folds_messages_acks_and_a_clean_end() -> None:
    led = ConnectionLedger()
    for i, payload in enumerate((b"a", b"bb", b"ccc")):
        led.track(i, payload)
    for event in (
        Connected(),
        MessageReceived(b"x"),
        MessageReceived(b"yz"),
        MessageAcknowledged(1),
    ):
        led.apply(event)
    assert led.connected and not led.terminated
    assert led.unacknowledged() == (b"ccc",)  # acks are cumulative, in send order
    assert (len(led.inbox), led.inbox_bytes) == (2, 3)
    assert led.full(3, 100) and led.full(100, 2) and not led.full(4, 3)
    assert led.pop() == b"x" and led.inbox_bytes == 2
    led.apply(PeerClosed())
    led.apply(Closed())
    assert led.peer_closed and led.terminated and led.failed is None and not led.lost
    assert led.unacknowledged() == () and list(led.inbox) == [b"yz"]


def test_ledger_failure_hands_back_the_undelivered_payloads_in_order() -> None:
    led = ConnectionLedger()
    for i in range(4):
        led.track(i, b"m%d" % i)
    led.apply(MessageAcknowledged(0))
    led.apply(Failed("peer unreachable: silence", (1, 2, 3), FailureKind.UNREACHABLE))
    assert led.terminated and led.lost
    assert led.undelivered == led.unacknowledged() == (b"m1", b"m2", b"m3")
    error = led.error(address=("h", 1))
    assert type(error) is PeerUnreachable and error.undelivered == (b"m1", b"m2", b"m3")
    assert error.address == ("h", 1) and led.error() is not error
    # the first terminal event wins
    led.apply(Failed("later", (), FailureKind.ABORTED))
    led.apply(Closed())
    assert led.failed is not None and led.failed.kind is FailureKind.UNREACHABLE


def test_ledger_discard_drops_unread_and_later_messages_but_still_folds_the_rest() -> None:
    """After close() nobody reads: the inbox must not fill (and pause the association)."""
    led = ConnectionLedger()
    led.track(0, b"mine")
    led.apply(MessageReceived(b"unread"))
    led.discard()
    assert (list(led.inbox), led.inbox_bytes) == ([], 0)
    led.apply(MessageReceived(b"later"))
    led.apply(MessageAcknowledged(0))
    assert not led.inbox and not led.full(1, 1) and led.unacknowledged() == ()
    led.apply(PeerClosed())
    assert led.peer_closed


def test_ledger_fail_without_an_event_lists_what_was_outstanding() -> None:
    led = ConnectionLedger()
    led.track(7, b"queued")
    led.fail("socket closed", FailureKind.ABORTED)
    assert led.undelivered == (b"queued",)
    assert type(led.error()) is ConnectionAborted
    clean = ConnectionLedger()
    clean.apply(Closed())
    clean.fail("socket closed", FailureKind.ABORTED)  # already over: no failure
    assert clean.failed is None


# --- one set of defaults for every face ----------------------------------------------------


def test_every_face_runs_on_the_same_defaults() -> None:
    with rudp.socket() as sock:
        assert sock._engine.options == DriverOptions()
        # linger None: close() waits until acknowledged or given up, not a fixed time
        assert (sock.linger, sock.send_buffer) == (None, 4 * 1024 * 1024)
    with rudp.listen(("127.0.0.1", 0)) as listener:
        assert listener._engine.options == DriverOptions()
        with rudp.connect(listener.address) as client, listener.accept(timeout=10) as server:
            assert client._engine.options == DriverOptions()
            assert client.linger == server.linger == DriverOptions().linger

    async def main() -> None:
        async with await rudp.aio.serve(_idle, "127.0.0.1", 0) as server:
            assert server._protocol is not None
            assert server._protocol.options == DriverOptions()

    asyncio.run(asyncio.wait_for(main(), 30))


async def _idle(conn: rudp.aio.Connection) -> None:
    await conn.close()


def test_socket_and_listener_refuse_client_only_options() -> None:
    with pytest.raises(TypeError, match="timeout"):
        rudp.socket(timeout=1.0)
    with pytest.raises(TypeError, match="local_addr"):
        rudp.listen(("127.0.0.1", 0), local_addr=("127.0.0.1", 0))


def test_drain_reads_at_most_one_byte_above_the_largest_valid_datagram() -> None:
    """Section 17.5: a hostile 60 KB datagram costs read_size bytes, and fails the checks."""
    config = Config()
    size = read_size(config)
    assert size == config.max_datagram_size + 1
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        sender.sendto(b"x" * 60_000, receiver.getsockname())
        sender.sendto(b"y" * 100, receiver.getsockname())
        receiver.settimeout(5)
        # Loopback queues a datagram within sendto, so both are there: peek to be sure.
        first = receiver.recvfrom(size, socket.MSG_PEEK)
        assert len(first[0]) == size
        receiver.setblocking(False)
        batch = drain(receiver, 10, [], None, size)
    assert [len(data) for data, _ in batch] == [size, 100]
    endpoint = Endpoint(config, accepting=True)
    endpoint.receive_datagrams(batch, 0.0)
    assert endpoint.stats.bad_datagrams == 2 and len(endpoint) == 0
