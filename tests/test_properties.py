"""Property tests: the protocol core is correct over any simulated network.

Each example runs a whole connection (handshake, a two-way exchange, close)
in the virtual-time simulator.  The simulator seed is drawn by hypothesis, so
a failure prints it and ``transfer(..., seed=<seed>)`` replays it exactly.

Why ``peer_timeout`` is large here: with 50% loss each way a round trip
succeeds one time in four, and a burst model can silence a path for many
RTOs.  With the default 30 s budget and RTOs capped at 2 s, a run of ~15
failed probes (0.75**15, about 1%) would make the sender give up, which is
correct behaviour but not what these tests are about.  Virtual time is free,
so the correctness properties use a budget that bad luck cannot exhaust
(0.75**300 is about 1e-38), and the give-up behaviour has its own tests below.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rudp.config import Config
from rudp.core import wire
from rudp.core.connection import SansIOConnection
from rudp.core.state import ConnectionState
from rudp.events import Connected, Failed
from rudp.testing import GilbertElliott, LinkProfile, Simulator, make_pair, transfer

SEEDS = st.integers(0, 2**64 - 1)

GENEROUS = Config(peer_timeout=3600.0)
"""Give-up budget that loss cannot exhaust by bad luck (see the module docstring)."""

MAX_PAYLOAD = GENEROUS.max_datagram_size - wire.OVERHEAD  # one fragment's payload


def message_of(size: int, tag: int) -> bytes:
    """A deterministic message whose content identifies it (hypothesis draws only size and tag)."""
    return random.Random(tag).randbytes(size)


def messages(max_size: int, max_count: int, max_total: int) -> st.SearchStrategy[list[bytes]]:
    """Lists of messages: empty ones, fragment-boundary sizes and arbitrary sizes."""
    sizes = st.one_of(
        st.just(0),
        st.integers(1, 64),
        st.sampled_from([MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2 * MAX_PAYLOAD]),
        st.integers(0, max_size),
    )
    one = st.builds(message_of, sizes, st.integers(0, 2**32))
    return st.lists(one, max_size=max_count).filter(lambda ms: sum(map(len, ms)) <= max_total)


probability = st.floats(0.0, 1.0)

bursts = st.builds(
    GilbertElliott,
    p_good_to_bad=st.floats(0.0, 0.2),
    p_bad_to_good=st.floats(0.2, 1.0),
    loss_in_bad=st.floats(0.5, 1.0),
    loss_in_good=st.floats(0.0, 0.1),
)

profiles = st.builds(
    LinkProfile,
    loss=st.floats(0.0, 0.5),
    burst=st.none() | bursts,
    duplicate=st.floats(0.0, 0.2),
    reorder=st.floats(0.0, 0.3),
    reorder_delay=st.floats(0.0, 0.1),
    corrupt=st.floats(0.0, 0.1),
    truncate=st.floats(0.0, 0.05),
    delay=st.floats(0.0, 0.1),
    jitter=st.floats(0.0, 0.05),
)


# --- exactly once, in order, both ways -----------------------------------------------------


@settings(max_examples=4 * settings.default.max_examples)
@given(
    messages(max_size=20_000, max_count=30, max_total=200_000),
    messages(max_size=20_000, max_count=30, max_total=200_000),
    profiles,
    profiles,
    SEEDS,
)
def test_every_message_arrives_once_in_order_both_ways(
    ab: list[bytes], ba: list[bytes], profile_ab: LinkProfile, profile_ba: LinkProfile, seed: int
) -> None:
    result = transfer(
        ab, ba, profile_ab=profile_ab, profile_ba=profile_ba, seed=seed, config=GENEROUS
    )
    result.assert_complete(ab, ba)


@settings(max_examples=max(5, settings.default.max_examples // 10))
@given(
    st.lists(st.just(1_000_000) | st.integers(100_000, 1_000_000), min_size=1, max_size=2),
    st.sampled_from([0.0, 0.1, 0.3]) | st.floats(0.0, 0.3),
    SEEDS,
)
def test_large_messages_survive_loss(sizes: list[int], loss: float, seed: int) -> None:
    # A 1 MB message is ~750 fragments: more than fits the default window, so reassembly
    # must not count against it (specs/protocol.md, messages and fragments).
    ab = [message_of(size, i) for i, size in enumerate(sizes)]
    ba = [message_of(size // 2, -i) for i, size in enumerate(sizes)]
    result = transfer(
        ab, ba, profile_ab=LinkProfile.lossy(loss, jitter=0.005), seed=seed, config=GENEROUS
    )
    result.assert_complete(ab, ba)


@given(messages(max_size=5000, max_count=20, max_total=50_000), SEEDS)
def test_an_empty_exchange_and_every_close_mode_complete(ab: list[bytes], seed: int) -> None:
    for close in ("client", "server", "both"):
        result = transfer(
            ab, [], profile_ab=LinkProfile.lossy(0.2), seed=seed, config=GENEROUS, close=close
        )
        result.assert_complete(ab, [])
        assert result.a.peer_closed or close == "client" or close == "both"


@given(
    st.integers(1, 200),
    st.integers(1, 200),
    messages(max_size=4000, max_count=40, max_total=80_000),
    st.floats(0.0, 0.3),
    SEEDS,
)
def test_sequence_numbers_wrap_around(
    before_wrap_a: int, before_wrap_b: int, ab: list[bytes], loss: float, seed: int
) -> None:
    # Each side's ISN sits just below 2**32, so the 32-bit wire sequence wraps mid-transfer
    # and the receiver must expand it (RFC 9000 appendix A.3) instead of treating it as old.
    result = transfer(
        ab,
        ab[::-1],
        profile_ab=LinkProfile.lossy(loss),
        seed=seed,
        config=GENEROUS,
        client_initial_sequence=2**32 - before_wrap_a,
        server_initial_sequence=2**32 - before_wrap_b,
    )
    result.assert_complete(ab, ab[::-1])


def _random_profile(rng: random.Random) -> LinkProfile:
    burst = None
    if rng.random() < 0.3:
        burst = GilbertElliott(rng.uniform(0, 0.2), rng.uniform(0.2, 1), rng.uniform(0.5, 1))
    return LinkProfile(
        loss=rng.uniform(0, 0.5),
        burst=burst,
        duplicate=rng.uniform(0, 0.2),
        reorder=rng.uniform(0, 0.3),
        reorder_delay=rng.uniform(0, 0.1),
        corrupt=rng.uniform(0, 0.1),
        truncate=rng.uniform(0, 0.05),
        delay=rng.uniform(0, 0.1),
        jitter=rng.uniform(0, 0.05),
    )


@pytest.mark.parametrize("seed", range(24))
def test_terrible_networks_sweep(seed: int) -> None:
    # A trio-style sweep over fixed seeds: bigger exchanges than hypothesis's examples tend to
    # be, every impairment at once, different in each direction.  The seed is in the test id.
    rng = random.Random(seed)
    sizes = [0, 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 50_000]

    def draw() -> list[bytes]:
        return [
            message_of(rng.choice(sizes + [rng.randrange(20_000)] * 5), rng.getrandbits(32))
            for _ in range(rng.randrange(60))
        ]

    ab, ba = draw(), draw()
    result = transfer(
        ab,
        ba,
        profile_ab=_random_profile(rng),
        profile_ba=_random_profile(rng),
        seed=seed,
        config=GENEROUS,
    )
    result.assert_complete(ab, ba)


@pytest.mark.parametrize("total", [1_000_000])
def test_one_megabyte_at_thirty_percent_loss(total: int) -> None:
    # The brief's headline scenario; its wall time is measured in bench/, not asserted here.
    ab = [message_of(1024, i) for i in range(total // 1024)]
    result = transfer(ab, [], profile_ab=LinkProfile.lossy(0.3), seed=2024, config=GENEROUS)
    result.assert_complete(ab, [])
    assert result.link_ab.dropped_loss > 0


# --- giving up -----------------------------------------------------------------------------


def _connected_simulator(
    config: Config, seed: int, delay: float = 0.01
) -> tuple[Simulator, SansIOConnection, SansIOConnection]:
    client, server = make_pair(config, seed=seed)
    sim = Simulator(
        client,
        server,
        profile_ab=LinkProfile.perfect(delay),
        profile_ba=LinkProfile.perfect(delay),
        seed=seed,
    )
    client.connect(sim.now)
    assert sim.run_until(
        lambda: Connected() in sim.events["a"] and Connected() in sim.events["b"], max_time=60
    )
    return sim, client, server


def _failure(sim: Simulator, side: str) -> tuple[Failed, float] | None:
    for event in sim.events[side]:
        if isinstance(event, Failed):
            return event, sim.now
    return None


@given(
    st.integers(0, 30),
    st.integers(0, 30),
    st.floats(1.0, 120.0),
    st.floats(0.0, 0.1),
    SEEDS,
)
def test_permanent_blackout_after_handshake_fails_within_budget(
    acked_before: int, more: int, peer_timeout: float, delay: float, seed: int
) -> None:
    config = Config(peer_timeout=peer_timeout)
    sim, client, _server = _connected_simulator(config, seed, delay)
    # Some messages get through and are acknowledged, then the path goes dark both ways.
    for i in range(acked_before):
        client.send(message_of(i * 100, i))
    assert sim.run_until(lambda: client.stats.messages_acked == acked_before, max_time=600)
    blackout_start = sim.now
    sim.link_ab.profile = LinkProfile.blackout(start=blackout_start, delay=delay)
    sim.link_ba.profile = LinkProfile.blackout(start=blackout_start, delay=delay)
    for i in range(more + 1):
        client.send(message_of(3000, 1000 + i))
    failed_at: list[float] = []
    sim.on_event = lambda side, e: failed_at.append(sim.now) if isinstance(e, Failed) else None
    assert sim.run_until(lambda: client.is_closed, max_time=10 * peer_timeout + 100)
    failed = [e for e in sim.events["a"] if isinstance(e, Failed)]
    assert len(failed) == 1
    assert failed[0].undelivered == tuple(range(acked_before, acked_before + more + 1))
    assert client.state is ConnectionState.FAILED
    # Give-up: nothing heard for peer_timeout while data is outstanding.  The check may run
    # at the next retransmission timeout, so allow one maximum RTO of lateness.
    elapsed = failed_at[0] - blackout_start
    # The last packet heard may predate the blackout by up to one round trip.
    assert (
        peer_timeout - 2 * delay - 0.01
        <= elapsed
        <= peer_timeout + 2 * delay + config.max_rto + 0.05
    )
    assert client.get_timer() is None
    assert client.datagrams_to_send(sim.now) == []


@given(messages(max_size=5000, max_count=10, max_total=50_000), st.floats(1.0, 60.0), SEEDS)
def test_permanent_blackout_before_handshake_fails_with_everything_undelivered(
    ab: list[bytes], peer_timeout: float, seed: int
) -> None:
    result = transfer(
        ab,
        [],
        profile_ab=LinkProfile.blackout(0.0),
        seed=seed,
        config=Config(peer_timeout=peer_timeout),
    )
    failed = result.a.failed
    assert failed is not None
    assert failed.undelivered == tuple(range(len(ab)))
    assert result.a.failed_at is not None
    assert result.a.failed_at <= peer_timeout + Config().max_rto + 0.05
    assert result.b.received == []
    assert result.link_ab.delivered == 0


def test_textbook_policy_gives_up_after_four_retransmissions() -> None:
    # Foundations of Python Network Programming's client: waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s,
    # then gives up.  A SYN into a black hole is sent five times and fails at t = 3.1 s.
    result = transfer(
        [b"lost"], [], profile_ab=LinkProfile.blackout(0.0, delay=0.0), config=Config.textbook()
    )
    assert result.a.failed is not None
    assert result.a.failed.undelivered == (0,)
    assert result.link_ab.sent == 5
    assert result.a.failed_at == pytest.approx(3.1)


def test_textbook_policy_timing_after_the_handshake() -> None:
    # Once connected over a zero-delay path the RTO sits at its 0.1 s floor, so a message sent
    # into a blackout is retried after 0.1, 0.2, 0.4, 0.8 s and abandoned 1.6 s later.
    sim, client, _server = _connected_simulator(Config.textbook(), seed=5, delay=0.0)
    assert client.stats.rto == pytest.approx(0.1)
    sim.link_ab.profile = LinkProfile.blackout(start=sim.now, delay=0.0)
    sent_at = sim.now
    before = sim.link_ab.stats.sent
    client.send(b"into the void")
    assert sim.run_until(lambda: client.is_closed, max_time=60)
    failed = [e for e in sim.events["a"] if isinstance(e, Failed)]
    assert [f.undelivered for f in failed] == [(0,)]
    assert sim.now == pytest.approx(sent_at + 3.1)
    # The original plus four retransmissions (RFC 9002's second probe, if any, is extra).
    assert sim.link_ab.stats.sent - before >= 5
    assert math.isfinite(sim.now)
