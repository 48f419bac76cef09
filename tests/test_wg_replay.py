"""Sliding-window replay filter (wg/replay.py), modelled on wireguard-go replay_test.go."""

from __future__ import annotations

import random

from wgslirpy.constants import REJECT_AFTER_MESSAGES, REPLAY_WINDOW_SIZE
from wgslirpy.wg.replay import ReplayFilter


def accept(f: ReplayFilter, c: int) -> bool:
    return f.check_and_update(c)


def test_in_order_and_duplicates() -> None:
    f = ReplayFilter()
    assert accept(f, 0)
    assert not accept(f, 0)
    for c in range(1, 100):
        assert accept(f, c)
        assert not accept(f, c)
    assert not accept(f, 50)


def test_check_does_not_update() -> None:
    f = ReplayFilter()
    assert f.check(5) and f.check(5)
    assert f.last == 0
    f.update(5)
    assert not f.check(5)
    assert f.check(4)


def test_out_of_order_within_window_accepted_once() -> None:
    f = ReplayFilter()
    assert accept(f, 10)
    for c in (3, 9, 0, 7):
        assert accept(f, c)
        assert not accept(f, c)
    assert accept(f, 8)


def test_window_edges() -> None:
    w = REPLAY_WINDOW_SIZE
    assert w >= 2048
    f = ReplayFilter()
    assert accept(f, w + 10)
    assert accept(f, 11)  # diff = w - 1: inside
    assert not accept(f, 10)  # diff = w: outside
    assert accept(f, w + 11)
    assert not accept(f, 11)


def test_big_jump_clears_window() -> None:
    f = ReplayFilter()
    for c in range(20):
        accept(f, c)
    assert accept(f, 10 * REPLAY_WINDOW_SIZE)
    assert accept(f, 10 * REPLAY_WINDOW_SIZE - 5)
    assert not accept(f, 19)


def test_reject_after_messages() -> None:
    f = ReplayFilter()
    assert not accept(f, REJECT_AFTER_MESSAGES)
    assert not accept(f, 2**64 - 1)
    assert accept(f, REJECT_AFTER_MESSAGES - 1)


def test_small_window_wireguard_go_style_sequence() -> None:
    f = ReplayFilter(window=64)
    seq = [
        (0, True),
        (1, True),
        (1, False),
        (9, True),
        (8, True),
        (7, True),
        (7, False),
        (64, True),
        (1, False),
        (2, True),
        (0, False),
        (65, True),
        (1, False),
        (3, True),
        (2, False),
        (200, True),
        (136, False),
        (137, True),
    ]
    for counter, expected in seq:
        assert accept(f, counter) is expected, counter


def test_matches_a_naive_model() -> None:
    """Random walks (small steps, reorders, jumps) agree with a set-based reference."""
    rnd = random.Random(5)
    for window in (64, 200, REPLAY_WINDOW_SIZE):
        f = ReplayFilter(window=window)
        seen: set[int] = set()
        last = 0
        for _ in range(5000):
            r = rnd.random()
            if r < 0.5:
                c = last + rnd.randrange(0, 3)
            elif r < 0.9:
                c = max(0, last - rnd.randrange(0, window + 70))
            else:
                c = last + rnd.randrange(60, 4 * window)
            expected = c not in seen and (c > last or last - c < window)
            assert accept(f, c) is expected, (window, c, last)
            if expected:
                seen.add(c)
                last = max(last, c)
