"""Field-name casing: protobuf JSON accepts snake_case and lowerCamelCase for every field."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def to_camel(name: str) -> str:
    """``generation_config`` -> ``generationConfig``; camelCase names come back unchanged."""
    if "_" not in name:
        return name
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@lru_cache(maxsize=4096)
def to_snake(name: str) -> str:
    """``generationConfig`` -> ``generation_config`` (the form Google uses in error paths)."""
    out: list[str] = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)
