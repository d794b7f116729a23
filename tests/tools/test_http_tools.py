"""HTTP tools against a real local HTTP server (trio + h11, in the test's nursery)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import attrs
import h11
import pytest
import trio
import trio.testing

from liveproxy.tools import (
    ToolContext,
    ToolFailed,
    ToolRegistry,
    ToolResultTooLarge,
    load_tools,
)

CONTEXT = ToolContext("session-9", "client-z", {})
CHUNK = 64 * 1024
#: What /big would stream in all: far more than the socket buffers hold.
BIG_TOTAL = 256 * CHUNK


@attrs.define
class Server:
    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = attrs.Factory(list)
    big_sent: int = 0
    big_stopped: trio.Event = attrs.Factory(trio.Event)
    slow_closed: trio.Event = attrs.Factory(trio.Event)


async def _handle(server: Server, stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    target, headers, body = "", {}, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some())
        elif isinstance(event, h11.Request):
            target = event.target.decode()
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    server.requests.append((target, headers, body))

    async def answer(status: int, content: bytes, kind: str = "application/json") -> None:
        head = [("Content-Type", kind), ("Content-Length", str(len(content)))]
        data = connection.send(h11.Response(status_code=status, headers=head))
        data += connection.send(h11.Data(data=content)) + connection.send(h11.EndOfMessage())
        await stream.send_all(data)

    if target == "/echo":
        await answer(
            200, json.dumps({"got": json.loads(body), "auth": headers["authorization"]}).encode()
        )
    elif target == "/fail":
        await answer(500, b'{"error": "down"}')
    elif target == "/forbidden":
        await answer(403, b"{}")
    elif target == "/text":
        await answer(200, b"hello", "text/plain")
    elif target == "/bomb":
        # 10 MiB of zeros, gzipped to ~10 KiB, though identity was asked for.
        content = gzip.compress(bytes(10 * 1024 * 1024))
        head = [
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", str(len(content))),
        ]
        data = connection.send(h11.Response(status_code=200, headers=head))
        data += connection.send(h11.Data(data=content)) + connection.send(h11.EndOfMessage())
        await stream.send_all(data)
    elif target == "/list":
        await answer(200, b"[1, 2]")
    elif target == "/big":
        # No Content-Length: the client learns the size only by reading.
        head = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        try:
            await stream.send_all(connection.send(h11.Response(status_code=200, headers=head)))
            while server.big_sent < BIG_TOTAL:
                await stream.send_all(connection.send(h11.Data(data=b" " * CHUNK)))
                server.big_sent += CHUNK
        except trio.BrokenResourceError:
            pass
        server.big_stopped.set()
    elif target == "/slow":
        # Never answers; sees the client hang up.
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
        server.slow_closed.set()


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    state = Server()
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(_handle, state), 0, host="127.0.0.1")
    )
    state.port = listeners[0].socket.getsockname()[1]
    return state


@pytest.fixture
async def registry(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ToolRegistry]:
    monkeypatch.setenv("TOOL_TOKEN", "tok-123")
    tables = "".join(
        f'[[tool]]\nname = "{name}"\ndescription = "{name}."\n'
        f'url = "http://127.0.0.1:{server.port}/{name}"\ntimeout = 30\n'
        '[tool.headers]\nAuthorization = "Bearer ${TOOL_TOKEN}"\n\n'
        for name in ("echo", "fail", "forbidden", "text", "list", "big", "slow", "bomb")
    )
    path = tmp_path / "tools.toml"
    path.write_text(tables, encoding="utf-8")
    loaded = load_tools(tools_file=path, entry_points=False, max_result_bytes=64 * 1024)
    yield loaded
    await loaded.aclose()


async def test_the_post_and_its_answer(server: Server, registry: ToolRegistry) -> None:
    answer = await registry.tools["echo"].invoke({"city": "Oslo", "days": [1, 2]}, CONTEXT)
    assert answer == {
        "got": {
            "name": "echo",
            "args": {"city": "Oslo", "days": [1, 2]},
            "session_id": "session-9",
            "client": "client-z",
        },
        "auth": "Bearer tok-123",
    }
    ((_, headers, _),) = server.requests
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("tool", "message", "retryable"),
    [
        ("fail", "the server answered 500", True),
        ("forbidden", "the server answered 403", False),
        ("text", "the answer is not JSON", False),
        ("list", "the answer is not a JSON object", False),
    ],
)
async def test_failures(registry: ToolRegistry, tool: str, message: str, retryable: bool) -> None:
    with pytest.raises(ToolFailed, match=message) as caught:
        await registry.tools[tool].invoke({}, CONTEXT)
    assert caught.value.retryable is retryable
    assert "tok-123" not in str(caught.value)


async def test_unreachable(tmp_path: Path) -> None:
    with trio.socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "tools.toml"
    path.write_text(
        f'[[tool]]\nname = "gone"\ndescription = "x"\nurl = "http://127.0.0.1:{port}/"\n',
        encoding="utf-8",
    )
    registry = load_tools(tools_file=path, entry_points=False)
    with pytest.raises(ToolFailed, match="the request failed") as caught:
        await registry.tools["gone"].invoke({}, CONTEXT)
    assert caught.value.retryable is True
    await registry.aclose()


async def test_a_result_too_large_stops_the_reading(server: Server, registry: ToolRegistry) -> None:
    with pytest.raises(ToolResultTooLarge, match=f"over {64 * 1024} bytes"):
        await registry.tools["big"].invoke({}, CONTEXT)
    with trio.fail_after(10):
        await server.big_stopped.wait()
    assert server.big_sent < BIG_TOTAL


async def test_a_slow_server_is_cancelled_by_the_caller(
    server: Server, registry: ToolRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    """The caller's deadline (10 s, virtual: the clock jumps while everyone waits) ends the
    call, not the tool's own timeout (30 s); the server sees the connection closed."""
    before = trio.current_time()
    with pytest.raises(trio.TooSlowError), trio.fail_after(10):
        await registry.tools["slow"].invoke({}, CONTEXT)
    assert trio.current_time() - before == pytest.approx(10)
    with trio.fail_after(5):
        await server.slow_closed.wait()
    assert [target for target, _, _ in server.requests] == ["/slow"]
    # The client still works after a cancelled request.
    assert "got" in await registry.tools["echo"].invoke({}, CONTEXT)


async def test_a_compressed_answer_is_refused_not_inflated(
    server: Server, registry: ToolRegistry
) -> None:
    with pytest.raises(ToolFailed, match=r"the answer is compressed \(gzip\)") as failed:
        await registry.tools["bomb"].invoke({}, CONTEXT)
    assert not failed.value.retryable
    [(_, headers, _)] = [r for r in server.requests if r[0] == "/bomb"]
    assert headers["accept-encoding"] == "identity"
