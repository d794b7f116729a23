"""The function calls a conversation has made and not seen answered yet.

A blocking call's turn waits for its response: the response gives the turn its result. A
NON_BLOCKING call's turn ends once the call is out; its response becomes a turn of its own,
or none, as its ``scheduling`` says (the conversation decides that). Barge-in cancels a call
whose turn has not finished with it; a NON_BLOCKING call already out stays pending.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from liveproxy.emulator import replies
from liveproxy.emulator.endings import Close
from liveproxy.emulator.turns import Turn
from liveproxy.protocol.closes import ENTITY_NOT_FOUND, POLICY


@attrs.frozen
class Answer:
    """A response taken: the reply it makes, the response itself, and whether its call was
    blocking (its turn then has the reply already; a NON_BLOCKING one makes a turn of its
    own)."""

    reply: str
    response: dict[str, Any]
    blocking: bool


@attrs.define
class Calls:
    """Pending calls by id, in the order they were made. ``cancelled`` is the set of the ids of
    cancelled calls, whose late responses are ignored (the conversation's unfinished input
    keeps it, so a resumed conversation still ignores them)."""

    cancelled: set[str]
    _turns: dict[str, Turn] = attrs.Factory(dict)

    def add(self, turn: Turn) -> None:
        """``turn``'s call is made."""
        assert turn.call is not None
        self._turns[turn.call.id] = turn

    def cancel(self, turn: Turn) -> None:
        """``turn`` is interrupted: cancel its call, unless it is a NON_BLOCKING call already
        out."""
        call = turn.call
        if call is None or (not call.blocking and turn.called):
            return
        if self._turns.pop(call.id, None) is not None:
            self.cancelled.add(call.id)

    def results_owed(self) -> bool:
        """Whether a NON_BLOCKING call still waits for its response (a blocking call's own turn
        is what is owed for it)."""
        return any(
            turn.call is not None and not turn.call.blocking for turn in self._turns.values()
        )

    def answer(self, response: dict[str, Any]) -> Answer | None:
        """Take one ``functionResponses`` entry: a blocking call's turn gets its result and is
        woken; a NON_BLOCKING call is over unless ``willContinue``. None for a late response to
        a cancelled call, which is ignored.

        Raises:
            Close: 1008 "Requested entity was not found." for a response to no pending call.
        """
        call_id = response.get("id") or self._oldest_named(response.get("name", ""))
        if call_id in self.cancelled:
            return None
        turn = self._turns.get(call_id)
        if turn is None or turn.call is None:
            raise Close(POLICY, ENTITY_NOT_FOUND)
        call = turn.call
        reply = replies.tool_result(call.name, response.get("response", {}))
        if call.blocking:
            del self._turns[call_id]
            turn.result = reply
            turn.answered.set()
        elif not response.get("willContinue"):
            del self._turns[call_id]
        return Answer(reply, response, call.blocking)

    def _oldest_named(self, name: str) -> str:
        """The oldest pending call to ``name`` (Vertex allows responses without an id)."""
        for call_id, turn in self._turns.items():
            if turn.call is not None and turn.call.name == name:
                return call_id
        return ""


def response_text(response: dict[str, Any]) -> str:
    """A response's ``response`` object as the context counts it: compact JSON."""
    return orjson.dumps(response.get("response", {})).decode()
