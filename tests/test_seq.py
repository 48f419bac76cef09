"""Sequence arithmetic modulo 2**32, especially across the wrap."""

from __future__ import annotations

import pytest

from wgslirpy.net.seq import (
    HALF,
    MASK,
    seq_add,
    seq_diff,
    seq_ge,
    seq_gt,
    seq_in_window,
    seq_le,
    seq_lt,
    seq_max,
    seq_min,
)

TOP = MASK  # 2**32 - 1


def test_add_wraps() -> None:
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 9, 20) == 10
    assert seq_add(5, -10) == TOP - 4
    assert seq_add(0, 0) == 0


def test_diff_is_signed_across_wrap() -> None:
    assert seq_diff(10, TOP - 9) == 20
    assert seq_diff(TOP - 9, 10) == -20
    assert seq_diff(7, 7) == 0
    assert seq_diff(HALF - 1, 0) == HALF - 1
    assert seq_diff(HALF, 0) == -HALF


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 2), (TOP, 0), (TOP - 100, 100), (0, HALF - 1), (HALF, TOP)],
)
def test_ordering(a: int, b: int) -> None:
    assert seq_lt(a, b) and seq_le(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_gt(a, b)
    assert not seq_le(b, a) and not seq_ge(a, b)
    assert seq_max(a, b) == b and seq_min(a, b) == a


def test_equal_is_le_and_ge_not_lt_gt() -> None:
    for x in (0, 1, TOP, HALF):
        assert seq_le(x, x) and seq_ge(x, x)
        assert not seq_lt(x, x) and not seq_gt(x, x)


def test_in_window_across_wrap() -> None:
    assert seq_in_window(TOP, TOP - 1, 10)
    assert seq_in_window(3, TOP - 1, 10)
    assert not seq_in_window(8, TOP - 1, 10)
    assert not seq_in_window(TOP - 2, TOP - 1, 10)
    assert not seq_in_window(5, 5, 0)
