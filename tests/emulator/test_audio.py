"""PCM helpers and the energy VAD (pure, no I/O)."""

from __future__ import annotations

import pytest

from liveproxy.emulator.audio import pcm_rate, resample, samples, to_bytes, tone, tone_parts
from liveproxy.emulator.replies import tone_seconds
from liveproxy.emulator.vad import EnergyVad, SpeechEnded, SpeechStarted, VadSettings

from .helpers import silence16, tone16


def test_resample_16k_to_24k_interpolates_and_is_three_halves_long() -> None:
    pcm = to_bytes(samples(bytes(0)) + samples(b"\x00\x00\x03\x00\x06\x00\x09\x00"))
    assert samples(resample(pcm, 16_000, 24_000)).tolist() == [0, 2, 4, 6, 8, 9]
    one_second = tone16(1.0)
    assert len(resample(one_second, 16_000, 24_000)) == 48_000
    assert len(resample(one_second[:-2], 16_000, 24_000)) == (15_999 * 3 // 2) * 2


@pytest.mark.parametrize(("src", "dst"), [(48_000, 16_000), (8_000, 16_000), (24_000, 16_000)])
def test_resample_other_rates_keeps_duration(src: int, dst: int) -> None:
    pcm = bytes(2 * src // 10)  # 100 ms
    assert len(resample(pcm, src, dst)) == 2 * dst // 10


def test_resample_keeps_a_constant_signal() -> None:
    pcm = to_bytes(samples(b"\x10\x00" * 480))
    assert set(samples(resample(pcm, 48_000, 16_000))) == {16}
    assert set(samples(resample(pcm, 16_000, 24_000))) == {16}


def test_tone_length_and_level() -> None:
    pcm = tone(0.5)
    assert len(pcm) == 24_000
    assert max(samples(pcm)) > 5000


@pytest.mark.parametrize(
    ("mime", "rate"),
    [
        (None, 16_000),
        ("audio/pcm", 16_000),
        ("audio/pcm;rate=48000", 48_000),
        ("audio/PCM; rate=8000", 8_000),
        ("audio/webm", None),
    ],
)
def test_pcm_rate(mime: str | None, rate: int | None) -> None:
    assert pcm_rate(mime) == rate


def run_vad(pcm: bytes, chunk: int, settings: VadSettings) -> list[SpeechStarted | SpeechEnded]:
    vad = EnergyVad(settings)
    events: list[SpeechStarted | SpeechEnded] = []
    for start in range(0, len(pcm), chunk):
        events += vad.feed(pcm[start : start + chunk])
    return events


@pytest.mark.parametrize("chunk", [640, 3200, 1001, 100_000])
def test_vad_cuts_the_utterance_with_padding_whatever_the_chunking(chunk: int) -> None:
    pcm = silence16(0.5) + tone16(1.0) + silence16(0.6)
    events = run_vad(pcm, chunk, VadSettings(padding_ms=100, silence_ms=500))
    assert events[0] == SpeechStarted()
    ended = events[1]
    assert isinstance(ended, SpeechEnded)
    assert len(events) == 2
    # 100 ms of padding before the tone, the tone itself; the closing silence is cut.
    assert ended.audio == pcm[16_000 - 3200 : 16_000 + 32_000]


def test_vad_needs_the_configured_silence_to_end() -> None:
    pcm = tone16(0.5) + silence16(0.3) + tone16(0.5) + silence16(0.45)
    assert run_vad(pcm, 3200, VadSettings(silence_ms=500)) == [SpeechStarted()]
    events = run_vad(pcm, 3200, VadSettings(silence_ms=200))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded]


def test_vad_ignores_quiet_audio_and_short_clicks() -> None:
    quiet = tone16(1.0, amplitude=200) + silence16(1.0)
    assert run_vad(quiet, 3200, VadSettings()) == []
    click = silence16(0.1) + tone16(0.02) + silence16(1.0)
    assert run_vad(click, 3200, VadSettings(start_ms=40)) == []
    loud_enough = tone16(1.0, amplitude=800) + silence16(1.0)
    assert run_vad(loud_enough, 3200, VadSettings(threshold=300)) != []
    assert run_vad(loud_enough, 3200, VadSettings(threshold=1000)) == []


def test_vad_flush_ends_speech_now() -> None:
    vad = EnergyVad(VadSettings(padding_ms=0))
    assert vad.flush() == []
    assert vad.feed(tone16(0.3) + b"\x01\x00") == [SpeechStarted()]
    assert vad.speaking
    (ended,) = vad.flush()
    assert isinstance(ended, SpeechEnded)
    assert len(ended.audio) == len(tone16(0.3)) + 2
    assert not vad.speaking


@pytest.mark.parametrize("seconds", [0.0, 0.04, 0.1, 0.25, 1.0])
def test_tone_parts_are_the_tone_cut_in_parts(seconds: float) -> None:
    total, parts = tone_parts(seconds, 4800)
    pieces = list(parts)
    assert b"".join(pieces) == tone(seconds)
    assert total == len(tone(seconds))
    assert all(len(p) == 4800 for p in pieces[:-1])


def test_a_spoken_reply_is_at_most_ten_minutes_long() -> None:
    assert tone_seconds("x" * 20) == pytest.approx(1.0)
    assert tone_seconds("x" * 2_000_000) == 600.0
