"""Connection migration on real loopback sockets: a transfer through a proxy that
rebinds its upstream port mid-transfer (a NAT rebinding, specs/protocol.md section
6.7) completes exactly, and the server followed its peer once, after validating it.

Port 0 everywhere, bounded waits, no sleeps.
"""

from __future__ import annotations

import hashlib
import threading

import rudp
from rudp.testing.link import LinkProfile
from rudp.testing.proxy import LossyProxy

MESSAGES = 600
SIZE = 4000


def _payloads() -> list[bytes]:
    return [hashlib.sha256(b"%d" % i).digest() * (SIZE // 32) for i in range(MESSAGES)]


def test_transfer_survives_a_nat_rebinding() -> None:
    payloads = _payloads()
    received: list[bytes] = []
    with rudp.listen(("127.0.0.1", 0), peer_timeout=10.0) as listener:
        proxy = LossyProxy(listener.address, LinkProfile(), rebind_after=200, seed=1)
        with proxy:

            def serve() -> None:
                conn = listener.accept(timeout=10)
                with conn:
                    received.extend(conn)

            server = threading.Thread(target=serve)
            server.start()
            with rudp.connect(proxy.address, peer_timeout=10.0, timeout=10) as conn:
                for payload in payloads:
                    conn.send(payload)
                conn.flush(timeout=30)
            server.join(30)
            assert not server.is_alive()
            assert proxy.stats.rebinds == 1
        stats = listener._engine.endpoint.stats
    assert (
        hashlib.sha256(b"".join(received)).digest() == hashlib.sha256(b"".join(payloads)).digest()
    )
    assert received == payloads
    assert stats.migrations == 1 and stats.nat_rebindings == 1
    assert stats.paths_validated == 1 and stats.path_validations_failed == 0


def test_rebind_on_call_and_the_cli_option() -> None:
    from rudp.apps.cli import build_parser

    args = build_parser().parse_args(
        ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--rebind-after", "5"]
    )
    assert args.rebind_after == 5
    payloads = _payloads()[:100]
    with rudp.listen(("127.0.0.1", 0), peer_timeout=10.0) as listener:
        with LossyProxy(listener.address, LinkProfile()) as proxy:
            with rudp.connect(proxy.address, peer_timeout=10.0, timeout=10) as conn:
                server = listener.accept(timeout=10)
                for payload in payloads[:50]:
                    conn.send(payload)
                conn.flush(timeout=10)
                proxy.rebind()
                for payload in payloads[50:]:
                    conn.send(payload)
                conn.flush(timeout=10)
                got = [server.recv(timeout=10) for _ in payloads]
                server.close()
            assert proxy.stats.rebinds == 1
        stats = listener._engine.endpoint.stats
    assert got == payloads
    assert stats.migrations == 1 and stats.paths_validated == 1
