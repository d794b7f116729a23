"""Server-side tools through a real proxy and the emulator: Python tools from a module (sync in
a worker thread, async in the session), a tool that raises, one that times out, one cancelled by
a barge-in, the browser's own tool beside them, and an older client's one-response shorthand.

The emulator turns the text ``call NAME {json}`` into a function call of a declared ``NAME`` and
answers the response with ``NAME returned {response}``.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import trio
import trio.testing

from liveproxy.config import SignInSettings
from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from tests.conftest import TEXT_SETUP, ProxyFactory
from tests.http import request
from tests.metrics_scrape import metrics_port, until_scraped
from tests.served import liveproxy_serve, signed_in_socket
from tests.tools.test_http_tools import Server
from tests.tools.test_http_tools import _handle as handle_http
from tests.wsclient import BrowserClient, Frame, has_key, texts

MODULE = """
import threading
import trio
from liveproxy.tools import ToolContext, tool

cancelled = []

@tool("The status of an order.")
def order_status(order_id: str) -> dict:
    return {"order": order_id, "status": "shipped", "thread": threading.current_thread().name}

@tool("How many items are in stock.")
async def stock(sku: str, context: ToolContext) -> int:
    await trio.sleep(0)
    return len(sku) + len(context.session_id) * 0

@tool("Always fails.")
def broken() -> dict:
    raise RuntimeError("the warehouse is closed")

@tool("Takes too long.", timeout=2)
async def sluggish() -> dict:
    await trio.sleep(60)
    return {}

@tool("Answers after 3 s.")
async def sluggish_ok() -> dict:
    await trio.sleep(3)
    return {"waited": 3}

@tool("Who is asking.")
def whoami(context: ToolContext) -> dict:
    return {"client": context.client, "plan": context.claims.get("plan"),
            "session": bool(context.session_id)}

@tool("Waits until cancelled.", timeout=120, mirror=False)
async def waits() -> dict:
    try:
        await trio.sleep(100)
    except trio.Cancelled:
        cancelled.append("waits")
        raise
    return {}
"""
BROWSER_TOOL: dict[str, Any] = {
    "function_declarations": [{"name": "get_weather", "parameters": {"type": "object"}}]
}


@pytest.fixture
def tools_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of server tools, importable by the name yielded (unique per test)."""
    name = f"shop_tools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def event(frame: Frame, key: str) -> dict[str, Any] | None:
    if not isinstance(frame, str):
        return None
    value = orjson.loads(frame).get(key)
    return value if isinstance(value, dict) else None


async def ask(client: BrowserClient, text: str) -> list[Frame]:
    await client.send_json({"type": "text", "text": text})
    return await client.recv_until(has_key("serverContent", "turnComplete"))


async def test_python_tools_run_on_the_server_and_the_model_gets_their_results(
    make_proxy: ProxyFactory, tools_module: str
) -> None:
    proxy = await make_proxy(tools_modules=(tools_module,))
    setup = {"setup": TEXT_SETUP["setup"] | {"tools": BROWSER_TOOL}}
    async with proxy.session(setup) as client:
        frames = await ask(client, 'call order_status {"order_id": "A-17"}')
        calls = [e for f in frames if (e := event(f, "serverToolCall"))]
        results = [e for f in frames if (e := event(f, "serverToolResult"))]
        said = "".join(texts(frames))
        stock = await ask(client, 'call stock {"sku": "abc"}')
        await client.send_json({"type": "text", "text": 'call get_weather {"location": "X"}'})
        browser_call = await client.recv_until(has_key("toolCall"))
    upstream = proxy.emulator.connections[-1]
    assert upstream.setup is not None
    declared = [f["name"] for t in upstream.setup["tools"] for f in t["functionDeclarations"]]
    assert declared == [
        "get_weather",
        "order_status",
        "stock",
        "broken",
        "sluggish",
        "sluggish_ok",
        "whoami",
        "waits",
    ]
    assert calls == [{"id": calls[0]["id"], "name": "order_status", "args": {"order_id": "A-17"}}]
    [result] = results
    assert result["response"]["status"] == "shipped"
    assert result["response"]["thread"] != "MainThread"  # a sync tool runs in a worker thread
    assert 'order_status returned {"order":"A-17","status":"shipped"' in said
    assert 'stock returned {"result":3}' in "".join(texts(stock))
    # The browser's own tool still comes to the browser, to answer itself.
    assert any(event(f, "toolCall") for f in browser_call)
    assert not any(event(f, "serverToolCall") for f in browser_call)


