"""Python functions as server tools: async ones awaited in the caller's task, sync ones in a
worker thread under the registry's :class:`trio.CapacityLimiter`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import trio

from liveproxy.tools.declare import ToolContext, ToolSpec
from liveproxy.tools.errors import ToolFailed
from liveproxy.tools.schema import Signature, signature_of
from liveproxy.tools.server_tool import ServerTool, make_tool


def python_tool(spec: ToolSpec, source: str, limiter: trio.CapacityLimiter) -> ServerTool:
    """The :class:`ServerTool` of a decorated function; ``source`` names it in errors.

    Raises:
        ToolLoadError: the function's signature has no schema (see :mod:`.schema`), or an
            option is wrong (see :func:`.make_tool`).
    """
    signature = signature_of(spec.fn, source, derive=spec.parameters is None)
    name = spec.name or spec.fn.__name__
    return make_tool(
        name=name,
        description=spec.description,
        parameters=spec.parameters if spec.parameters is not None else signature.schema,
        behavior=spec.behavior,
        timeout=spec.timeout,
        mirror=spec.mirror,
        kind="python",
        call=functools.partial(_call, spec.fn, name, signature, limiter),
        source=source,
    )


async def _call(
    fn: Callable[..., Any],
    name: str,
    signature: Signature,
    limiter: trio.CapacityLimiter,
    args: dict[str, Any],
    context: ToolContext,
) -> Any:
    kwargs = _arguments(name, signature, args)
    if signature.context_parameter is not None:
        kwargs[signature.context_parameter] = context
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs)
    return await trio.to_thread.run_sync(
        functools.partial(fn, **kwargs), limiter=limiter, abandon_on_cancel=True
    )


def _arguments(name: str, signature: Signature, args: object) -> dict[str, Any]:
    """``args`` checked against the function's parameters (by name only: values are the
    function's to judge).

    Raises:
        ToolFailed: not an object, an unknown argument, a missing one (not retryable).
    """
    if not isinstance(args, dict) or not all(isinstance(key, str) for key in args):
        raise ToolFailed(f"tool {name}: the arguments are not an object", retryable=False)
    given = set(args)
    unknown = sorted(
        key
        for key in given
        if key == signature.context_parameter
        or (signature.accepted is not None and key not in signature.accepted)
    )
    if unknown:
        raise ToolFailed(f"tool {name}: unexpected arguments {unknown}", retryable=False)
    missing = sorted(signature.needed - given)
    if missing:
        raise ToolFailed(f"tool {name}: missing arguments {missing}", retryable=False)
    return dict(args)
