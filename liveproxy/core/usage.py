"""Metering: a conversation's tokens (every kind, by modality) and seconds of audio.

How Gemini Live reports usage (``docs/emulator.md``, "Usage"): a ``usageMetadata`` per model
turn, usually in the message carrying ``turnComplete``, counting that turn alone — its prompt
is the whole context so far, so prompt counts grow from turn to turn, and each turn is billed
for it. Some models send the turn's report again, or a report on its own (empty
``serverContent``); nothing says a report cannot grow within a turn. So the meter counts each
turn once:

- a report is a snapshot of its turn: each count is merged into the turn's by *maximum*, and
  only the growth is added (a repeated report adds nothing, a growing one its increase);
- ``turnComplete`` closes the turn; the next report whose ``promptTokenCount`` differs from the
  closed turn's starts a new turn (a turn's prompt holds every turn before it, so it always
  grows), while one with the same prompt count is the closed turn's again;
- a new upstream connection starts over: its first report is a new turn.

Audio is counted in bytes (integer adds on the hot path) and turned into seconds when read:
browser audio is PCM16 at 16 kHz (32000 bytes a second), Gemini's at 24 kHz (48000).
"""

from __future__ import annotations

from typing import Any, Final

import attrs

#: Token kinds: (name, ``usageMetadata`` count, its per-modality details). The response side is
#: ``candidates*`` on Vertex AI.
KINDS: Final = (
    ("prompt", "promptTokenCount", "promptTokensDetails"),
    ("cached", "cachedContentTokenCount", "cacheTokensDetails"),
    ("response", "responseTokenCount", "responseTokensDetails"),
    ("tool_use_prompt", "toolUsePromptTokenCount", "toolUsePromptTokensDetails"),
    ("thoughts", "thoughtsTokenCount", None),
)
_VERTEX: Final = {
    "responseTokenCount": "candidatesTokenCount",
    "responseTokensDetails": "candidatesTokensDetails",
}
#: The modalities a count may be attributed to (Google's ``Modality``); tokens of a kind not
#: covered by its details (or of a modality not known here) count as unspecified.
UNSPECIFIED: Final = "MODALITY_UNSPECIFIED"
MODALITIES: Final = frozenset({"TEXT", "IMAGE", "VIDEO", "AUDIO", "DOCUMENT", UNSPECIFIED})
#: A turn's ``totalTokenCount`` is kept under this key.
TOTAL: Final = ("total", "")
#: Bytes of a second of browser audio (16 kHz) and of Gemini's (24 kHz), PCM16 mono.
AUDIO_IN_BYTES_PER_SECOND: Final = 32000
AUDIO_OUT_BYTES_PER_SECOND: Final = 48000

Counts = dict[tuple[str, str], int]


def read_report(usage: dict[str, Any]) -> Counts:
    """The counts of one ``usageMetadata``: ``(kind, modality)`` -> tokens, and :data:`TOTAL`.

    Malformed counts (not non-negative integers) are ignored; a kind's tokens that its details
    do not attribute count as :data:`UNSPECIFIED`.
    """
    counts: Counts = {}
    for kind, count_key, details_key in KINDS:
        total = _count(usage.get(count_key, usage.get(_VERTEX.get(count_key, ""))))
        attributed = 0
        if details_key is not None:
            details = usage.get(details_key, usage.get(_VERTEX.get(details_key, "")))
            for item in details if isinstance(details, list) else ():
                if not isinstance(item, dict):
                    continue
                tokens = _count(item.get("tokenCount"))
                if tokens:
                    modality = item.get("modality")
                    if modality not in MODALITIES:
                        modality = UNSPECIFIED
                    key = (kind, modality)
                    counts[key] = counts.get(key, 0) + tokens
                    attributed += tokens
        if total > attributed:
            key = (kind, UNSPECIFIED)
            counts[key] = counts.get(key, 0) + total - attributed
    total = _count(usage.get("totalTokenCount"))
    if total:
        counts[TOTAL] = total
    return counts


def _count(value: Any) -> int:
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)  # int64 as proto3 JSON may write it
    return 0


