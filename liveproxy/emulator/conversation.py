"""The deterministic conversation partner's ears: client input in, model turns out.

:class:`Conversation` is a synchronous state machine (no I/O): :meth:`Conversation.handle`
takes one client message and returns the turns to queue, interrupting the turns in progress on
barge-in. :func:`run_conversation` drives it with a :class:`~liveproxy.emulator.speaker.Speaker`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from liveproxy.emulator import messages, replies
from liveproxy.emulator.audio import INPUT_RATE, OUTPUT_RATE, pcm_rate, resample, seconds
from liveproxy.emulator.calls import Answer, Calls, response_text
from liveproxy.emulator.decode import ClientMessage
from liveproxy.emulator.endings import Close
from liveproxy.emulator.options import SessionOptions
from liveproxy.emulator.pending import Pending
from liveproxy.emulator.speaker import Speaker
from liveproxy.emulator.store import Checkpoint, SessionState
from liveproxy.emulator.turns import Call, Turn
from liveproxy.emulator.vad import EnergyVad, SpeechEnded, SpeechStarted, VadEvent
from liveproxy.protocol.closes import INVALID_ARGUMENT, INVALID_PAYLOAD

TURN_QUEUE = 16
#: How long a model asked to think keeps silent between its two turns (realtime speed).
THINK_SECONDS = 3.0
_SCHEDULING_NUMBERS = {0: "SCHEDULING_UNSPECIFIED", 1: "SILENT", 2: "WHEN_IDLE", 3: "INTERRUPT"}


class Conversation:
    """Turns client messages into model turns.

    * Speech (server VAD, or activityStart/activityEnd when it is disabled) makes a turn that
      plays the utterance back at 24 kHz (AUDIO) or answers ``You said: [speech D s]`` (TEXT).
    * ``realtimeInput.text`` and ``clientContent`` with ``turnComplete`` make a text reply, or a
      function call for ``call NAME {args}``, or (on a model that thinks on request) a short
      answer and a thought-out turn after a pause; a transcription model answers text with an
      empty turn and speech with its transcript.
    * A blocking call's turn waits for the response. A NON_BLOCKING call's turn ends once the
      call is out; its response makes a turn with the result as its ``scheduling`` says:
      ``INTERRUPT`` interrupts the turn under way and speaks now, ``WHEN_IDLE`` (or unspecified)
      speaks after the turns already queued, ``SILENT`` makes none (a quiet turn).
    * New activity interrupts the unfinished turns (unless ``NO_INTERRUPTION``; a
      ``clientContent`` turn always interrupts). A NON_BLOCKING call already out is not
      cancelled by it: its result still comes.

    Every message :meth:`handle` takes is *consumed*: :attr:`consumed` counts them (the n-th
    message after ``setup`` has index n), and :meth:`checkpoint` captures the conversation with
    all of them, unfinished input included. A conversation resumed from a checkpoint (``pending``)
    continues from exactly there.
    """

    def __init__(
        self, options: SessionOptions, state: SessionState, pending: Pending | None = None
    ) -> None:
        self._options = options
        self._state = state
        self._pending = _carried_over(pending or Pending(), options)
        self._open: list[Turn] = []
        self._calls = Calls(self._pending.cancelled)
        self._consumed = 0
        state.set_system(messages.text_tokens(options.system_text))

    @property
    def consumed(self) -> int:
        """The index of the last message handled (0: none since setup)."""
        return self._consumed

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
            turns = self._tool_response(message.body)
        else:
            turns = []
        self._open = [turn for turn in self._open if not turn.done] + turns
        self._consumed += 1
        return turns

    def owes(self, finishing: Turn) -> bool:
        """Whether the model still owes something as ``finishing`` (the turn being played)
        ends: another turn, or the result of a NON_BLOCKING call (a blocking call's own turn
        is what is owed)."""
        if self._calls.results_owed():
            return True
        return any(
            turn is not finishing and not turn.done and not turn.interrupted.is_set()
            for turn in self._open
        )

    def checkpoint(self, finishing: Turn) -> Checkpoint | None:
        """The conversation as a resumption handle keeps it, as ``finishing`` (the turn being
        played) ends; None while the model still owes something (the session is then not
        resumable, as on Google while it generates or a function call is pending)."""
        if self.owes(finishing):
            return None
        return Checkpoint(self._state.snapshot(), self._pending.copy(), self._consumed)

    def _interrupt(self) -> None:
        for turn in self._open:
            self._interrupt_turn(turn)
        self._open = []

    def _interrupt_turn(self, turn: Turn) -> None:
        turn.interrupt()
        self._calls.cancel(turn)

    def _realtime(self, body: dict[str, Any], audio: bytes | None) -> list[Turn]:
        turns: list[Turn] = []
        pending = self._pending
        manual = pending.vad is None
        if ("activityStart" in body or "activityEnd" in body) and not manual:
            raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
        if "activityStart" in body:
            self._interrupt_on_activity()
            pending.capture = bytearray()
        if audio is not None:
            self._state.hear_audio(audio)
            turns += self._audio(audio, body["audio"].get("mimeType"))
        if "video" in body:
            self._state.add("IMAGE", messages.IMAGE_TOKENS)
        if "text" in body:
            self._interrupt_on_activity()
            turns += self._user_text(body["text"])
        if body.get("audioStreamEnd") and pending.vad is not None:
            turns += self._vad_events(pending.vad.flush())
        if "activityEnd" in body and pending.capture is not None:
            turns.append(self._speech(bytes(pending.capture)))
            pending.capture = None
        return turns

    def _interrupt_on_activity(self) -> None:
        if self._options.barge_in:
            self._interrupt()

    def _audio(self, audio: bytes, mime_type: str | None) -> list[Turn]:
        rate = pcm_rate(mime_type)
        if rate is None:
            return []
        pcm = audio if rate == INPUT_RATE else resample(audio, rate, INPUT_RATE)
        pending = self._pending
        if pending.vad is None:
            if pending.capture is not None:
                pending.capture += pcm
            return []
        return self._vad_events(pending.vad.feed(pcm))

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
        self._state.heard.append(transcript)
        if self._options.transcribe_only:
            return Turn(reply=transcript, transcript=transcript)
        audio = None
        if self._options.modality == "AUDIO":
            audio = resample(pcm, INPUT_RATE, OUTPUT_RATE)
        return Turn(reply=replies.reply_to_speech(transcript), transcript=transcript, audio=audio)

    def _user_text(self, text: str) -> list[Turn]:
        self._state.add("TEXT", messages.text_tokens(text))
        self._state.heard.append(text)
        options = self._options
        if options.transcribe_only:
            return [Turn()]
        call = replies.parse_call(text, options.functions)
        if call is not None:
            name, args = call
            call_id = self._state.next_call_id()
            turn = Turn(call=Call(call_id, name, args, blocking=name not in options.non_blocking))
            self._calls.add(turn)
            return [turn]
        if options.interaction_status and replies.asks_to_think(text):
            return [
                Turn(reply=replies.THINKING_ALOUD),
                Turn(
                    reply=replies.reply_to_text(text),
                    pause=THINK_SECONDS,
                    thought=replies.thought_about(text),
                ),
            ]
        return [Turn(reply=replies.reply_to_text(text))]

    def _client_content(self, body: dict[str, Any]) -> list[Turn]:
        for content in body.get("turns", []):
            user = content.get("role", "user") == "user"
            for part in content.get("parts", []):
                if "text" in part:
                    if user:
                        self._pending.text.append(part["text"])
                    else:
                        self._state.add("TEXT", messages.text_tokens(part["text"]))
                else:
                    self._state.add("IMAGE", messages.IMAGE_TOKENS)
        if not body.get("turnComplete"):
            return []
        self._interrupt()
        text = " ".join(self._pending.text)
        self._pending.text = []
        return self._user_text(text)

    def _tool_response(self, body: dict[str, Any]) -> list[Turn]:
        turns: list[Turn] = []
        for response in body.get("functionResponses", []):
            answer = self._calls.answer(response)
            if answer is None:
                continue  # a late response to a cancelled call: not heard
            self._state.add("TEXT", messages.text_tokens(response_text(response)))
            if not answer.blocking:
                turns.append(self._scheduled(answer))
        return turns

    def _scheduled(self, answer: Answer) -> Turn:
        """The turn a NON_BLOCKING call's answer makes, as its ``scheduling`` says."""
        scheduling = answer.response.get("scheduling", "SCHEDULING_UNSPECIFIED")
        if isinstance(scheduling, int):
            scheduling = _SCHEDULING_NUMBERS.get(scheduling, "SCHEDULING_UNSPECIFIED")
        if scheduling == "SILENT":
            return Turn(quiet=True)
        if scheduling == "INTERRUPT":
            current = next(
                (t for t in self._open if not t.done and not t.interrupted.is_set()), None
            )
            if current is not None:
                self._interrupt_turn(current)
        return Turn(reply=answer.reply)


