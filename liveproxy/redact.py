"""Secrets out of every log line: ours and the libraries' (trio-websocket, wsproto, Hypercorn).

:meth:`Secrets.redact` removes, from a text, every secret registered with :data:`SECRETS` and
anything shaped like a credential: a ``key=``/``token=`` URL parameter, a ``Bearer`` value, a
Google API key, a password in a URL. An upstream close reason that repeats the key, or a key
inside ``UPSTREAM_URL``, is caught either way.

Log text can hold what a client sent, so every pattern runs in time linear in the text: each
can start only at a fixed literal or at the start of a word, and no two of its repeated parts
can match the same characters. Log formatters also cap a line's message before redacting it
(:mod:`liveproxy.logs`).
"""

from __future__ import annotations

import re
from typing import Final

MASK: Final = "***"

_PATTERNS: Final = (
    # A credential in a URL's query: ?key=..., &access_token=..., token=...
    (
        re.compile(
            r"(?i)([?&;](?:key|api_key|apikey|access_token|token|session_token)=)[^&\s'\"]+"
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    (re.compile(r"AIza[0-9A-Za-z_-]{35}"), MASK),
    # A password in a URL: redis://user:secret@host. The scheme may start only where a word
    # does: tried at every position of a long word, its scan would make the search quadratic.
    (
        re.compile(r"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"),
        r"\1" + MASK + "@",
    ),
)


class Secrets:
    """Exact strings that must never be logged (API keys, the emulator's key)."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, *values: str | None) -> None:
        self._values.update(v for v in values if v and len(v) >= 4)

    def redact(self, text: str) -> str:
        """``text`` without any registered secret or credential-shaped value (linear time)."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


#: The secrets of this process; the app registers its credentials at start.
SECRETS: Final = Secrets()


def redact_url(url: str) -> str:
    """``url`` safe to log (a credential in its query replaced)."""
    return SECRETS.redact(url)
