"""Loopback throughput of this tree against an earlier revision, in alternating pairs.

On a shared machine the speed drifts by a factor of two within minutes (raw UDP moved
75-200 MB/s between runs of ``make bench``), so a ratio to one run of a yardstick is noisy.
This runs ``bench/run.py``'s own row functions (``rudp_asyncio``, ``rudp_connection``) of
two trees in fresh processes, baseline and current in turn, and prints the median of the
pairwise ratios with their quartiles: drift hits both halves of a pair alike.

Usage: python bench/compare.py REVISION [--pairs 16] [--megabytes 20] [--rows asyncio,connection]
(REVISION: any git revision, checked out into a temporary worktree and removed afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = {"asyncio": "rudp_asyncio", "connection": "rudp_connection"}
TIMEOUT = 120.0
"""Seconds one row may take in its process (a 20 MB row takes about one)."""

# Run in the child: import the tree's own bench/run.py and time one row.
CHILD = """
import sys
sys.path.insert(0, sys.argv[1] + "/bench")
import run
result = getattr(run, sys.argv[2])(int(sys.argv[3]))
print(result.mb_per_s)
"""


def measure(tree: Path, function: str, total: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), function, str(total)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return float(out.stdout.split()[-1])


def summary(name: str, current: list[float], baseline: list[float]) -> str:
    ratios = [c / b for c, b in zip(current, baseline, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return (
        f"{name:11} this tree {statistics.median(current):6.1f} MB/s"
        f"  baseline {statistics.median(baseline):6.1f} MB/s"
        f"  pairwise ratio median {statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})"
        f"  ahead in {sum(r > 1 for r in ratios)} of {len(ratios)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("revision", help="the baseline: a git revision of this repository")
    parser.add_argument("--pairs", type=int, default=16, help="baseline/current pairs per row")
    parser.add_argument("--megabytes", type=int, default=20, help="payload per transfer")
    parser.add_argument("--rows", default="asyncio,connection", help="rows of bench/run.py")
    args = parser.parse_args()
    rows = [row.strip() for row in args.rows.split(",")]
    unknown = set(rows) - set(ROWS)
    if unknown:
        parser.error(f"unknown row(s): {', '.join(sorted(unknown))}; known: {', '.join(ROWS)}")
    total = args.megabytes * 1_000_000
    with tempfile.TemporaryDirectory(prefix="rudp-baseline-") as scratch:
        baseline_tree = Path(scratch) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run(
            [*git, "add", "--detach", str(baseline_tree), args.revision],
            check=True,
            capture_output=True,
        )
        try:
            results: dict[str, tuple[list[float], list[float]]] = {row: ([], []) for row in rows}
            for pair in range(args.pairs):
                for row in rows:
                    current, baseline = results[row]
                    baseline.append(measure(baseline_tree, ROWS[row], total))
                    current.append(measure(ROOT, ROWS[row], total))
                print(f"pair {pair + 1}/{args.pairs} done", file=sys.stderr)
        finally:
            subprocess.run(
                [*git, "remove", "--force", str(baseline_tree)],
                check=False,
                capture_output=True,
            )
    print(f"loopback, both ends in one process, {args.megabytes} MB; baseline {args.revision}")
    for row in rows:
        print(summary(row, *results[row]))


if __name__ == "__main__":
    main()
