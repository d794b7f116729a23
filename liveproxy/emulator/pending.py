"""Client input the conversation has consumed but not acted on yet.

It is part of the state a resumption handle stands for: the client messages up to the handle's
``lastConsumedClientMessageIndex`` are *in* the handle, even those of an utterance (or of a
``clientContent`` turn) that was still going on. So a client that replays exactly the messages
after that index continues the utterance where it was cut, as if nothing had dropped.
"""

from __future__ import annotations

import attrs

from liveproxy.emulator.vad import EnergyVad


@attrs.define
class Pending:
    """The conversation's unfinished input.

    ``vad`` is the detector with the utterance it may be hearing (automatic activity
    detection); ``capture`` the audio since ``activityStart`` (manual detection, None outside
    an activity); ``text`` the user text of ``clientContent`` messages waiting for
    ``turnComplete``; ``cancelled`` the ids of cancelled function calls, whose late responses
    are ignored.
    """

    vad: EnergyVad | None = None
    capture: bytearray | None = None
    text: list[str] = attrs.Factory(list)
    cancelled: set[str] = attrs.Factory(set)

    def copy(self) -> Pending:
        """An independent copy."""
        return Pending(
            vad=None if self.vad is None else self.vad.copy(),
            capture=None if self.capture is None else bytearray(self.capture),
            text=list(self.text),
            cancelled=set(self.cancelled),
        )
