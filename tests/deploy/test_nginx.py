"""deploy/nginx.conf running for real: nginx, over TLS, in front of two ``liveproxy serve``
instances sharing one redis-server, both talking to one in-test emulator.

What runs is the file itself (:mod:`tests.deploy.nginx` rewrites only its ports, files and
upstream servers), and the instances run with deploy/liveproxy.env's settings (bar the port,
the Redis URL, the upstream and one worker each, so that an instance's log says which
sessions it holds: ``session <id> started``). Browsers come from other loopback addresses
(127.0.0.2, ...) where a test needs several of them. Shown:

- a whole session through nginx (wss): sign-in, audio both ways, a tool call answered; the
  browser's permessage-deflate offer never reaches an instance, though they would accept it;
  the token never reaches nginx's log;
- an upstream goAway resumed behind nginx: the browser's socket stays open;
- SIGTERM to one instance while both hold sessions: its /api/ready says 503 draining, new
  sessions through nginx all land on the other (sign-ins and upgrades refused 503 by the
  draining one and passed on by nginx), its own sessions end
  ``shutdown``/1001 after the grace, and nginx goes on without it;
- the edge: http to https, X-Forwarded-For naming each browser, a full fleet answered 503
  ``at_capacity`` without nginx taking every instance out, limit_req's 429 beyond its burst.

Each scenario then checks every instance's Prometheus metrics (``METRICS_BIND``) exactly
(:class:`Counts`, :func:`check_metrics`): its sessions live, their endings, setups, reconnects
and messages, its sign-in answers (from nginx's log, which names every instance a sign-in was
tried on and what it answered) and its refused sockets. The drained instance is scraped while
it drains; what it counted until it exited is read from the directory it counted into.
"""

from __future__ import annotations

import signal
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
import trustme
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection, open_websocket_url

from liveproxy.emulator import Emulator, Faults
from tests import pcm
from tests.conftest import AUDIO_SETUP, TEXT_SETUP
from tests.deploy import env_file
from tests.deploy.nginx import UPSTREAMS, AccessLine, Nginx, running_nginx
from tests.http import HttpResponse, request
from tests.metrics_scrape import Key, Scrape, key, metrics_port, read_directory, scrape, shown
from tests.rawws import open_raw, read_answer, read_head, upgrade
from tests.redis_server import RedisServer
from tests.served import Served, eventually, liveproxy_process
from tests.wsclient import BrowserClient, Frame, has_key, texts

