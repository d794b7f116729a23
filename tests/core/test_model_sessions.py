"""Today's models through the whole proxy: a setup a known model refuses never reaches Gemini,
and on the extended-thinking model an upstream switch waits for the interaction to be idle.

The rules themselves are sync tests (tests/test_live_models.py, tests/core/test_course.py); the
emulator enforces the same rules (tests/emulator/)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing

from liveproxy.emulator import Emulator, EmulatorConfig, Faults
from liveproxy.emulator import serve as serve_emulator
from liveproxy.protocol import closes
from tests.conftest import ProxyFactory
from tests.wsclient import Frame

EXTENDED = "gemini-3.8-live-extended-thinking"
SPOKEN: dict[str, Any] = {
    "setup": {
        "generation_config": {"response_modalities": ["AUDIO"]},
        "output_audio_transcription": {},
    }
}


@pytest.mark.parametrize(
    ("model", "setup", "reason"),
    [
        (
            "gemini-3.8-live",
            {"generation_config": {"response_modalities": ["TEXT"]}},
            "CONTENT_TYPE_TEXT",
        ),
        (
            "gemini-3.8-live",
            {"generation_config": {"thinking_config": {"thinking_budget": 0}}},
            "thinking_config is not supported",
        ),
        ("gemini-3.8-live", {"proactivity": {"proactive_audio": False}}, "proactive_audio"),
        (
            EXTENDED,
            {"generation_config": {"thinking_config": {"thinking_level": "MINIMAL"}}},
            "'minimal' is not a supported thinking level",
        ),
    ],
)
async def test_a_setup_the_model_refuses_is_invalid_setup_without_dialing_gemini(
    make_proxy: ProxyFactory, emulator: Emulator, model: str, setup: dict[str, Any], reason: str
) -> None:
    proxy = await make_proxy(model=model)
    async with proxy.connect() as client:
        await client.send_json({"setup": setup})
        ended = await client.wait_closed()
    assert ended.code == closes.INVALID_PAYLOAD
    error = ended.last_event["error"]
    assert error["code"] == "invalid_setup"
    assert str(error["message"]).startswith(f"{model}: ")
    assert reason in str(error["message"])
    assert emulator.connections == []  # no Gemini connection was spent on it


def event(frame: Frame) -> dict[str, Any]:
    return orjson.loads(frame) if isinstance(frame, str) else {}


def status(frame: Frame) -> str | None:
    content = event(frame).get("serverContent") or {}
    value = content.get("interactionStatus")
    return value if isinstance(value, str) else None


def spoken(frames: list[Frame]) -> str:
    return "".join(
        str(event(f).get("serverContent", {}).get("outputTranscription", {}).get("text", ""))
        for f in frames
    )


async def test_a_go_away_while_the_model_thinks_switches_only_once_it_is_idle(
    make_proxy: ProxyFactory, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # goAway right after "think about lunch" (message 1), 20 s before the old connection closes:
    # the model answers, says IN_PROGRESS at its first turnComplete, thinks 3 s, answers again
    # and says IDLE. The switch must come after that IDLE, not at the first turnComplete.
    emulator: Emulator = await nursery.start(
        serve_emulator,
        EmulatorConfig(speed="realtime", go_away_lead_seconds=20.0),
    )
    emulator.queue_faults(Faults(go_away_after=1))  # the first connection only
    proxy = await make_proxy(emulator_=emulator, model=EXTENDED)
    async with proxy.session(SPOKEN) as client:
        await client.send_json({"type": "text", "text": "think about lunch"})
        frames = await client.recv_until(
            lambda f: event(f).get("sessionStatus", {}).get("state") == "resumed"
        )
        await client.send_json({"type": "text", "text": "and now?"})
        frames += await client.recv_until(lambda f: status(f) == "IDLE")
        assert client.ws.closed is None
    statuses = [(i, s) for i, f in enumerate(frames) if (s := status(f)) is not None]
    switched = next(
        i for i, f in enumerate(frames) if event(f).get("sessionStatus", {}).get("state")
    )
    first_idle = next(i for i, s in statuses if s == "IDLE")
    assert [s for i, s in statuses if i < switched] == ["IN_PROGRESS", "IN_PROGRESS", "IDLE"]
    assert first_idle < switched
    # Both of the thinking interaction's answers came whole, once; the next one came from the
    # new connection, which was given the handle and had nothing to replay.
    said = spoken(frames)
    assert said.count("Let me think.") == 1
    assert said.count('You said: "think about lunch"') == 1
    assert said.count('You said: "and now?"') == 1
    old, new = emulator.connections
    assert new.setup is not None
    assert new.setup["sessionResumption"]["handle"] == old.issued[-1].handle
    assert [kind for kind, _ in new.received] == ["clientContent"]
