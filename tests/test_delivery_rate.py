"""Tests of ``DeliveryRateEstimator`` (draft-cheng-iccrg-delivery-rate-estimation)."""

from __future__ import annotations

import heapq

import pytest

from rudp.core.congestion import DeliveryRateEstimator, RateSample, RateStamp


def paced_flow(
    rate: float, rtt: float, packets: int, *, app_limited_from: int | None = None
) -> list[RateSample]:
    """Send ``packets`` at ``rate`` per second, each acked ``rtt`` later, one ack per packet.

    From packet ``app_limited_from`` on, the sender reports an app-limited phase
    before each send (as a sender with an empty queue would).
    """
    est = DeliveryRateEstimator()
    events: list[tuple[float, int, int]] = []  # (time, kind 0 = ack / 1 = send, packet)
    for i in range(packets):
        heapq.heappush(events, (i / rate, 1, i))
    stamps: dict[int, tuple[RateStamp, float]] = {}
    in_flight = 0
    samples: list[RateSample] = []
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == 1:
            if app_limited_from is not None and i >= app_limited_from:
                est.on_app_limited(in_flight)
            stamps[i] = (est.on_packet_sent(now, in_flight), now)
            in_flight += 1
            heapq.heappush(events, (now + rtt, 0, i))
        else:
            stamp, sent = stamps.pop(i)
            in_flight -= 1
            est.on_packet_delivered(stamp, sent, now)
            sample = est.take_sample(now)
            if sample is not None:
                samples.append(sample)
    return samples


def test_a_steady_paced_flow_measures_its_rate() -> None:
    samples = paced_flow(rate=200.0, rtt=0.05, packets=400)
    steady = samples[20:]  # after the first flight
    assert steady
    for sample in steady:
        assert sample.delivery_rate == pytest.approx(200.0, rel=0.01)
        assert sample.rtt == pytest.approx(0.05)
        # One RTT, or one packet more when float rounding orders a send before an ack.
        assert 0.05 - 1e-9 <= sample.interval <= 0.05 + 1 / 200 + 1e-9
        assert not sample.is_app_limited


def test_the_first_flight_gives_a_sample_over_its_rtt() -> None:
    est = DeliveryRateEstimator()
    stamps = [est.on_packet_sent(0.0, i) for i in range(10)]  # a burst of 10 at t = 0
    for i, stamp in enumerate(stamps):
        est.on_packet_delivered(stamp, 0.0, 0.1 + i * 0.001)
    sample = est.take_sample(0.109)
    assert sample is not None
    assert sample.delivered == 10 and sample.prior_delivered == 0
    assert sample.interval == pytest.approx(0.109)
    assert sample.delivery_rate == pytest.approx(10 / 0.109)
    assert est.delivered == 10


def test_app_limited_phase_marks_its_samples_until_its_flight_is_delivered() -> None:
    samples = paced_flow(rate=200.0, rtt=0.05, packets=200, app_limited_from=100)
    # Packets 0..99: sent while the window limited the flow.
    before = [s for s in samples if s.prior_delivered < 80]
    after = [s for s in samples if s.prior_delivered >= 100]
    assert before and not any(s.is_app_limited for s in before)
    assert after and all(s.is_app_limited for s in after)


def test_app_limited_ends_once_its_flight_is_delivered() -> None:
    est = DeliveryRateEstimator()
    a = est.on_packet_sent(0.0, 0)
    b = est.on_packet_sent(0.0, 1)
    est.on_app_limited(2)  # nothing more to send with two in flight
    assert est.is_app_limited
    c = est.on_packet_sent(0.01, 2)
    assert c.is_app_limited and not a.is_app_limited
    est.on_packet_delivered(a, 0.0, 0.1)
    est.take_sample(0.1)
    est.on_packet_delivered(b, 0.0, 0.1)
    est.take_sample(0.1)
    assert est.is_app_limited  # delivered == 2: the mark is "beyond 2"
    est.on_packet_delivered(c, 0.01, 0.11)
    sample = est.take_sample(0.11)
    assert not est.is_app_limited
    assert sample is not None and sample.is_app_limited  # c itself was sent app-limited
    d = est.on_packet_sent(0.11, 0)
    assert not d.is_app_limited


