"""WebSocket close codes and Google's close-reason texts for the Live API."""

from __future__ import annotations

from typing import Final

NORMAL: Final = 1000
GOING_AWAY: Final = 1001
NO_STATUS: Final = 1005
ABNORMAL: Final = 1006
INVALID_PAYLOAD: Final = 1007
POLICY: Final = 1008
TOO_BIG: Final = 1009
INTERNAL: Final = 1011
TRY_AGAIN_LATER: Final = 1013
TLS_FAILED: Final = 1015

#: Codes that may never appear in a close frame on the wire (RFC 6455 section 7.4.1).
RESERVED: Final = frozenset({NO_STATUS, ABNORMAL, TLS_FAILED})

MAX_REASON_BYTES: Final = 123

INVALID_ARGUMENT: Final = "Request contains an invalid argument."
API_KEY_INVALID: Final = "API key not valid. Please pass a valid API key."
UNREGISTERED_CALLER: Final = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
SESSION_NOT_FOUND: Final = "BidiGenerateContent session not found"
ENTITY_NOT_FOUND: Final = "Requested entity was not found."
DEADLINE_EXPIRED: Final = "Deadline expired before operation could complete."
MEDIA_CHUNKS_DEPRECATED: Final = (
    "realtime_input.media_chunks is deprecated. Use audio, video, or text instead."
)


def model_not_found(model: str, api_version: str) -> str:
    """The reason Google gives for a model it does not serve over the Live API."""
    return (
        f"{model} is not found for API version {api_version}, or is not supported for "
        "bidiGenerateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )


def rules_out_resuming(code: int, reason: str) -> bool:
    """Whether Google closing with ``code``/``reason`` means a retry cannot help.

    1007 (a payload it refuses), 1008 (policy: the key, the model, a refused handle) and quota
    closes (``RESOURCE_EXHAUSTED``) end the session instead of being resumed or retried.
    """
    return code in (INVALID_PAYLOAD, POLICY) or "quota" in reason.lower()


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to the 123 UTF-8 bytes a close frame can carry, never mid-character."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode("utf-8", "ignore")
