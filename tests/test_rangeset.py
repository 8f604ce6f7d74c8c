"""Tests of ``rudp.core.rangeset.RangeSet`` (SACK bookkeeping), against a plain ``set`` model."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from rudp.core.rangeset import RangeSet


def test_add_merges_touching_and_overlapping_ranges() -> None:
    r = RangeSet()
    assert r.add(10, 20) == [(10, 20)]
    assert r.add(30, 40) == [(30, 40)]
    assert r.add(20, 30) == [(20, 30)]  # touches both: one range
    assert list(r) == [(10, 40)]
    assert r.add(5, 45) == [(5, 10), (40, 45)]
    assert list(r) == [(5, 45)]
    assert r.add(7, 9) == []  # nothing new: re-reported SACK costs nothing
    assert r.add(3, 3) == [] and r.add(9, 2) == []


def test_discard_below_and_queries() -> None:
    r = RangeSet()
    for start, end in ((1, 3), (5, 8), (10, 12)):
        r.add(start, end)
    assert len(r) == 3 and r.count() == 7
    assert 6 in r and 8 not in r and "6" not in r
    r.discard_below(6)
    assert list(r) == [(6, 8), (10, 12)]
    assert r.first == 6 and r.last == 12
    r.discard_below(8)
    assert r.ranges() == [(10, 12)]
    r.discard_below(100)
    assert not r and r.first is None and r.last is None


def test_ranges_limit_returns_the_lowest_first() -> None:
    r = RangeSet()
    for start in range(100, 0, -10):
        r.add(start, start + 2)
    assert r.ranges(3) == [(10, 12), (20, 22), (30, 32)]
    r.clear()
    assert r.ranges() == []


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 60), st.integers(0, 60)),
        st.tuples(st.just("discard"), st.integers(0, 60), st.just(0)),
    ),
    max_size=40,
)


@given(ops)
def test_matches_a_set_model(operations: list[tuple[str, int, int]]) -> None:
    r = RangeSet()
    model: set[int] = set()
    for op, a, b in operations:
        if op == "add":
            new = r.add(a, b)
            added = set(range(a, b)) - model
            assert {x for s, e in new for x in range(s, e)} == added
            assert all(s < e for s, e in new)
            model |= added
        else:
            r.discard_below(a)
            model = {x for x in model if x >= a}
        flat = list(r)
        # Disjoint, sorted, non-touching, non-empty ranges covering exactly the model.
        assert all(s < e for s, e in flat)
        assert all(e1 < s2 for (_, e1), (s2, _) in pairwise(flat))
        assert {x for s, e in flat for x in range(s, e)} == model
        assert r.count() == len(model)
