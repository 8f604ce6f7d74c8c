"""The side that closed second, when its peer left TIME_WAIT without its ack getting through.

specs/protocol.md 6.3 and 9.5, ``Input.FIN_GIVE_UP``: nobody will ever acknowledge our FIN,
so the silence budget ends the wait; with every message acknowledged that is ``Closed``,
otherwise ``Failed`` listing the messages whose ack never came.
"""

from __future__ import annotations

from rudp.config import Config
from rudp.core.state import ConnectionState
from rudp.events import Closed, Failed
from rudp.testing import ConnectionPair

CONFIG = Config(max_datagram_size=1200, peer_timeout=30.0)


def _lose_last_ack(message: bytes | None) -> tuple[ConnectionPair, float]:
    """Server closes; its ack of the client's FIN is lost; the client's FIN
    retransmissions are lost until the server's linger ran out.  Returns the pair and
    the time the client last heard from the server."""
    blocked: set[str] = set()
    pair = ConnectionPair(CONFIG, drop=lambda sender, datagram: sender in blocked)
    pair.handshake()
    if message is not None:
        pair.client.send(message)
    pair.server.close(pair.now)
    pair.deliver("server")  # the server's FIN
    last_heard = pair.now
    blocked.add("server")  # the server's acks are lost from now on
    pair.deliver("client")  # DATA, then the client's FIN
    assert pair.server.state is ConnectionState.TIME_WAIT
    blocked.add("client")
    pair.advance(CONFIG.close_linger + 0.01)
    assert pair.server.state is ConnectionState.CLOSED
    assert pair.client.state is ConnectionState.PEER_CLOSED
    blocked.clear()  # the network heals, but the server is gone
    return pair, last_heard


def test_fin_only_unacknowledged_ends_closed_after_peer_timeout() -> None:
    pair, last_heard = _lose_last_ack(None)
    give_up = last_heard + CONFIG.peer_timeout
    pair.advance(give_up - 0.5 - pair.now)
    assert pair.client.state is ConnectionState.PEER_CLOSED  # still retransmitting its FIN
    pair.advance(1.0)
    assert pair.client.state is ConnectionState.CLOSED
    assert pair.client.get_timer() is None
    assert [e for e in pair.events["client"] if isinstance(e, (Closed, Failed))] == [Closed()]


def test_unacknowledged_message_ends_failed_and_listed() -> None:
    pair, _ = _lose_last_ack(b"x" * 3000)
    received = pair.received("server")
    assert len(received) == 1  # the message did arrive; only its ack was lost
    pair.advance(CONFIG.peer_timeout + 1.0)
    ends = [e for e in pair.events["client"] if isinstance(e, (Closed, Failed))]
    assert len(ends) == 1 and isinstance(ends[0], Failed)
    assert ends[0].reason.startswith("peer unreachable")
    assert ends[0].undelivered == (0,)