async def test_a_tool_that_raises_gets_the_model_an_error_and_the_session_goes_on(
    make_proxy: ProxyFactory, tools_module: str
) -> None:
    proxy = await make_proxy(tools_modules=(tools_module,))
    async with proxy.session() as client:
        failed = "".join(texts(await ask(client, "call broken")))
        after = "".join(texts(await ask(client, "still there?")))
    error = '{"error":{"message":"the warehouse is closed","retryable":false}}'
    assert f"broken returned {error}" in failed
    assert 'You said: "still there?"' in after


# A sync tool waits in a thread, which trio's autojump clock does not see: only async tools
# run under it (it would jump past a thread's work to the timeout).
async def test_a_tool_that_takes_too_long_gets_the_model_an_error_at_its_timeout(
    make_proxy: ProxyFactory, tools_module: str, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(tools_modules=(tools_module,))
    async with proxy.session() as client:
        slow = await ask(client, "call sluggish")
        after = "".join(texts(await ask(client, "still there?")))
    [result] = [e for f in slow if (e := event(f, "serverToolResult"))]
    assert result["error"] == {"message": "the tool took longer than 2 s", "retryable": True}
    assert result["seconds"] == pytest.approx(2.0, abs=0.01)
    assert 'sluggish returned {"error":{"message":"the tool took longer than 2 s"' in "".join(
        texts(slow)
    )
    assert 'You said: "still there?"' in after


async def test_a_barge_in_cancels_a_running_call_and_no_response_is_sent(
    make_proxy: ProxyFactory, tools_module: str, autojump_clock: trio.testing.MockClock
) -> None:
    proxy = await make_proxy(tools_modules=(tools_module,))
    async with proxy.session() as client:
        await client.send_json({"type": "text", "text": "call waits"})
        started = await client.recv_until(lambda f: event(f, "serverToolCall") is not None)
        frames = await ask(client, "never mind")
        ended = [e for f in frames if (e := event(f, "serverToolResult"))]
    module = importlib.import_module(tools_module)
    assert module.cancelled == ["waits"]
    assert event(started[-1], "serverToolCall") == {"id": ended[0]["id"], "name": "waits"}
    assert ended == [{"id": ended[0]["id"], "name": "waits", "seconds": ended[0]["seconds"]}]
    upstream = proxy.emulator.connections[-1]
    assert not [kind for kind, _ in upstream.received if kind == "toolResponse"]
    assert not any(event(f, "toolCallCancellation") for f in frames)  # the server's own call


async def test_an_older_clients_single_tool_response_answers_its_call(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy()
    setup = {"setup": TEXT_SETUP["setup"] | {"tools": BROWSER_TOOL}}
    async with proxy.session(setup) as client:
        await client.send_json({"type": "text", "text": 'call get_weather {"location": "X"}'})
        frames = await client.recv_until(has_key("toolCall"))
        [call] = [e for f in frames if (e := event(f, "toolCall"))]
        function_call = call["functionCalls"][0]
        await client.send_json(
            {
                "tool_response": {
                    "id": function_call["id"],
                    "name": "get_weather",
                    "response": {"sky": "clear"},
                }
            }
        )
        answer = await client.recv_until(has_key("serverContent", "turnComplete"))
    assert 'get_weather returned {"sky":"clear"}' in "".join(texts(answer))


async def test_an_http_tool_and_an_installed_plugin_in_a_real_process(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # The HTTP tool's server is the one of tests/tools (real HTTP, h11); the plug-in is an
    # installed distribution (a dist-info with a liveproxy.tools entry point) on the process's
    # path. The process runs its built-in emulator.
    http = Server()
    listeners = await nursery.start(
        partial(trio.serve_tcp, partial(handle_http, http), 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    (tmp_path / "tools.toml").write_text(
        '[[tool]]\nname = "echo"\ndescription = "Echoes."\n'
        f'url = "http://127.0.0.1:{port}/echo"\n'
        '[tool.headers]\nAuthorization = "Bearer ${CRM_TOKEN}"\n',
        encoding="utf-8",
    )
    plugins = tmp_path / "site"
    plugins.mkdir()
    (plugins / "crm_plugin.py").write_text(
        "from liveproxy.tools import tool\n\n"
        "@tool('A plug-in tool.')\n"
        "def plugged(n: int) -> dict:\n"
        "    return {'twice': 2 * n}\n",
        encoding="utf-8",
    )
    dist = plugins / "crm_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: crm-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[liveproxy.tools]\ncrm = crm_plugin\n")
    settings = {
        "TOOLS_FILE": str(tmp_path / "tools.toml"),
        "CRM_TOKEN": "crm-secret-1",
        "PYTHONPATH": os.pathsep.join([str(plugins), *sys.path]),
        "LOG_LEVEL": "DEBUG",
        "METRICS_BIND": "127.0.0.1:0",
    }
    async with liveproxy_serve((), settings) as host:
        async with signed_in_socket(host.port) as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            assert "setupComplete" in await client.recv_json()
            with trio.fail_after(10):
                echoed = "".join(texts(await ask(client, 'call echo {"city": "Oslo"}')))
                plugged = "".join(texts(await ask(client, 'call plugged {"n": 21}')))
        port = await metrics_port(host)
        counted = await until_scraped(
            port, "liveproxy_tool_calls_total", 1, tool="plugged", result="ok"
        )
        log = host.text
    assert counted.value("liveproxy_tool_calls_total", tool="echo", result="ok") == 1
    assert counted.value("liveproxy_tool_seconds_count", tool="echo") == 1
    [(target, headers, body)] = http.requests
    posted = orjson.loads(body)
    assert target == "/echo"
    assert headers["authorization"] == "Bearer crm-secret-1"
    assert posted["name"] == "echo"
    assert posted["args"] == {"city": "Oslo"}
    assert posted["session_id"]
    assert posted["client"]
    assert 'echo returned {"got":{"name":"echo","args":{"city":"Oslo"}' in echoed
    assert 'plugged returned {"twice":42}' in plugged
    assert "tool echo: ok" in log
    assert "tool plugged: ok" in log
    assert "crm-secret-1" not in log  # not even at DEBUG
    assert "Oslo" not in log  # arguments and results are never logged


async def test_a_go_away_during_a_server_call_answers_it_once_and_switches_after(
    make_proxy: ProxyFactory,
    tools_module: str,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # goAway right after "call sluggish_ok" (message 1), 20 s before the connection closes; the
    # tool takes 3 s. No handle is given while a call is pending (the conversation owes its
    # result), so the switch waits for it: the result goes once, to the connection that made
    # the call, and the conversation moves on with a handle that includes it.
    emulator: Emulator = await nursery.start(
        serve_emulator, EmulatorConfig(speed="fast", go_away_lead_seconds=20.0)
    )
    emulator.queue_faults(Faults(go_away_after=1))
    proxy = await make_proxy(emulator_=emulator, tools_modules=(tools_module,))
    async with proxy.session() as client:
        frames = await ask(client, "call sluggish_ok")
        frames += await client.recv_until(has_key("sessionStatus"))
        frames += await client.recv_until(has_key("sessionStatus"))
        after = await ask(client, "and now?")
    statuses = [e["state"] for f in frames if (e := event(f, "sessionStatus"))]
    assert statuses == ["reconnecting", "resumed"]
    assert 'sluggish_ok returned {"waited":3}' in "".join(texts(frames))
    assert 'You said: "and now?"' in "".join(texts(after))
    old, new = emulator.connections
    sent = [kind for record in (old, new) for kind, _ in record.received]
    assert sent.count("toolResponse") == 1
    assert [kind for kind, _ in old.received].count("toolResponse") == 1
    assert new.setup is not None
    assert new.setup["sessionResumption"]["handle"] == old.issued[-1].handle


async def test_a_tool_sees_the_signed_in_users_subject_and_claims(
    make_proxy: ProxyFactory, tools_module: str
) -> None:
    secret = "s" * 32
    proxy = await make_proxy(
        tools_modules=(tools_module,), signin=SignInSettings(jwt_secret=secret)
    )
    claims = {"sub": "user-42", "plan": "pro", "exp": int(time.time()) + 60}
    bearer = jwt.encode(claims, secret, algorithm="HS256")
    signed_in = await request(
        "127.0.0.1",
        proxy.port,
        "POST",
        "/api/auth",
        b"{}",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert signed_in.status == 200, signed_in.body
    async with proxy.connect(signed_in.json()["session_token"]) as client:
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()
        frames = await ask(client, "call whoami")
    [result] = [e for f in frames if (e := event(f, "serverToolResult"))]
    assert result["response"] == {"client": "user-42", "plan": "pro", "session": True}
    # Without sign-in the client is a hash of the address, and there are no claims.
    anonymous = await make_proxy(tools_modules=(tools_module,))
    async with anonymous.session() as client:
        frames = await ask(client, "call whoami")
    [result] = [e for f in frames if (e := event(f, "serverToolResult"))]
    assert result["response"]["plan"] is None
    assert result["response"]["client"] not in ("", "127.0.0.1")
