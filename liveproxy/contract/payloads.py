"""attrs models of the browser-facing API: HTTP bodies, browser messages, session events.

Gemini's own messages are not modelled here: the proxy passes them through as Gemini sent them
(see :mod:`liveproxy.contract.translate`). Serialisation lives in :mod:`liveproxy.contract.codec`.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from liveproxy import __version__

# HTTP ---------------------------------------------------------------------------------------


@attrs.frozen
class EphemeralRequest:
    """``POST /api/auth``'s ``ephemeral`` object: mint a token for the Gemini-native endpoint
    with these constraints (see :mod:`liveproxy.contract.native`), shaped like Google's
    ``auth_tokens.create``. Bounds are checked by the codec."""

    #: The model every session of the token uses, whatever the client's setup says.
    model: str | None = None
    #: A Gemini setup object (``BidiGenerateContentSetup``'s fields, either casing).
    config: dict[str, Any] | None = None
    #: Google SDK's ``lock_additional_fields``: None, ``[]`` or field names.
    lock_additional_fields: tuple[str, ...] | None = None
    #: Sessions the token starts (0: unlimited until ``newSessionExpireTime``); resuming one
    #: spends none.
    uses: int = 1
    #: The session's time limit asked for (clamped like ``session_duration``).
    expire_seconds: int | None = None


@attrs.frozen
class AuthRequest:
    session_duration: int | None = None
    #: A ``sessionResumable`` token: continue that conversation instead of starting one.
    resume: str | None = None
    #: The bot check's token (``recaptcha_token`` or ``bot_token`` in the body).
    bot_token: str | None = None
    #: Mint an ephemeral token for the Gemini-native endpoint instead of a session token.
    ephemeral: EphemeralRequest | None = None


@attrs.frozen
class AuthResponse:
    session_token: str
    session_time_limit: int


@attrs.frozen
class ApiError:
    code: str
    message: str


@attrs.frozen
class ErrorResponse:
    error: ApiError


@attrs.frozen
class Health:
    model: str
    status: str = "ok"
    #: The running code's version (``liveproxy.__version__``): which release a deploy serves.
    version: str = __version__


@attrs.frozen
class ModelInfo:
    """One model a browser may ask for (``setup.model``), as ``/api/status`` lists it: what
    the page may put in its setup. Fields of a model not in the proxy's table (passed on
    unchecked) are None."""

    name: str
    #: The server's ``MODEL``: what a setup without ``model`` gets.
    default: bool
    #: The response modalities it outputs (``AUDIO``, ``TEXT``).
    outputs: list[str] | None
    #: The ``thinkingConfig.thinkingLevel`` values it takes; empty: no ``thinkingConfig`` at all.
    thinking_levels: list[str] | None
    #: It reports ``serverContent.interactionStatus`` (``IN_PROGRESS`` until ``IDLE``).
    interaction_status: bool


@attrs.frozen
class BotCheckInfo:
    """The bot check a page must pass (``BOT_CHECK``): what to load, never the secret."""

    provider: str
    site_key: str | None


@attrs.frozen
class Status:
    mode: str
    missing: list[str]
    #: The server's model first, then ``ALLOWED_MODELS`` sorted.
    models: list[ModelInfo] = attrs.Factory(list)
    #: None: no bot check.
    bot_check: BotCheckInfo | None = None
    status: str = "ok"


# Browser -> proxy (the ``{"type": ...}`` messages) --------------------------------------------


@attrs.frozen
class TextInput:
    text: str
    type: Literal["text"] = "text"


@attrs.frozen
class ImageInput:
    data: str
    mime_type: str = "image/jpeg"
    type: Literal["image"] = "image"


@attrs.frozen
class StreamControl:
    type: Literal["audio_stream_end", "activity_start", "activity_end"]


BrowserInput = TextInput | ImageInput | StreamControl


# Proxy -> browser events ----------------------------------------------------------------------


@attrs.frozen
class SessionStats:
    """The ``stats`` object of ``sessionEnd``/``error`` (snake_case on the wire)."""

    message_count: int
    audio_chunks_sent: int
    elapsed_seconds: float
    total_token_count: int
    prompt_token_count: int
    response_token_count: int
    #: The session's metered usage (``liveproxy.core.usage.UsageTotals.to_dict``).
    usage: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class SessionEnd:
    reason: str
    stats: SessionStats


@attrs.frozen
class ErrorEvent:
    code: str
    message: str
    stats: SessionStats
