"""The token bucket behind message-rate and auth-rate limits (sync)."""

from __future__ import annotations

import pytest

from liveproxy.bucket import TokenBucket


def test_a_full_bucket_allows_its_capacity_at_once_then_refuses() -> None:
    bucket = TokenBucket(rate=10, capacity=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)


def test_it_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=3)
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.take(0.05) == pytest.approx(0.05)  # half a token back
    assert bucket.take(0.1) == 0.0
    for _ in range(3):
        assert bucket.take(100.0) == 0.0  # refilled, but never past the capacity
    assert bucket.take(100.0) > 0


def test_a_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, capacity=1)
    bucket.take(10.0)
    assert bucket.take(5.0) == pytest.approx(1.0)
