"""Base64 as protobuf JSON has it: decode either alphabet, padded or not; encode standard."""

from __future__ import annotations

import base64
import binascii

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def decode_b64(data: str | bytes) -> bytes:
    """Decode standard or URL-safe base64, with or without padding.

    Raises:
        ValueError: ``data`` is not base64 in either alphabet.
    """
    try:
        raw = data.encode("ascii") if isinstance(data, str) else data
    except UnicodeEncodeError:
        raise ValueError("invalid base64: not ASCII") from None
    raw = raw.translate(_URLSAFE_TO_STANDARD)
    missing = -len(raw) % 4
    if missing == 3:
        raise ValueError("invalid base64: impossible length")
    if missing:
        raw += b"=" * missing
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from None


def encode_b64(data: bytes) -> str:
    """Standard base64 with padding, as Google sends it."""
    return base64.b64encode(data).decode("ascii")
