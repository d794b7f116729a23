"""HTTP tools: declared in a TOML file (``TOOLS_FILE``), each a POST of
``{"name", "args", "session_id", "client"}`` whose answer is the JSON object returned.

The file holds ``[[tool]]`` tables: ``name``, ``description``, ``url`` (http or https),
``timeout`` (seconds, default 10), ``behavior`` (optional), ``mirror`` (default true),
``parameters`` (a table, or a JSON string: the schema) and ``[tool.headers]``, whose values may
name environment variables as ``${VAR}``, expanded once, at load. No error message ever holds a
header's value.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import httpx
import orjson

from liveproxy.tools.declare import ToolContext
from liveproxy.tools.errors import ToolFailed, ToolLoadError, ToolResultTooLarge
from liveproxy.tools.server_tool import ServerTool, make_tool

_KEYS: Final = frozenset(
    {"name", "description", "url", "timeout", "behavior", "mirror", "parameters", "headers"}
)
_VARIABLE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Statuses after which the same call may succeed later.
_RETRYABLE: Final = frozenset({408, 425, 429})


@attrs.frozen
class HttpTarget:
    """Where and how one HTTP tool is called."""

    name: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    max_bytes: int


def read_tools_file(
    path: Path, client: httpx.AsyncClient, max_bytes: int, environ: Mapping[str, str]
) -> list[ServerTool]:
    """The HTTP tools declared in ``path``, called through ``client``.

    Raises:
        ToolLoadError: the file cannot be read or is not TOML, a table is malformed, an
            environment variable a header names is not set (named, never a value).
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ToolLoadError(f"TOOLS_FILE {path}: cannot be read as TOML ({exc})") from exc
    unknown = sorted(set(document) - {"tool"})
    if unknown:
        raise ToolLoadError(f"TOOLS_FILE {path}: unknown keys {unknown} (expected [[tool]])")
    entries = document.get("tool", [])
    if not isinstance(entries, list):
        raise ToolLoadError(f"TOOLS_FILE {path}: tool must be an array of tables ([[tool]])")
    return [
        _http_tool(entry, f"TOOLS_FILE {path} [[tool]] #{number}", client, max_bytes, environ)
        for number, entry in enumerate(entries, 1)
    ]


def _http_tool(
    entry: dict[str, Any],
    source: str,
    client: httpx.AsyncClient,
    max_bytes: int,
    environ: Mapping[str, str],
) -> ServerTool:
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ToolLoadError(f"{source}: unknown keys {unknown}")
    name = entry.get("name")
    url = entry.get("url")
    split = urlsplit(url) if isinstance(url, str) else None
    if split is None or split.scheme not in ("http", "https") or not split.hostname:
        raise ToolLoadError(f"{source}: url must be an http:// or https:// URL")
    assert isinstance(url, str)
    parameters = entry.get("parameters")
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters)
        except ValueError as exc:
            raise ToolLoadError(f"{source}: parameters is not JSON ({exc})") from exc
    headers = _headers(entry.get("headers", {}), source, environ)
    target = HttpTarget(str(name), url, headers, max_bytes)
    return make_tool(
        name=name,
        description=entry.get("description"),
        parameters=parameters,
        behavior=entry.get("behavior"),
        timeout=entry.get("timeout", 10.0),
        mirror=entry.get("mirror", True),
        kind="http",
        call=functools.partial(post, client, target),
        source=source,
    )


def _headers(table: object, source: str, environ: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ToolLoadError(f"{source}: headers must be a table of names to strings")
    headers: dict[str, str] = {}
    for header, value in table.items():
        if not isinstance(value, str):
            raise ToolLoadError(f"{source}: header {header!r} is not a string")

        def expand(match: re.Match[str], header: str = header) -> str:
            variable = match.group(1)
            if variable not in environ:
                raise ToolLoadError(
                    f"{source}: header {header!r} names the environment variable {variable}, "
                    "which is not set"
                )
            return environ[variable]

        expanded = _VARIABLE.sub(expand, value)
        if any(c in expanded for c in "\r\n\0"):
            raise ToolLoadError(f"{source}: header {header!r}'s value has a line break")
        headers[header] = expanded
    return headers


async def post(
    client: httpx.AsyncClient, target: HttpTarget, args: dict[str, Any], context: ToolContext
) -> dict[str, Any]:
    """POST one call to ``target``; the JSON object it answers.

    No deadline of its own beyond httpx's per-read timeout (the client's): the caller's cancel
    scope bounds it and cancels the request (its connection is closed).

    Raises:
        ToolFailed: the request failed (retryable), a status other than 2xx (retryable for
            408, 425, 429 and 5xx), an answer that is not JSON or not an object.
        ToolResultTooLarge: the answer is over ``target.max_bytes`` (read no further).
    """
    body = orjson.dumps(
        {
            "name": target.name,
            "args": args,
            "session_id": context.session_id,
            "client": context.client,
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(target.headers)
    headers["Accept-Encoding"] = "identity"
    request = client.build_request("POST", target.url, content=body, headers=headers)
    where = f"tool {target.name}"
    try:
        response = await client.send(request, stream=True)
        try:
            data = await _read(response, target, where)
        finally:
            await response.aclose()
    except httpx.TransportError as exc:
        raise ToolFailed(
            f"{where}: the request failed ({type(exc).__name__})", retryable=True
        ) from exc
    except httpx.HTTPError as exc:
        raise ToolFailed(
            f"{where}: the request failed ({type(exc).__name__})", retryable=False
        ) from exc
    try:
        result = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ToolFailed(f"{where}: the answer is not JSON", retryable=False) from None
    if not isinstance(result, dict):
        raise ToolFailed(f"{where}: the answer is not a JSON object", retryable=False)
    return result


async def _read(response: httpx.Response, target: HttpTarget, where: str) -> bytes:
    status = response.status_code
    if not 200 <= status < 300:
        retryable = status >= 500 or status in _RETRYABLE
        raise ToolFailed(f"{where}: the server answered {status}", retryable=retryable)
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Asked for identity: a compressed answer could inflate past any bound in one chunk.
        raise ToolFailed(f"{where}: the answer is compressed ({encoding})", retryable=False)
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > target.max_bytes:
        raise ToolResultTooLarge(target.max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > target.max_bytes:
            raise ToolResultTooLarge(target.max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)
