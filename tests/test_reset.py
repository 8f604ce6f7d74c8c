"""Prompt resets end to end: the full close, a close with unread messages, a give-up.

The issue these answer: a side that closed while its peer still sent, or gave up,
left the peer waiting ``peer_timeout`` (30 s) to fail with PeerUnreachable.  Now the
peer fails with a reset within about one round trip, naming exactly the messages that
were not acknowledged (specs/protocol.md sections 6.3 and 6.4).  The simulator runs
on virtual time, so the bounds below are exact and the tests take milliseconds; the
last test checks the same through real sockets and the connection API.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

import rudp
from rudp.config import Config
from rudp.events import Closed, Event, Failed, FailureKind, MessageReceived
from rudp.testing import LinkProfile, Simulator, make_pair

ONE_WAY = 0.025
RTT = 2 * ONE_WAY
WAIT = 5.0
"""Wall-clock bound of the real-socket test: a failure in it never hangs the suite."""


def _simulate(config: Config, *, seed: int = 3) -> tuple[Simulator, dict[str, float]]:
    """An established client (``a``) and server (``b``), and when each side's end came."""
    client, server = make_pair(config, seed=seed)
    ended: dict[str, float] = {}

    def on_event(side: str, event: Event) -> None:
        if isinstance(event, Closed | Failed):
            ended.setdefault(side, sim.now)

    sim = Simulator(
        client,
        server,
        profile_ab=LinkProfile.perfect(ONE_WAY),
        profile_ba=LinkProfile.perfect(ONE_WAY),
        seed=seed,
        on_event=on_event,
    )
    client.connect(sim.now)
    assert sim.run_until(lambda: server.is_established, max_time=5)
    return sim, ended


def _received(sim: Simulator, side: str) -> int:
    return sum(isinstance(e, MessageReceived) for e in sim.events[side])


def _failure(sim: Simulator, side: str) -> Failed:
    (failed,) = [e for e in sim.events[side] if isinstance(e, Failed)]
    return failed


def test_full_close_while_the_peer_sends_resets_it_within_a_round_trip() -> None:
    sim, ended = _simulate(Config(keepalive_interval=None))
    client, server = sim.a, sim.b
    total = 400
    for i in range(total):
        server.send(i.to_bytes(4, "big") * 250)  # one 1000-byte fragment each
    assert sim.run_until(lambda: _received(sim, "a") >= 20, max_time=10)
    closed_at = sim.now
    client.close(sim.now, reading=False)  # the application reads no more
    delivered = _received(sim, "a")
    assert sim.run_until(lambda: "b" in ended, max_time=60)
    failed = _failure(sim, "b")
    assert failed.kind is FailureKind.RESET_BY_PEER
    assert ended["b"] - closed_at <= 3 * RTT  # not peer_timeout (30 s)
    # Exactly the messages the client never delivered, none it did.
    assert _received(sim, "a") == delivered
    assert failed.undelivered == tuple(range(delivered, total))
    # The closing side lost nothing of its own: Closed, not Failed.
    assert sim.run_until(lambda: client.is_closed, max_time=5)
    assert sim.events["a"][-1] == Closed()
    assert not any(isinstance(e, Failed) for e in sim.events["a"])


def test_close_with_unread_messages_resets_the_peer_promptly() -> None:
    sim, ended = _simulate(Config(keepalive_interval=None))
    client, server = sim.a, sim.b
    for i in range(5):
        server.send(b"m%d" % i)
    assert sim.run_until(lambda: server.stats.messages_acked == 5, max_time=5)
    closed_at = sim.now
    # A driver's close(): the application left the five messages in its inbox unread.
    client.close(sim.now, reading=False, left_unread=True)
    assert sim.run_until(lambda: "b" in ended, max_time=60)
    failed = _failure(sim, "b")
    assert failed.kind is FailureKind.RESET_BY_PEER and failed.undelivered == ()
    assert ended["b"] - closed_at <= RTT  # the RESET left at once
    assert sim.events["a"][-1] == Closed()


def test_give_up_on_a_one_way_path_resets_the_peer() -> None:
    config = Config(keepalive_interval=None, max_retransmits=3, peer_timeout=30.0)
    sim, ended = _simulate(config)
    client = sim.a
    # From now on nothing the server sends reaches the client; the other way works.
    sim.link_ba.profile = LinkProfile(delay=ONE_WAY, blackouts=((sim.now, math.inf),))
    client.send(b"never acknowledged, as far as the client can tell")
    assert sim.run_until(lambda: "a" in ended and "b" in ended, max_time=60)
    gave_up = _failure(sim, "a")
    assert gave_up.kind is FailureKind.UNREACHABLE
    reset = _failure(sim, "b")
    assert reset.kind is FailureKind.RESET_BY_PEER
    # The server learns one one-way delay after the client gave up, not 30 s later.
    assert ended["b"] - ended["a"] <= ONE_WAY + 1e-9
    assert ended["b"] < config.peer_timeout


def test_full_close_resets_a_sending_client_through_real_sockets() -> None:
    """Through the connection API on loopback: the sending client gets ConnectionReset."""
    errors: list[BaseException] = []
    sent: list[bytes] = []
    with rudp.listen(("127.0.0.1", 0)) as listener:
        client = rudp.connect(listener.address, timeout=WAIT, linger=0)
        server = listener.accept(timeout=WAIT)
        stop_at = time.monotonic() + WAIT

        def send_next() -> None:
            payload = len(sent).to_bytes(4, "big") * 250
            client.send(payload, timeout=WAIT)
            sent.append(payload)

        def keep_sending() -> None:
            try:
                with contextlib.suppress(rudp.ConnectionClosed):  # the server's FIN came first
                    while time.monotonic() < stop_at:
                        send_next()
                # Whether the FIN or the RESET came first, waiting for our acks ends in it.
                client.flush(timeout=WAIT)
            except rudp.ConnectionFailed as exc:
                errors.append(exc)

        for _ in range(20):  # in flight, queued or unread when the server closes
            send_next()
        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            assert server.recv(timeout=WAIT) == sent[0]  # then the server is done reading
            closed_at = time.monotonic()
            server.close()  # a full close, while the client's messages keep arriving
            sender.join(WAIT)
            reset_after = time.monotonic() - closed_at
            assert not sender.is_alive()
        finally:
            stop_at = 0.0
            sender.join(WAIT)
            with contextlib.suppress(rudp.ConnectionFailed):  # it raises the reset again
                client.close()
    assert len(errors) == 1 and isinstance(errors[0], rudp.ConnectionReset), errors
    assert reset_after < 3.0
    # What it names is what the server never acknowledged: a suffix of what was sent, never
    # the message it read (those it acknowledged but left unread are lost with no name).
    undelivered = errors[0].undelivered
    assert len(undelivered) < len(sent)
    assert tuple(sent[len(sent) - len(undelivered) :]) == undelivered
