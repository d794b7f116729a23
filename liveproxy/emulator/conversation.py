"""The deterministic conversation partner's ears: client input in, model turns out.

:class:`Conversation` is a synchronous state machine (no I/O): :meth:`Conversation.handle`
takes one client message and returns the turns to queue, interrupting the turns in progress on
barge-in. :func:`run_conversation` drives it with a :class:`~liveproxy.emulator.speaker.Speaker`.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio

from liveproxy.emulator import messages, replies
from liveproxy.emulator.audio import INPUT_RATE, OUTPUT_RATE, pcm_rate, resample, seconds
from liveproxy.emulator.decode import ClientMessage
from liveproxy.emulator.endings import Close
from liveproxy.emulator.options import SessionOptions
from liveproxy.emulator.speaker import Call, Speaker, Turn
from liveproxy.emulator.store import SessionState
from liveproxy.emulator.vad import EnergyVad, SpeechEnded, SpeechStarted, VadEvent
from liveproxy.protocol.closes import ENTITY_NOT_FOUND, INVALID_ARGUMENT, INVALID_PAYLOAD, POLICY

TURN_QUEUE = 16


class Conversation:
    """Turns client messages into model turns.

    * Speech (server VAD, or activityStart/activityEnd when it is disabled) makes a turn that
      plays the utterance back at 24 kHz (AUDIO) or answers ``You said: [speech D s]`` (TEXT).
    * ``realtimeInput.text`` and ``clientContent`` with ``turnComplete`` make a text reply, or a
      function call for ``call NAME {args}``.
    * New activity interrupts the unfinished turns (unless ``NO_INTERRUPTION``; a
      ``clientContent`` turn always interrupts).
    """

    def __init__(self, options: SessionOptions, state: SessionState) -> None:
        self._options = options
        self._state = state
        self._vad = EnergyVad(options.vad) if options.vad is not None else None
        self._capture: bytearray | None = None
        self._open: list[Turn] = []
        self._calls: dict[str, Turn] = {}
        self._cancelled: set[str] = set()
        self._pending_text: list[str] = []
        state.add("TEXT", messages.text_tokens(options.system_text))

    def handle(self, message: ClientMessage) -> list[Turn]:
        """Take one client message (after setup); return the new turns, in order.

        Raises:
            Close: 1007 for activityStart/activityEnd while automatic activity detection is on;
                1008 "Requested entity was not found." for a tool response to no pending call.
        """
        if message.kind == "realtimeInput":
            turns = self._realtime(message.body, message.audio)
        elif message.kind == "clientContent":
            turns = self._client_content(message.body)
        elif message.kind == "toolResponse":
            self._tool_response(message.body)
            turns = []
        else:
            turns = []
        self._open = [turn for turn in self._open if not turn.done] + turns
        return turns

    def _interrupt(self) -> None:
        for turn in self._open:
            turn.interrupt()
            if turn.call is not None and self._calls.pop(turn.call.id, None) is not None:
                self._cancelled.add(turn.call.id)
        self._open = []

    def _realtime(self, body: dict[str, Any], audio: bytes | None) -> list[Turn]:
        turns: list[Turn] = []
        manual = self._vad is None
        if ("activityStart" in body or "activityEnd" in body) and not manual:
            raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
        if "activityStart" in body:
            self._interrupt_on_activity()
            self._capture = bytearray()
        if audio is not None:
            turns += self._audio(audio, body["audio"].get("mimeType"))
        if "video" in body:
            self._state.add("IMAGE", messages.IMAGE_TOKENS)
        if "text" in body:
            self._interrupt_on_activity()
            turns.append(self._user_text(body["text"]))
        if body.get("audioStreamEnd") and self._vad is not None:
            turns += self._vad_events(self._vad.flush())
        if "activityEnd" in body and self._capture is not None:
            turns.append(self._speech(bytes(self._capture)))
            self._capture = None
        return turns

    def _interrupt_on_activity(self) -> None:
        if self._options.barge_in:
            self._interrupt()

    def _audio(self, audio: bytes, mime_type: str | None) -> list[Turn]:
        rate = pcm_rate(mime_type)
        if rate is None:
            return []
        pcm = audio if rate == INPUT_RATE else resample(audio, rate, INPUT_RATE)
        if self._vad is None:
            if self._capture is not None:
                self._capture += pcm
            return []
        return self._vad_events(self._vad.feed(pcm))

    def _vad_events(self, events: list[VadEvent]) -> list[Turn]:
        turns: list[Turn] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                self._interrupt_on_activity()
            elif isinstance(event, SpeechEnded):
                turns.append(self._speech(event.audio))
        return turns

    def _speech(self, pcm: bytes) -> Turn:
        duration = seconds(len(pcm), INPUT_RATE)
        self._state.add("AUDIO", messages.audio_tokens(duration))
        transcript = replies.speech_transcript(duration)
        audio = None
        if self._options.modality == "AUDIO":
            audio = resample(pcm, INPUT_RATE, OUTPUT_RATE)
        return Turn(reply=replies.reply_to_speech(transcript), transcript=transcript, audio=audio)

    def _user_text(self, text: str) -> Turn:
        self._state.add("TEXT", messages.text_tokens(text))
        call = replies.parse_call(text, self._options.functions)
        if call is None:
            return Turn(reply=replies.reply_to_text(text))
        name, args = call
        call_id = self._state.next_call_id()
        turn = Turn(call=Call(call_id, name, args))
        self._calls[call_id] = turn
        return turn

    def _client_content(self, body: dict[str, Any]) -> list[Turn]:
        for content in body.get("turns", []):
            user = content.get("role", "user") == "user"
            for part in content.get("parts", []):
                if "text" in part:
                    if user:
                        self._pending_text.append(part["text"])
                    else:
                        self._state.add("TEXT", messages.text_tokens(part["text"]))
                else:
                    self._state.add("IMAGE", messages.IMAGE_TOKENS)
        if not body.get("turnComplete"):
            return []
        self._interrupt()
        text = " ".join(self._pending_text)
        self._pending_text = []
        return [self._user_text(text)]

    def _tool_response(self, body: dict[str, Any]) -> None:
        for response in body.get("functionResponses", []):
            call_id = response.get("id") or self._pending_call_named(response.get("name", ""))
            if call_id in self._cancelled:
                continue
            turn = self._calls.pop(call_id, None)
            if turn is None or turn.call is None:
                raise Close(POLICY, ENTITY_NOT_FOUND)
            result = response.get("response", {})
            self._state.add("TEXT", messages.text_tokens(orjson.dumps(result).decode()))
            turn.result = replies.tool_result(turn.call.name, result)
            turn.answered.set()

    def _pending_call_named(self, name: str) -> str:
        """The oldest pending call to ``name`` (Vertex allows responses without an id)."""
        for call_id, turn in self._calls.items():
            if turn.call is not None and turn.call.name == name:
                return call_id
        return ""


async def run_conversation(
    conversation: Conversation,
    speaker: Speaker,
    inputs: trio.MemoryReceiveChannel[ClientMessage],
) -> None:
    """Feed ``inputs`` through ``conversation`` into ``speaker`` until ``inputs`` ends.

    Closes ``inputs``. Raises whatever :meth:`Conversation.handle` or the speaker raise.
    """
    send_turns, receive_turns = trio.open_memory_channel[Turn](TURN_QUEUE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run, receive_turns)
        with send_turns, inputs:
            async for message in inputs:
                for turn in conversation.handle(message):
                    await send_turns.send(turn)