def test_the_sample_follows_the_most_recently_sent_delivered_packet() -> None:
    est = DeliveryRateEstimator()
    old = est.on_packet_sent(0.0, 0)
    mid = est.on_packet_sent(0.02, 1)
    est.on_packet_delivered(old, 0.0, 0.1)
    assert est.take_sample(0.1) is not None
    new = est.on_packet_sent(0.1, 1)
    # One ack delivers the new packet first, then the older one (reported later, say by SACK).
    est.on_packet_delivered(new, 0.1, 0.25)
    est.on_packet_delivered(mid, 0.02, 0.25)
    sample = est.take_sample(0.25)
    assert sample is not None
    assert sample.prior_delivered == new.delivered == 1  # the newest-sent packet's stamp
    assert sample.rtt == pytest.approx(0.15)  # 0.25 - 0.1, not 0.25 - 0.02
    assert sample.delivered == 2


def test_interval_is_the_longer_of_send_and_ack_elapsed() -> None:
    # Ack compression: ten packets sent 10 ms apart, all acked at once 100 ms after the last.
    est = DeliveryRateEstimator()
    first = est.on_packet_sent(0.0, 0)
    est.on_packet_delivered(first, 0.0, 0.1)
    est.take_sample(0.1)
    stamps = [(est.on_packet_sent(0.1 + 0.01 * i, i), 0.1 + 0.01 * i) for i in range(10)]
    for stamp, sent in stamps:
        est.on_packet_delivered(stamp, sent, 0.29)
    sample = est.take_sample(0.29)
    assert sample is not None
    # send elapsed 0.19 - 0.1 = 0.09 (from the first packet of the flight, sent at 0.1);
    # ack elapsed 0.29 - 0.1 = 0.19 (from the delivery before the flight): the larger wins.
    assert sample.interval == pytest.approx(0.19)
    # A burst sent at once but acked spread out: ack elapsed wins the other way round too.
    est2 = DeliveryRateEstimator()
    burst = [est2.on_packet_sent(0.0, i) for i in range(5)]
    for i, stamp in enumerate(burst):
        est2.on_packet_delivered(stamp, 0.0, 0.1 + 0.01 * i)
        sample2 = est2.take_sample(0.1 + 0.01 * i)
    assert sample2 is not None and sample2.interval == pytest.approx(0.14)
    # Send elapsed wins: the sends of a flight spread over longer than its acks.
    est3 = DeliveryRateEstimator()
    a = est3.on_packet_sent(0.0, 0)
    est3.on_packet_sent(0.05, 1)  # keeps the flight going
    est3.on_packet_delivered(a, 0.0, 0.3)  # a late ack: first_sent 0.0, delivered_time 0.3
    assert est3.take_sample(0.3) is not None
    p = est3.on_packet_sent(0.4, 1)
    est3.on_packet_delivered(p, 0.4, 0.5)
    sample3 = est3.take_sample(0.5)
    assert sample3 is not None
    # send elapsed 0.4 - 0.0 = 0.4 beats ack elapsed 0.5 - 0.3 = 0.2.
    assert sample3.interval == pytest.approx(0.4)
    assert sample3.delivery_rate == pytest.approx(1 / 0.4)


def test_idle_time_is_not_delivery_time() -> None:
    est = DeliveryRateEstimator()
    p = est.on_packet_sent(0.0, 0)
    est.on_packet_delivered(p, 0.0, 0.1)
    est.take_sample(0.1)
    # Ten idle seconds; the next flight starts from scratch.
    q = est.on_packet_sent(10.0, 0)
    assert q.first_sent_time == 10.0 and q.delivered_time == 10.0
    est.on_packet_delivered(q, 10.0, 10.1)
    sample = est.take_sample(10.1)
    assert sample is not None and sample.interval == pytest.approx(0.1)
    assert sample.delivery_rate == pytest.approx(10.0)


def test_intervals_shorter_than_the_min_rtt_give_no_sample() -> None:
    est = DeliveryRateEstimator()
    p = est.on_packet_sent(0.0, 0)
    est.on_packet_delivered(p, 0.0, 0.1)
    assert est.take_sample(0.1) is not None  # min RTT 0.1
    # A retransmission sent at 0.2 whose "ack" comes 20 ms later: really the ack of
    # the original.  No flight is delivered faster than the 0.1 s round trip.
    q = est.on_packet_sent(0.2, 0)
    est.on_packet_delivered(q, 0.2, 0.22)
    assert est.take_sample(0.22) is None
    assert est.delivered == 2


def test_no_delivery_no_sample() -> None:
    est = DeliveryRateEstimator()
    est.on_packet_sent(0.0, 0)
    assert est.take_sample(0.1) is None
