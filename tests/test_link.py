"""Tests of the sans-IO impairment model (rudp.testing.link)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudp.testing import GilbertElliott, Link, LinkProfile


def _drain(link: Link) -> list[tuple[float, bytes]]:
    """Every datagram still in flight with its arrival time, in arrival order."""
    out = []
    while (arrival := link.next_arrival()) is not None:
        out.extend((arrival, d) for d in link.deliver(arrival))
    return out


def _numbered(n: int, size: int = 100) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(n)]


probabilities = st.floats(0.0, 1.0)
small_probabilities = st.floats(0.0, 0.5)

profiles = st.builds(
    LinkProfile,
    loss=small_probabilities,
    burst=st.none()
    | st.builds(GilbertElliott, probabilities, probabilities, probabilities, probabilities),
    duplicate=small_probabilities,
    reorder=small_probabilities,
    reorder_delay=st.floats(0.0, 0.1),
    corrupt=small_probabilities,
    truncate=small_probabilities,
    delay=st.floats(0.0, 0.2),
    jitter=st.floats(0.0, 0.1),
    rate_bps=st.none() | st.floats(1e4, 1e8),
    queue_limit=st.integers(1, 64),
    blackouts=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 2.0)).map(sorted).map(tuple), max_size=2
    ).map(tuple),
)


def _run(
    profile: LinkProfile, seed: int, count: int = 200
) -> tuple[Link, list[tuple[float, bytes]]]:
    """Send ``count`` datagrams 10 ms apart and collect everything delivered."""
    link = Link(profile, random.Random(seed))
    delivered: list[tuple[float, bytes]] = []
    for i, datagram in enumerate(_numbered(count)):
        now = i * 0.01
        delivered.extend((now, d) for d in link.deliver(now))
        link.send(datagram, now)
    delivered.extend(_drain(link))
    return link, delivered


def test_perfect_link_delivers_in_order_after_the_delay() -> None:
    link = Link(LinkProfile.perfect(delay=0.05), random.Random(0))
    link.send(b"one", 1.0)
    link.send(b"two", 1.0)
    link.send(b"three", 1.01)
    assert link.next_arrival() == pytest.approx(1.05)
    assert link.deliver(1.049) == []
    assert link.deliver(1.05) == [b"one", b"two"]
    assert link.next_arrival() == pytest.approx(1.06)
    assert link.deliver(5.0) == [b"three"]
    assert link.next_arrival() is None
    assert link.stats.sent == link.stats.delivered == 3
    assert link.stats.bytes_delivered == len(b"onetwothree")


def test_perfect_link_draws_no_random_numbers() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    link = Link(LinkProfile(delay=0.01), rng)
    for datagram in _numbered(50):
        link.send(datagram, 0.0)
    assert len(_drain(link)) == 50
    assert rng.getstate() == state


@given(profiles, st.integers(0, 2**32))
def test_the_same_seed_gives_the_same_run(profile: LinkProfile, seed: int) -> None:
    link1, delivered1 = _run(profile, seed)
    link2, delivered2 = _run(profile, seed)
    assert delivered1 == delivered2
    assert link1.stats == link2.stats


@given(profiles, st.integers(0, 2**32))
def test_every_datagram_is_accounted_for(profile: LinkProfile, seed: int) -> None:
    link, delivered = _run(profile, seed)
    stats = link.stats
    assert len(link) == 0
    assert stats.delivered == len(delivered)
    # Each datagram sent is dropped once or delivered once, plus one extra delivery per duplicate.
    assert stats.sent == stats.dropped + stats.delivered - stats.duplicated
    assert all(arrival >= 0.0 for arrival, _ in delivered)
    arrivals = [arrival for arrival, _ in delivered]
    assert arrivals == sorted(arrivals)


@given(profiles, st.integers(0, 2**32))
def test_nothing_arrives_before_it_was_sent(profile: LinkProfile, seed: int) -> None:
    link = Link(profile, random.Random(seed))
    sent_at = {}
    for i, datagram in enumerate(_numbered(100)):
        sent_at[datagram] = i * 0.01
        link.send(datagram, i * 0.01)
    for arrival, datagram in _drain(link):
        if datagram in sent_at:  # corrupted/truncated copies are not recognisable
            assert arrival >= sent_at[datagram] + max(0.0, profile.delay - profile.jitter) - 1e-9


def test_independent_loss_rate_matches_the_profile() -> None:
    link, delivered = _run(LinkProfile(loss=0.3), seed=1, count=10_000)
    assert 2700 <= link.stats.dropped_loss <= 3300
    assert len(delivered) == 10_000 - link.stats.dropped_loss


def test_gilbert_elliott_loss_comes_in_bursts() -> None:
    profile = LinkProfile.bursty(mean_loss=0.2, mean_burst=5.0)
    assert profile.burst is not None
    assert profile.burst.mean_loss == pytest.approx(0.2)
    link = Link(profile, random.Random(3))
    lost = []
    for datagram in _numbered(20_000, size=4):
        before = link.stats.dropped_loss
        link.send(datagram, 0.0)
        lost.append(link.stats.dropped_loss > before)
    runs = []
    run = 0
    for was_lost in lost:
        if was_lost:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert 0.17 <= sum(lost) / len(lost) <= 0.23
    assert 4.0 <= sum(runs) / len(runs) <= 6.0  # geometric bursts, mean 1 / p_bad_to_good


def test_bursty_with_total_loss_drops_everything() -> None:
    link, delivered = _run(LinkProfile.bursty(mean_loss=1.0), seed=0, count=50)
    assert delivered == []
    assert link.stats.dropped_loss == 50


def test_blackout_window_is_half_open() -> None:
    link = Link(LinkProfile(blackouts=((1.0, 2.0),)), random.Random(0))
    for now in (0.5, 0.999, 1.0, 1.5, 1.999, 2.0, 3.0):
        link.send(str(now).encode(), now)
    assert [d for _, d in _drain(link)] == [b"0.5", b"0.999", b"2.0", b"3.0"]
    assert link.stats.dropped_blackout == 3


def test_permanent_blackout() -> None:
    link = Link(LinkProfile.blackout(start=5.0), random.Random(0))
    link.send(b"before", 4.0)
    link.send(b"after", 1e9)
    assert [d for _, d in _drain(link)] == [b"before"]
    assert link.stats.dropped_blackout == 1
    assert math.isinf(link.profile.blackouts[0][1])


def test_rate_limit_serialises_datagrams() -> None:
    # 1000-byte datagrams on an 8000 bit/s link take one second each.
    link = Link(LinkProfile(rate_bps=8000.0, delay=0.5), random.Random(0))
    for datagram in _numbered(3, size=1000):
        link.send(datagram, 0.0)
    arrivals = [arrival for arrival, _ in _drain(link)]
    assert arrivals == pytest.approx([1.5, 2.5, 3.5])


def test_full_queue_drops_the_tail() -> None:
    link = Link(LinkProfile(rate_bps=8000.0, queue_limit=4), random.Random(0))
    for datagram in _numbered(10, size=1000):
        link.send(datagram, 0.0)
    assert link.stats.dropped_queue == 6
    # After two seconds two datagrams have left the queue, so two more fit.
    for datagram in _numbered(3, size=1000):
        link.send(datagram, 2.0)
    assert link.stats.dropped_queue == 7
    assert len(_drain(link)) == 6


def test_queue_bookkeeping_stays_bounded() -> None:
    link = Link(LinkProfile(rate_bps=8e6, queue_limit=8), random.Random(0))
    for i in range(10_000):
        link.send(b"x" * 100, i * 0.001)
        link.deliver(i * 0.001)
    assert link.stats.dropped_queue == 0
    assert len(link._queue_departures) < 2100


def test_corruption_flips_one_to_three_bits() -> None:
    link = Link(LinkProfile(corrupt=1.0), random.Random(5))
    originals = _numbered(200)
    for datagram in originals:
        link.send(datagram, 0.0)
    delivered = [d for _, d in _drain(link)]
    assert link.stats.corrupted == 200
    for original, corrupted in zip(originals, delivered, strict=True):
        assert len(original) == len(corrupted)
        flipped = sum(bin(x ^ y).count("1") for x, y in zip(original, corrupted, strict=True))
        assert 1 <= flipped <= 3


def test_truncation_cuts_datagrams_short() -> None:
    link = Link(LinkProfile(truncate=1.0), random.Random(5))
    originals = _numbered(100)
    for datagram in originals:
        link.send(datagram, 0.0)
    delivered = [d for _, d in _drain(link)]
    assert link.stats.truncated == 100
    for original, cut in zip(originals, delivered, strict=True):
        assert len(cut) < len(original)
        assert original.startswith(cut)


def test_duplication_delivers_twice() -> None:
    link = Link(LinkProfile(duplicate=1.0, delay=0.01), random.Random(0))
    originals = _numbered(10)
    for datagram in originals:
        link.send(datagram, 0.0)
    delivered = [d for _, d in _drain(link)]
    assert sorted(delivered) == sorted(originals * 2)
    assert link.stats.duplicated == 10


def test_reordered_datagrams_are_held_back() -> None:
    link = Link(LinkProfile(reorder=0.5, reorder_delay=0.1, delay=0.01), random.Random(2))
    originals = _numbered(100)
    for i, datagram in enumerate(originals):
        link.send(datagram, i * 0.001)
    delivered = _drain(link)
    assert 30 <= link.stats.reordered <= 70
    assert [d for _, d in delivered] != originals
    assert sorted(d for _, d in delivered) == sorted(originals)
    late = [a for a, _ in delivered if a > 0.11]
    assert len(late) == link.stats.reordered


def test_jitter_never_makes_the_delay_negative() -> None:
    link = Link(LinkProfile(delay=0.001, jitter=0.01), random.Random(0))
    for i, datagram in enumerate(_numbered(500)):
        link.send(datagram, float(i))
    delivered = _drain(link)
    assert len(delivered) == 500
    for arrival, datagram in delivered:
        sent_at = float(int.from_bytes(datagram[:4], "big"))
        assert sent_at <= arrival <= sent_at + 0.011


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss": 1.5},
        {"duplicate": -0.1},
        {"delay": -1.0},
        {"rate_bps": 0.0},
        {"queue_limit": 0},
        {"blackouts": ((2.0, 1.0),)},
    ],
)
def test_invalid_profiles_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LinkProfile(**kwargs)  # type: ignore[arg-type]


def test_invalid_gilbert_elliott_is_rejected() -> None:
    with pytest.raises(ValueError):
        GilbertElliott(1.2, 0.5)


def test_replace_returns_a_modified_copy() -> None:
    base = LinkProfile.lossy(0.1)
    changed = base.replace(loss=0.2, duplicate=0.05)
    assert (changed.loss, changed.duplicate, changed.delay) == (0.2, 0.05, base.delay)
    assert base.loss == 0.1
    with pytest.raises(ValueError):
        base.replace(loss=2.0)


def test_terrible_profile_applies_every_impairment() -> None:
    link, _ = _run(LinkProfile.terrible(), seed=11, count=2000)
    stats = link.stats
    assert min(stats.dropped_loss, stats.duplicated, stats.reordered) > 0
    assert min(stats.corrupted, stats.truncated) > 0
