"""Server-side tool calls of one session: each its own task, bounded, cancellable.

A ``toolCall`` from Gemini is split (:meth:`ToolCalls.take_call`): calls to the server's tools
(:class:`~liveproxy.core.ports.ServerTools`) start here, the rest go to the browser in a
``toolCall`` holding only them. Each server call runs in its own task in this object's nursery
(a racer of the session, so the session's end cancels every call), under its tool's timeout.
Its result goes upstream as ``toolResponse`` through the link, after everything sent before it
and on whichever connection is current (during a switch, the new one, once); a result that is
not an object is wrapped as ``{"result": value}``. An exception, a timeout, a result over
:data:`MAX_RESULT_BYTES` or one call too many (:data:`MAX_RUNNING`) becomes
``response: {"error": {"message", "retryable"}}``: never the end of the session.
``toolCallCancellation`` cancels the matching calls (their response is not sent: Gemini no
longer waits for it) and passes the browser's ids on.

The browser sees ``serverToolCall`` when a call starts and ``serverToolResult`` when it ends
(names only for a tool that does not ``mirror``); it never answers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import trio

from liveproxy.core.browser_queue import BrowserQueue
from liveproxy.core.link import UpstreamLink
from liveproxy.core.ports import ServerTools, ToolTerms

log = logging.getLogger("liveproxy.tools")

#: The largest result sent upstream (its JSON); a larger one is answered with an error.
MAX_RESULT_BYTES: Final = 256 * 1024
#: Server calls one session may have running; one more is answered with an error at once.
MAX_RUNNING: Final = 16
#: The most of an exception's text given to the model (the log gets its type only).
MAX_ERROR_CHARS: Final = 500


@attrs.frozen
class _Call:
    id: str
    name: str
    args: dict[str, Any]
    terms: ToolTerms


class ToolCalls:
    """The server calls of one session; :meth:`run` is one of its racers (it never returns)."""

    def __init__(
        self,
        tools: ServerTools,
        link: UpstreamLink,
        out: BrowserQueue,
        *,
        clock: Callable[[], float] = trio.current_time,
        mirror: bool = True,
    ) -> None:
        """Without ``mirror`` (a Gemini-native client, which has no such messages), the
        browser is not shown ``serverToolCall``/``serverToolResult``."""
        self._tools = tools
        self._mirrors = mirror
        self._link = link
        self._out = out
        self._clock = clock
        self._nursery: trio.Nursery | None = None
        #: Calls that came before :meth:`run` opened the nursery.
        self._early: list[_Call] = []
        #: The running calls' cancel scopes, by call id.
        self._running: dict[str, trio.CancelScope] = {}

    async def run(self) -> None:
        """Hold the nursery the calls run in until cancelled (the session's end), which
        cancels every call still running."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            early, self._early = self._early, []
            for call in early:
                self._start(call)
            await trio.sleep_forever()

    def take_call(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Start the server's calls of a ``toolCall`` message; return the message holding only
        the browser's calls (None when none is left for it)."""
        tool_call = message.get("toolCall")
        calls = tool_call.get("functionCalls") if isinstance(tool_call, dict) else None
        if not isinstance(calls, list):
            return message
        browsers: list[Any] = []
        for call in calls:
            name = call.get("name") if isinstance(call, dict) else None
            terms = self._tools.terms(name) if isinstance(name, str) else None
            if terms is None:
                browsers.append(call)
                continue
            args = call.get("args")
            self._start(
                _Call(
                    str(call.get("id", "")),
                    str(name),
                    args if isinstance(args, dict) else {},
                    terms,
                )
            )
        if not browsers:
            return None
        if len(browsers) == len(calls):
            return message
        return dict(message, toolCall=dict(tool_call, functionCalls=browsers))  # type: ignore[arg-type]

    def take_cancellation(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Cancel the server's calls a ``toolCallCancellation`` names; return the message
        holding only the browser's ids (None when none is left for it)."""
        cancellation = message.get("toolCallCancellation")
        ids = cancellation.get("ids") if isinstance(cancellation, dict) else None
        if not isinstance(ids, list):
            return message
        browsers = []
        for call_id in ids:
            scope = self._running.get(call_id) if isinstance(call_id, str) else None
            if scope is None:
                browsers.append(call_id)
            else:
                scope.cancel()
        if not browsers:
            return None
        if len(browsers) == len(ids):
            return message
        return dict(message, toolCallCancellation=dict(cancellation, ids=browsers))  # type: ignore[arg-type]

    def _start(self, call: _Call) -> None:
        if self._nursery is None:
            self._early.append(call)
            return
        if len(self._running) >= MAX_RUNNING or call.id in self._running:
            self._nursery.start_soon(self._refuse, call)
            return
        scope = trio.CancelScope()
        self._running[call.id] = scope
        self._nursery.start_soon(self._call, call, scope)

    async def _refuse(self, call: _Call) -> None:
        message = f"too many tool calls running (at most {MAX_RUNNING} per session)"
        self._tools.finished(call.name, "busy", 0.0)
        await self._answer(call, {"error": {"message": message, "retryable": True}})

    async def _call(self, call: _Call, scope: trio.CancelScope) -> None:
        """Run one call and answer it; cancelled with ``scope`` (then unanswered)."""
        self._mirror(call, "serverToolCall", {"args": call.args})
        started = self._clock()
        result = "cancelled"
        response: dict[str, Any] = {"error": {"message": "cancelled", "retryable": False}}
        try:
            with scope:
                result, response = await self._outcome(call)
        finally:
            del self._running[call.id]
            seconds = round(self._clock() - started, 3)
            self._tools.finished(call.name, result, seconds)
            log.info(
                "tool %s: %s in %.3f s",
                call.name,
                result,
                seconds,
                extra={
                    "event": "tool_call",
                    "tool": call.name,
                    "result": result,
                    "seconds": seconds,
                },
            )
            self._mirror(call, "serverToolResult", _shown(response) | {"seconds": seconds})
        if result != "cancelled":
            await self._answer(call, response)

    async def _outcome(self, call: _Call) -> tuple[str, dict[str, Any]]:
        """How the call ended, and the response Gemini gets."""
        try:
            with trio.fail_after(call.terms.timeout):
                value = await self._tools.invoke(call.name, call.args)
        except trio.TooSlowError:
            seconds = call.terms.timeout
            return "timeout", _error(f"the tool took longer than {seconds:g} s", retryable=True)
        except Exception as exc:  # a tool's failure is its call's, not the session's
            text = str(exc)[:MAX_ERROR_CHARS] or type(exc).__name__
            return "error", _error(text, retryable=False)
        response = value if isinstance(value, dict) else {"result": value}
        try:
            size = len(orjson.dumps(response))
        except (TypeError, orjson.JSONEncodeError):
            return "error", _error("the tool's result is not JSON", retryable=False)
        if size > MAX_RESULT_BYTES:
            limit = MAX_RESULT_BYTES // 1024
            return "too_large", _error(f"the tool's result is over {limit} KiB", retryable=False)
        return "ok", response

    async def _answer(self, call: _Call, response: dict[str, Any]) -> None:
        reply = {"id": call.id, "name": call.name, "response": response}
        message = orjson.dumps({"toolResponse": {"functionResponses": [reply]}}).decode()
        await self._link.send(message, replayable=True)

    def _mirror(self, call: _Call, kind: str, details: dict[str, Any]) -> None:
        if not self._mirrors:
            return
        shown = {"id": call.id, "name": call.name}
        if call.terms.mirror:
            shown |= details
        elif "seconds" in details:
            shown["seconds"] = details["seconds"]
        self._out.put(orjson.dumps({kind: shown}).decode())


def _error(message: str, *, retryable: bool) -> dict[str, Any]:
    return {"error": {"message": message, "retryable": retryable}}


def _shown(response: dict[str, Any]) -> dict[str, Any]:
    """A response as ``serverToolResult`` shows it: ``error`` for a failure, else ``response``."""
    error = response.get("error")
    if isinstance(error, dict) and set(response) == {"error"}:
        return {"error": error}
    return {"response": response}
