"""A Python function's parameters as Gemini's schema (its OpenAPI subset), from type hints.

``str``, ``int``, ``float``, ``bool`` are ``string``, ``integer``, ``number``, ``boolean``;
``list[X]`` is an ``array`` of X's items; ``Literal["a", "b"]`` a ``string`` with an ``enum``;
``X | None`` (``Optional[X]``) is X, ``nullable``. A parameter with a default is not required.
A parameter annotated :class:`~liveproxy.tools.declare.ToolContext` is left out: it receives
the call's context.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs

from liveproxy.tools.declare import ToolContext
from liveproxy.tools.errors import ToolLoadError

_SCALARS: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


@attrs.frozen
class Signature:
    """What a function's signature gives a tool."""

    #: The parameters' schema; None for a function without parameters.
    schema: dict[str, Any] | None
    #: The parameter that receives the context, if any.
    context_parameter: str | None
    #: The parameters the model may give (None: any, the function takes ``**kwargs``).
    accepted: frozenset[str] | None
    #: The parameters the model must give (those without a default).
    needed: frozenset[str]


def signature_of(fn: Callable[..., Any], label: str, *, derive: bool) -> Signature:
    """The schema (if ``derive``) and the context parameter of ``fn``; ``label`` names it.

    Raises:
        ToolLoadError: a hint that cannot be resolved or has no schema, a parameter without a
            hint (when deriving), or one that cannot be passed by name.
    """
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ToolLoadError(f"tool {label}: its type hints cannot be resolved ({exc})") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    context: str | None = None
    accepted: set[str] | None = set()
    needed: set[str] = set()
    for parameter in inspect.signature(fn).parameters.values():
        where = f"tool {label}, parameter {parameter.name!r}"
        hint = hints.get(parameter.name, inspect.Parameter.empty)
        if hint is ToolContext:
            context = parameter.name
            continue
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and not derive:
            accepted = None
            continue
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL):
            raise ToolLoadError(f"{where}: a tool's parameters are passed by name")
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise ToolLoadError(f"{where}: **kwargs needs the tool's parameters declared")
        if accepted is not None:
            accepted.add(parameter.name)
        if parameter.default is inspect.Parameter.empty:
            needed.add(parameter.name)
        if not derive:
            continue
        if hint is inspect.Parameter.empty:
            raise ToolLoadError(f"{where}: no type hint")
        properties[parameter.name] = _schema(hint, where)
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
    schema: dict[str, Any] | None = None
    if properties:
        schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
    return Signature(
        schema, context, None if accepted is None else frozenset(accepted), frozenset(needed)
    )


def _schema(hint: Any, where: str) -> dict[str, Any]:
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _schema(args[0], where)}
    if origin is typing.Literal and args and all(isinstance(a, str) for a in args):
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return {**_schema(rest[0], where), "nullable": True}
    raise ToolLoadError(f"{where}: the type hint {_hint_name(hint)} has no tool schema")


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint)
