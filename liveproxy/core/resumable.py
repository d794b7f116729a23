"""What a conversation needs to continue on a new browser socket (``sessionResumable``).

Captured when a socket ends for a reason that leaves the conversation resumable (the browser
left or the server shut down) and kept in the state store, never in the browser: the upstream
resumption handle, the setup, the time left, the running stats, and the turn-level messages
sent since that handle (the handle's state does not include them, so they are sent again; with
no handle yet, every turn so far).
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs
import cattrs
import orjson

from liveproxy.contract.codec import make_converter
from liveproxy.contract.endings import BROWSER_CLOSED, SHUTDOWN, Outcome
from liveproxy.core.stats import Totals

#: A conversation whose state would exceed this (a huge setup, many large replayed
#: messages) is not kept: the store holds many of them for the whole window.
MAX_STATE_BYTES: Final = 512 * 1024
#: Less time left than this is not worth a new socket.
MIN_REMAINING_SECONDS: Final = 1.0
#: The endings after which a conversation can continue on a new socket.
RESUMABLE_ENDINGS: Final = (BROWSER_CLOSED, SHUTDOWN)


@attrs.frozen(kw_only=True)
class Resumable:
    """One conversation's state between two sockets."""

    #: Stable across the conversation's sockets (its first socket's session id), for logs.
    conversation_id: str
    #: Gemini's latest resumption handle; None before the first one (the new socket then opens
    #: a new Gemini session with the same setup and replays every turn).
    handle: str | None
    #: The browser's setup as the session validated it (the upstream setup is built from it).
    setup: dict[str, Any]
    remaining_seconds: float
    elapsed_seconds: float
    #: The running stats the next socket's counters go on from.
    totals: Totals = attrs.field(factory=Totals)
    #: Turn-level upstream messages (JSON text) to send again, in order, before anything new.
    replay: tuple[str, ...] = ()

    @property
    def time_limit(self) -> int:
        """The new socket's time limit (whole seconds, as ``session_time_limit`` is)."""
        return max(1, math.floor(self.remaining_seconds))

    def to_json(self) -> str | None:
        """The state as JSON text, or None when it is larger than :data:`MAX_STATE_BYTES`."""
        encoded = orjson.dumps(_converter.unstructure(self))
        return encoded.decode() if len(encoded) <= MAX_STATE_BYTES else None

    @classmethod
    def from_json(cls, text: str) -> Resumable:
        """Raises ValueError when ``text`` is not a state :meth:`to_json` wrote (it comes from
        the store, which is an input like any other)."""
        try:
            data = orjson.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            return _converter.structure(data, cls)
        except (orjson.JSONDecodeError, cattrs.BaseValidationError, TypeError, ValueError) as exc:
            raise ValueError("not a resumable conversation state") from exc


def resumable_ending(outcome: Outcome | None) -> bool:
    """Whether a socket that ended with ``outcome`` (None: it was cancelled, the browser gone)
    leaves its conversation resumable."""
    return outcome is None or outcome in RESUMABLE_ENDINGS


def _strings(value: Any, _: type) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


_converter = make_converter(forbid_extra_keys=True)
_converter.register_structure_hook_func(lambda kind: kind == tuple[str, ...], _strings)
