"""The deterministic conversation partner, end to end over sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from liveproxy.protocol.closes import INVALID_ARGUMENT

from .helpers import (
    TEXT_MODEL,
    audio_message,
    close_reason,
    connect,
    kinds,
    model_audio,
    model_text,
    open_session,
    receive,
    send,
    send_audio,
    server_content,
    silence16,
    start,
    tone16,
    transcript,
    until_turn_complete,
)

TRANSCRIBED: dict[str, Any] = {"inputAudioTranscription": {}, "outputAudioTranscription": {}}
NO_PADDING: dict[str, Any] = {
    "realtimeInputConfig": {"automaticActivityDetection": {"prefixPaddingMs": 0}}
}


async def test_audio_turn_echoes_the_speech_at_24khz_with_transcriptions(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    speech = tone16(1.2)
    async with connect(emulator) as ws:
        await open_session(ws, **TRANSCRIBED, **NO_PADDING)
        await send_audio(ws, silence16(0.5) + speech + silence16(0.6))
        turn = await until_turn_complete(ws)
    assert transcript(turn, "inputTranscription") == "[speech 1.20 s]"
    assert transcript(turn, "outputTranscription") == "You said: [speech 1.20 s]"
    audio = model_audio(turn)
    assert len(audio) == len(speech) * 3 // 2
    assert kinds(turn)[0] == "inputTranscription"
    assert kinds(turn)[-2:] == ["generationComplete", "turnComplete"]
    assert kinds(turn).count("modelTurn") == 12  # 100 ms parts
    usage = turn[-1]["usageMetadata"]
    assert usage["promptTokenCount"] == 30  # 1.2 s of audio at 25 tokens/s
    assert usage["responseTokenCount"] == 30
    assert usage["totalTokenCount"] == 60
    assert usage["responseTokensDetails"] == [{"modality": "AUDIO", "tokenCount": 30}]


async def test_transcriptions_only_when_asked_for(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, outputAudioTranscription={})
        await send_audio(ws, tone16(0.5) + silence16(0.6))
        turn = await until_turn_complete(ws)
    assert server_content(turn, "inputTranscription") == []
    assert transcript(turn, "outputTranscription") == "You said: [speech 0.50 s]"


async def test_padding_and_silence_duration_follow_the_setup(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    detection = {"prefixPaddingMs": 200, "silenceDurationMs": 300}
    async with connect(emulator) as ws:
        await open_session(
            ws,
            inputAudioTranscription={},
            realtimeInputConfig={"automaticActivityDetection": detection},
        )
        # A 240 ms pause does not end the turn; 300 ms of silence does.
        await send_audio(ws, silence16(1.0) + tone16(0.5) + silence16(0.24) + tone16(0.5))
        await send_audio(ws, silence16(0.3))
        turn = await until_turn_complete(ws)
    # From 200 ms before the first tone to the end of the second one.
    assert transcript(turn, "inputTranscription") == "[speech 1.44 s]"
    assert len(model_audio(turn)) == int(1.44 * 48_000)


async def test_speech_in_text_modality_answers_in_text(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(
            ws, model=TEXT_MODEL, generationConfig={"responseModalities": ["TEXT"]}, **NO_PADDING
        )
        await send_audio(ws, tone16(0.4) + silence16(0.6))
        turn = await until_turn_complete(ws)
    assert model_text(turn) == "You said: [speech 0.40 s]"
    assert model_audio(turn) == b""
    assert turn[-1]["usageMetadata"]["responseTokensDetails"] == [
        {"modality": "TEXT", "tokenCount": 7}
    ]


@pytest.mark.parametrize("as_client_content", [False, True])
async def test_text_turn_in_text_modality(nursery: trio.Nursery, as_client_content: bool) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig={"responseModalities": ["TEXT"]})
        if as_client_content:
            await send(
                ws, {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hello"}]}]}}
            )
            await send(
                ws,
                {
                    "clientContent": {
                        "turns": [{"role": "user", "parts": [{"text": "there"}]}],
                        "turnComplete": True,
                    }
                },
            )
        else:
            await send(ws, {"realtimeInput": {"text": "Hello there"}})
        turn = await until_turn_complete(ws)
    assert model_text(turn) == 'You said: "Hello there"'
    assert kinds(turn) == ["modelTurn"] * 4 + ["generationComplete", "turnComplete"]


async def test_text_turn_in_audio_modality_is_a_tone_with_transcription(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, outputAudioTranscription={})
        await send(ws, {"realtimeInput": {"text": "hi"}})
        turn = await until_turn_complete(ws)
    reply = 'You said: "hi"'
    assert transcript(turn, "outputTranscription") == reply
    assert len(model_audio(turn)) == round(0.05 * len(reply) * 48_000)
    assert model_text(turn) == ""


async def test_usage_grows_over_the_conversation(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    prompts = []
    async with connect(emulator) as ws:
        await open_session(ws, systemInstruction={"parts": [{"text": "Be brief, be kind."}]})
        for text in ("one", "two", "three"):
            await send(ws, {"realtimeInput": {"text": text}})
            usage = (await until_turn_complete(ws))[-1]["usageMetadata"]
            assert (
                usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
            )
            prompts.append(usage["promptTokenCount"])
    assert prompts[0] == 5 + 1  # system instruction + "one"
    assert prompts[0] < prompts[1] < prompts[2]


async def test_realtime_speed_paces_the_answer_in_trio_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    async with connect(emulator) as ws:
        await open_session(ws, **NO_PADDING)
        await send_audio(ws, tone16(2.0) + silence16(0.6))
        started = trio.current_time()
        times = []
        while True:
            message = await receive(ws)
            times.append(trio.current_time() - started)
            if message["serverContent"].get("turnComplete"):
                break
    assert times[0] == pytest.approx(0.0)
    assert times[-2] == pytest.approx(1.9)  # the last 100 ms part goes out at 1.9 s
    assert times[-1] == pytest.approx(2.0)  # turnComplete once it has played


async def test_fast_speed_does_not_pace(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws)
        await send_audio(ws, tone16(2.0) + silence16(0.6))
        started = trio.current_time()
        await until_turn_complete(ws)
    assert trio.current_time() - started == pytest.approx(0.0)


async def test_barge_in_interrupts_the_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    async with connect(emulator) as ws:
        await open_session(ws, **NO_PADDING)
        await send_audio(ws, tone16(2.0) + silence16(0.6))
        first = [await receive(ws) for _ in range(3)]
        assert kinds(first) == ["modelTurn"] * 3
        started = trio.current_time()
        await send_audio(ws, tone16(0.1))  # the user speaks again
        interrupted = await until_turn_complete(ws)
        assert trio.current_time() - started == pytest.approx(0.0)
        await send_audio(ws, silence16(0.6))
        second = await until_turn_complete(ws)
    assert kinds(interrupted) == ["interrupted", "turnComplete"]
    assert interrupted[-1]["usageMetadata"]["responseTokenCount"] == 8  # 0.3 s were sent
    assert len(model_audio(second)) == int(0.1 * 48_000)


async def test_no_interruption_plays_the_answer_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    emulator = await start(nursery)
    config = {
        "automaticActivityDetection": {"prefixPaddingMs": 0},
        "activityHandling": "NO_INTERRUPTION",
    }
    async with connect(emulator) as ws:
        await open_session(ws, realtimeInputConfig=config)
        await send_audio(ws, tone16(1.0) + silence16(0.6))
        await receive(ws)
        await send_audio(ws, tone16(0.5) + silence16(0.6))
        first = await until_turn_complete(ws)
        second = await until_turn_complete(ws)
    assert "interrupted" not in kinds(first)
    assert len(model_audio(first)) == 48_000 - 4800  # all but the part read above
    assert len(model_audio(second)) == 24_000


async def test_manual_activity_brackets_the_utterance(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    manual = {"automaticActivityDetection": {"disabled": True}}
    async with connect(emulator) as ws:
        await open_session(ws, realtimeInputConfig=manual, inputAudioTranscription={})
        await send_audio(ws, tone16(0.5))  # outside any activity: ignored
        await send(ws, {"realtimeInput": {"activityStart": {}}})
        await send_audio(ws, silence16(0.2) + tone16(0.3))  # all of it counts, silence too
        await send(ws, {"realtimeInput": {"activityEnd": {}}})
        turn = await until_turn_complete(ws)
    assert transcript(turn, "inputTranscription") == "[speech 0.50 s]"
    assert len(model_audio(turn)) == 24_000


async def test_activity_signals_with_automatic_detection_on_close_1007(
    nursery: trio.Nursery,
) -> None:
    emulator = await start(nursery)
    async with connect(emulator) as ws:
        await open_session(ws)
        await send(ws, {"realtimeInput": {"activityStart": {}}})
        reason = await close_reason(ws)
    assert (reason.code, reason.reason) == (1007, INVALID_ARGUMENT)


async def test_audio_stream_end_flushes_the_utterance(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, inputAudioTranscription={}, **NO_PADDING)
        await send_audio(ws, tone16(0.7))
        await send(ws, {"realtimeInput": {"audioStreamEnd": True}})
        turn = await until_turn_complete(ws)
    assert transcript(turn, "inputTranscription") == "[speech 0.70 s]"


async def test_other_input_rates_are_resampled(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    tone = tone16(1.0)
    tone48 = b"".join(tone[i : i + 2] * 3 for i in range(0, len(tone), 2))
    async with connect(emulator) as ws:
        await open_session(ws, inputAudioTranscription={}, **NO_PADDING)
        await send(ws, audio_message(tone48 + bytes(96_000), rate=48_000))
        turn = await until_turn_complete(ws)
    assert transcript(turn, "inputTranscription") == "[speech 1.00 s]"
    assert len(model_audio(turn)) == 48_000


async def test_non_pcm_audio_and_video_are_accepted_but_not_heard(nursery: trio.Nursery) -> None:
    emulator = await start(nursery, speed="fast")
    async with connect(emulator) as ws:
        await open_session(ws, model=TEXT_MODEL, generationConfig={"responseModalities": ["TEXT"]})
        await send(ws, {"realtimeInput": {"audio": {"mimeType": "audio/webm", "data": "GkXfow=="}}})
        await send(ws, {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": "_9j_"}}})
        await send(ws, {"realtimeInput": {"text": "x"}})
        turn = await until_turn_complete(ws)
    assert model_text(turn) == 'You said: "x"'
    details = turn[-1]["usageMetadata"]["promptTokensDetails"]
    assert {"modality": "IMAGE", "tokenCount": 258} in details
