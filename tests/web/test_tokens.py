"""One-time tokens: single use, expiry, pruning."""

from __future__ import annotations

from liveproxy.web.tokens import Grant, TokenStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_spent_by_its_first_use() -> None:
    store = TokenStore(30, FakeClock())
    token = store.mint(Grant(90))
    assert store.consume(token) == Grant(90)
    assert store.consume(token) is None


def test_tokens_expire_after_the_ttl() -> None:
    clock = FakeClock()
    store = TokenStore(30, clock)
    token = store.mint(Grant(90))
    clock.now += 29.9
    fresh = store.mint(Grant(90))
    clock.now += 0.1
    assert store.consume(token) is None
    assert store.consume(fresh) == Grant(90)


def test_missing_or_unknown_tokens_grant_nothing() -> None:
    store = TokenStore(30, FakeClock())
    assert store.consume(None) is None
    assert store.consume("") is None
    assert store.consume("forged") is None


def test_valid_count_drops_spent_and_expired_tokens() -> None:
    clock = FakeClock()
    store = TokenStore(30, clock)
    first = store.mint(Grant(60))
    store.mint(Grant(60))
    clock.now += 10
    store.mint(Grant(60))
    assert store.valid_count() == 3
    store.consume(first)
    assert store.valid_count() == 2
    clock.now += 25
    assert store.valid_count() == 1


def test_tokens_are_unique_url_safe_and_long() -> None:
    store = TokenStore(30, FakeClock())
    tokens = {store.mint(Grant(60)) for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) >= 43 and "=" not in t and "+" not in t and "/" not in t for t in tokens)
