"""One server tool: its declaration for Gemini and how it is invoked."""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import attrs

from liveproxy.tools.declare import ToolContext
from liveproxy.tools.errors import ToolLoadError

Invoke = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@attrs.frozen
class ServerTool:
    """A tool the proxy runs itself (a Python function, or a POST to an HTTP endpoint)."""

    name: str
    #: Gemini's ``functionDeclaration`` (camelCase): name, description[, parameters][, behavior].
    declaration: dict[str, Any]
    #: Seconds a call may take; the caller applies it (:func:`trio.fail_after`).
    timeout: float
    #: Whether the browser sees the call's arguments and result (names always).
    mirror: bool
    kind: Literal["python", "http"]
    _call: Invoke = attrs.field(repr=False, eq=False, alias="call")

    async def invoke(self, args: dict[str, Any], context: ToolContext) -> Any:
        """The tool's result for ``args``; applies no timeout (the caller does, and cancels).

        An async function is awaited in the caller's task. A sync function runs in a worker
        thread (their number bounded per registry); a cancelled call returns at once and
        abandons its thread, which runs to its end, holding its slot until then.

        Raises:
            ToolFailed: the arguments do not fit the function; an HTTP tool's request failed,
                or its answer was not 2xx or not a JSON object.
            ToolResultTooLarge: an HTTP tool's answer is over the registry's bound.
            Exception: a Python tool's own exception, as is.
        """
        return await self._call(args, context)


#: Gemini's rule for a function's name.
NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: The longest timeout a tool may have, in seconds.
MAX_TIMEOUT: Final = 300.0
BEHAVIORS: Final = frozenset({"BLOCKING", "NON_BLOCKING"})


def make_tool(
    *,
    name: object,
    description: object,
    parameters: object,
    behavior: object,
    timeout: object,
    mirror: object,
    kind: Literal["python", "http"],
    call: Invoke,
    source: str,
) -> ServerTool:
    """A checked :class:`ServerTool`; ``source`` says where it was declared (in errors).

    Raises:
        ToolLoadError: a name Gemini refuses, no description, parameters that are not an object
            schema, an unknown behavior, a timeout not in (0, 300], a mirror that is not a bool.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ToolLoadError(
            f"{source}: the tool name {name!r} is not a letter or _ then up to 63 letters, "
            "digits or _"
        )
    where = f"{source}: tool {name}"
    if not isinstance(description, str) or not description.strip():
        raise ToolLoadError(f"{where}: no description")
    if parameters is not None and not (
        isinstance(parameters, dict) and parameters.get("type") == "object"
    ):
        raise ToolLoadError(f"{where}: parameters must be a schema of type object")
    if behavior is not None and behavior not in BEHAVIORS:
        raise ToolLoadError(f"{where}: behavior must be BLOCKING or NON_BLOCKING")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise ToolLoadError(f"{where}: timeout must be a number of seconds in (0, 300]")
    if not isinstance(mirror, bool):
        raise ToolLoadError(f"{where}: mirror must be true or false")
    declaration: dict[str, Any] = {"name": name, "description": description}
    if parameters is not None:
        declaration["parameters"] = copy.deepcopy(parameters)
    if behavior is not None:
        declaration["behavior"] = behavior
    return ServerTool(name, declaration, float(timeout), mirror, kind, call=call)
