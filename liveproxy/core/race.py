"""First outcome wins: the rule that ends a session.

:meth:`Race.run` runs a session's tasks in one nursery. A task's result (an
:class:`~liveproxy.contract.endings.Ended`) or the
:class:`~liveproxy.contract.errors.SessionError` it raises is an outcome; the first one decides
the race and cancels the nursery, with the outcome's name as the reason. A task that returns
None leaves the race to the others. Any other exception propagates out of :meth:`Race.run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from liveproxy.contract.endings import Outcome, outcome_code
from liveproxy.contract.errors import SessionError

Entrant = Callable[[], Awaitable[Outcome | None]]


class Race:
    """Runs a session's tasks until the first outcome; see the module's docstring."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None

    async def run(self, *entrants: Entrant) -> Outcome | None:
        """Run ``entrants`` until the first outcome (None if none came: they all returned None);
        every entrant is finished on return."""
        async with trio.open_nursery() as nursery:
            for entrant in entrants:
                nursery.start_soon(self._enter, nursery.cancel_scope, entrant)
        return self.outcome

    async def _enter(self, race: trio.CancelScope, entrant: Entrant) -> None:
        result: Outcome | None
        try:
            result = await entrant()
        except* SessionError as group:
            result = _first_leaf(group)
        if result is not None and self.outcome is None:
            self.outcome = result
            race.cancel(reason=outcome_code(result))


def _first_leaf(group: BaseExceptionGroup[SessionError]) -> SessionError:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, SessionError)
    return leaf
