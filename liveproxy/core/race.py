"""First outcome wins: the rule that ends a session.

Every task of a session reports to one :class:`Race`. A task's result, or the
:class:`~liveproxy.contract.errors.SessionError` it raises, is an outcome; the first one decides
the race and cancels every scope registered with it. Later outcomes are ignored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import trio

from liveproxy.contract.endings import Outcome
from liveproxy.contract.errors import SessionError


class Race:
    """First outcome wins: it cancels every scope registered through :meth:`cancel_on_decide`."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None
        self._scopes: set[trio.CancelScope] = set()

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    def decide(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        for scope in self._scopes:
            scope.cancel()

    def add(self, scope: trio.CancelScope) -> None:
        self._scopes.add(scope)
        if self.decided:
            scope.cancel()

    def discard(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)

    @contextmanager
    def cancel_on_decide(self) -> Iterator[trio.CancelScope]:
        with trio.CancelScope() as scope:
            self.add(scope)
            try:
                yield scope
            finally:
                self.discard(scope)

    async def run(
        self, fn: Callable[[], Awaitable[Outcome | None]], *, cancellable: bool = True
    ) -> None:
        """Run ``fn``; its result or :class:`SessionError` is an outcome (``None`` is not)."""
        result: Outcome | None = None
        try:
            if cancellable:
                with self.cancel_on_decide():
                    result = await fn()
            else:
                result = await fn()
        except* SessionError as group:
            self.decide(_first_leaf(group))
        if result is not None:
            self.decide(result)


def _first_leaf(group: BaseExceptionGroup[SessionError]) -> SessionError:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, SessionError)
    return leaf
