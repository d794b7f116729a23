"""An energy voice-activity detector for PCM16 at 16 kHz: sans-IO, deterministic.

Audio is cut into 20 ms frames; a frame is *loud* when its RMS reaches ``threshold``. Speech
starts after ``start_ms`` of consecutive loud frames and ends after ``silence_ms`` of
consecutive quiet ones. The utterance runs from ``padding_ms`` before the first loud frame of
the onset to the end of the last loud frame (the closing silence is not part of it).
"""

from __future__ import annotations

import copy
import math
import operator
from collections import deque

import attrs

from liveproxy.emulator.audio import INPUT_RATE, samples

FRAME_MS = 20
FRAME_BYTES = 2 * INPUT_RATE * FRAME_MS // 1000


@attrs.frozen
class SpeechStarted:
    """The user started speaking."""


@attrs.frozen
class SpeechEnded:
    """The user stopped speaking; ``audio`` is the utterance (PCM16, 16 kHz)."""

    audio: bytes


VadEvent = SpeechStarted | SpeechEnded


@attrs.frozen
class VadSettings:
    """Thresholds of :class:`EnergyVad`; durations are rounded up to whole 20 ms frames."""

    threshold: int = 300
    start_ms: int = 40
    silence_ms: int = 500
    padding_ms: int = 100


def _frames(ms: int) -> int:
    return max(1, math.ceil(ms / FRAME_MS))


def is_loud(frame: bytes, threshold: int) -> bool:
    """Whether the RMS of PCM16 ``frame`` is at least ``threshold``."""
    values = samples(frame)
    if not values:
        return False
    energy: int = sum(map(operator.mul, values, values))
    return energy >= threshold * threshold * len(values)


class EnergyVad:
    """Feed it audio, get :data:`VadEvent` values back."""

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._threshold = settings.threshold
        self._start = _frames(settings.start_ms)
        self._silence = _frames(settings.silence_ms)
        self._padding = settings.padding_ms // FRAME_MS
        self._partial = b""
        self._recent: deque[bytes] = deque(maxlen=self._padding + self._start)
        self._loud_run = 0
        self._quiet_run = 0
        self._utterance: bytearray | None = None

    @property
    def speaking(self) -> bool:
        """Whether an utterance is in progress."""
        return self._utterance is not None

    def copy(self) -> EnergyVad:
        """An independent detector in the same state (a resumption handle keeps one)."""
        twin = copy.copy(self)
        twin._recent = deque(self._recent, maxlen=self._recent.maxlen)
        twin._utterance = None if self._utterance is None else bytearray(self._utterance)
        return twin

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Process more audio; return the events it caused, in order."""
        data = self._partial + pcm if self._partial else pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        events: list[VadEvent] = []
        for start in range(0, whole, FRAME_BYTES):
            event = self._frame(data[start : start + FRAME_BYTES])
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[VadEvent]:
        """End the utterance in progress now (the client sent ``audioStreamEnd``)."""
        if self._utterance is None:
            self._partial = b""
            return []
        if self._quiet_run == 0:
            self._utterance += self._partial
        self._partial = b""
        return [self._end()]

    def _frame(self, frame: bytes) -> VadEvent | None:
        loud = is_loud(frame, self._threshold)
        if self._utterance is None:
            self._recent.append(frame)
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run < self._start:
                return None
            onset = list(self._recent)[-(self._loud_run + self._padding) :]
            self._utterance = bytearray(b"".join(onset))
            self._recent.clear()
            self._loud_run = 0
            self._quiet_run = 0
            return SpeechStarted()
        self._utterance += frame
        self._quiet_run = 0 if loud else self._quiet_run + 1
        if self._quiet_run < self._silence:
            return None
        return self._end()

    def _end(self) -> SpeechEnded:
        assert self._utterance is not None
        cut = len(self._utterance) - self._quiet_run * FRAME_BYTES
        audio = bytes(self._utterance[:cut])
        self._utterance = None
        self._quiet_run = 0
        return SpeechEnded(audio)
