"""Field-name casing: protobuf JSON accepts snake_case and lowerCamelCase for every field.

Names come from clients, so only short ones are cached (every field name of the Live API is):
a client sending long made-up names cannot make the caches hold them.
"""

from __future__ import annotations

from functools import lru_cache

#: Names longer than this are converted every time, never cached.
MAX_CACHED_CHARS = 64


def to_camel(name: str) -> str:
    """``generation_config`` -> ``generationConfig``; camelCase names come back unchanged."""
    if "_" not in name:
        return name
    return _camel(name) if len(name) <= MAX_CACHED_CHARS else _camel.__wrapped__(name)


def to_snake(name: str) -> str:
    """``generationConfig`` -> ``generation_config`` (the form Google uses in error paths)."""
    return _snake(name) if len(name) <= MAX_CACHED_CHARS else _snake.__wrapped__(name)


@lru_cache(maxsize=4096)
def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@lru_cache(maxsize=4096)
def _snake(name: str) -> str:
    out: list[str] = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)
