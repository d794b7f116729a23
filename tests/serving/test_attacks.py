"""The attacks of the second hostile-input round, each against a real ``liveproxy serve`` process
while a bystander session talks: what the attacker gets, and that the bystander never waits.

Each was reproduced on the release before the fixes (the module's tests fail there): a setup
field name that froze the event loop, HTTP/2 cleartext connections that leaked, frames that
carry no bytes, a replay buffer with a count bound only, refused resumes that kept a
conversation forever, and the smaller ones (a NUL in a static path, a DNS-rebinding origin,
``/api/ready`` with no upstream).

The bystander's longest wait between two answers is asserted generously (the attacks made it
6 s to 49 s); the server's own event-loop watchdog must report no stall of 0.5 s or more.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import orjson
import psutil
import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.fuzz.wire import BINARY, TEXT, encode_frame, upgrade_request
from tests.http import request
from tests.rawws import open_raw, read_answer, read_head
from tests.served import Served, liveproxy_process, signed_in_socket
from tests.wsclient import BrowserClient, has_key

#: The bystander may wait this long for an answer while an attack runs (normally ~0.1 s).
BYSTANDER_WAIT = 2.0
#: Between the bystander's turns.
BYSTANDER_PAUSE = 0.05
STALL = re.compile(r"the event loop did not run for ([0-9.]+) s")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: An empty SETTINGS frame, then a WINDOW_UPDATE-less SETTINGS with an initial window of 0.
H2_SETTINGS = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x04\x00\x00\x00\x00"


@attrs.define
class Bystander:
    """A session answering text turns for as long as the test runs; when each answer came."""

    answers: list[float] = attrs.Factory(list)

    def longest_wait(self, since: float) -> float:
        """The longest time without an answer from ``since`` until now."""
        times = [since, *(t for t in self.answers if t > since), trio.current_time()]
        return max(b - a for a, b in itertools.pairwise(times))


async def talk(port: int, bystander: Bystander, task_status: trio.TaskStatus[None]) -> None:
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
        client = BrowserClient(ws)
        await client.send_json(TEXT_SETUP)
        assert "setupComplete" in await client.recv_json()
        task_status.started()
        while True:
            await client.send_json({"type": "text", "text": "still there?"})
            await client.recv_until(has_key("serverContent", "turnComplete"))
            bystander.answers.append(trio.current_time())
            # A person's pace, not a flood: on an idle machine the emulator answers within a
            # millisecond, and a turn a millisecond would pass BROWSER_MESSAGE_RATE (400/s).
            await trio.sleep(BYSTANDER_PAUSE)


@attrs.define
class Attacked:
    served: Served
    bystander: Bystander
    started: float

    @property
    def port(self) -> int:
        return self.served.port

    async def check_bystander(self) -> None:
        """The process lives, the bystander answers twice more, and it never waited long."""
        assert self.served.process.returncode is None
        with trio.fail_after(BYSTANDER_WAIT * 3):
            while len([t for t in self.bystander.answers if t > self.started]) < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert self.bystander.longest_wait(self.started) < BYSTANDER_WAIT

    def stalls(self) -> list[float]:
        return [float(seconds) for seconds in STALL.findall(self.served.text)]


@asynccontextmanager
async def attacked(emulator: Emulator, **settings: str) -> AsyncIterator[Attacked]:
    """A real server with a bystander talking; after the attack, the bystander must have gone
    on answering and the event loop must never have stalled."""
    env = {
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "AUTH_RATE_LIMIT": "0",
        "MAX_SESSIONS_PER_CLIENT": "0",
        **settings,
    }
    async with liveproxy_process(**env) as served, trio.open_nursery() as nursery:
        bystander = Bystander()
        await nursery.start(talk, served.port, bystander)
        with trio.fail_after(5):
            while len(bystander.answers) < 2:  # noqa: ASYNC110 - the bystander's own pace
                await trio.sleep(0.01)
        attack = Attacked(served, bystander, trio.current_time())
        yield attack
        await attack.check_bystander()
        assert attack.stalls() == [], served.text[-2000:]
        nursery.cancel_scope.cancel()


async def refused_setup(port: int, setup: bytes) -> tuple[int, dict[str, object]]:
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
    async with open_websocket_url(
        f"ws://127.0.0.1:{port}/ws?token={token}", max_message_size=2**22
    ) as ws:
        await ws.send_message(setup.decode())
        client = BrowserClient(ws)
        with trio.fail_after(10):
            ended = await client.wait_closed()
    assert isinstance(ended.last_event, dict)
    return ended.code, ended.last_event


FORGED = "2026-12-05 02:00:00,000 INFO liveproxy: forged"


@pytest.mark.timeout(60)
async def test_a_setup_field_name_of_100k_characters_freezes_nothing(emulator: Emulator) -> None:
    name = "k\n" + FORGED + "k" * 100_000
    setup = orjson.dumps({"setup": {name: 1}})
    async with attacked(emulator) as attack:
        for _ in range(5):  # before the fix: 49 s frozen each, the bystander with it
            code, last = await refused_setup(attack.port, setup)
            assert code == 1007
            error = last["error"]
            assert isinstance(error, dict)
            assert error["code"] == "invalid_setup"
            assert len(str(error["message"])) < 300
    text = attack.served.text
    assert "invalid_setup" in text
    assert not any(line.startswith(FORGED) for line in text.splitlines())
    assert "\\n2026-12-05 02:00:00,000 INFO liveproxy: forged" in text  # escaped, in its line


def process_fds(served: Served) -> tuple[int, int]:
    process = psutil.Process(served.process.pid)
    return process.num_fds(), process.memory_info().rss


async def h2_client_that_never_opens_its_window(port: int) -> bytes:
    stream = await open_raw(port)
    async with stream:
        await stream.send_all(H2_PREFACE + H2_SETTINGS)
        with trio.fail_after(5):
            answer = await read_answer(stream)
    return answer.head


@pytest.mark.timeout(60)
async def test_http2_cleartext_is_refused_and_leaks_nothing(emulator: Emulator) -> None:
    async with attacked(emulator) as attack:
        fds, _ = process_fds(attack.served)
        async with trio.open_nursery() as nursery:
            heads: list[bytes] = []

            async def one() -> None:
                heads.append(await h2_client_that_never_opens_its_window(attack.port))

            for _ in range(100):  # before the fix: 100 such clients, +102 fds, never back
                nursery.start_soon(one)
        assert len(heads) == 100
        assert all(head.startswith(b"HTTP/1.1 505") for head in heads), heads[0]
        with trio.fail_after(5):
            while process_fds(attack.served)[0] > fds + 5:  # noqa: ASYNC110 - another process
                await trio.sleep(0.05)


async def flood_of_empty_frames(port: int) -> tuple[int | None, str]:
    """A session that opens a fragmented message and sends empty continuation frames as fast as
    the socket takes them, until the server closes it: its close code and last event."""
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
    stream = await open_raw(port)
    async with stream:
        await stream.send_all(upgrade_request(f"/ws?token={token}", "127.0.0.1"))
        head = await read_head(stream)
        await stream.send_all(encode_frame(TEXT, orjson.dumps(TEXT_SETUP)))
        await stream.send_all(encode_frame(BINARY, b"\x00\x00", fin=False))
        burst = encode_frame(0x0, b"", fin=False) * 1000
        with trio.move_on_after(10):
            while True:
                try:
                    await stream.send_all(burst)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
        with trio.fail_after(10):
            answer = await read_answer(stream, head)
    return answer.close_code, (answer.texts or [""])[-1]


@pytest.mark.timeout(60)
async def test_frames_that_carry_no_bytes_are_rate_limited(emulator: Emulator) -> None:
    results: list[tuple[int | None, str]] = []
    async with attacked(emulator) as attack, trio.open_nursery() as nursery:

        async def one() -> None:
            results.append(await flood_of_empty_frames(attack.port))

        for _ in range(6):  # before the fix: six stopped the worker for ~35 s
            nursery.start_soon(one)
    for code, last in results:
        assert code == 1008
        assert orjson.loads(last)["error"]["code"] == "rate_limited"


@pytest.mark.timeout(60)
async def test_turns_that_are_never_finished_pin_no_memory(emulator: Emulator) -> None:
    text = "x" * (512 * 1024 - 200) + "\U0001f600"  # about 2 MiB in memory: the most allowed
    turn = orjson.dumps(
        {"client_content": {"turns": [{"role": "user", "parts": [{"text": text}]}]}}
    ).decode()
    async with attacked(emulator) as attack:
        _, before = process_fds(attack.served)
        async with signed_in_socket(attack.port, max_message_size=2**22) as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            assert "setupComplete" in await client.recv_json()
            for _ in range(32):  # before the fix: all 32 kept for a replay (64 MiB here)
                await ws.send_message(turn)
            upstream = emulator.connections[-1]
            with trio.fail_after(10):
                while upstream.received_count < 32:  # noqa: ASYNC110 - the emulator's count
                    await trio.sleep(0.01)
            _, during = process_fds(attack.served)
            # Answered: the session is alive (by realtime text: a client_content turn would make
            # the emulator repeat all 32 turns back).
            await client.send_json({"realtime_input": {"text": "done"}})
            await client.recv_until(has_key("serverContent", "turnComplete"))
    assert during - before < 32 * 1024 * 1024, (before, during)


async def resume(port: int, token: str) -> int:
    body = orjson.dumps({"resume": token})
    return (await request("127.0.0.1", port, "POST", "/api/auth", body)).status


@pytest.mark.timeout(60)
async def test_refused_and_guessed_resumes_cost_the_store_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    database = tmp_path / "state.db"
    settings = {
        "STATE_URL": f"sqlite:///{database}",
        "AUTH_RATE_LIMIT": "20/minute",
        "RESUME_WINDOW_SECONDS": "4",
    }
    async with attacked(emulator, **settings) as attack:
        port = attack.port
        token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            frames = await client.recv_until(has_key("sessionResumable"))
            kept = orjson.loads(frames[-1])["sessionResumable"]["token"]
        kept_at = time.monotonic()
        guesses = [await resume(port, f"guess-{n}") for n in range(40)]
        assert set(guesses) == {404, 429}
        assert guesses.count(404) <= 18  # the bucket of 20 a minute, less the two sign-ins
        size = database.stat().st_size
        for _ in range(40):  # every one refused by the bucket, before the store is touched
            assert await resume(port, kept) == 429
        assert database.stat().st_size == size
        await trio.sleep(max(0.0, 4.5 - (time.monotonic() - kept_at)))
    # The window has passed: whatever the refusals, the conversation is gone from the store.
    with sqlite3.connect(database) as db:
        (left,) = db.execute(
            "SELECT COUNT(*) FROM conversations WHERE expires_at > ?", (time.time(),)
        ).fetchone()
    assert left == 0


@pytest.mark.timeout(60)
async def test_the_smaller_ones(emulator: Emulator) -> None:
    async with attacked(emulator) as attack:
        port = attack.port
        nul = await request("127.0.0.1", port, "GET", "/static/app.js%00.png")
        assert (nul.status, nul.json()["error"]["code"]) == (404, "not_found")
        rebound = await request(
            "127.0.0.1",
            port,
            "POST",
            "/api/auth",
            headers={"Host": "evil.example:8000", "Origin": "http://evil.example:8000"},
        )
        assert (rebound.status, rebound.json()["error"]["code"]) == (403, "forbidden_origin")
    assert "Traceback" not in attack.served.text
    async with liveproxy_process(EMULATOR="false", GOOGLE_API_KEY="") as simple:
        ready = await request("127.0.0.1", simple.port, "GET", "/api/ready")
        assert (ready.status, ready.json()["error"]["message"]) == (503, "no upstream configured")
