"""A DEBUG log of a real ``liveproxy serve`` through every kind of error ending: no secret in it.

The key is in ``GOOGLE_API_KEY`` and in ``UPSTREAM_URL`` (``?key=``), and the emulator repeats it
in a close reason, as Google does (``API key ... not valid``). Tokens, the system prompt and the
user's words must not appear either, in our lines or the libraries'.
"""

from __future__ import annotations

import signal

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from liveproxy.emulator import Emulator, Faults
from tests.http import request
from tests.served import liveproxy_process
from tests.wsclient import BrowserClient

KEY = "sk-live-KEY-0123456789abcdef"
PROMPT = "PROMPT-secret-you-are-a-tutor"
WORDS = "WORDS-secret-my-bank-password"
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = {
    "setup": {
        "generation_config": {"response_modalities": ["TEXT"]},
        "system_instruction": {"parts": [{"text": PROMPT}]},
    }
}


async def one_session(
    port: int, tokens: list[str], *frames: str | bytes, setup: object = SETUP
) -> None:
    """Open a session, send ``setup`` and ``frames``, read until the proxy closes."""
    token = (await request("127.0.0.1", port, "POST", "/api/auth")).json()["session_token"]
    tokens.append(token)
    async with open_websocket_url(
        f"ws://127.0.0.1:{port}/ws?token={token}", max_message_size=2**24
    ) as ws:
        client = BrowserClient(ws)
        await client.send_json(setup)
        for frame in frames:
            try:
                await ws.send_message(frame)
            except ConnectionClosed:
                break
        with trio.fail_after(15):
            await client.wait_closed()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_debug_log_of_every_error_ending_has_no_secret(
    emulator: Emulator, log_format: str
) -> None:
    tokens: list[str] = []
    text_turn = orjson.dumps({"type": "text", "text": WORDS}).decode()
    async with liveproxy_process(
        GOOGLE_API_KEY=KEY,
        UPSTREAM_URL=f"{emulator.url}{LIVE_PATH}?key={KEY}",
        LOG_LEVEL="DEBUG",
        LOG_FORMAT=log_format,
        MAX_MESSAGE_BYTES="65536",
        SETUP_TIMEOUT_SECONDS="1",
        RECONNECT_ATTEMPTS="1",
    ) as served:
        port = served.port
        emulator.queue_faults(
            Faults(close_after=1, close_code=1007, close_reason=f"API key {KEY} not valid"),
            Faults(reject_status=401),
            Faults(hang_upgrade=True),
            Faults(drop_after=1),
        )
        await one_session(port, tokens, text_turn)  # upstream_error, reason with the key
        await one_session(port, tokens, text_turn)  # upstream_rejected (HTTP 401)
        await one_session(port, tokens, text_turn)  # upstream_unavailable (no answer)
        await one_session(port, tokens, text_turn)  # a drop, then a failed resume
        await one_session(port, tokens, text_turn, b"x" * 70_000)  # message_too_big
        await one_session(port, tokens, text_turn, *[b"\0\0"] * 1000)  # rate_limited
        bad = {"setup": {"no_such_field": PROMPT, "system_instruction": PROMPT}}
        await one_session(port, tokens, setup=bad)  # invalid_setup
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await served.process.wait()
    text = served.text
    assert "DEBUG" in text or '"level":"debug"' in text  # the libraries' loggers were on
    endings = ("upstream_error", "upstream_rejected", "upstream_unavailable", "invalid_setup")
    for ending in (*endings, "message_too_big", "rate_limited"):
        assert ending in text
    for secret in (KEY, PROMPT, WORDS, *tokens):
        assert secret not in text
    assert "key=***" in text
    if log_format == "json":
        check_json_lines(text, sessions=7)


def check_json_lines(text: str, sessions: int) -> None:
    """Every line is one JSON object with the fields; each session's lines carry its id."""
    lines = [orjson.loads(line) for line in text.splitlines() if line]
    for line in lines:
        assert {"ts", "level", "logger", "event", "message"} <= line.keys(), line
    ended = [line for line in lines if line["event"] == "session_ended"]
    assert len(ended) == sessions
    for line in ended:
        assert {"session_id", "reason", "client", "seconds", "messages", "reconnects"} <= set(line)
        assert line["client"] != "127.0.0.1"
        same = [other for other in lines if other.get("session_id") == line["session_id"]]
        assert next(o["event"] for o in same if o["logger"] == "liveproxy") == "session_started"
        assert len(same) > 2  # the libraries' lines for this session carry its id too
