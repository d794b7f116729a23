"""``serverContent.interactionStatus``, for a model that reports it (extended thinking).

Such a model may go on after ``turnComplete`` (a second, thought-out turn; the result of a
NON_BLOCKING call), so ``turnComplete`` no longer means it is idle: the first message of an
interaction says ``IN_PROGRESS``, every ``turnComplete`` after which it goes on says
``IN_PROGRESS`` again, and the ``turnComplete`` that ends the interaction says ``IDLE``.
"""

from __future__ import annotations

import attrs

from liveproxy.emulator import messages

IN_PROGRESS = "IN_PROGRESS"
IDLE = "IDLE"


@attrs.define
class Interaction:
    """Stamps one connection's server content with the interaction status, when ``reports``."""

    reports: bool
    _open: bool = False

    def stamp(self, message: messages.Message) -> messages.Message:
        """``message``, with ``IN_PROGRESS`` when it is the first server content of an
        interaction (one that says its status already is left as it is)."""
        content = message.get("serverContent")
        if not self.reports or self._open or content is None or "interactionStatus" in content:
            return message
        self._open = True
        return messages.with_status(message, IN_PROGRESS)

    def at_turn_complete(self, goes_on: bool) -> str | None:
        """The status a ``turnComplete`` carries (None when not reported): ``IN_PROGRESS`` if the
        model ``goes_on``, else ``IDLE``, which ends the interaction."""
        if not self.reports:
            return None
        self._open = goes_on
        return IN_PROGRESS if goes_on else IDLE

    def settle(self) -> messages.Message | None:
        """``IDLE`` alone, when the model has nothing left to do but no turn ends (a SILENT tool
        result) in an interaction still open; else None."""
        if not (self.reports and self._open):
            return None
        self._open = False
        return messages.interaction_status(IDLE)