@attrs.frozen
class UsageTotals:
    """What a conversation has used: what its next socket's meter goes on from."""

    #: kind -> modality -> tokens (kinds and modalities with no tokens left out).
    tokens: dict[str, dict[str, int]] = attrs.Factory(dict)
    #: The sum of the turns' ``totalTokenCount``.
    total_tokens: int = 0
    audio_in_bytes: int = 0
    audio_out_bytes: int = 0

    @property
    def audio_in_seconds(self) -> float:
        return round(self.audio_in_bytes / AUDIO_IN_BYTES_PER_SECOND, 3)

    @property
    def audio_out_seconds(self) -> float:
        return round(self.audio_out_bytes / AUDIO_OUT_BYTES_PER_SECOND, 3)

    def to_dict(self) -> dict[str, Any]:
        """The totals as ``stats.usage`` shows them (seconds, not bytes)."""
        return {
            "tokens": {kind: dict(by_modality) for kind, by_modality in self.tokens.items()},
            "total_tokens": self.total_tokens,
            "audio_in_seconds": self.audio_in_seconds,
            "audio_out_seconds": self.audio_out_seconds,
        }


@attrs.define
class UsageMeter:
    """One conversation's usage, summed over its turns, connections and sockets (sync, pure).

    Feed it every ``usageMetadata`` (:meth:`report`), every ``turnComplete``
    (:meth:`turn_complete`), each new upstream connection (:meth:`new_connection`), and the
    audio bytes each way (``audio_in_bytes``, ``audio_out_bytes``: plain integer adds).
    """

    audio_in_bytes: int = 0
    audio_out_bytes: int = 0
    _counted: Counts = attrs.Factory(dict)
    #: The current (or last closed) turn's counts, as merged so far.
    _turn: Counts = attrs.Factory(dict)
    _turn_prompt: int | None = None
    _closed: bool = False

    @classmethod
    def continuing(cls, totals: UsageTotals) -> UsageMeter:
        """A meter that goes on from ``totals`` (a conversation resumed on a new socket)."""
        counted: Counts = {
            (kind, modality): tokens
            for kind, by_modality in totals.tokens.items()
            for modality, tokens in by_modality.items()
        }
        if totals.total_tokens:
            counted[TOTAL] = totals.total_tokens
        return cls(totals.audio_in_bytes, totals.audio_out_bytes, counted)

    def report(self, usage: dict[str, Any]) -> None:
        """Count a ``usageMetadata``: what it adds to its turn (see the module's rules)."""
        counts = read_report(usage)
        if not counts:
            return
        prompt = _count(usage.get("promptTokenCount"))
        if self._closed and prompt != self._turn_prompt:
            self._turn = {}  # a new turn
            self._closed = False
        self._turn_prompt = prompt
        turn, counted = self._turn, self._counted
        for key, tokens in counts.items():
            before = turn.get(key, 0)
            if tokens > before:
                turn[key] = tokens
                counted[key] = counted.get(key, 0) + tokens - before

    def turn_complete(self) -> None:
        """The turn is over: a later report with another prompt count starts the next."""
        self._closed = True

    def new_connection(self) -> None:
        """Reports from here on come from a new upstream connection: its first is a new turn."""
        self._turn = {}
        self._turn_prompt = None
        self._closed = False

    def totals(self) -> UsageTotals:
        tokens: dict[str, dict[str, int]] = {}
        for (kind, modality), count in sorted(self._counted.items()):
            if count and (kind, modality) != TOTAL:
                tokens.setdefault(kind, {})[modality] = count
        return UsageTotals(
            tokens=tokens,
            total_tokens=self._counted.get(TOTAL, 0),
            audio_in_bytes=self.audio_in_bytes,
            audio_out_bytes=self.audio_out_bytes,
        )


def usage_since(after: UsageTotals, before: UsageTotals) -> UsageTotals:
    """What was used between ``before`` and ``after`` (one socket of a resumed conversation)."""
    tokens: dict[str, dict[str, int]] = {}
    for kind, by_modality in after.tokens.items():
        earlier = before.tokens.get(kind, {})
        for modality, count in by_modality.items():
            used = count - earlier.get(modality, 0)
            if used > 0:
                tokens.setdefault(kind, {})[modality] = used
    return UsageTotals(
        tokens=tokens,
        total_tokens=max(0, after.total_tokens - before.total_tokens),
        audio_in_bytes=max(0, after.audio_in_bytes - before.audio_in_bytes),
        audio_out_bytes=max(0, after.audio_out_bytes - before.audio_out_bytes),
    )
