"""Where server tools come from: :func:`load_tools` collects them (modules, installed packages'
entry points, the HTTP tools file) into a :class:`ToolRegistry`, checked once, at start."""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import os
import ssl
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Final

import attrs
import httpx
import trio

from liveproxy.tools.declare import ToolSpec, spec_of
from liveproxy.tools.errors import ToolLoadError
from liveproxy.tools.http import read_tools_file
from liveproxy.tools.python import python_tool
from liveproxy.tools.server_tool import ServerTool

__all__ = ["ServerTool", "ToolLoadError", "ToolRegistry", "load_tools"]

#: The entry-point group of installed packages' tools.
ENTRY_POINT_GROUP: Final = "liveproxy.tools"
#: The default bound on a result, in bytes (256 KiB).
MAX_RESULT_BYTES: Final = 256 * 1024


@attrs.define
class ToolRegistry:
    """The server tools a process offers, by name; ``ToolRegistry()`` offers none.

    :meth:`aclose` closes the HTTP tools' client (their connections).
    """

    tools: Mapping[str, ServerTool] = attrs.field(factory=lambda: MappingProxyType({}))
    #: The most bytes a result may take (an HTTP tool's answer is read no further).
    max_result_bytes: int = MAX_RESULT_BYTES
    _client: httpx.AsyncClient | None = attrs.field(default=None, alias="client", repr=False)

    @classmethod
    def empty(cls) -> ToolRegistry:
        """A registry without tools."""
        return cls()

    def declarations(self) -> list[dict[str, Any]]:
        """Every tool's ``functionDeclaration`` (copies), in load order."""
        return [copy.deepcopy(tool.declaration) for tool in self.tools.values()]

    async def aclose(self) -> None:
        """Close the HTTP tools' client, if any; a no-op after the first call."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def load_tools(
    *,
    modules: Sequence[str] = (),
    tools_file: Path | None = None,
    selected: frozenset[str] | None = None,
    entry_points: bool = True,
    threads: int = 8,
    max_result_bytes: int = MAX_RESULT_BYTES,
) -> ToolRegistry:
    """The tools of ``modules`` (importable names; the ``@tool`` functions among each module's
    attributes, in definition order), of the entry points of group ``liveproxy.tools`` (each
    a module or a ``@tool`` function) and of ``tools_file`` (HTTP tools, see
    :mod:`.http`), limited to ``selected`` (None: all). Sync tools share ``threads`` worker
    threads.

    Raises:
        ToolLoadError: a module or entry point cannot be loaded, a tool is malformed, two tools
            share a name (both sources named), a selected name is no tool's.
    """
    if threads < 1:
        raise ToolLoadError("the tools' worker threads must be at least 1")
    limiter = trio.CapacityLimiter(threads)
    found: dict[str, tuple[ServerTool, str]] = {}

    def add(tool: ServerTool, source: str) -> None:
        if tool.name in found:
            raise ToolLoadError(
                f"two tools are named {tool.name}: {found[tool.name][1]} and {source}"
            )
        found[tool.name] = (tool, source)

    for name in modules:
        module = _import(name, f"TOOLS_MODULES: module {name!r}")
        for spec, label in _specs_of(module):
            add(python_tool(spec, label, limiter), f"module {name} ({label})")
    if entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {entry_point.name} = {entry_point.value}"
            for spec, label in _specs_of_entry_point(entry_point, where):
                add(python_tool(spec, label, limiter), f"{where} ({label})")
    client = None
    if tools_file is not None:
        client = httpx.AsyncClient(verify=ssl.create_default_context(), timeout=None)
        # Nothing opens before its first request: a failed load leaves nothing to close.
        for tool in read_tools_file(tools_file, client, max_result_bytes, os.environ):
            add(tool, f"TOOLS_FILE {tools_file}")
    if selected is not None:
        missing = sorted(selected - set(found))
        if missing:
            raise ToolLoadError(
                f"SERVER_TOOLS names tools that do not exist: {', '.join(missing)} "
                f"(known: {', '.join(found) or 'none'})"
            )
    tools = {
        name: tool for name, (tool, _) in found.items() if selected is None or name in selected
    }
    if not any(tool.kind == "http" for tool in tools.values()):
        client = None
    return ToolRegistry(MappingProxyType(tools), max_result_bytes, client=client)


def _import(name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ToolLoadError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from exc


def _specs_of(module: ModuleType) -> Iterator[tuple[ToolSpec, str]]:
    """The tool specs among ``module``'s attributes, each once, with a label naming it."""
    seen: set[int] = set()
    for attribute, value in vars(module).items():
        spec = spec_of(value)
        if spec is not None and id(spec) not in seen:
            seen.add(id(spec))
            yield spec, f"{module.__name__}.{attribute}"


def _specs_of_entry_point(
    entry_point: importlib.metadata.EntryPoint, where: str
) -> Iterator[tuple[ToolSpec, str]]:
    try:
        loaded = entry_point.load()
    except Exception as exc:
        raise ToolLoadError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if isinstance(loaded, ModuleType):
        yield from _specs_of(loaded)
        return
    spec = spec_of(loaded)
    if spec is None:
        raise ToolLoadError(f"{where} is neither a module nor a @tool function")
    yield spec, f"{spec.fn.__module__}.{spec.fn.__qualname__}"
