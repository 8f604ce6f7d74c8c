"""The measures over a shared-bottleneck run: sizing, fairness, queueing delay, overflow loss.

Pure functions of a :class:`~rudp.testing.bottleneck_scenario.BottleneckResult`
(or, for :func:`bdp_packets`, of a link's rate and RTT).  They are apart from the
event loop in ``rudp.testing.bottleneck`` because they judge a finished run and
never touch a connection: tests and benchmarks read them, the loop does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rudp.testing.bottleneck_scenario import BottleneckResult

__all__ = [
    "bdp_packets",
    "jain_index",
    "mean_queue_delay",
    "overflow_loss_fraction",
    "standing_queue_delay",
]


def bdp_packets(rate_bps: float, rtt: float, datagram_size: int = 1400) -> float:
    """The bandwidth-delay product in datagrams: ``rate_bps * rtt / 8 / datagram_size``."""
    return rate_bps * rtt / 8.0 / datagram_size


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``: 1 if all equal, 1/n if one takes all.

    ``nan`` when every value is zero (no allocation to judge; compares false with any
    threshold).  Raises ``ValueError`` for an empty sequence or a negative value.
    """
    if not values:
        raise ValueError("jain_index of no values")
    if any(v < 0 for v in values):
        raise ValueError("jain_index needs non-negative values")
    squares = sum(v * v for v in values)
    if squares == 0:
        return math.nan
    return sum(values) ** 2 / (len(values) * squares)


def _window(result: BottleneckResult, t0: float | None, t1: float | None) -> list[int]:
    start = -math.inf if t0 is None else t0
    end = math.inf if t1 is None else t1
    return [i for i, t in enumerate(result.sample_times) if start <= t < end]


def mean_queue_delay(
    result: BottleneckResult, t0: float | None = None, t1: float | None = None
) -> float:
    """Time-average of the sampled queueing delay within ``[t0, t1)``, seconds."""
    delays = result.queue_delay
    picked = _window(result, t0, t1)
    return sum(delays[i] for i in picked) / len(picked) if picked else 0.0


def standing_queue_delay(
    result: BottleneckResult,
    t0: float | None = None,
    t1: float | None = None,
    window: float | None = None,
) -> float:
    """Mean over consecutive ``window``-long intervals of ``[t0, t1)`` of the least sampled delay.

    A queue that drains within an interval was a burst; the delay that never
    drained is the standing queue (CoDel's definition).  ``window`` defaults to
    ``result.min_rtt`` (it should span several samples); ``t0`` defaults to the
    end of the first flow's start-up.
    """
    if window is None:
        window = result.min_rtt
    if t0 is None:
        t0 = result.flows[0].startup_end
    minima: dict[int, float] = {}
    delays = result.queue_delay
    for i in _window(result, t0, t1):
        key = int((result.sample_times[i] - t0) / window)
        d = delays[i]
        if key not in minima or d < minima[key]:
            minima[key] = d
    return sum(minima.values()) / len(minima) if minima else 0.0


def overflow_loss_fraction(
    result: BottleneckResult, flow: int = 0, t0: float | None = None, t1: float | None = None
) -> float:
    """Share of the flow's datagrams reaching the queue within ``[t0, t1)`` that it dropped.

    ``t0`` defaults to the end of the flow's start-up (``FlowResult.startup_end``).
    """
    f = result.flows[flow]
    width = f.bin_width
    first = round((f.startup_end if t0 is None else t0) / width)
    last = len(f.offered) if t1 is None else round(t1 / width)
    offered = sum(f.offered[first:last])
    return sum(f.overflowed[first:last]) / offered if offered else 0.0
