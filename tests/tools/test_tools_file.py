"""The HTTP tools file (TOML): declarations, checks, headers from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveproxy.tools import ToolLoadError, load_tools


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.toml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
[[tool]]
name = "crm_lookup"
description = "Find a customer."
url = "https://crm.example/tools/lookup"
timeout = 5
behavior = "NON_BLOCKING"
mirror = false
parameters = { type = "object", properties = { email = { type = "string" } }, required = ["email"] }
[tool.headers]
Authorization = "Bearer ${CRM_TOKEN}"

[[tool]]
name = "weather"
description = "The weather."
url = "http://127.0.0.1:9/weather"
parameters = '{"type": "object", "properties": {"city": {"type": "string"}}}'
"""


async def test_a_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", "t0ken")
    registry = load_tools(tools_file=_file(tmp_path, GOOD), entry_points=False)
    try:
        lookup, weather = registry.tools.values()
        assert (lookup.kind, lookup.timeout, lookup.mirror) == ("http", 5.0, False)
        assert (weather.timeout, weather.mirror) == (10.0, True)
        assert registry.declarations() == [
            {
                "name": "crm_lookup",
                "description": "Find a customer.",
                "parameters": {
                    "type": "object",
                    "properties": {"email": {"type": "string"}},
                    "required": ["email"],
                },
                "behavior": "NON_BLOCKING",
            },
            {
                "name": "weather",
                "description": "The weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        ]
        assert "t0ken" not in repr(registry)
    finally:
        await registry.aclose()
        await registry.aclose()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "bad name"\ndescription = "x"\nurl = "http://a/"', "the tool name 'bad name'"),
        ('name = "t"\ndescription = "x"\nurl = "ftp://a/"', "url must be an http"),
        ('name = "t"\ndescription = "x"\nurl = "http://a/"\ntimeout = 0', "timeout must be"),
        ('name = "t"\ndescription = "x"\nurl = "http://a/"\ntimeout = 301', "timeout must be"),
        ('name = "t"\nurl = "http://a/"', "no description"),
        ('name = "t"\ndescription = "x"\nurl = "http://a/"\nmethod = "GET"', "unknown keys"),
    ],
)
def test_a_bad_table(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ToolLoadError, match=message) as caught:
        load_tools(tools_file=_file(tmp_path, f"[[tool]]\n{table}\n"), entry_points=False)
    assert "[[tool]] #1" in str(caught.value)


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ToolLoadError, match="cannot be read as TOML"):
        load_tools(tools_file=_file(tmp_path, "[[tool]\n"), entry_points=False)


def test_a_duplicate_names_both_sources(tmp_path: Path) -> None:
    table = '[[tool]]\nname = "t"\ndescription = "x"\nurl = "http://a/"\n'
    with pytest.raises(ToolLoadError, match=r"two tools are named t: TOOLS_FILE .* and TOOLS_FILE"):
        load_tools(tools_file=_file(tmp_path, table * 2), entry_points=False)
    with pytest.raises(
        ToolLoadError,
        match=r"two tools are named get_time: module liveproxy.tools.examples .* and TOOLS_FILE",
    ):
        load_tools(
            modules=["liveproxy.tools.examples"],
            tools_file=_file(tmp_path, table.replace('"t"', '"get_time"')),
            entry_points=False,
        )


def test_a_missing_variable_is_named_and_no_value_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRESENT_SECRET", "s3cr3t-value")
    monkeypatch.delenv("ABSENT_SECRET", raising=False)
    text = """
[[tool]]
name = "t"
description = "x"
url = "http://a/"
[tool.headers]
X-One = "${PRESENT_SECRET}"
X-Two = "key ${PRESENT_SECRET} and ${ABSENT_SECRET}"
"""
    with pytest.raises(ToolLoadError) as caught:
        load_tools(tools_file=_file(tmp_path, text), entry_points=False)
    message = str(caught.value)
    assert "ABSENT_SECRET" in message
    assert "X-Two" in message
    assert "s3cr3t-value" not in message
    assert "\n" not in message


def test_selected(tmp_path: Path) -> None:
    text = '[[tool]]\nname = "t"\ndescription = "x"\nurl = "http://a/"\n'
    path = _file(tmp_path, text)
    both = load_tools(modules=["liveproxy.tools.examples"], tools_file=path, entry_points=False)
    assert list(both.tools) == ["get_time", "t"]
    one = load_tools(
        modules=["liveproxy.tools.examples"],
        tools_file=path,
        selected=frozenset({"get_time"}),
        entry_points=False,
    )
    assert list(one.tools) == ["get_time"]
    assert [d["name"] for d in one.declarations()] == ["get_time"]
    with pytest.raises(ToolLoadError, match=r"SERVER_TOOLS names .* nope \(known: get_time, t\)"):
        load_tools(
            modules=["liveproxy.tools.examples"],
            tools_file=path,
            selected=frozenset({"nope", "t"}),
            entry_points=False,
        )


def test_no_tools() -> None:
    from liveproxy.tools import ToolRegistry

    assert ToolRegistry().declarations() == []
    assert ToolRegistry.empty().tools == {}
    assert load_tools(entry_points=False).tools == {}
