"""Declaring a Python function as a server tool: :func:`tool`, and the :class:`ToolContext` a
tool may ask for.

The decorator only marks the function (:data:`SPEC_ATTRIBUTE` holds its :class:`ToolSpec`) and
returns it unchanged; its schema is derived and checked when the tools are loaded
(:func:`liveproxy.tools.load_tools`), so a mistake is a :class:`ToolLoadError` at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar

import attrs

F = TypeVar("F", bound=Callable[..., Any])

Behavior = Literal["BLOCKING", "NON_BLOCKING"]

#: The attribute of a decorated function that holds its :class:`ToolSpec`.
SPEC_ATTRIBUTE: Final = "__liveproxy_tool__"


def _read_only(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    return claims if isinstance(claims, MappingProxyType) else MappingProxyType(dict(claims))


@attrs.frozen
class ToolContext:
    """What a tool may know of the call's session; read-only (``claims`` too).

    A tool receives it through a parameter annotated ``ToolContext`` (any name); that parameter
    is not part of the tool's declared parameters.
    """

    session_id: str
    #: The JWT subject, or a hash of the client's IP without sign-in.
    client: str
    #: The JWT's claims (empty without sign-in).
    claims: Mapping[str, Any] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_read_only
    )


@attrs.frozen
class ToolSpec:
    """A decorated function and its :func:`tool` options, as given (checked at load)."""

    fn: Callable[..., Any]
    description: str
    name: str | None
    timeout: float
    behavior: Behavior | None
    parameters: dict[str, Any] | None
    mirror: bool


def tool(
    description: str,
    *,
    name: str | None = None,
    timeout: float = 10.0,
    behavior: Behavior | None = None,
    parameters: dict[str, Any] | None = None,
    mirror: bool = True,
) -> Callable[[F], F]:
    """Mark a sync or async function as a server tool; the function is returned unchanged.

    Args:
        description: what the model is told the tool does.
        name: the function's name for the model (default: the Python name).
        timeout: seconds a call may take (0 < timeout <= 300).
        behavior: Gemini's ``behavior`` of the declaration (left out by default).
        parameters: the parameters' schema (Gemini's OpenAPI subset); default: derived from
            the type hints.
        mirror: whether the browser sees the call's arguments and result (names always).
    """

    def mark(fn: F) -> F:
        spec = ToolSpec(fn, description, name, timeout, behavior, parameters, mirror)
        setattr(fn, SPEC_ATTRIBUTE, spec)
        return fn

    return mark


def spec_of(obj: object) -> ToolSpec | None:
    """The :class:`ToolSpec` of a decorated function, else None."""
    spec = getattr(obj, SPEC_ATTRIBUTE, None) if callable(obj) else None
    return spec if isinstance(spec, ToolSpec) else None
