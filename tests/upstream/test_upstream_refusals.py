"""An upstream that refuses the WebSocket upgrade with HTTP ends the session at once.

The upstream here is a bare TCP server speaking just enough HTTP/1.1 to refuse, the way Google's
front ends do: ``Connection: keep-alive``, a JSON body, and the socket left open afterwards (so
nothing but the response itself can tell the proxy it was refused). Times are trio's (autojump
clock), measured from the browser's setup to the end of its session, against a 10 s setup timeout.
"""

from __future__ import annotations

import attrs
import orjson
import pytest
import trio

from liveproxy.config import Config
from liveproxy.upstream.credentials import GoogleAuth
from liveproxy.upstream.dial import REFUSAL_BODY_GRACE
from liveproxy.upstream.startup import google_target
from tests.conftest import TEXT_SETUP, ProxyFactory
from tests.core.test_session_endings import assert_error
from tests.upstream.test_backends import StandInCredentials
from tests.wsclient import Ended

SETUP_TIMEOUT = 10.0
KEY = "AIzaSy-secret-key-123"
GOOGLE_401 = {
    "error": {
        "code": 401,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "UNAUTHENTICATED",
    }
}
GOOGLE_403 = {
    "error": {
        "code": 403,
        "message": "Generative Language API has not been used in project 123 before or it is "
        "disabled.",
        "status": "PERMISSION_DENIED",
    }
}
#: A front end that echoes the credential it refused (Google's do not; nothing may rely on that).
ECHOING_403 = {"error": {"code": 403, "message": f"Forbidden: key {KEY} is suspended."}}


