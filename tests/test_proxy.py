"""Tests of the lossy UDP proxy (rudp/testing/proxy.py) on loopback sockets.

The proxy is driven with ``poll()`` from the test thread and, where time
matters, a fake clock: loopback ``sendto`` puts the datagram in the proxy's
receive buffer before it returns, so each test knows exactly what the proxy has
seen and needs neither sleeps nor timing assertions.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from rudp.testing.link import LinkProfile
from rudp.testing.proxy import LossyProxy, parse_address, parse_duration, parse_rate

N = 200


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    """Everything waiting in a non-blocking socket (bounded)."""
    out = []
    for _ in range(10 * N):
        try:
            out.append(sock.recvfrom(65535))
        except BlockingIOError:
            break
    return out


def pump(proxy: LossyProxy, done: Callable[[], bool], rounds: int = 1000) -> None:
    """Poll the proxy until ``done()`` (bounded in rounds; each round waits at most 10 ms)."""
    for _ in range(rounds):
        if done():
            return
        proxy.poll(0.01)
    raise AssertionError("proxy did not reach the expected state")


def make_proxy(server: socket.socket, profile: LinkProfile, **kwargs: object) -> LossyProxy:
    return LossyProxy(server.getsockname(), profile, **kwargs)  # type: ignore[arg-type]


def send_numbered(client: socket.socket, proxy: LossyProxy, count: int = N) -> None:
    for i in range(count):
        client.sendto(i.to_bytes(4, "big") + b"payload", proxy.address)


def test_perfect_link_forwards_everything_in_order(
    server: socket.socket, client: socket.socket
) -> None:
    with make_proxy(server, LinkProfile()) as proxy:
        pass  # start/stop as a context manager must work on its own
    proxy = make_proxy(server, LinkProfile())
    try:
        send_numbered(client, proxy)
        pump(proxy, lambda: proxy.stats.to_server.forwarded == N)
        got = drain(server)
        assert [int.from_bytes(d[:4], "big") for d, _ in got] == list(range(N))
        stats = proxy.stats
        assert stats.to_server.received == N
        assert stats.to_server.link["dropped_loss"] == 0
        assert stats.to_server.link["delivered"] == N
        assert stats.clients_seen == 1
    finally:
        proxy.close()


def test_total_loss_forwards_nothing_and_counts_it(
    server: socket.socket, client: socket.socket
) -> None:
    proxy = make_proxy(server, LinkProfile(loss=1.0), seed=1)
    try:
        send_numbered(client, proxy)
        pump(proxy, lambda: proxy.stats.to_server.received == N)
        assert drain(server) == []
        stats = proxy.stats
        assert stats.to_server.forwarded == 0
        assert stats.to_server.link["dropped_loss"] == N
    finally:
        proxy.close()


def delivered_indexes(server: socket.socket, client: socket.socket, seed: int) -> list[int]:
    proxy = make_proxy(server, LinkProfile(loss=0.5), seed=seed)
    try:
        send_numbered(client, proxy)
        pump(proxy, lambda: proxy.stats.to_server.received == N)
        stats = proxy.stats
        got = [int.from_bytes(d[:4], "big") for d, _ in drain(server)]
        assert len(got) == stats.to_server.forwarded == N - stats.to_server.link["dropped_loss"]
        return got
    finally:
        proxy.close()


def test_seed_makes_loss_decisions_reproducible(
    server: socket.socket, client: socket.socket
) -> None:
    first = delivered_indexes(server, client, seed=7)
    again = delivered_indexes(server, client, seed=7)
    other = delivered_indexes(server, client, seed=8)
    assert 0 < len(first) < N  # some lost, some not
    assert first == again
    assert first != other


def test_each_client_gets_its_own_upstream_peer_and_replies_route_back(
    server: socket.socket,
) -> None:
    proxy = make_proxy(server, LinkProfile())
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for i, sock in enumerate(clients):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            sock.sendto(b"from %d" % i, proxy.address)
        pump(proxy, lambda: proxy.stats.to_server.forwarded == 3)
        requests = drain(server)
        peers = {addr for _, addr in requests}
        assert len(peers) == 3  # the server sees three distinct peers
        assert all(addr != sock.getsockname() for addr in peers for sock in clients)
        for data, addr in requests:
            server.sendto(b"reply to " + data, addr)
        pump(proxy, lambda: proxy.stats.to_client.forwarded == 3)
        for i, sock in enumerate(clients):
            [(data, addr)] = drain(sock)
            assert data == b"reply to from %d" % i
            assert addr == proxy.address
        assert proxy.stats.clients_active == 3
    finally:
        for sock in clients:
            sock.close()
        proxy.close()


def test_duplication_and_corruption_are_applied(
    server: socket.socket, client: socket.socket
) -> None:
    proxy = make_proxy(server, LinkProfile(duplicate=1.0, corrupt=1.0), seed=3)
    try:
        original = bytes(64)
        for _ in range(50):
            client.sendto(original, proxy.address)
        pump(proxy, lambda: proxy.stats.to_server.forwarded == 100)
        got = [d for d, _ in drain(server)]
        assert len(got) == 100
        assert original not in got  # every datagram has flipped bits
        assert all(len(d) == len(original) for d in got)
        link = proxy.stats.to_server.link
        assert link["duplicated"] == 50 and link["corrupted"] == 50
    finally:
        proxy.close()


def test_delay_holds_datagrams_until_their_arrival_time(
    server: socket.socket, client: socket.socket
) -> None:
    clock = FakeClock()
    proxy = make_proxy(server, LinkProfile(delay=5.0), clock=clock)
    try:
        send_numbered(client, proxy, 10)
        pump(proxy, lambda: proxy.stats.to_server.received == 10)
        proxy.poll(0)
        assert drain(server) == []
        clock.now += 5.0
        proxy.poll(0)
        assert len(drain(server)) == 10
    finally:
        proxy.close()


def test_rate_limit_and_queue_limit_drop_the_excess(
    server: socket.socket, client: socket.socket
) -> None:
    clock = FakeClock()
    # 8 kbit/s: one 11-byte datagram every 11 ms; the time never moves, so the
    # queue of 5 fills and the rest is tail-dropped.
    proxy = make_proxy(server, LinkProfile(rate_bps=8000, queue_limit=5), clock=clock)
    try:
        send_numbered(client, proxy, 20)
        pump(proxy, lambda: proxy.stats.to_server.received == 20)
        assert proxy.stats.to_server.link["dropped_queue"] == 15
        clock.now += 10.0
        proxy.poll(0)
        assert len(drain(server)) == 5
    finally:
        proxy.close()


def test_client_table_is_bounded_and_idle_mappings_expire(server: socket.socket) -> None:
    clock = FakeClock()
    proxy = make_proxy(server, LinkProfile(), max_clients=1, idle_timeout=10.0, clock=clock)
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.sendto(b"a", proxy.address)
        pump(proxy, lambda: proxy.stats.to_server.forwarded == 1)
        b.sendto(b"b", proxy.address)
        pump(proxy, lambda: proxy.stats.clients_rejected == 1)
        assert [d for d, _ in drain(server)] == [b"a"]
        clock.now += 11.0  # a's mapping is now idle for longer than idle_timeout
        b.sendto(b"b", proxy.address)
        pump(proxy, lambda: proxy.stats.to_server.forwarded == 2)
        stats = proxy.stats
        assert stats.clients_expired == 1
        assert stats.clients_active == 1
        assert stats.clients_seen == 2
        assert [d for d, _ in drain(server)] == [b"b"]
        # Counters of the expired mapping are kept.
        assert stats.to_server.link["delivered"] == 2
    finally:
        a.close()
        b.close()
        proxy.close()


def test_threaded_start_stop_relays(server: socket.socket, client: socket.socket) -> None:
    server.setblocking(True)
    server.settimeout(10.0)
    with LossyProxy(server.getsockname(), LinkProfile(), seed=0) as proxy:
        client.sendto(b"ping", proxy.address)
        data, _ = server.recvfrom(100)
        assert data == b"ping"
    assert "client->server: 1 in" in proxy.stats.format()


def test_stats_format_mentions_link_counters(server: socket.socket, client: socket.socket) -> None:
    proxy = make_proxy(server, LinkProfile(loss=1.0))
    try:
        send_numbered(client, proxy, 3)
        pump(proxy, lambda: proxy.stats.to_server.received == 3)
        text = proxy.stats.format()
        assert "dropped_loss 3" in text
        assert "3 in" in text
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("1.5", 1.5), ("500us", 0.0005), ("2m", 120.0), (" 0 ", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("50mbit", 50e6),
        ("10kbit", 10e3),
        ("1gbit", 1e9),
        ("1200", 1200.0),
        ("1.5Mbit", 1.5e6),
        ("10kbps", 80e3),  # tc: bps is bytes per second
    ],
)
def test_parse_rate(text: str, bps: float) -> None:
    assert parse_rate(text) == pytest.approx(bps)


@pytest.mark.parametrize("text", ["fast", "10 parsecs", "", "-1ms"])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(ValueError):
        parse_rate(text)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    assert parse_address("localhost:0") == ("localhost", 0)
    for bad in ("9000", "host:port", "::1:9000", "[::1]9000", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)
