"""Routes, credentials and upgrade faults, over real sockets."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url

from liveproxy.emulator import Faults
from liveproxy.emulator.auth import BEARER_INVALID
from liveproxy.emulator.server import HANDSHAKE_TIMEOUT
from liveproxy.protocol.closes import API_KEY_INVALID, UNREGISTERED_CALLER

from .helpers import (
    DEV_PATH,
    KEYED_PATH,
    MODEL,
    VERTEX_MODEL,
    VERTEX_PATH,
    close_reason,
    connect,
    open_session,
    receive,
    send,
    start,
)

ROUTES = [
    (DEV_PATH, "developer", "v1beta", "BidiGenerateContent"),
    (
        "//ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent",
        "developer",
        "v1",
        "BidiGenerateContent",
    ),
    (
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent",
        "developer",
        "v1alpha",
        "BidiGenerateContent",
    ),
    (VERTEX_PATH, "vertex", "v1beta1", "BidiGenerateContent"),
    (
        "//ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent",
        "vertex",
        "v1",
        "BidiGenerateContent",
    ),
]


@pytest.mark.parametrize(("path", "api", "version", "method"), ROUTES)
async def test_routes_are_served_and_recorded(
    nursery: trio.Nursery, path: str, api: str, version: str, method: str
) -> None:
    emulator = await start(nursery)
    async with connect(emulator, path + "?key=k&alt=json") as ws:
        await open_session(ws, model=VERTEX_MODEL if api == "vertex" else MODEL)
    (record,) = emulator.connections
    assert (record.api, record.api_version, record.method) == (api, version, method)
    assert record.path == path
    assert record.query == {"key": "k", "alt": "json"}


async def test_constrained_method_with_an_ephemeral_token(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=["auth_tokens/abc"])
    path = (
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
        "?access_token=auth_tokens/abc"
    )
    async with connect(emulator, path) as ws:
        await open_session(ws)
    (record,) = emulator.connections
    assert record.method == "BidiGenerateContentConstrained"
    assert (record.credential, record.credential_kind) == ("auth_tokens/abc", "access_token")


async def test_unknown_path_is_refused_with_404_and_a_json_body(nursery: trio.Nursery) -> None:
    emulator = await start(nursery)
    with pytest.raises(ConnectionRejected) as rejected:
        async with connect(emulator, "/ws/google.ai.generativelanguage.v2.Nope?key=k"):
            pass
    assert rejected.value.status_code == 404
    assert rejected.value.body is not None
    assert orjson.loads(rejected.value.body) == {
        "error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}
    }
    (record,) = emulator.connections
    await record.wait_closed()
    assert record.ended_by == "server"
    assert record.api is None


@pytest.mark.parametrize(
    ("path", "headers", "credential", "kind"),
    [
        (DEV_PATH, {"x-goog-api-key": "secret"}, "secret", "api_key"),
        (DEV_PATH + "?key=secret", {}, "secret", "api_key"),
        (VERTEX_PATH, {"Authorization": "Bearer secret"}, "secret", "bearer"),
        (
            "/ws/google.ai.generativelanguage.v1alpha.GenerativeService"
            ".BidiGenerateContentConstrained",
            {"Authorization": "Token secret", "x-goog-api-key": "secret"},
            "secret",
            "token",
        ),
    ],
)
async def test_each_credential_form_is_accepted_when_configured(
    nursery: trio.Nursery, path: str, headers: dict[str, str], credential: str, kind: str
) -> None:
    emulator = await start(nursery, api_keys=["secret"])
    async with connect(emulator, path, headers={**headers, "X-Custom": "1"}) as ws:
        await open_session(ws, model=VERTEX_MODEL if path == VERTEX_PATH else MODEL)
    (record,) = emulator.connections
    assert (record.credential, record.credential_kind) == (credential, kind)
    assert record.headers["x-custom"] == "1"
    assert record.headers["sec-websocket-version"] == "13"


async def test_wrong_key_closes_1007(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=["secret"])
    async with connect(emulator, DEV_PATH, headers={"x-goog-api-key": "wrong"}) as ws:
        await send(ws, {"setup": {"model": MODEL}})
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1007, API_KEY_INVALID)
    record = emulator.connections[0]
    await record.wait_closed()
    assert (record.close_code, record.close_reason, record.ended_by) == (
        1007,
        API_KEY_INVALID,
        "server",
    )
    assert record.setup is None


async def test_wrong_bearer_closes_1008(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, api_keys=["secret"])
    async with connect(emulator, VERTEX_PATH, headers={"Authorization": "Bearer nope"}) as ws:
        await send(ws, {"setup": {"model": MODEL}})
        reason = await close_reason(ws)
    assert reason.code == 1008
    assert reason.reason is not None
    assert BEARER_INVALID.startswith(reason.reason)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (DEV_PATH, {}),
        # An ephemeral token outside BidiGenerateContentConstrained has no identity either.
        (DEV_PATH, {"Authorization": "Token auth_tokens/x"}),
    ],
)
async def test_no_usable_credential_closes_1008_after_the_upgrade(
    nursery: trio.Nursery, path: str, headers: dict[str, str]
) -> None:
    emulator = await start(nursery)
    async with connect(emulator, path, headers=headers) as ws:
        await send(ws, {"setup": {"model": MODEL}})
        reason = await close_reason(ws)
    assert reason.code == 1008
    assert reason.reason is not None
    assert UNREGISTERED_CALLER.encode().startswith(reason.reason.encode())
    assert len(reason.reason.encode()) == 123


async def test_reject_fault_refuses_the_upgrade(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, faults=Faults(reject_status=429))
    with pytest.raises(ConnectionRejected) as rejected:
        async with connect(emulator):
            pass
    assert rejected.value.status_code == 429
    assert rejected.value.body is not None
    assert orjson.loads(rejected.value.body)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert emulator.connections[0].path == DEV_PATH


async def test_hang_fault_never_answers_the_upgrade(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, faults=Faults(hang_upgrade=True))
    with pytest.raises(trio.TooSlowError):  # noqa: PT012
        with trio.fail_after(20):
            async with open_websocket_url(emulator.url + KEYED_PATH):
                pass
    (record,) = emulator.connections
    assert record.path == DEV_PATH  # the request was read, never answered
    with trio.fail_after(1):
        await record.wait_closed()  # the client gave up: the record closes too
    assert record.ended_by == "dropped"
    assert emulator.live_count == 0


async def test_queued_faults_apply_to_the_next_connections_then_the_default(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery)
    emulator.set_faults(Faults(reject_status=503))
    emulator.queue_faults(Faults(), Faults(reject_status=401))
    async with connect(emulator) as ws:
        await open_session(ws)
    for status in (401, 503, 503):
        with pytest.raises(ConnectionRejected) as rejected:
            async with connect(emulator):
                pass
        assert rejected.value.status_code == status
    emulator.set_faults(Faults())
    async with connect(emulator) as ws:
        await open_session(ws)
    assert [r.faults.reject_status for r in emulator.connections] == [None, 401, 503, 503, None]


async def test_wait_for_connections_and_live_count(nursery: trio.Nursery) -> None:
    emulator = await start(nursery)
    assert emulator.live_count == 0
    async with connect(emulator) as ws:
        await emulator.wait_for_connections(1)
        assert emulator.live_count == 1
        await open_session(ws)
        await send(ws, {"realtimeInput": {"text": "hi"}})
        assert (await receive(ws))["serverContent"]
    await emulator.connections[0].wait_closed()
    assert emulator.live_count == 0
    assert emulator.connections[0].ended_by == "client"
    assert emulator.connections[0].close_code == 1000


async def test_a_client_that_never_sends_its_request_is_let_go(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    silent = await trio.open_tcp_stream("127.0.0.1", emulator.port)
    await emulator.wait_for_connections(1)
    began = trio.current_time()
    assert await silent.receive_some() == b""  # the emulator hangs up
    assert trio.current_time() - began == pytest.approx(HANDSHAKE_TIMEOUT)
    await emulator.connections[0].wait_closed()
    assert emulator.live_count == 0
    await silent.aclose()