#: The app's origin in deploy/liveproxy.env (ALLOWED_ORIGINS): the page the browsers are on.
ORIGIN = "https://app.example.com"
GATEWAY_AUTH, GATEWAY_WS = "/api/v1/gemini-live/auth", "/api/v1/gemini-live/ws"
#: Long enough to probe a draining instance and open sessions elsewhere meanwhile.
GRACE = 3.0
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
TOOLS = {
    "function_declarations": [
        {
            "name": "get_weather",
            "description": "Weather for a place",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
}


@attrs.frozen
class Tls:
    """A certificate for 127.0.0.1 from a test CA, and a client context trusting that CA."""

    cert: Path
    key: Path
    client: ssl.SSLContext


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    for index, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(cert), append=index > 0)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Tls(cert, key, client)


@attrs.frozen
class Metered:
    """Where an instance's metrics are: its listener, and the directory it counts into (its
    ``PROMETHEUS_MULTIPROC_DIR``, which stays once the instance has exited)."""

    port: int
    directory: Path


@attrs.define
class Fleet:
    """nginx and the two instances behind it (``a`` is upstream 8001, ``b`` 8002)."""

    a: Served
    b: Served
    nginx: Nginx
    tls: ssl.SSLContext
    #: Each instance's metrics, by its port.
    metered: dict[int, Metered]

    async def auth(
        self,
        path: str = "/api/auth",
        *,
        local_address: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """``POST`` a sign-in to nginx, as a page of :data:`ORIGIN` would."""
        return await request(
            "127.0.0.1",
            self.nginx.https_port,
            "POST",
            path,
            b"",
            {"Origin": ORIGIN, **(headers or {})},
            local_address=local_address,
            ssl_context=self.tls,
        )

    async def token(self, path: str = "/api/auth") -> str:
        response = await self.auth(path)
        assert response.status == 200, response.body
        token: str = response.json()["session_token"]
        return token

    def ws(
        self, token: str, path: str = "/ws", *, extensions: str | None = None
    ) -> AbstractAsyncContextManager[WebSocketConnection]:
        """A ``wss://`` socket through nginx, from a page of :data:`ORIGIN`."""
        headers = [(b"Origin", ORIGIN.encode())]
        if extensions is not None:
            headers.append((b"Sec-WebSocket-Extensions", extensions.encode()))
        return open_websocket_url(
            f"wss://127.0.0.1:{self.nginx.https_port}{path}?token={token}",
            ssl_context=self.tls,
            extra_headers=headers,
            max_message_size=2**24,
            # Room for a session's last messages, so that the close behind them is seen
            # (``ws.closed``) before anyone reads them.
            message_queue_size=64,
        )

    async def session(
        self,
        stack: AsyncExitStack,
        setup: dict[str, Any] = TEXT_SETUP,
        *,
        auth: str = "/api/auth",
        ws: str = "/ws",
    ) -> BrowserClient:
        """A session past ``setupComplete``, held open until ``stack`` closes."""
        token = await self.token(auth)
        client = BrowserClient(await stack.enter_async_context(self.ws(token, ws)))
        await client.send_json(setup)
        assert "setupComplete" in await client.recv_json()
        return client

    def upstream(self, served: Served) -> str:
        """How nginx's log names an instance."""
        return f"127.0.0.1:{served.port}"


def started(served: Served) -> int:
    """How many sessions ``served`` has started (its log's ``session <id> started`` lines)."""
    return sum("started (limit" in line for line in served.text.splitlines())


@asynccontextmanager
async def fleet(
    tmp_path: Path, redis: RedisServer, emulator: Emulator, tls: Tls, **settings: str
) -> AsyncIterator[Fleet]:
    env = env_file() | {
        "PORT": "0",
        "WORKERS": "1",
        "STATE_URL": redis.url,
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "METRICS_BIND": "127.0.0.1:0",
        # Deflate on at the instances: nginx must keep it off by itself.
        "WS_COMPRESSION": "true",
        **settings,
    }
    directories = tmp_path / "metrics-a", tmp_path / "metrics-b"
    async with (
        liveproxy_process(**env, PROMETHEUS_MULTIPROC_DIR=str(directories[0])) as a,
        liveproxy_process(**env, PROMETHEUS_MULTIPROC_DIR=str(directories[1])) as b,
    ):
        metered = {
            served.port: Metered(await metrics_port(served), directory)
            for served, directory in zip((a, b), directories, strict=True)
        }
        upstreams = dict(zip(UPSTREAMS, (a.port, b.port), strict=True))
        async with running_nginx(
            tmp_path / "nginx", upstreams=upstreams, cert=tls.cert, key=tls.key
        ) as nginx:
            yield Fleet(a, b, nginx, tls.client, metered)


async def turn(client: BrowserClient, text: str = "are you there?") -> list[Frame]:
    await client.send_json({"type": "text", "text": text})
    with trio.fail_after(5):
        return await client.recv_until(has_key("serverContent", "turnComplete"))


def statuses(frames: list[Frame]) -> list[str]:
    return [
        orjson.loads(f)["sessionStatus"]["state"]
        for f in frames
        if isinstance(f, str) and "sessionStatus" in f
    ]


async def accepted_extensions(port: int) -> bytes:
    """What an instance itself answers to a permessage-deflate offer (plain, no token: the
    socket is then refused ``unauthorized``, and read until it closes, so that it is counted)."""
    stream = await open_raw(port)
    async with stream:
        await upgrade(
            stream, "/ws", extra=f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n".encode()
        )
        with trio.fail_after(5):
            head = await read_head(stream)
            answer = await read_answer(stream, head)
    assert head.startswith(b"HTTP/1.1 101")
    assert answer.close_code == 4003
    lines = head.lower().split(b"\r\n")
    return b"".join(line for line in lines if line.startswith(b"sec-websocket-extensions"))


@attrs.define
class Counts:
    """What one instance's metrics must show: exactly these, and 0 for every other sample.

    ``frames_out`` is exact when the instance closed each of its sockets itself (the browser
    reads everything up to the close); when browsers closed them it is the least the instance
    sent (what they had read: it may have sent more before it saw the close).
    """

    live: int = 0
    endings: dict[str, int] = attrs.Factory(dict)
    #: Sessions that got their ``setupComplete``.
    setups: int = 0
    reconnects: int = 0
    tokens: dict[str, int] = attrs.Factory(dict)
    refused: dict[str, int] = attrs.Factory(dict)
    frames_in: int = 0
    frames_out: int = 0
    frames_out_exact: bool = True

    def exact(self) -> dict[Key, float]:
        """Every sample compared exactly, those that are not 0."""
        samples = {
            key("liveproxy_sessions_live"): self.live,
            key("liveproxy_session_setup_seconds_count"): self.setups,
            # Every setup within 5 s (the le="5.0" bucket is cumulative, as is +Inf).
            key("liveproxy_session_setup_seconds_bucket", le="5.0"): self.setups,
            key("liveproxy_session_setup_seconds_bucket", le="+Inf"): self.setups,
            key("liveproxy_upstream_reconnects_total"): self.reconnects,
            key("liveproxy_frames_total", direction="browser_in"): self.frames_in,
            **{key("liveproxy_sessions_total", reason=r): n for r, n in self.endings.items()},
            **{key("liveproxy_tokens_total", result=r): n for r, n in self.tokens.items()},
            **{
                key("liveproxy_sockets_refused_total", reason=r): n for r, n in self.refused.items()
            },
        }
        if self.frames_out_exact:
            samples[FRAMES_OUT] = self.frames_out
        return {k: float(v) for k, v in samples.items() if v}


FRAMES_OUT = key("liveproxy_frames_total", direction="browser_out")
SETUP_SUM = key("liveproxy_session_setup_seconds_sum")
#: What the model's turns used: counted exactly by tests/web/test_usage.py, not here (these
#: sessions' turns are the emulator's, and what they use is not what this test is about).
USAGE_METRICS = frozenset({"liveproxy_tokens_used_total", "liveproxy_audio_seconds_total"})


def mismatches(found: Scrape, expected: Counts, ignored: frozenset[Key] = frozenset()) -> list[str]:
    """How ``found`` differs from ``expected`` (nothing: it is as expected)."""

    def compared(sample: Key) -> bool:
        name, labels = sample
        if sample in ignored or sample == SETUP_SUM or name in USAGE_METRICS:
            return False
        if sample == FRAMES_OUT:
            return expected.frames_out_exact
        if name == "liveproxy_session_setup_seconds_bucket":
            return dict(labels)["le"] in ("5.0", "+Inf")
        return True

    actual = {k: v for k, v in found.samples.items() if v and compared(k)}
    wanted = {k: v for k, v in expected.exact().items() if k not in ignored}
    wrong = [
        f"{shown(k)} = {actual.get(k, 0.0):g}, not {wanted.get(k, 0.0):g}"
        for k in sorted(actual.keys() | wanted.keys())
        if actual.get(k) != wanted.get(k)
    ]
    out = found.samples.get(FRAMES_OUT, 0.0)
    if not expected.frames_out_exact and not out >= expected.frames_out > 0:
        wrong.append(f"{shown(FRAMES_OUT)} = {out:g}, not at least {expected.frames_out} (> 0)")
    setup_sum = found.samples.get(SETUP_SUM, 0.0)
    if not (0 < setup_sum <= 5 * expected.setups if expected.setups else setup_sum == 0):
        wrong.append(f"{shown(SETUP_SUM)} = {setup_sum:g} for {expected.setups} setups")
    return wrong


async def settled(port: int, expected: Counts, ignored: frozenset[Key] = frozenset()) -> Scrape:
    """Scrape ``port`` until it shows ``expected`` (an ending is counted just after the socket
    closes); fail with the differences after 5 s."""
    wrong: list[str] = []
    with trio.move_on_after(5):
        while True:
            found = await scrape(port)
            wrong = mismatches(found, expected, ignored)
            if not wrong:
                return found
            await trio.sleep(0.02)
    raise AssertionError(f"metrics on port {port}:\n" + "\n".join(wrong))


async def check_metrics(fleet: Fleet, a: Counts, b: Counts) -> None:
    """The running instances' metrics are ``a`` and ``b``, exactly."""
    for served, expected in ((fleet.a, a), (fleet.b, b)):
        await settled(fleet.metered[served.port].port, expected)


def sign_ins(
    fleet: Fleet, served: Served, refusals: dict[str, str | None] | None = None
) -> dict[str, int]:
    """The sign-ins ``served`` answered, by result, from nginx's log: each line names every
    instance nginx tried and its answer (``200``: ``issued``; other statuses are refusals whose
    codes are in ``refusals``: None for an instance that was not there to answer)."""
    codes: dict[str, str | None] = {"200": "issued", **(refusals or {})}
    results: Counter[str] = Counter()
    for line in fleet.nginx.access_lines():
        if line.method != "POST":
            continue
        for upstream, status in zip(line.upstreams, line.upstream_statuses, strict=True):
            if upstream == fleet.upstream(served) and (result := codes[status]) is not None:
                results[result] += 1
    return dict(results)


def holder(fleet: Fleet) -> tuple[Served, Served]:
    """The instance that started the test's one session, and the other."""
    assert sorted((started(fleet.a), started(fleet.b))) == [0, 1]
    return (fleet.a, fleet.b) if started(fleet.a) else (fleet.b, fleet.a)


async def test_a_whole_session_through_nginx(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    async with fleet(tmp_path, redis_server, emulator, tls) as f, AsyncExitStack() as stack:
        assert b"permessage-deflate" in await accepted_extensions(f.a.port)  # left to itself
        token = await f.token()
        ws = await stack.enter_async_context(f.ws(token, extensions=DEFLATE_OFFER))
        assert "sec-websocket-extensions" not in {k.decode() for k, _ in ws.handshake_headers}
        client = BrowserClient(ws)
        await client.send_json({"setup": AUDIO_SETUP["setup"] | {"tools": TOOLS}})
        assert "setupComplete" in await client.recv_json()
        read = 1  # messages the browser got

        sent = pcm.frames(pcm.speech(1.0) + pcm.silence(1.0))
        for frame in sent:
            await ws.send_message(frame)
        with trio.fail_after(5):
            frames = await client.recv_until(has_key("serverContent", "turnComplete"))
        read += len(frames)
        audio = [f for f in frames if isinstance(f, bytes)]
        assert audio
        assert all(len(a) % 2 == 0 for a in audio)
        # The answer is the utterance at 24 kHz: 1.5 bytes out per byte of speech in.
        assert sum(map(len, audio)) == pytest.approx(1.5 * 32000, rel=0.25)

        await client.send_json({"type": "text", "text": 'call get_weather {"location":"Tokyo"}'})
        with trio.fail_after(5):
            called = await client.recv_until(has_key("toolCall"))
        read += len(called)
        (function_call,) = orjson.loads(called[-1])["toolCall"]["functionCalls"]
        assert (function_call["name"], function_call["args"]) == (
            "get_weather",
            {"location": "Tokyo"},
        )
        response = {"id": function_call["id"], "name": "get_weather", "response": {"tempC": 21}}
        await client.send_json({"tool_response": {"function_responses": [response]}})
        with trio.fail_after(5):
            answer = await client.recv_until(has_key("serverContent", "turnComplete"))
        read += len(answer)
        heard = "".join(
            e["serverContent"].get("outputTranscription", {}).get("text", "")
            for e in map(orjson.loads, (f for f in answer if isinstance(f, str)))
            if "serverContent" in e
        )
        assert heard == 'get_weather returned {"tempC":21}'  # spoken: audio and its transcript
        assert any(isinstance(f, bytes) for f in answer)
        await ws.aclose()

        lines = await logged(f.nginx, lambda line: line.status == 101)
        assert [(line.method, line.uri, line.upstream_statuses) for line in lines][-1] == (
            "GET",
            "/ws",
            ["101"],
        )
        assert token not in f.nginx.access_log  # $uri, not $request: no query string
        await logged(f.nginx, lambda line: line.method == "POST")

        # The sign-in on one instance, the session on one (either), the token-less socket on a.
        counts = {
            f.a.port: Counts(tokens=sign_ins(f, f.a), refused={"unauthorized": 1}),
            f.b.port: Counts(tokens=sign_ins(f, f.b)),
        }
        assert sum(c.tokens.get("issued", 0) for c in counts.values()) == 1
        on = counts[holder(f)[0].port]
        on.endings, on.setups = {"browser_closed": 1}, 1
        on.frames_in = 1 + len(sent) + 2  # the setup, the audio, the text, the tool response
        on.frames_out, on.frames_out_exact = read, False
        await check_metrics(f, counts[f.a.port], counts[f.b.port])

    (record,) = emulator.connections
    upstream_audio = [b for kind, b in record.received if kind == "realtimeInput" and "audio" in b]
    assert len(upstream_audio) == len(sent)  # every frame reached the model


async def logged(
    nginx: Nginx, wanted: Callable[[AccessLine], bool], count: int = 1
) -> list[AccessLine]:
    """The access log once ``count`` of its lines are ``wanted``.

    nginx writes a line after the answer has gone out (a socket's when it closes), so a client
    may read the log before the line of what it was just answered is there.
    """

    async def there() -> bool:
        return sum(map(wanted, nginx.access_lines())) >= count

    await eventually(there, 5)
    return nginx.access_lines()


async def test_an_upstream_go_away_is_resumed_behind_nginx(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    async with fleet(tmp_path, redis_server, emulator, tls) as f, AsyncExitStack() as stack:
        emulator.queue_faults(Faults(go_away_after=1))
        client = await f.session(stack, auth=GATEWAY_AUTH, ws=GATEWAY_WS)
        await client.send_json({"type": "text", "text": "first"})
        with trio.fail_after(5):
            frames = await client.recv_until(has_key("sessionStatus", "state"))
            frames += await client.recv_until(has_key("sessionStatus", "state"))
        assert statuses(frames) == ["reconnecting", "resumed"]
        assert texts(frames)  # the first turn was answered before the switch
        second = await turn(client, "second")
        assert texts(second)
        assert client.ws.closed is None  # the browser's socket never closed
        await client.ws.aclose()

        await logged(f.nginx, lambda line: line.method == "POST")
        counts = {served.port: Counts(tokens=sign_ins(f, served)) for served in (f.a, f.b)}
        assert sum(c.tokens.get("issued", 0) for c in counts.values()) == 1
        on = counts[holder(f)[0].port]
        on.endings, on.setups, on.reconnects = {"browser_closed": 1}, 1, 1
        on.frames_in = 3  # the setup and two texts
        on.frames_out, on.frames_out_exact = 1 + len(frames) + len(second), False
        await check_metrics(f, counts[f.a.port], counts[f.b.port])

    first, resumed = emulator.connections
    assert first.ended_by == "client"  # the instance closed the old connection itself
    assert resumed.resumed_handle is not None
    assert resumed.session_id == first.session_id


async def test_sigterm_drains_one_instance_while_nginx_sends_new_sessions_to_the_other(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    async with fleet(tmp_path, redis_server, emulator, tls) as f, AsyncExitStack() as stack:
        a, b = f.a, f.b
        # nginx's round robin alternates: of 4 sessions, each instance holds some.
        held = [await f.session(stack) for _ in range(4)]
        await eventually(_async(lambda: started(a) + started(b) == 4), 5)
        on_a, on_b = started(a), started(b)
        assert on_a >= 1, on_b
        assert on_b >= 1, on_a

        a.process.send_signal(signal.SIGTERM)
        signalled = trio.current_time()
        await a.wait_for(lambda text: "shutting down" in text)
        ready = await request("127.0.0.1", a.port, "GET", "/api/ready")
        assert (ready.status, ready.json()["error"]) == (
            503,
            {"code": "not_ready", "message": "draining"},
        )
        assert (await request("127.0.0.1", b.port, "GET", "/api/ready")).status == 200

        # New sessions meanwhile: every sign-in and every socket succeeds at the first try
        # (nginx passes a's 503 on to b, for a sign-in and for an upgrade alike).
        fresh = []
        for _ in range(4):
            response = await f.auth()
            assert response.status == 200, response.body
            token = response.json()["session_token"]
            client = BrowserClient(await stack.enter_async_context(f.ws(token)))
            assert await set_up(client) is None
            fresh.append(client)
        assert len(fresh) == 4

        lines = await logged(f.nginx, lambda line: line.method == "POST", 8)
        sign_ins_on_a = sign_ins(f, a, {"503": "shutting_down"})
        # Draining, a holds its sessions and has refused sign-ins (and upgrades: counted below,
        # once nginx has logged the sockets) while b has the new ones too.
        refused_upgrades = key("liveproxy_sockets_refused_total", reason="shutting_down")
        draining = await settled(
            f.metered[a.port].port,
            Counts(live=on_a, setups=on_a, tokens=sign_ins_on_a),
            ignored=frozenset({refused_upgrades}),
        )
        await settled(
            f.metered[b.port].port,
            Counts(live=on_b + 4, setups=on_b + 4, tokens=sign_ins(f, b)),
        )
        assert a.process.returncode is None  # all of it while a was draining
        await eventually(_async(lambda: started(b) == on_b + 4), 5)
        assert started(a) == on_a

        sign_ins_logged = [line for line in lines if line.method == "POST"]
        assert [line.status for line in sign_ins_logged] == [200] * 8
        passed_on = [
            line
            for line in sign_ins_logged
            if line.upstreams == [f.upstream(a), f.upstream(b)]
            and line.upstream_statuses == ["503", "200"]
        ]
        assert passed_on  # a's 503 shutting_down, retried on b by nginx
        assert sign_ins_on_a.get("shutting_down") == len(passed_on)
        # The sockets too: round robin sent some of them to a first, which refused the upgrade
        # with 503; nginx passed each on to b, and no browser saw a refusal (above).

        with trio.fail_after(GRACE + 8):
            assert await a.process.wait() == 0
        assert trio.current_time() - signalled >= GRACE - 0.1  # a's sessions held the drain
        assert "Traceback" not in a.text

        await eventually(_async(lambda: sum(c.ws.closed is not None for c in held) == on_a), 5)
        ended = [client for client in held if client.ws.closed is not None]
        sent_by_a = len(ended)  # their setupComplete, read, and what came up to the close
        for client in ended:
            ending = await client.wait_closed()
            assert ending.code == 1001
            assert ending.last_event["sessionEnd"]["reason"] == "shutdown"
            sent_by_a += len(ending.frames)
        on_b_now = [c for c in held if c.ws.closed is None] + fresh
        read_from_b = len(on_b_now)  # their setupComplete
        for client in on_b_now:
            read_from_b += len(await turn(client))  # b's sessions go on

        # a is gone: nginx finds its port closed and goes to b.
        last = await f.session(stack)
        read_from_b += 1 + len(await turn(last))
        for client in [*on_b_now, last]:
            await client.ws.aclose()

        # Every socket's line is logged as it closes: how many upgrades a refused.
        lines = await logged(f.nginx, lambda line: line.status == 101, 4 + 4 + 1)
        refused_by_a = sum(
            (upstream, status) == (f.upstream(a), "503")
            for line in lines
            if line.method == "GET"
            for upstream, status in zip(line.upstreams, line.upstream_statuses, strict=True)
        )
        assert sign_ins(f, a, {"503": "shutting_down", "502": None}) == sign_ins_on_a
        a_draining = Counts(
            live=on_a,
            setups=on_a,
            tokens=sign_ins_on_a,
            refused={"shutting_down": refused_by_a},
        )
        assert mismatches(draining, a_draining) == []
        # What a counted until it exited, from its directory: its sessions ended ``shutdown``.
        a_drained = attrs.evolve(
            a_draining,
            live=0,
            endings={"shutdown": on_a},
            frames_in=on_a,  # their setups
            frames_out=sent_by_a,
        )
        assert mismatches(read_directory(f.metered[a.port].directory), a_drained) == []
        b_sessions = on_b + 4 + 1
        b_drained = Counts(
            endings={"browser_closed": b_sessions},
            setups=b_sessions,
            tokens=sign_ins(f, b),
            frames_in=2 * b_sessions,  # a setup and a text each
            frames_out=read_from_b,
            frames_out_exact=False,
        )
        await settled(f.metered[b.port].port, b_drained)
        assert sign_ins_on_a.get("issued", 0) + b_drained.tokens["issued"] == 4 + 4 + 1


async def set_up(client: BrowserClient) -> CloseReason | None:
    """Send the setup: None once ``setupComplete`` is back, or how the socket closed instead."""
    try:
        await client.send_json(TEXT_SETUP)
        first = await client.recv_json()
    except ConnectionClosed as closed:
        reason: CloseReason | None = closed.reason
        assert reason is not None
        return reason
    assert "setupComplete" in first
    return None


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def test_the_edge_redirects_names_each_browser_and_limits_sign_ins(
    tmp_path: Path, redis_server: RedisServer, emulator: Emulator, tls: Tls
) -> None:
    limits = {"MAX_SESSIONS": "3", "MAX_SESSIONS_PER_CLIENT": "2", "AUTH_RATE_LIMIT": "0"}
    async with (
        fleet(tmp_path, redis_server, emulator, tls, **limits) as f,
        AsyncExitStack() as stack,
    ):
        plain = await request("127.0.0.1", f.nginx.http_port, "GET", "/api/health")
        assert (plain.status, plain.headers["location"]) == (301, "https://127.0.0.1/api/health")

        # Each browser is its own client (X-Forwarded-For), and cannot pose as another.
        posing = {"X-Forwarded-For": "127.0.0.9"}
        for _ in range(2):
            assert (await f.auth(local_address="127.0.0.2", headers=posing)).status == 200
        refused = await f.auth(local_address="127.0.0.2")
        assert (refused.status, refused.json()["error"]["code"]) == (429, "too_many_sessions")
        third = await f.auth(local_address="127.0.0.3")
        assert third.status == 200

        # The fleet is full (3 places): both instances answer 503 at_capacity, nginx passes
        # the last answer on, and marks neither down: the page and the sockets still work.
        for _ in range(2):
            full = await f.auth(local_address="127.0.0.4")
            assert (full.status, full.json()["error"]["code"]) == (503, "at_capacity")
        for _ in range(2):
            health = await request(
                "127.0.0.1", f.nginx.https_port, "GET", "/api/health", ssl_context=f.tls
            )
            assert health.status == 200
        ws = await stack.enter_async_context(f.ws(third.json()["session_token"]))
        client = BrowserClient(ws)  # held open: the fleet stays full
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()

        # limit_req: 30 a minute, bursts of 30 at once (so 31 in a row), then 429 with a JSON
        # body. One more gets through every 2 s the loop takes (well under 2 s, usually).
        began = trio.current_time()
        answers = [await f.auth(local_address="127.0.0.5") for _ in range(36)]
        took = trio.current_time() - began
        codes = [a.status for a in answers]
        assert codes[:32] == [503] * 31 + [429] or took >= 2, codes
        assert codes[:31] == [503] * 31, codes
        assert 31 <= codes.count(503) <= 31 + took / 2, (codes, took)
        limited = answers[codes.index(429)]
        assert limited.json()["error"]["code"] == "rate_limited"
        assert limited.headers["retry-after"] == "2"
        assert (await f.auth(local_address="127.0.0.6")).status == 503  # others are not limited

        lines = await logged(f.nginx, lambda line: line.method == "POST", 3 + 1 + 2 + 36 + 1)
        both = sorted([f.upstream(f.a), f.upstream(f.b)])
        at_capacity = [line for line in lines if line.status == 503]
        assert len(at_capacity) == 2 + codes.count(503) + 1
        for line in at_capacity:  # each asked both instances, and neither was taken out
            assert (sorted(line.upstreams), line.upstream_statuses) == (both, ["503", "503"])
        # Of the 429s, the first is an instance's (too_many_sessions), the rest nginx's own.
        nginx_own = [line.upstreams == ["-"] for line in lines if line.status == 429]
        assert nginx_own == [False] + [True] * codes.count(429)
        # nginx's own 429s never reach an instance; each at_capacity was both instances'.
        refusals: dict[str, str | None] = {"429": "too_many_sessions", "503": "at_capacity"}
        counts = {
            served.port: Counts(tokens=sign_ins(f, served, refusals)) for served in (f.a, f.b)
        }
        for c in counts.values():
            assert c.tokens["at_capacity"] == 2 + codes.count(503) + 1
        assert sum(c.tokens.get("issued", 0) for c in counts.values()) == 3
        assert sum(c.tokens.get("too_many_sessions", 0) for c in counts.values()) == 1
        on = counts[holder(f)[0].port]
        on.live, on.setups = 1, 1  # the third's session, still open: no messages counted yet
        await check_metrics(f, counts[f.a.port], counts[f.b.port])
