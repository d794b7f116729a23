"""Conversation state, and the resumption handles that let a later connection continue it."""

from __future__ import annotations

import secrets
from collections import OrderedDict

import attrs
import trio


@attrs.define
class SessionState:
    """What a conversation carries across connections.

    ``context`` counts the tokens of everything said so far, by modality (``"TEXT"``,
    ``"AUDIO"``, ``"IMAGE"``); it is what ``usageMetadata.promptTokenCount`` reports.
    """

    session_id: str
    turns: int = 0
    calls: int = 0
    context: dict[str, int] = attrs.Factory(dict)

    def add(self, modality: str, tokens: int) -> None:
        """Add ``tokens`` of ``modality`` to the context."""
        if tokens:
            self.context[modality] = self.context.get(modality, 0) + tokens

    def next_call_id(self) -> str:
        """A function-call id not used before in this conversation."""
        self.calls += 1
        return f"function-call-{self.calls}"

    def snapshot(self) -> SessionState:
        """An independent copy."""
        return attrs.evolve(self, context=dict(self.context))


def new_session_id() -> str:
    """A fresh conversation id."""
    return secrets.token_hex(8)


@attrs.define
class HandleStore:
    """Resumption handles, each valid for ``ttl`` seconds (trio time) after it was issued."""

    ttl: float
    _entries: OrderedDict[str, tuple[float, SessionState]] = attrs.field(
        init=False, factory=OrderedDict
    )

    def issue(self, state: SessionState) -> str:
        """Remember a snapshot of ``state``; return the new handle that resumes it."""
        now = trio.current_time()
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest[0] > now:
                break
            self._entries.popitem(last=False)
        handle = secrets.token_urlsafe(24)
        self._entries[handle] = (now + self.ttl, state.snapshot())
        return handle

    def resume(self, handle: str) -> SessionState | None:
        """A copy of the state ``handle`` stands for, or None if unknown or expired."""
        entry = self._entries.get(handle)
        if entry is None or entry[0] <= trio.current_time():
            return None
        return entry[1].snapshot()

    def __len__(self) -> int:
        return len(self._entries)
