"""A speech-like WAV fixture for the fake microphone: voiced "syllables" grouped into utterances.

Each syllable is a harmonic tone (a glottal-like stack of five harmonics, the pitch gliding down
as in a spoken syllable) under a rise-and-fall envelope; syllables of an utterance are separated
by short dips, and utterances by silences well over the emulator's VAD silence (500 ms), so its
energy VAD hears each utterance as one turn. Chromium loops the file.
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from pathlib import Path

import attrs

RATE = 48_000
AMPLITUDE = 0.35
#: (pitch Hz, syllable lengths in seconds) of each utterance.
UTTERANCES: tuple[tuple[float, tuple[float, ...]], ...] = (
    (180.0, (0.22, 0.18, 0.30)),
    (140.0, (0.20, 0.26, 0.16, 0.32)),
)
SYLLABLE_GAP = 0.06
LEAD_SILENCE = 0.3
#: Between utterances (> the VAD's 500 ms) and after the last one: a quiet stretch for typing.
PAUSE = 1.5
TAIL_SILENCE = 4.0
HARMONICS = (1.0, 0.6, 0.4, 0.25, 0.15)


@attrs.frozen
class SpeechWav:
    """The fixture written: its path, each utterance's length and the loop's length (seconds)."""

    path: Path
    utterances: tuple[float, ...]
    seconds: float


def _syllable(pitch: float, seconds: float) -> list[float]:
    count = int(seconds * RATE)
    norm = sum(HARMONICS)
    out: list[float] = []
    phase = 0.0
    for n in range(count):
        t = n / count
        frequency = pitch * (1.1 - 0.25 * t)  # falling pitch
        phase += 2 * math.pi * frequency / RATE
        envelope = math.sin(math.pi * t) ** 0.7
        voiced = sum(a * math.sin(k * phase) for k, a in enumerate(HARMONICS, start=1))
        out.append(AMPLITUDE * envelope * voiced / norm)
    return out


def _silence(seconds: float) -> list[float]:
    return [0.0] * int(seconds * RATE)


def write_speech_wav(path: Path) -> SpeechWav:
    """Write the fixture (16-bit mono PCM at 48 kHz) to ``path``."""
    samples = _silence(LEAD_SILENCE)
    lengths: list[float] = []
    for index, (pitch, syllables) in enumerate(UTTERANCES):
        start = len(samples)
        for number, seconds in enumerate(syllables):
            if number:
                samples += _silence(SYLLABLE_GAP)
            samples += _syllable(pitch * (1 + 0.08 * (number % 2)), seconds)
        lengths.append((len(samples) - start) / RATE)
        samples += _silence(TAIL_SILENCE if index == len(UTTERANCES) - 1 else PAUSE)
    pcm = array("h", (round(max(-1.0, min(1.0, s)) * 32767) for s in samples))
    if sys.byteorder == "big":
        pcm.byteswap()  # WAV data is little-endian
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())
    return SpeechWav(path, tuple(lengths), len(samples) / RATE)


def write_silent_wav(path: Path, seconds: float = 1.0) -> Path:
    """A fake microphone that hears nothing (the same format, all zeros): the model then answers
    typed turns only, so a test can count the conversation's turns."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(2 * int(seconds * RATE)))
    return path