def head(status: bytes, *headers: bytes) -> bytes:
    lines = [b"HTTP/1.1 " + status, b"Content-Type: application/json; charset=UTF-8"]
    lines += [b"Connection: keep-alive", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def with_length(status: bytes, body: bytes) -> list[bytes]:
    return [head(status, b"Content-Length: %d" % len(body)) + body]


def chunked(status: bytes, body: bytes, *, finished: bool = True) -> list[bytes]:
    chunk = b"%x\r\n%s\r\n" % (len(body), body)
    return [
        head(status, b"Transfer-Encoding: chunked") + chunk + (b"0\r\n\r\n" if finished else b"")
    ]


@attrs.define
class RefusingUpstream:
    """Answers every upgrade with ``response`` (written piece by piece), then keeps the socket."""

    response: list[bytes]
    url: str = ""
    requests: list[bytes] = attrs.Factory(list)
    closed_by_proxy: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        self.requests.append(data)
        try:
            for part in self.response:
                await stream.send_all(part)
            # Keep-alive: the connection stays open until the proxy closes it.
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # the proxy closed it while the body was still being sent
        self.closed_by_proxy.set()

    async def start(self, nursery: trio.Nursery) -> RefusingUpstream:
        listeners = await nursery.start(trio.serve_tcp, self.handle, 0)
        self.url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self


async def refused_session(
    make_proxy: ProxyFactory, nursery: trio.Nursery, response: list[bytes]
) -> tuple[Ended, float, RefusingUpstream]:
    """A browser session against an upstream answering ``response``: how it ended, how fast."""
    upstream = await RefusingUpstream(response).start(nursery)
    proxy = await make_proxy(
        upstream_url=upstream.url, api_key=KEY, setup_timeout_seconds=SETUP_TIMEOUT
    )
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        start = trio.current_time()
        ended = await client.wait_closed()
        elapsed = trio.current_time() - start
    assert len(upstream.requests) == 1
    with trio.fail_after(1):
        await upstream.closed_by_proxy.wait()  # and the proxy did not keep the refused socket
    return ended, elapsed, upstream


BODY_401 = orjson.dumps(GOOGLE_401)
BODY_403 = orjson.dumps(GOOGLE_403)


@pytest.mark.parametrize(
    ("response", "status", "detail"),
    [
        (with_length(b"401 Unauthorized", BODY_401), 401, "API key not valid"),
        (with_length(b"403 Forbidden", BODY_403), 403, "has not been used in project 123"),
        (chunked(b"403 Forbidden", BODY_403), 403, "has not been used in project 123"),
        # The head in one write and the body in another.
        (
            [head(b"401 Unauthorized", b"Content-Length: %d" % len(BODY_401)), BODY_401],
            401,
            "API key not valid",
        ),
        (with_length(b"401 Unauthorized", b""), 401, ""),
    ],
    ids=[
        "401-content-length",
        "403-content-length",
        "403-chunked",
        "401-split",
        "401-no-body",
    ],
)
async def test_a_refusal_with_a_complete_body_is_upstream_rejected_at_once(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    response: list[bytes],
    status: int,
    detail: str,
) -> None:
    ended, elapsed, _ = await refused_session(make_proxy, nursery, response)
    error = assert_error(ended, "upstream_rejected", 1011)
    assert elapsed < 0.01  # the response is all there: no timer involved at all
    assert f"HTTP {status}" in str(error["message"])
    assert detail in str(error["message"])


@pytest.mark.parametrize(
    "response",
    [
        # No length, no chunking, connection kept: the body "ends" only when the socket closes.
        [head(b"401 Unauthorized") + BODY_401],
        # A Content-Length longer than what is sent.
        [head(b"401 Unauthorized", b"Content-Length: %d" % (len(BODY_401) + 100)) + BODY_401],
        # A chunked body whose last chunk never comes.
        chunked(b"401 Unauthorized", BODY_401, finished=False),
        # Only the head: the body never starts.
        [head(b"403 Forbidden", b"Content-Length: 500")],
    ],
    ids=["unframed", "short-content-length", "unfinished-chunked", "head-only"],
)
async def test_a_refusal_whose_body_never_ends_is_upstream_rejected_without_waiting_for_it(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    response: list[bytes],
) -> None:
    ended, elapsed, _ = await refused_session(make_proxy, nursery, response)
    error = assert_error(ended, "upstream_rejected", 1011)
    # Before: trio-websocket waited for the end of the body, so this was the 10 s setup timeout.
    assert elapsed == pytest.approx(REFUSAL_BODY_GRACE, abs=0.01)
    assert elapsed < SETUP_TIMEOUT / 10
    assert "HTTP 40" in str(error["message"])


async def test_a_retryable_refusal_is_upstream_unavailable_at_once(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    body = orjson.dumps(
        {"error": {"code": 503, "message": "The service is currently unavailable."}}
    )
    ended, elapsed, _ = await refused_session(
        make_proxy, nursery, [head(b"503 Service Unavailable") + body]
    )
    error = assert_error(ended, "upstream_unavailable", 1013)
    assert elapsed < SETUP_TIMEOUT / 10
    assert "HTTP 503" in str(error["message"])
    assert "currently unavailable" in str(error["message"])


@pytest.mark.parametrize("framed", [True, False], ids=["content-length", "unframed"])
async def test_the_refusal_reason_never_carries_the_api_key(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    framed: bool,
) -> None:
    body = orjson.dumps(ECHOING_403)
    response = with_length(b"403 Forbidden", body) if framed else [head(b"403 Forbidden") + body]
    ended, _, upstream = await refused_session(make_proxy, nursery, response)
    assert KEY.encode() in upstream.requests[0]  # sent in its header, so it could be echoed
    error = assert_error(ended, "upstream_rejected", 1011)
    assert "Forbidden: key *** is suspended." in str(error["message"])
    assert KEY not in str(ended.frames)
    assert KEY not in str(ended.reason)


async def test_a_refusal_reason_never_carries_the_vertex_token(
    make_proxy: ProxyFactory, nursery: trio.Nursery
) -> None:
    # The real clock: the token is minted in a worker thread, which the autojump clock would not
    # wait for (it would jump straight to the setup deadline).
    token = "ya29.stand-in-1"  # what StandInCredentials mints first
    body = orjson.dumps(
        {"error": {"code": 401, "message": f"Invalid authentication credentials: Bearer {token}"}}
    )
    upstream = await RefusingUpstream(with_length(b"401 Unauthorized", body)).start(nursery)
    settings = {"api_key": None, "project_id": "proj-1", "location": "europe-west4"}
    config = Config(upstream_url=upstream.url, **settings)  # type: ignore[arg-type]
    target = await google_target(config, GoogleAuth(StandInCredentials()))
    proxy = await make_proxy(target=target, **settings)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        ended = await client.wait_closed()
    assert f"Bearer {token}".encode() in upstream.requests[0]
    error = assert_error(ended, "upstream_rejected", 1011)
    assert str(error["message"]).endswith("HTTP 401: Invalid authentication credentials: ***")
    assert token not in str(ended.frames)


async def test_a_huge_refusal_body_is_cut_short(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    body = orjson.dumps({"error": {"code": 403, "message": "x" * 1_000_000}})
    ended, elapsed, _ = await refused_session(
        make_proxy, nursery, with_length(b"403 Forbidden", body)
    )
    error = assert_error(ended, "upstream_rejected", 1011)
    assert elapsed < SETUP_TIMEOUT / 10
    assert len(str(error["message"])) < 1000


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "closed the connection before answering the upgrade"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "answer to the upgrade is not valid HTTP"),
        # Broken framing right after the head: wsproto fails before it reports the status.
        (
            head(b"403 Forbidden", b"Transfer-Encoding: chunked") + b"zz\r\n",
            "answer to the upgrade is not valid HTTP",
        ),
    ],
    ids=["hang-up", "not-http", "bad-chunk"],
)
async def test_an_upstream_that_does_not_answer_in_http_is_upstream_unavailable_at_once(
    make_proxy: ProxyFactory,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    answer: bytes | None,
    message: str,
) -> None:
    requests: list[bytes] = []

    async def answer_badly(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        requests.append(data)
        if answer is None:
            await stream.aclose()
            return
        await stream.send_all(answer)
        await trio.sleep_forever()

    listeners = await nursery.start(trio.serve_tcp, answer_badly, 0)
    url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    proxy = await make_proxy(upstream_url=url, setup_timeout_seconds=SETUP_TIMEOUT)
    async with proxy.connect() as client:
        await client.send_json(TEXT_SETUP)
        start = trio.current_time()
        ended = await client.wait_closed()
        elapsed = trio.current_time() - start
    assert len(requests) == 1
    error = assert_error(ended, "upstream_unavailable", 1013)
    # Before: trio-websocket never woke its connect up on that EOF (so this took the 10 s
    # timeout), and a non-HTTP answer crashed its reader (internal_error).
    assert elapsed < 0.01
    assert message in str(error["message"])
