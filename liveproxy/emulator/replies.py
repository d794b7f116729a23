"""The deterministic partner's words: transcripts, replies, tool calls and their results.

* Input transcription of an utterance: ``[speech 1.20 s]`` (its duration, two decimals).
* Reply to text ``T``: ``You said: "T"``; reply to speech: ``You said: [speech 1.20 s]``.
* A user text ``call NAME {json}`` (``{json}`` optional, an object) with ``NAME`` declared in
  the setup's tools becomes a function call; after the tool response the reply is
  ``NAME returned {response as compact JSON}``.
* A user text with the word ``think`` in it (``think about X``, ``Think!``; not ``thinking``)
  asks a model that thinks on request (the extended-thinking model) to think: it answers
  ``Let me think.`` at once, then, in a second turn, ``You said: "T"``. Its thought (a thought
  part, when thoughts are included) is ``Thinking about: "T"``.
* A transcription-only model answers speech with its transcript, and text with nothing.
* A text reply in AUDIO modality is spoken as a 400 Hz tone of 50 ms per character, at most
  600 s (the longest session): a long prompt must not make an endless answer.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

TONE_SECONDS_PER_CHAR = 0.05
MAX_TONE_SECONDS = 600.0

_CALL = re.compile(r"\s*call\s+(?P<name>[A-Za-z_][\w.-]*)\s*(?P<args>\{.*\})?\s*", re.DOTALL)
_FRAGMENT = re.compile(r"\s*\S+")
_THINK = re.compile(r"\bthink\b", re.IGNORECASE)

#: The first, short answer of a model asked to think.
THINKING_ALOUD = "Let me think."


def speech_transcript(seconds: float) -> str:
    return f"[speech {seconds:.2f} s]"


def reply_to_text(text: str) -> str:
    return f'You said: "{text}"'


def reply_to_speech(transcript: str) -> str:
    return f"You said: {transcript}"


def asks_to_think(text: str) -> bool:
    """Whether ``text`` asks the model to think: it has the word ``think``."""
    return _THINK.search(text) is not None


def thought_about(text: str) -> str:
    """The thought of a model asked to think about ``text``."""
    return f'Thinking about: "{text}"'


def parse_call(text: str, functions: frozenset[str]) -> tuple[str, dict[str, Any]] | None:
    """``(name, args)`` if ``text`` asks to call a declared function, else None."""
    found = _CALL.fullmatch(text)
    if found is None or found["name"] not in functions:
        return None
    if found["args"] is None:
        return found["name"], {}
    try:
        args = orjson.loads(found["args"])
    except orjson.JSONDecodeError:
        return None
    return (found["name"], args) if isinstance(args, dict) else None


def tool_result(name: str, response: Any) -> str:
    return f"{name} returned {orjson.dumps(response).decode()}"


def fragments(text: str) -> list[str]:
    """``text`` cut before each word, keeping the spaces: the pieces concatenate to ``text``
    without its leading and trailing whitespace."""
    return _FRAGMENT.findall(text.strip())


def tone_seconds(text: str) -> float:
    return min(TONE_SECONDS_PER_CHAR * len(text), MAX_TONE_SECONDS)
