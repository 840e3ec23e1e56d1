"""Retry delays (watches, the bus, background tasks): fast while a blip may heal, then slower.

A blip shorter than the selection's hold-down must be noticed healed within it, or it
fails the cluster over; and every loss starts its own fast window, also the second
blip of the day (the first version kept the window of the first loss, so a later
blip got the slow, exponential delays). Time is explicit.
"""

from __future__ import annotations

import pytest

from feddns.backoff import FAST_DELAY, Backoff


def test_within_the_fast_window_attempts_come_every_quarter_second() -> None:
    backoff = Backoff(fast_window=3.0)
    delays = [backoff.next_delay(now) for now in (100.0, 100.3, 101.0, 102.9)]
    assert all(FAST_DELAY <= d <= FAST_DELAY * 1.5 for d in delays), delays


def test_after_the_fast_window_the_delays_grow_exponentially() -> None:
    backoff = Backoff(fast_window=3.0, initial=0.8, maximum=30.0)
    backoff.next_delay(100.0)
    first = backoff.next_delay(103.5)
    second = backoff.next_delay(105.0)
    assert 0.8 <= first < 1.6 and 1.6 <= second < 3.2


@pytest.mark.parametrize("gap", [5.0, 600.0])
def test_a_success_ends_the_episode_so_the_next_loss_is_fast_again(gap: float) -> None:
    backoff = Backoff(fast_window=3.0)
    backoff.next_delay(100.0)
    backoff.next_delay(103.5)  # the first episode's fast window is over
    backoff.healthy(104.0)  # reconnected
    assert backoff.next_delay(104.0 + gap) <= FAST_DELAY * 1.5


def test_without_a_fast_window_the_first_delay_is_the_initial_one() -> None:
    backoff = Backoff(initial=0.8)
    assert 0.8 <= backoff.next_delay(100.0) < 1.6


def test_a_reset_starts_the_exponential_part_over() -> None:
    backoff = Backoff(initial=0.8, maximum=30.0)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.current == 25.6
    backoff.reset()
    assert 0.8 <= backoff.next_delay() < 1.6


def test_no_delay_exceeds_the_maximum() -> None:
    backoff = Backoff(initial=0.8, maximum=2.0)
    assert all(backoff.next_delay() <= 2.0 for _ in range(10))