def _carried_over(pending: Pending, options: SessionOptions) -> Pending:
    """``pending`` input from a resumed checkpoint, kept where the new setup still hears it the
    same way: the VAD's state only with the same VAD settings, a manual capture only with
    manual activity detection. A new conversation gets a fresh VAD."""
    vad = pending.vad
    if options.vad is None:
        vad = None
    elif vad is None or vad.settings != options.vad:
        vad = EnergyVad(options.vad)
    capture = pending.capture if options.vad is None else None
    return Pending(vad=vad, capture=capture, text=pending.text, cancelled=pending.cancelled)


async def run_conversation(
    conversation: Conversation,
    speaker: Speaker,
    inputs: trio.MemoryReceiveChannel[ClientMessage],
    consumed: Callable[[int], None] = lambda _index: None,
) -> None:
    """Feed ``inputs`` through ``conversation`` into ``speaker`` until ``inputs`` ends, telling
    ``consumed`` the index of each message handled.

    Closes ``inputs``. Raises whatever :meth:`Conversation.handle` or the speaker raise.
    """
    send_turns, receive_turns = trio.open_memory_channel[Turn](TURN_QUEUE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run, receive_turns)
        with send_turns, inputs:
            async for message in inputs:
                turns = conversation.handle(message)
                consumed(conversation.consumed)
                for turn in turns:
                    await send_turns.send(turn)
