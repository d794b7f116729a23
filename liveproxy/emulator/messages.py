"""Server -> client messages as Google sends them: camelCase, empty fields left out,
standard base64, int64 as strings, durations as ``"<seconds>s"``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from liveproxy.emulator.audio import OUTPUT_MIME
from liveproxy.protocol.b64 import encode_b64

Message = dict[str, Any]

#: Tokens the emulator charges: audio per second, text per 4 characters, an image per frame.
AUDIO_TOKENS_PER_SECOND = 25
CHARS_PER_TEXT_TOKEN = 4
IMAGE_TOKENS = 258


def audio_tokens(seconds: float) -> int:
    """Tokens for ``seconds`` of audio."""
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def text_tokens(text: str) -> int:
    """Tokens for ``text``."""
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


def duration(seconds: float) -> str:
    """A protobuf JSON Duration: ``"50s"``, ``"9.500s"``."""
    millis = round(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis // 1000}.{millis % 1000:03d}s"


def setup_complete(session_id: str | None) -> Message:
    """``setupComplete``; Vertex adds the session id."""
    return {"setupComplete": {"sessionId": session_id} if session_id else {}}


def model_audio(pcm: bytes) -> Message:
    """One 24 kHz PCM part of the model's turn."""
    return model_audio_b64(encode_b64(pcm))


def model_audio_b64(data: str) -> Message:
    """One 24 kHz PCM part of the model's turn, already base64-encoded (standard alphabet)."""
    return {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": OUTPUT_MIME, "data": data}}]}
        }
    }


def model_text(text: str) -> Message:
    """One text part of the model's turn."""
    return {"serverContent": {"modelTurn": {"parts": [{"text": text}]}}}


def model_thought(text: str) -> Message:
    """One thought part (``thinkingConfig.includeThoughts``): text marked ``thought``."""
    return {"serverContent": {"modelTurn": {"parts": [{"text": text, "thought": True}]}}}


def input_transcription(text: str) -> Message:
    return {"serverContent": {"inputTranscription": {"text": text}}}


def output_transcription(text: str) -> Message:
    return {"serverContent": {"outputTranscription": {"text": text}}}


def generation_complete() -> Message:
    return {"serverContent": {"generationComplete": True}}


def interrupted() -> Message:
    return {"serverContent": {"interrupted": True}}


def _details(counts: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{"modality": m, "tokenCount": n} for m, n in sorted(counts.items()) if n]


def usage(
    prompt: Mapping[str, int], response: Mapping[str, int], *, vertex: bool, thoughts: int = 0
) -> Message:
    """``usageMetadata`` for a turn; Vertex names the response side ``candidates*``.
    ``thoughts`` (``thoughtsTokenCount``) count in the total, not in the response."""
    prompt_total = sum(prompt.values())
    response_total = sum(response.values())
    side = "candidates" if vertex else "response"
    fields: Message = {
        "promptTokenCount": prompt_total,
        f"{side}TokenCount": response_total,
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": prompt_total + response_total + thoughts,
        "promptTokensDetails": _details(prompt),
        f"{side}TokensDetails": _details(response),
    }
    return {key: value for key, value in fields.items() if value}


def turn_complete(usage_metadata: Message, status: str | None = None) -> Message:
    """``turnComplete``, carrying the turn's ``usageMetadata`` in the same message, and the
    ``interactionStatus`` after it when the model reports one."""
    content: Message = {"turnComplete": True}
    if status is not None:
        content["interactionStatus"] = status
    message: Message = {"serverContent": content}
    if usage_metadata:
        message["usageMetadata"] = usage_metadata
    return message


def usage_only(usage_metadata: Message) -> Message:
    """A ``usageMetadata`` on its own (with an empty ``serverContent``)."""
    return {"serverContent": {}, "usageMetadata": usage_metadata}


def interaction_status(status: str) -> Message:
    """``interactionStatus`` alone (``IDLE`` once a silent tool result ends the interaction)."""
    return {"serverContent": {"interactionStatus": status}}


def with_status(message: Message, status: str) -> Message:
    """``message`` (server content) with ``interactionStatus`` added."""
    return {**message, "serverContent": {**message["serverContent"], "interactionStatus": status}}


def tool_call(call_id: str, name: str, args: dict[str, Any]) -> Message:
    call: Message = {"id": call_id, "name": name}
    if args:
        call["args"] = args
    return {"toolCall": {"functionCalls": [call]}}


def tool_call_cancellation(ids: list[str]) -> Message:
    return {"toolCallCancellation": {"ids": ids}}


def go_away(seconds_left: float) -> Message:
    return {"goAway": {"timeLeft": duration(seconds_left)}}


def resumption_update(handle: str, last_consumed: int | None = None) -> Message:
    """A resumable ``handle``; with ``last_consumed`` (transparent mode) the index of the last
    client message it includes, an int64 (a string; 0 is left out, as proto3 JSON does)."""
    update: Message = {"newHandle": handle, "resumable": True}
    if last_consumed:
        update["lastConsumedClientMessageIndex"] = str(last_consumed)
    return {"sessionResumptionUpdate": update}


def not_resumable() -> Message:
    """``resumable: false`` with no handle; both are defaults, so the body is empty."""
    return {"sessionResumptionUpdate": {}}
