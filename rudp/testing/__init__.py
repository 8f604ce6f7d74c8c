"""Tools for testing code built on rudp (and rudp itself) without a real network.

Like ``trio.testing``, this is public API:

- :class:`LinkProfile`, :class:`GilbertElliott`, :class:`Link`, :class:`LinkStats`:
  a seeded, sans-IO model of one direction of a lossy, duplicating,
  reordering, corrupting, rate-limited path.
- :class:`Simulator`: two sans-IO endpoints, one link per direction and a
  virtual clock that jumps to the next deadline; one seed replays a run.
- :func:`transfer` / :class:`TransferResult`: connect, exchange messages both
  ways, close, and report what each side saw, in one call.
- :class:`ConnectionPair`: a client and a server back to back, stepped by hand.
- :func:`run_bottleneck`, :class:`Bottleneck`, :class:`Flow`: several connections
  sharing one rate-limited tail-drop queue, with per-flow goodput over time,
  queue occupancy and drop accounting (:class:`BottleneckResult`), and the
  measures over them: :func:`jain_index`, :func:`standing_queue_delay`,
  :func:`mean_queue_delay`, :func:`overflow_loss_fraction`, :func:`bdp_packets`.
"""

from rudp.testing.bottleneck import (
    Bottleneck,
    BottleneckResult,
    Flow,
    FlowResult,
    bdp_packets,
    jain_index,
    mean_queue_delay,
    overflow_loss_fraction,
    run_bottleneck,
    standing_queue_delay,
)
from rudp.testing.harness import SideResult, TransferResult, make_pair, transfer
from rudp.testing.link import GilbertElliott, Link, LinkProfile, LinkStats
from rudp.testing.pair import ConnectionPair
from rudp.testing.simulator import Endpoint, Simulator, derive_rng

__all__ = [
    "Bottleneck",
    "BottleneckResult",
    "ConnectionPair",
    "Endpoint",
    "Flow",
    "FlowResult",
    "GilbertElliott",
    "Link",
    "LinkProfile",
    "LinkStats",
    "SideResult",
    "Simulator",
    "TransferResult",
    "bdp_packets",
    "derive_rng",
    "jain_index",
    "make_pair",
    "mean_queue_delay",
    "overflow_loss_fraction",
    "run_bottleneck",
    "standing_queue_delay",
    "transfer",
]
