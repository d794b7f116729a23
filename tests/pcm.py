"""PCM16 test audio at 16 kHz: a voiced tone the emulator's VAD hears as speech, and silence."""

from __future__ import annotations

import math
from array import array

RATE = 16000
FRAME_BYTES = 3200  # 100 ms


def speech(seconds: float, *, amplitude: int = 8000, hz: float = 220.0) -> bytes:
    count = int(RATE * seconds)
    samples = array(
        "h", (int(amplitude * math.sin(2 * math.pi * hz * i / RATE)) for i in range(count))
    )
    return samples.tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))


def frames(pcm: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
