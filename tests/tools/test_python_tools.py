"""Python tools loaded by module name and from installed packages' entry points, invoked:
async ones in the caller's task, sync ones in bounded worker threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from liveproxy.tools import ToolContext, ToolFailed, ToolLoadError, load_tools
from tests.tools.modules import write_module

CONTEXT = ToolContext("session-1", "client-a", {"sub": "client-a", "role": "admin"})

TOOLS = """
    import threading
    import attrs
    import trio
    from liveproxy.tools import ToolContext, tool

    @tool("Sync: where it ran and what the context allowed.")
    def sync_tool(ctx: ToolContext, word: str, times: int = 1) -> dict:
        tried = []
        try:
            ctx.session_id = "changed"
        except attrs.exceptions.FrozenInstanceError:
            tried.append("frozen")
        try:
            ctx.claims["role"] = "root"
        except TypeError:
            tried.append("claims read-only")
        return {
            "echo": word * times,
            "main_thread": threading.current_thread() is threading.main_thread(),
            "session": ctx.session_id,
            "client": ctx.client,
            "role": ctx.claims["role"],
            "tried": tried,
        }

    @tool("Async: runs in the caller's task.")
    async def async_tool(n: int) -> list:
        await trio.sleep(0)
        return [n, id(trio.lowlevel.current_task())]

    def not_a_tool() -> None: ...

    alias = sync_tool
"""


async def test_a_module_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = write_module(tmp_path, monkeypatch, TOOLS)
    registry = load_tools(modules=[name], entry_points=False)
    assert list(registry.tools) == ["sync_tool", "async_tool"]
    sync_result = await registry.tools["sync_tool"].invoke({"word": "ab", "times": 2}, CONTEXT)
    assert sync_result == {
        "echo": "abab",
        "main_thread": False,
        "session": "session-1",
        "client": "client-a",
        "role": "admin",
        "tried": ["frozen", "claims read-only"],
    }
    async_result = await registry.tools["async_tool"].invoke({"n": 7}, CONTEXT)
    assert async_result == [7, id(trio.lowlevel.current_task())]
    await registry.aclose()


async def test_arguments_that_do_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = load_tools(modules=[write_module(tmp_path, monkeypatch, TOOLS)], entry_points=False)
    sync_tool = registry.tools["sync_tool"]
    with pytest.raises(ToolFailed, match=r"missing arguments \['word'\]") as missing:
        await sync_tool.invoke({}, CONTEXT)
    assert missing.value.retryable is False
    with pytest.raises(ToolFailed, match=r"unexpected arguments \['ctx', 'other'\]"):
        await sync_tool.invoke({"word": "a", "other": 1, "ctx": "forged"}, CONTEXT)


async def test_a_tool_s_own_exception_propagates() -> None:
    registry = load_tools(modules=["liveproxy.tools.examples"], entry_points=False)
    get_time = registry.tools["get_time"]
    answer = await get_time.invoke({"timezone": "Asia/Tokyo"}, CONTEXT)
    assert answer["timezone"] == "Asia/Tokyo"
    assert answer["utc_offset"] == "+0900"
    assert (await get_time.invoke({}, CONTEXT))["utc_offset"] == "+0000"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        await get_time.invoke({"timezone": "Mars/Olympus"}, CONTEXT)


def test_a_module_that_cannot_be_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = write_module(tmp_path, monkeypatch, "raise RuntimeError('boom')\n")
    with pytest.raises(ToolLoadError, match=rf"module '{broken}' cannot be imported: .*boom"):
        load_tools(modules=[broken], entry_points=False)
    with pytest.raises(ToolLoadError, match="'no_such_module_xyz' cannot be imported"):
        load_tools(modules=["no_such_module_xyz"], entry_points=False)


def test_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = write_module(tmp_path, monkeypatch, TOOLS)
    lone = write_module(
        tmp_path,
        monkeypatch,
        """
        from liveproxy.tools import tool

        @tool("Alone in its entry point.")
        def lone(x: int) -> int:
            return x
        """,
    )
    dist = tmp_path / "liveproxy_test_tools-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: liveproxy-test-tools\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[liveproxy.tools]\nall = {module}\none = {lone}:lone\n", encoding="utf-8"
    )
    registry = load_tools()
    assert {"sync_tool", "async_tool", "lone"} <= set(registry.tools)
    assert load_tools(entry_points=False).tools == {}
    with pytest.raises(
        ToolLoadError,
        match=rf"two tools are named lone: module {lone} .* and entry point one = {lone}:lone",
    ):
        load_tools(modules=[lone])
    (dist / "entry_points.txt").write_text(
        f"[liveproxy.tools]\nbad = {lone}:missing\n", encoding="utf-8"
    )
    with pytest.raises(ToolLoadError, match=rf"entry point bad = {lone}:missing cannot be loaded"):
        load_tools()


THREADS = """
    import threading
    import time
    from liveproxy.tools import tool

    spans = []
    release = threading.Event()
    finished = threading.Event()

    @tool("Takes a while.")
    def slow(label: str) -> str:
        start = time.monotonic()
        time.sleep(0.2)
        spans.append((label, start, time.monotonic()))
        return label

    @tool("Waits to be released.")
    def held() -> str:
        release.wait(10)
        finished.set()
        return "done"
"""


async def test_one_thread_runs_sync_calls_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    name = write_module(tmp_path, monkeypatch, THREADS)
    registry = load_tools(modules=[name], entry_points=False, threads=1)
    results: list[Any] = []

    async def call(label: str) -> None:
        results.append(await registry.tools["slow"].invoke({"label": label}, CONTEXT))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "a")
        nursery.start_soon(call, "b")
    spans = sorted(importlib.import_module(name).spans, key=lambda span: span[1])
    assert sorted(results) == ["a", "b"]
    (_, _, first_end), (_, second_start, _) = spans
    assert second_start >= first_end


async def test_a_cancelled_sync_call_returns_at_once_and_its_thread_ends_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    name = write_module(tmp_path, monkeypatch, THREADS)
    module = importlib.import_module(name)
    registry = load_tools(modules=[name], entry_points=False, threads=1)
    before = time.monotonic()
    with trio.move_on_after(0.1) as scope:
        await registry.tools["held"].invoke({}, CONTEXT)
    assert scope.cancelled_caught
    assert time.monotonic() - before < 1
    assert not module.finished.is_set()
    # Its thread still holds the one slot: the next sync call waits for it.
    next_call_done = trio.Event()

    async def next_call() -> None:
        await registry.tools["slow"].invoke({"label": "next"}, CONTEXT)
        next_call_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(next_call)
        await trio.sleep(0.3)
        assert not next_call_done.is_set()
        module.release.set()
        with trio.fail_after(5):
            await next_call_done.wait()
    assert module.finished.is_set()
    assert threading.active_count() >= 1
