"""An ephemeral token's locks on a setup, as Google applies them: its ``fieldMask`` paths.

Shared by liveproxy's own tokens (:mod:`liveproxy.contract.native`), the emulator's copy of
Google's tokens (:mod:`liveproxy.emulator.tokens`) and broker mode, which asks Google for a
token (:mod:`liveproxy.web.broker`): one reading of the rules for all three.

A path names a top-level setup field (``systemInstruction``) or one field of an object
(``generationConfig.temperature``), in either casing; deeper paths lock their first two levels.
A locked path takes the token's value, or is removed from the client's setup when the token has
none. Pure and synchronous.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from liveproxy.protocol.casing import to_camel
from liveproxy.protocol.gemini_messages import SETUP


def two_levels_camel(setup: dict[str, Any]) -> dict[str, Any]:
    """A copy with camelCase keys at the top and one level in (the levels a lock names)."""
    return {
        to_camel(key): (
            {to_camel(k): v for k, v in value.items()} if isinstance(value, dict) else value
        )
        for key, value in setup.items()
    }


def field_mask_paths(token: dict[str, Any], additional: Iterable[str]) -> list[str]:
    """The locked paths, as Google's SDK writes its ``fieldMask``: each field ``token`` sets (one
    level into objects), then the ``additional`` names (a bare name that is not a setup field
    means ``generationConfig.<name>``)."""
    paths: list[str] = []
    for key, value in token.items():
        if isinstance(value, dict) and value:
            paths.extend(f"{key}.{inner}" for inner in value)
        else:
            paths.append(key)
    top_level = SETUP.fields
    for name in additional:
        parts = [to_camel(part) for part in name.split(".", 1)]
        if len(parts) == 1 and parts[0] not in top_level:
            parts = ["generationConfig", parts[0]]
        paths.append(".".join(parts))
    return paths


def apply_paths(setup: dict[str, Any], token: dict[str, Any], paths: Iterable[str]) -> None:
    """Lock each of ``paths`` in ``setup`` (both two-levels camelCase) to ``token``'s value."""
    for path in paths:
        outer, _, rest = path.partition(".")
        take(setup, token, to_camel(outer) + ("." + to_camel(rest.split(".")[0]) if rest else ""))


def take(setup: dict[str, Any], token: dict[str, Any], path: str) -> None:
    """Set ``path`` in ``setup`` to the token's value, or remove it when the token has none."""
    outer, _, inner = path.partition(".")
    if not inner:
        if outer in token:
            setup[outer] = token[outer]
        else:
            setup.pop(outer, None)
        return
    source = token.get(outer)
    current = setup.get(outer)
    target = dict(current) if isinstance(current, dict) else {}
    if isinstance(source, dict) and inner in source:
        target[inner] = source[inner]
    else:
        target.pop(inner, None)
    if target or outer in token:
        setup[outer] = target
    else:
        setup.pop(outer, None)
