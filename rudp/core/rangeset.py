"""A set of integers kept as sorted, disjoint, half-open ranges.

Used twice: by the receiver for the sequence numbers it holds above its
cumulative ack (these become SACK blocks, RFC 2018 section 3, lowest first), and
by the sender for the sequence numbers the peer has selectively acknowledged.

``add`` reports only the *newly* covered sub-ranges, so a peer that repeats the
same SACK blocks in every ack costs O(blocks), not O(size of the blocks): the
sender touches each sequence number once however often it is re-reported.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class RangeSet:
    """Sorted disjoint half-open ``[start, end)`` ranges of integers.

    Two parallel lists (starts and ends) let ``bisect`` find a range in
    O(log n); inserting or merging moves list items, which is cheap because a
    connection holds few ranges (each is a run of packets around a hole).
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __len__(self) -> int:
        """Number of disjoint ranges (not of integers)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        """True when the set holds at least one integer."""
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """The ranges as ``(start, end)`` pairs, lowest first."""
        return zip(self._starts, self._ends, strict=True)

    def __contains__(self, value: object) -> bool:
        """Whether the integer ``value`` lies in one of the ranges."""
        if not isinstance(value, int):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    @property
    def first(self) -> int | None:
        """The smallest integer in the set, or None when empty."""
        return self._starts[0] if self._starts else None

    @property
    def last(self) -> int | None:
        """One past the largest integer in the set, or None when empty."""
        return self._ends[-1] if self._ends else None

    def count(self) -> int:
        """Number of integers in the set (O(ranges))."""
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def add(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add ``[start, end)``; return the sub-ranges that were not in the set before.

        The returned ranges are disjoint and lowest first.  An empty or inverted
        range adds nothing.
        """
        if start >= end:
            return []
        starts = self._starts
        ends = self._ends
        # Ranges that overlap or touch [start, end): indices lo .. hi-1.
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi:
            # Fast path: no overlap, no contact; the common "new run" case.
            starts.insert(lo, start)
            ends.insert(lo, end)
            return [(start, end)]
        new: list[tuple[int, int]] = []
        cursor = start
        for i in range(lo, hi):
            s = starts[i]
            if s > cursor:
                new.append((cursor, s))
            e = ends[i]
            if e > cursor:
                cursor = e
        if cursor < end:
            new.append((cursor, end))
        merged_start = min(start, starts[lo])
        merged_end = max(end, ends[hi - 1])
        starts[lo:hi] = [merged_start]
        ends[lo:hi] = [merged_end]
        return new

    def discard_below(self, value: int) -> None:
        """Remove every integer smaller than ``value`` (the cumulative ack moved)."""
        starts = self._starts
        if not starts or starts[0] >= value:
            return
        ends = self._ends
        i = bisect_right(ends, value)
        if i:
            del starts[:i]
            del ends[:i]
        if starts and starts[0] < value:
            starts[0] = value

    def clear(self) -> None:
        """Remove everything."""
        self._starts.clear()
        self._ends.clear()

    def ranges(self, limit: int | None = None) -> list[tuple[int, int]]:
        """The first ``limit`` ranges (all when None), lowest first."""
        if limit is None:
            return list(zip(self._starts, self._ends, strict=True))
        return list(zip(self._starts[:limit], self._ends[:limit], strict=True))

    def newest_first(self, limit: int, recent: int | None) -> list[tuple[int, int]]:
        """Up to ``limit`` ranges: the one holding ``recent`` first, then the highest down.

        This is the order of RFC 2018 section 4 (the block of the most recent
        arrival first, then the others, most recent first), with "highest" standing
        in for "most recent": new data arrives at the top of the window.
        """
        starts = self._starts
        ends = self._ends
        out: list[tuple[int, int]] = []
        skip = -1
        if recent is not None:
            i = bisect_right(starts, recent) - 1
            if i >= 0 and recent < ends[i]:
                out.append((starts[i], ends[i]))
                skip = i
        i = len(starts) - 1
        while i >= 0 and len(out) < limit:
            if i != skip:
                out.append((starts[i], ends[i]))
            i -= 1
        return out
