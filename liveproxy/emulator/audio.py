"""PCM16 helpers in pure Python: sample arrays, linear resampling, a test tone.

All audio is 16-bit signed little-endian mono, as the Live API has it.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from collections.abc import Iterator

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE}"

_RATE = re.compile(r"rate\s*=\s*(\d+)")
_BIG_ENDIAN = sys.byteorder == "big"

TONE_HZ = 400
TONE_AMPLITUDE = 6000


def samples(pcm: bytes) -> array[int]:
    """The samples of little-endian PCM16 ``pcm`` (a trailing odd byte is ignored)."""
    out = array("h")
    out.frombytes(pcm[: len(pcm) & ~1])
    if _BIG_ENDIAN:
        out.byteswap()
    return out


def to_bytes(values: array[int]) -> bytes:
    """Little-endian PCM16 bytes of ``values``."""
    if _BIG_ENDIAN:
        values = array("h", values)
        values.byteswap()
    return values.tobytes()


def pcm_rate(mime_type: str | None) -> int | None:
    """The sample rate of a PCM mime type (16 kHz if it names none), or None if not PCM."""
    if not mime_type:
        return INPUT_RATE
    if not mime_type.strip().lower().startswith("audio/pcm"):
        return None
    found = _RATE.search(mime_type)
    return int(found[1]) if found else INPUT_RATE


def _upsample_2_to_3(x: array[int]) -> array[int]:
    """16 kHz -> 24 kHz: output sample j sits at input position 2j/3 (linear interpolation)."""
    a0 = x[0::2]
    a1 = x[1::2]
    a2 = x[2::2]
    a2.append(a1[-1])
    out = array("h", bytes(2 * 3 * len(a0)))
    out[0::3] = a0
    out[1::3] = array("h", [(p + 2 * q) // 3 for p, q in zip(a0, a1, strict=True)])
    out[2::3] = array("h", [(2 * q + r) // 3 for q, r in zip(a1, a2, strict=True)])
    return out


def _resample_linear(x: array[int], src: int, dst: int) -> array[int]:
    count = len(x) * dst // src
    last = len(x) - 1
    step = src / dst
    out = array("h", bytes(2 * count))
    for j in range(count):
        pos = j * step
        i = int(pos)
        nxt = x[i + 1] if i < last else x[last]
        out[j] = x[i] + int((nxt - x[i]) * (pos - i))
    return out


def resample(pcm: bytes, src: int, dst: int) -> bytes:
    """Resample PCM16 ``pcm`` from ``src`` Hz to ``dst`` Hz by linear interpolation.

    The result holds ``len(samples) * dst // src`` samples; 16 kHz -> 24 kHz takes a fast path.
    """
    x = samples(pcm)
    if src == dst or not x:
        return to_bytes(x)
    if src * 3 == dst * 2:
        if len(x) % 2:
            x.append(x[-1])
            return to_bytes(_upsample_2_to_3(x)[: (len(x) - 1) * 3 // 2])
        return to_bytes(_upsample_2_to_3(x))
    return to_bytes(_resample_linear(x, src, dst))


def _period() -> array[int]:
    length = OUTPUT_RATE // TONE_HZ
    return array(
        "h", (round(TONE_AMPLITUDE * math.sin(2 * math.pi * k / length)) for k in range(length))
    )


_PERIOD = _period()


def tone(seconds: float) -> bytes:
    """A 400 Hz sine at 24 kHz lasting ``seconds`` (rounded down to whole samples)."""
    return _tone_samples(0, int(seconds * OUTPUT_RATE))


def tone_parts(seconds: float, part_bytes: int) -> tuple[int, Iterator[bytes]]:
    """:func:`tone` cut into parts of ``part_bytes`` (even): its length in bytes, and the parts.

    The parts are made one at a time, so a long tone costs one part of memory, not its length.
    """
    count = int(seconds * OUTPUT_RATE)
    part_samples = part_bytes // 2

    def parts() -> Iterator[bytes]:
        for first in range(0, count, part_samples):
            yield _tone_samples(first, min(part_samples, count - first))

    return 2 * count, parts()


def pcm_parts(pcm: bytes, part_bytes: int) -> Iterator[bytes]:
    """``pcm`` cut into parts of ``part_bytes``, sliced as they are taken."""
    for start in range(0, len(pcm), part_bytes):
        yield pcm[start : start + part_bytes]


def _tone_samples(first: int, count: int) -> bytes:
    """Samples ``first`` to ``first + count`` of the endless tone."""
    phase = first % len(_PERIOD)
    repeats = (phase + count) // len(_PERIOD) + 1
    return to_bytes((_PERIOD * repeats)[phase : phase + count])


def seconds(pcm_bytes: int, rate: int) -> float:
    """The duration of ``pcm_bytes`` bytes of PCM16 at ``rate`` Hz."""
    return pcm_bytes / (2 * rate)
