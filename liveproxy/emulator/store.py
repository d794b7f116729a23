"""Conversation state, and the resumption handles that let a later connection continue it."""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

import attrs
import trio

from liveproxy.emulator.pending import Pending


@attrs.define
class SessionState:
    """What a conversation carries across connections; also the emulator's record of it.

    ``context`` counts the tokens of everything said so far, by modality (``"TEXT"``,
    ``"AUDIO"``, ``"IMAGE"``); it is what ``usageMetadata.promptTokenCount`` reports. Of it,
    ``system_tokens`` are the system instruction's (a resumed setup may replace it).

    What the model has heard, to tell whether a resumed conversation is the one that would have
    gone on without the drop: ``audio_bytes`` and :attr:`audio_sha256` cover the data of every
    consumed ``realtimeInput.audio`` message, in order, as sent (before any resampling);
    ``heard`` has one entry per user turn: an utterance's transcript (``[speech 1.20 s]``) or the
    user's text.
    """

    session_id: str
    turns: int = 0
    calls: int = 0
    context: dict[str, int] = attrs.Factory(dict)
    system_tokens: int = 0
    audio_bytes: int = 0
    heard: list[str] = attrs.Factory(list)
    _audio_hash: hashlib._Hash = attrs.field(factory=hashlib.sha256, eq=False, repr=False)

    @property
    def audio_sha256(self) -> str:
        """The SHA-256 (hex) of all the audio data consumed, concatenated."""
        return self._audio_hash.hexdigest()

    def add(self, modality: str, tokens: int) -> None:
        """Add ``tokens`` of ``modality`` to the context."""
        if tokens:
            self.context[modality] = self.context.get(modality, 0) + tokens
            if not self.context[modality]:
                del self.context[modality]

    def set_system(self, tokens: int) -> None:
        """The system instruction is now ``tokens`` long (it replaces the one before)."""
        self.add("TEXT", tokens - self.system_tokens)
        self.system_tokens = tokens

    def hear_audio(self, data: bytes) -> None:
        """Record the data of one consumed audio message."""
        self.audio_bytes += len(data)
        self._audio_hash.update(data)

    def next_call_id(self) -> str:
        """A function-call id not used before in this conversation."""
        self.calls += 1
        return f"function-call-{self.calls}"

    def snapshot(self) -> SessionState:
        """An independent copy."""
        return attrs.evolve(
            self,
            context=dict(self.context),
            heard=list(self.heard),
            audio_hash=self._audio_hash.copy(),
        )


@attrs.frozen
class Checkpoint:
    """What a resumption handle stands for: the conversation after the client message with
    index ``last_consumed`` (on the connection that issued it), unfinished input included."""

    state: SessionState
    pending: Pending
    last_consumed: int

    def copy(self) -> Checkpoint:
        """An independent copy."""
        return Checkpoint(self.state.snapshot(), self.pending.copy(), self.last_consumed)


def new_session_id() -> str:
    """A fresh conversation id."""
    return secrets.token_hex(8)


@attrs.define
class HandleStore:
    """Resumption handles, each valid for ``ttl`` seconds (trio time) after it was issued."""

    ttl: float
    _entries: OrderedDict[str, tuple[float, Checkpoint]] = attrs.field(
        init=False, factory=OrderedDict
    )

    def issue(self, checkpoint: Checkpoint) -> str:
        """Remember a copy of ``checkpoint``; return the new handle that resumes it."""
        now = trio.current_time()
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest[0] > now:
                break
            self._entries.popitem(last=False)
        handle = secrets.token_urlsafe(24)
        self._entries[handle] = (now + self.ttl, checkpoint.copy())
        return handle

    def resume(self, handle: str) -> Checkpoint | None:
        """A copy of what ``handle`` stands for, or None if unknown or expired."""
        entry = self._entries.get(handle)
        if entry is None or entry[0] <= trio.current_time():
            return None
        return entry[1].copy()

    def __len__(self) -> int:
        return len(self._entries)
