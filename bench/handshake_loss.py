"""`make bench-handshake`: seed 000's "Hello!!" on rudp.socket against loss, in virtual time.

Each run is ``rudp.testing.hello.hello_exchange``: the sender's ``sendto`` + ``close()``
and the receiver's ``recvfrom`` + ``close()`` exactly as ``rudp.socket`` runs them at
the core level, with the default ``Config`` (its give-up budget: ``peer_timeout``), over
independent random loss of the same rate each way and a 50 ms round trip.  Per loss rate:

- ``ok``: the sender's ``close()`` returned without an error and the receiver got
  ``b"Hello!!"`` exactly once (the success the issue asks for);
- ``reported``: ``close()`` raised, naming the message undelivered -- split by the step
  that never got through (``SYN``, ``SYN_ACK``, the ``DATA``, or only its ``ACK``: the
  receiver got the message but left before any acknowledgement reached the sender);
- ``silent``: ``close()`` returned without an error but the receiver did not get the
  message exactly once.  Must be 0 everywhere;
- time to delivery (the receiver's ``recvfrom`` returns) and to the sender's ``close()``
  returning, mean and p99 over the successful runs, in virtual seconds.

Deterministic: seeds 0..runs-1 give the same table on any machine.
Usage: python bench/handshake_loss.py [--runs N] [--loss 0,0.1,...] [--rtt S] [--jobs N]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from rudp.config import Config
from rudp.testing.hello import hello_exchange

LOSSES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PHASES = ("SYN", "SYN_ACK", "DATA", "ACK")


@dataclass(frozen=True)
class Row:
    """The runs at one loss rate, summarised."""

    loss: float
    runs: int
    outcomes: Counter[str]
    phases: Counter[str]
    delivery: tuple[float, ...]
    """Time to delivery of each successful run, sorted."""
    close: tuple[float, ...]
    """Time until the sender's close() returned, each successful run, sorted."""
    failed_seeds: tuple[int, ...]


def p99(values: Sequence[float]) -> float:
    """Nearest-rank 99th percentile of sorted ``values``."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(0.99 * len(values)) - 1)]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def measure(loss: float, runs: int, rtt: float, config: Config) -> Row:
    """``runs`` seeded exchanges at ``loss`` each way (seeds 0..runs-1)."""
    outcomes: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    delivery: list[float] = []
    close: list[float] = []
    failed: list[int] = []
    for seed in range(runs):
        result = hello_exchange(seed, loss, config=config, rtt=rtt)
        outcomes[result.outcome] += 1
        if result.outcome == "delivered":
            assert result.delivered_at is not None and result.closed_at is not None
            delivery.append(result.delivered_at)
            close.append(result.closed_at)
        else:
            failed.append(seed)
            if result.outcome == "reported":
                phases[result.phase] += 1
    return Row(
        loss, runs, outcomes, phases, tuple(sorted(delivery)), tuple(sorted(close)), tuple(failed)
    )


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'loss':>5} {'runs':>6} {'ok':>6} {'ok %':>7} {'reported':>8} "
        + " ".join(f"{p:>7}" for p in PHASES)
        + f" {'silent':>6} {'hung':>4}"
        + f"  {'deliver mean':>12} {'p99':>6}  {'close mean':>10} {'p99':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ok = row.outcomes["delivered"]
        print(
            f"{row.loss:5.0%} {row.runs:6d} {ok:6d} {100 * ok / row.runs:6.2f}% "
            f"{row.outcomes['reported']:8d} "
            + " ".join(f"{row.phases[p]:7d}" for p in PHASES)
            + f" {row.outcomes['silent']:6d} {row.outcomes['hung']:4d}"
            f"  {mean(row.delivery):11.2f}s {p99(row.delivery):5.2f}s"
            f"  {mean(row.close):9.2f}s {p99(row.close):5.2f}s"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="seeded runs per loss rate")
    parser.add_argument(
        "--loss",
        type=lambda text: tuple(float(x) for x in text.split(",")),
        default=LOSSES,
        help="comma-separated loss rates, each way (default 0,0.1,...,0.7)",
    )
    parser.add_argument("--rtt", type=float, default=0.05, help="round-trip time, seconds")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes")
    parser.add_argument(
        "--close-linger", type=float, default=None, help="override Config.close_linger (seconds)"
    )
    parser.add_argument("--seeds", action="store_true", help="list the seeds that failed")
    args = parser.parse_args(argv)
    config = Config() if args.close_linger is None else Config(close_linger=args.close_linger)
    print(
        f"seed 000 'Hello!!' over rudp.socket, Config (peer_timeout {config.peer_timeout:g} s, "
        f"max_rto {config.max_rto:g} s, close_linger {config.close_linger:g} s); "
        f"RTT {args.rtt * 1000:g} ms; independent loss each way; seeds 0..{args.runs - 1}"
    )
    wall0 = time.perf_counter()
    count = len(args.loss)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(
            pool.map(measure, args.loss, [args.runs] * count, [args.rtt] * count, [config] * count)
        )
    print_table(rows)
    print(
        "ok: close() returned, receiver got it once.  reported: close() raised with the message "
        "undelivered, by the step that never got through (ACK: delivered, but no ack reached "
        "the sender).  Times in virtual seconds over the ok runs."
    )
    if args.seeds:
        for row in rows:
            if row.failed_seeds:
                print(f"{row.loss:.0%}: {' '.join(map(str, row.failed_seeds))}")
    print(f"({time.perf_counter() - wall0:.1f} s wall)")
    return 1 if any(row.outcomes["silent"] or row.outcomes["hung"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
