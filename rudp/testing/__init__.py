"""Tools for testing code built on rudp (and rudp itself) without a real network.

Like ``trio.testing``, this is public API:

- :class:`LinkProfile`, :class:`GilbertElliott`, :class:`Link`, :class:`LinkStats`:
  a seeded, sans-IO model of one direction of a lossy, duplicating,
  reordering, corrupting, rate-limited path.
- :class:`Simulator`: two sans-IO peers (anything that is a
  :class:`SimulatedPeer`), one link per direction and a virtual clock that
  jumps to the next deadline; one seed replays a run.  :func:`derive_rng`
  gives each component of a seeded run its own random stream.
- :func:`transfer` / :class:`TransferResult` / :class:`SideResult`: connect,
  exchange messages both ways, close, and report what each side saw, in one
  call.  :func:`make_pair` builds the seeded client and server it uses.
- :class:`ConnectionPair`: a client and a server back to back on an instant
  wire, stepped by hand, with hooks to drop or alter datagrams and a record
  of everything sent and every event.
- :func:`run_bottleneck`, :class:`Bottleneck`, :class:`Flow`: several connections
  sharing one rate-limited tail-drop queue, with per-flow goodput over time,
  queue occupancy and drop accounting (:class:`BottleneckResult`), and the
  measures over them: :func:`jain_index`, :func:`standing_queue_delay`,
  :func:`mean_queue_delay`, :func:`overflow_loss_fraction`, :func:`bdp_packets`.

``rudp.testing.hello`` replays seed 000's "Hello!!" sender and receiver on ``rudp.socket``
over the simulator (``hello_exchange``), for the success rate against loss.

Two submodules are imported by name because they use real sockets and threads:
``rudp.testing.proxy`` (``LossyProxy``, the link model on a UDP relay) and
``rudp.testing.conformance`` (the checks every driver must pass).
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
from rudp.testing.simulator import SimulatedPeer, Simulator, derive_rng

__all__ = [
    "Bottleneck",
    "BottleneckResult",
    "ConnectionPair",
    "Flow",
    "FlowResult",
    "GilbertElliott",
    "Link",
    "LinkProfile",
    "LinkStats",
    "SideResult",
    "SimulatedPeer",
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
