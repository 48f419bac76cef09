"""Sequence arithmetic modulo 2**32, especially across the wrap."""

from __future__ import annotations

import pytest

from wgslirpy.net.seq import HALF, MASK, seq_diff, seq_ge, seq_gt, seq_lt

TOP = MASK  # 2**32 - 1


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
    assert seq_lt(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_gt(a, b)
    assert not seq_ge(a, b)


def test_equal_is_ge_not_lt_gt() -> None:
    for x in (0, 1, TOP, HALF):
        assert seq_ge(x, x)
        assert not seq_lt(x, x) and not seq_gt(x, x)
