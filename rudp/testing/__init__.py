"""Tools for testing code built on rudp (and rudp itself) without a real network.

Like ``trio.testing``, this is public API:

- :class:`LinkProfile`, :class:`GilbertElliott`, :class:`Link`, :class:`LinkStats`:
  a seeded, sans-IO model of one direction of a lossy, duplicating,
  reordering, corrupting, rate-limited path.
- :class:`Simulator`: two sans-IO endpoints, one link per direction and a
  virtual clock that jumps to the next deadline; one seed replays a run.
- :func:`transfer` / :class:`TransferResult`: connect, exchange messages both
  ways, close, and report what each side saw, in one call.
- :class:`ConnectionPair`: a client and a server back to back on an instant
  wire, stepped by hand, with a hook to drop or alter datagrams and a record
  of everything sent and every event.
"""

from rudp.testing.harness import SideResult, TransferResult, make_pair, transfer
from rudp.testing.link import GilbertElliott, Link, LinkProfile, LinkStats
from rudp.testing.pair import ConnectionPair
from rudp.testing.simulator import Endpoint, Simulator, derive_rng

__all__ = [
    "ConnectionPair",
    "Endpoint",
    "GilbertElliott",
    "Link",
    "LinkProfile",
    "LinkStats",
    "SideResult",
    "Simulator",
    "TransferResult",
    "derive_rng",
    "make_pair",
    "transfer",
]
