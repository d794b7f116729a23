"""Parameters' schemas derived from type hints, and what cannot have one."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytest
import trio

from liveproxy.tools import ToolContext, ToolLoadError, load_tools, tool
from liveproxy.tools.declare import spec_of
from liveproxy.tools.python import python_tool
from liveproxy.tools.server_tool import ServerTool


def _loaded(fn: Any) -> ServerTool:
    spec = spec_of(fn)
    assert spec is not None
    return python_tool(spec, f"tests.{fn.__name__}", trio.CapacityLimiter(1))


def test_each_hint_kind() -> None:
    @tool("Every kind.")
    def every(
        text: str,
        count: int,
        ratio: float,
        flag: bool,
        names: list[str],
        grid: list[list[int]],
        mode: Literal["fast", "slow"],
        note: str | None = None,
        limit: Optional[int] = 3,  # noqa: UP045  # the old spelling is supported too
        scale: float = 1.0,
    ) -> None: ...

    assert _loaded(every).declaration == {
        "name": "every",
        "description": "Every kind.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "count": {"type": "integer"},
                "ratio": {"type": "number"},
                "flag": {"type": "boolean"},
                "names": {"type": "array", "items": {"type": "string"}},
                "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "note": {"type": "string", "nullable": True},
                "limit": {"type": "integer", "nullable": True},
                "scale": {"type": "number"},
            },
            "required": ["text", "count", "ratio", "flag", "names", "grid", "mode"],
        },
    }


def test_context_is_not_a_parameter_and_options_are_declared() -> None:
    @tool("Look up.", name="lookup_v2", behavior="NON_BLOCKING", timeout=30, mirror=False)
    async def lookup(ctx: ToolContext, key: str) -> dict[str, str]:
        return {}

    found = _loaded(lookup)
    assert found.name == "lookup_v2"
    assert (found.timeout, found.mirror, found.kind) == (30.0, False, "python")
    assert found.declaration == {
        "name": "lookup_v2",
        "description": "Look up.",
        "parameters": {
            "type": "object",
            "properties": {"key": {"type": "string"}},
            "required": ["key"],
        },
        "behavior": "NON_BLOCKING",
    }


def test_no_parameters_no_schema() -> None:
    @tool("Nothing to ask.")
    def ping(context: ToolContext) -> str:
        return "pong"

    assert _loaded(ping).declaration == {"name": "ping", "description": "Nothing to ask."}


def test_declared_parameters_win_over_hints() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string", "description": "query"}}}

    @tool("Search.", parameters=schema)
    def search(**kwargs: Any) -> list[str]:
        return []

    assert _loaded(search).declaration["parameters"] == schema


@pytest.mark.parametrize(
    ("hint", "shown"),
    [
        ("dict[str, int]", "dict[str, int]"),
        ("list", "list"),
        ("Literal[1, 2]", "Literal[1, 2]"),
        ("int | str", "int | str"),
        ("bytes", "bytes"),
    ],
)
def test_an_unsupported_hint_names_the_function_and_parameter(hint: str, shown: str) -> None:
    namespace: dict[str, Any] = {"tool": tool, "Literal": Literal}
    exec(f"@tool('Bad.')\ndef bad(ok: str, wrong: {hint}) -> None: ...", namespace)
    with pytest.raises(ToolLoadError, match=r"tool tests\.bad, parameter 'wrong'") as caught:
        _loaded(namespace["bad"])
    assert shown.split("[")[0] in str(caught.value)


def test_a_parameter_without_hint_or_passed_by_position() -> None:
    @tool("No hint.")
    def unhinted(x) -> None: ...  # type: ignore[no-untyped-def]

    @tool("Positional.")
    def positional(x: str, /) -> None: ...

    with pytest.raises(ToolLoadError, match=r"parameter 'x': no type hint"):
        _loaded(unhinted)
    with pytest.raises(ToolLoadError, match=r"parameter 'x': .* passed by name"):
        _loaded(positional)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "1abc"}, "the tool name '1abc'"),
        ({"name": "a" * 65}, "the tool name"),
        ({"name": "has-dash"}, "the tool name"),
        ({"timeout": 0}, r"timeout must be .* \(0, 300\]"),
        ({"timeout": 301}, "timeout must be"),
        ({"behavior": "SOMETIMES"}, "behavior must be"),
        ({"parameters": {"type": "string"}}, "parameters must be a schema of type object"),
    ],
)
def test_options_are_checked(options: dict[str, Any], message: str) -> None:
    def fn() -> None: ...

    with pytest.raises(ToolLoadError, match=message):
        _loaded(tool("Checked.", **options)(fn))


def test_the_example_tool() -> None:
    registry = load_tools(modules=["liveproxy.tools.examples"], entry_points=False)
    assert registry.declarations() == [
        {
            "name": "get_time",
            "description": registry.tools["get_time"].declaration["description"],
            "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
        }
    ]
