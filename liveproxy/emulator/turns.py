"""What the conversation decides and the speaker plays: model turns and the calls they make."""

from __future__ import annotations

from typing import Any

import attrs
import trio


@attrs.frozen
class Call:
    """A function call the model makes.

    A ``blocking`` call's turn waits for the response and goes on with its result; a
    NON_BLOCKING one ends its turn once the call is out, and the result comes later, as its own
    turn (or none), as the response's ``scheduling`` says.
    """

    id: str
    name: str
    args: dict[str, Any]
    blocking: bool = True


@attrs.define(eq=False)
class Turn:
    """One model turn, as the conversation decided it.

    ``audio`` is the 24 kHz answer to speech (AUDIO modality); otherwise ``reply`` is spoken as
    a tone (AUDIO) or sent as text (TEXT); an empty ``reply`` (a transcription model's answer to
    text) sends nothing but ``turnComplete``. With a blocking ``call`` the reply comes from the
    tool response (``result``, set by the conversation before it sets ``answered``).

    A thought-out turn first keeps silent for ``pause`` seconds (realtime speed only), then
    sends its ``thought`` as a thought part when thoughts are included (its tokens are the
    turn's ``thoughtsTokenCount`` either way). A ``quiet`` turn is no turn at all (a SILENT
    tool result): it only lets the model say it is idle, and resumable, when nothing else is
    owed.
    """

    reply: str = ""
    transcript: str | None = None
    audio: bytes | None = None
    call: Call | None = None
    result: str = ""
    pause: float = 0.0
    thought: str = ""
    quiet: bool = False
    answered: trio.Event = attrs.Factory(trio.Event)
    interrupted: trio.Event = attrs.Factory(trio.Event)
    #: Set once the speaker has sent the call: a NON_BLOCKING call is then out, and barge-in no
    #: longer cancels it.
    called: bool = False
    done: bool = False

    def interrupt(self) -> None:
        """Barge-in: stop this turn (it may not have started yet)."""
        if not self.done:
            self.interrupted.set()
