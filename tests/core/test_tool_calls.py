"""Server-side tool calls in the session engine, over the driver's fakes and trio's autojump
clock: the split, the answers, the bounds, cancellation, and a switch in the middle of a call.

The tools here are a fake of the engine's :class:`~liveproxy.core.ports.ServerTools` port; real
tools (Python modules, HTTP) through a real proxy and the emulator are in tests/web/.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import trio
import trio.testing

from liveproxy.contract.endings import BROWSER_CLOSED
from liveproxy.core.ports import ToolTerms
from liveproxy.core.tool_calls import MAX_RESULT_BYTES, MAX_RUNNING
from tests.core.test_session_driver import HANDLE, FakeSocket, running


@attrs.define(eq=False)
class FakeTools:
    """Server tools: ``echo`` answers its args, ``slow`` waits for ``release``, ``boom``
    raises, ``huge`` answers too much, ``number`` answers 42, ``secret`` does not mirror."""

    release: trio.Event = attrs.Factory(trio.Event)
    finished_calls: list[tuple[str, str]] = attrs.Factory(list)
    started: int = 0
    cancelled: int = 0

    def terms(self, name: str) -> ToolTerms | None:
        if name not in ("echo", "slow", "boom", "huge", "number", "secret"):
            return None
        return ToolTerms(timeout=5.0, mirror=name != "secret")

    async def invoke(self, name: str, args: dict[str, Any]) -> Any:
        self.started += 1
        if name == "slow":
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.cancelled += 1
                raise
            return {"done": True}
        if name == "boom":
            raise RuntimeError("the CRM said no")
        if name == "huge":
            return {"data": "x" * MAX_RESULT_BYTES}
        if name == "number":
            return 42
        return dict(args)

    def finished(self, name: str, result: str, seconds: float) -> None:
        self.finished_calls.append((name, result))


def tool_call(*calls: tuple[str, str, dict[str, Any]]) -> str:
    return orjson.dumps(
        {"toolCall": {"functionCalls": [{"id": i, "name": n, "args": a} for i, n, a in calls]}}
    ).decode()


def responses(socket: FakeSocket) -> list[dict[str, Any]]:
    return [
        r
        for m in socket.received
        for r in orjson.loads(m).get("toolResponse", {}).get("functionResponses", [])
    ]


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_a_mixed_call_runs_the_servers_part_and_gives_the_browser_only_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(
            tool_call(("c1", "echo", {"city": "Oslo"}), ("c2", "get_weather", {"location": "X"}))
        )
        await settle()
        run.to_session.close()
    events: list[dict[str, Any]] = run.browser.events()
    [browser_call] = [e for e in events if "toolCall" in e]
    assert browser_call["toolCall"]["functionCalls"] == [
        {"id": "c2", "name": "get_weather", "args": {"location": "X"}}
    ]
    assert "sessionStats" in browser_call
    assert {"serverToolCall": {"id": "c1", "name": "echo", "args": {"city": "Oslo"}}} in events
    [result] = [e["serverToolResult"] for e in events if "serverToolResult" in e]
    assert result == {"id": "c1", "name": "echo", "response": {"city": "Oslo"}, "seconds": 0.0}
    assert responses(first) == [{"id": "c1", "name": "echo", "response": {"city": "Oslo"}}]
    assert tools.finished_calls == [("echo", "ok")]


async def test_failures_become_error_responses_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(
            tool_call(("a", "boom", {}), ("b", "huge", {}), ("c", "slow", {}), ("d", "number", {}))
        )
        await settle()
        await trio.sleep(5.0)  # the slow one's timeout
        await settle()
        await run.to_session.send('{"type": "text", "text": "still here"}')
        await settle()
        run.to_session.close()
    assert run.outcome == BROWSER_CLOSED
    got = {r["id"]: r["response"] for r in responses(first)}
    assert got["a"] == {"error": {"message": "the CRM said no", "retryable": False}}
    assert got["b"]["error"]["message"] == "the tool's result is over 256 KiB"
    assert got["c"] == {"error": {"message": "the tool took longer than 5 s", "retryable": True}}
    assert got["d"] == {"result": 42}
    assert any("still here" in str(m) for m in first.received)
    assert sorted(tools.finished_calls) == [
        ("boom", "error"),
        ("huge", "too_large"),
        ("number", "ok"),
        ("slow", "timeout"),
    ]


async def test_a_cancellation_cancels_the_servers_calls_and_passes_the_browsers_ids_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(tool_call(("s", "slow", {}), ("b", "get_weather", {})))
        await settle()
        await first.to_proxy_send.send('{"toolCallCancellation": {"ids": ["s", "b"]}}')
        await settle()
        tools.release.set()
        await settle()
        run.to_session.close()
    assert tools.cancelled == 1
    assert responses(first) == []  # Gemini no longer waits for it
    events: list[dict[str, Any]] = run.browser.events()
    assert {"toolCallCancellation": {"ids": ["b"]}} in events
    [result] = [e["serverToolResult"] for e in events if "serverToolResult" in e]
    assert result["error"] == {"message": "cancelled", "retryable": False}
    assert tools.finished_calls == [("slow", "cancelled")]


async def test_the_sessions_end_cancels_a_running_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(tool_call(("s", "slow", {})))
        await settle()
        run.to_session.close()
    assert run.outcome == BROWSER_CLOSED
    assert tools.cancelled == 1
    assert tools.finished_calls == [("slow", "cancelled")]


async def test_a_tool_that_does_not_mirror_shows_the_browser_names_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(tools=FakeTools()) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(tool_call(("p", "secret", {"ssn": "123"})))
        await settle()
        run.to_session.close()
    shown = [e for e in run.browser.events() if "serverToolCall" in e or "serverToolResult" in e]
    assert shown == [
        {"serverToolCall": {"id": "p", "name": "secret"}},
        {"serverToolResult": {"id": "p", "name": "secret", "seconds": 0.0}},
    ]
    assert "123" not in str(run.browser.sent)
    assert responses(first)[0]["response"] == {"ssn": "123"}


async def test_calls_past_the_bound_are_answered_busy_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        calls: list[tuple[str, str, dict[str, Any]]] = [
            (f"c{i}", "slow", {}) for i in range(MAX_RUNNING + 2)
        ]
        await first.to_proxy_send.send(tool_call(*calls))
        await settle()
        busy = responses(first)
        tools.release.set()
        await settle()
        run.to_session.close()
    assert tools.started == MAX_RUNNING
    assert sorted(r["id"] for r in busy) == [f"c{MAX_RUNNING}", f"c{MAX_RUNNING + 1}"]
    assert all(r["response"]["error"]["retryable"] for r in busy)
    assert len(responses(first)) == MAX_RUNNING + 2


async def test_a_result_that_comes_during_a_switch_goes_to_the_new_connection_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tools = FakeTools()
    async with running(tools=tools) as run:
        first = await run.gemini.wait_for(1)
        await first.to_proxy_send.send(tool_call(("s", "slow", {})))
        await first.to_proxy_send.send('{"serverContent":{"turnComplete":true}}')
        await first.to_proxy_send.send(HANDLE % "h1")
        await first.to_proxy_send.send('{"goAway":{"timeLeft":"20s"}}')
        second = await run.gemini.wait_for(2)
        await settle()
        tools.release.set()
        await settle()
        run.to_session.close()
    assert responses(first) == []
    assert responses(second) == [{"id": "s", "name": "slow", "response": {"done": True}}]
