"""The model's side of the conversation: plays each turn out, paced in trio time.

A :class:`~liveproxy.emulator.turns.Turn` is queued by the conversation; the speaker sends its
input transcription, its tool call (a blocking one waits for the response; a NON_BLOCKING one
ends the turn there), its pause and thought when it thinks, its parts with output
transcription, then ``generationComplete``, ``turnComplete`` with ``usageMetadata`` (and the
``interactionStatus`` on a model that reports it) and, when resumption is on,
``sessionResumptionUpdate``: a new handle (with ``lastConsumedClientMessageIndex`` in
transparent mode), or ``resumable: false`` while the model still owes something (another turn,
or the result of a call). A turn interrupted on the way ends with ``interrupted`` (and
``toolCallCancellation`` if its blocking call was pending), then ``turnComplete``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs
import trio

from liveproxy.emulator import messages, replies
from liveproxy.emulator.audio import OUTPUT_RATE, pcm_parts, tone_parts
from liveproxy.emulator.interaction import Interaction
from liveproxy.emulator.options import SessionOptions
from liveproxy.emulator.record import ConnectionRecord, IssuedHandle
from liveproxy.emulator.store import Checkpoint, HandleStore, SessionState
from liveproxy.emulator.transport import Transport
from liveproxy.emulator.turns import Turn

#: Length of each audio part the model sends.
AUDIO_PART_SECONDS = 0.1
AUDIO_PART_BYTES = int(2 * OUTPUT_RATE * AUDIO_PART_SECONDS)
#: Pace of text parts in realtime speed.
TEXT_PART_SECONDS = 0.05


async def _first_of(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_wait_then_cancel, event, nursery.cancel_scope)


async def _wait_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@attrs.define(eq=False)
class Speaker:
    """Plays queued turns, one at a time, through ``transport``."""

    transport: Transport
    options: SessionOptions
    state: SessionState
    store: HandleStore
    realtime: bool
    vertex: bool
    #: The conversation as a handle would keep it as the given turn ends (None: not resumable).
    checkpoint: Callable[[Turn], Checkpoint | None] = lambda _turn: None
    #: Whether the model still owes something (a turn, a call's result) as the given turn ends.
    owes: Callable[[Turn], bool] = lambda _turn: False
    #: Where the handles sent are noted.
    record: ConnectionRecord | None = None
    _interaction: Interaction = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._interaction = Interaction(self.options.interaction_status)

    async def _send(self, message: messages.Message) -> None:
        await self.transport.send(self._interaction.stamp(message))

    async def run(self, turns: trio.MemoryReceiveChannel[Turn]) -> None:
        """Play every turn from ``turns`` until the channel ends; closes ``turns``.

        Raises:
            PeerGone: the WebSocket closed under it.
        """
        with turns:
            async for turn in turns:
                if not turn.interrupted.is_set():
                    await self._play(turn)
                turn.done = True

    async def _wait_until(self, deadline: float, turn: Turn) -> bool:
        """Sleep until ``deadline`` (not at all in fast speed); True if interrupted."""
        if self.realtime:
            with trio.move_on_at(deadline):
                await turn.interrupted.wait()
        return turn.interrupted.is_set()

    async def _play(self, turn: Turn) -> None:
        send = self._send
        if turn.quiet:
            await self._settle(turn)
            return
        prompt = dict(self.state.context)
        if turn.transcript is not None and self.options.input_transcription:
            await send(messages.input_transcription(turn.transcript))
        reply = turn.reply
        if turn.call is not None:
            call = turn.call
            turn.called = True
            await send(messages.tool_call(call.id, call.name, call.args))
            if not call.blocking:  # the result comes later, as a turn of its own
                await self._finish(turn, prompt, {}, interrupted=turn.interrupted.is_set())
                return
            await _first_of(turn.answered, turn.interrupted)
            if turn.interrupted.is_set():
                await send(messages.tool_call_cancellation([call.id]))
                await self._finish(turn, prompt, {}, interrupted=True)
                return
            reply = turn.result
        if turn.pause and await self._wait_until(trio.current_time() + turn.pause, turn):
            await self._finish(turn, prompt, {}, interrupted=True)
            return
        thoughts = messages.text_tokens(turn.thought)
        if turn.thought and self.options.include_thoughts:
            await send(messages.model_thought(turn.thought))
        if not reply and turn.audio is None:
            response: dict[str, int] = {}
        elif self.options.modality == "TEXT":
            response = await self._stream_text(turn, reply)
        elif turn.audio is not None:
            parts = pcm_parts(turn.audio, AUDIO_PART_BYTES)
            response = await self._stream_audio(turn, reply, len(turn.audio), parts)
        else:
            total, parts = tone_parts(replies.tone_seconds(reply), AUDIO_PART_BYTES)
            response = await self._stream_audio(turn, reply, total, parts)
        interrupted = turn.interrupted.is_set()
        await self._finish(turn, prompt, response, interrupted=interrupted, thoughts=thoughts)

    async def _stream_audio(
        self, turn: Turn, reply: str, total: int, parts: Iterable[bytes]
    ) -> dict[str, int]:
        """Send ``parts`` (``total`` bytes of audio in all) with ``reply``'s words as output
        transcription spread evenly over them; return the response tokens actually sent."""
        send = self._send
        count = -(-total // AUDIO_PART_BYTES)
        words = replies.fragments(reply) if self.options.output_transcription else []
        said = 0
        sent = 0
        start = trio.current_time()
        for index, part in enumerate(parts):
            if await self._wait_until(start + index * AUDIO_PART_SECONDS, turn):
                break
            while said < len(words) and said * count // len(words) <= index:
                await send(messages.output_transcription(words[said]))
                said += 1
            await send(messages.model_audio(part))
            sent += len(part)
        else:
            for word in words[said:]:
                await send(messages.output_transcription(word))
            await send(messages.generation_complete())
            await self._wait_until(start + total / (2 * OUTPUT_RATE), turn)
        return {"AUDIO": messages.audio_tokens(sent / (2 * OUTPUT_RATE))}

    async def _stream_text(self, turn: Turn, reply: str) -> dict[str, int]:
        """Send ``reply`` word by word as text parts (a transcription model's transcript in one
        part); return the response tokens sent."""
        send = self._send
        pieces = [reply] if self.options.transcribe_only else replies.fragments(reply)
        sent: list[str] = []
        start = trio.current_time()
        for index, piece in enumerate(pieces):
            if await self._wait_until(start + index * TEXT_PART_SECONDS, turn):
                break
            await send(messages.model_text(piece))
            sent.append(piece)
        else:
            await send(messages.generation_complete())
            await self._wait_until(start + len(pieces) * TEXT_PART_SECONDS, turn)
        return {"TEXT": messages.text_tokens("".join(sent))}

    async def _finish(
        self,
        turn: Turn,
        prompt: dict[str, int],
        response: dict[str, int],
        *,
        interrupted: bool,
        thoughts: int = 0,
    ) -> None:
        send = self._send
        if interrupted:
            await send(messages.interrupted())
        for modality, tokens in response.items():
            self.state.add(modality, tokens)
        self.state.turns += 1
        usage = messages.usage(prompt, response, vertex=self.vertex, thoughts=thoughts)
        status = self._interaction.at_turn_complete(self.owes(turn))
        await send(messages.turn_complete(usage, status))
        if usage and self.record is not None and self.record.faults.repeat_usage:
            await self.transport.send(messages.usage_only(usage))  # not an interaction's start
        if self.options.resumption:
            await send(self._resumption_update(turn))

    async def _settle(self, quiet: Turn) -> None:
        """A ``quiet`` turn (no turn at all) that leaves the model owing nothing: ``IDLE`` if an
        interaction was under way, and a fresh handle when resumption is on."""
        if self.owes(quiet):
            return
        idle = self._interaction.settle()
        if idle is not None:
            await self._send(idle)
        if self.options.resumption:
            await self._send(self._resumption_update(quiet))

    def _resumption_update(self, turn: Turn) -> messages.Message:
        """A handle for the conversation as it stands (all the input consumed so far), or
        ``resumable: false`` while the model still owes a turn."""
        checkpoint = self.checkpoint(turn)
        if checkpoint is None:
            return messages.not_resumable()
        handle = self.store.issue(checkpoint)
        if self.record is not None:
            self.record.issued.append(
                IssuedHandle(handle, checkpoint.last_consumed, checkpoint.state.turns)
            )
        index = checkpoint.last_consumed if self.options.transparent else None
        return messages.resumption_update(handle, index)
