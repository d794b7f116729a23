"""The meter's rules, one by one (sync)."""

from __future__ import annotations

from typing import Any

from liveproxy.core.usage import UNSPECIFIED, UsageMeter, UsageTotals, read_report, usage_since


def report(prompt: int, response: int, **extra: Any) -> dict[str, Any]:
    """A Developer API report: the prompt in TEXT and AUDIO halves, the response in AUDIO."""
    return {
        "promptTokenCount": prompt,
        "responseTokenCount": response,
        "totalTokenCount": prompt + response,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": prompt - prompt // 2},
            {"modality": "AUDIO", "tokenCount": prompt // 2},
        ],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response}],
        **extra,
    }


def tokens(meter: UsageMeter) -> dict[str, dict[str, int]]:
    return meter.totals().tokens


def test_a_report_is_read_by_kind_and_modality() -> None:
    counts = read_report(
        report(10, 4, cachedContentTokenCount=3, thoughtsTokenCount=2, toolUsePromptTokenCount=5)
        | {"cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 3}]}
    )
    assert counts == {
        ("prompt", "TEXT"): 5,
        ("prompt", "AUDIO"): 5,
        ("response", "AUDIO"): 4,
        ("cached", "TEXT"): 3,
        ("thoughts", UNSPECIFIED): 2,
        ("tool_use_prompt", UNSPECIFIED): 5,
        ("total", ""): 14,
    }


def test_vertex_names_the_response_side_candidates() -> None:
    usage = {
        "promptTokenCount": 7,
        "candidatesTokenCount": 3,
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 3}],
    }
    assert read_report(usage) == {("prompt", UNSPECIFIED): 7, ("response", "TEXT"): 3}


def test_malformed_counts_and_unknown_modalities_are_not_trusted() -> None:
    usage = {
        "promptTokenCount": "12",  # int64 as a string: taken
        "responseTokenCount": -4,
        "thoughtsTokenCount": True,
        "totalTokenCount": 1.5,
        "promptTokensDetails": [
            {"modality": "SMELL", "tokenCount": 2},
            {"modality": "TEXT", "tokenCount": "x"},
            "junk",
        ],
    }
    assert read_report(usage) == {("prompt", UNSPECIFIED): 12}


def test_each_turn_is_counted() -> None:
    meter = UsageMeter()
    meter.report(report(100, 10))
    meter.turn_complete()
    meter.report(report(120, 20))  # the context grew: a new turn
    meter.turn_complete()
    totals = meter.totals()
    assert totals.tokens == {"prompt": {"AUDIO": 110, "TEXT": 110}, "response": {"AUDIO": 30}}
    assert totals.total_tokens == 250


def test_a_repeated_report_within_a_turn_is_counted_once() -> None:
    meter = UsageMeter()
    meter.report(report(100, 10))
    meter.report(report(100, 10))
    meter.turn_complete()
    assert meter.totals().total_tokens == 110


def test_a_repeated_report_after_turn_complete_is_counted_once() -> None:
    meter = UsageMeter()
    meter.report(report(100, 10))
    meter.turn_complete()
    meter.report(report(100, 10))  # e.g. a usageMetadata-only message trailing the turn
    meter.report(report(100, 10))
    assert meter.totals().total_tokens == 110
    meter.report(report(130, 5))  # the next turn
    assert meter.totals().total_tokens == 245


def test_a_report_growing_within_a_turn_adds_only_its_growth() -> None:
    meter = UsageMeter()
    meter.report(report(100, 4))
    meter.report(report(100, 10))  # cumulative: the same turn, further on
    meter.turn_complete()
    meter.report(report(100, 12))  # grew again after turnComplete (same prompt: same turn)
    assert meter.totals().tokens["response"] == {"AUDIO": 12}
    assert meter.totals().total_tokens == 112


def test_a_turn_whose_report_trails_its_turn_complete_is_counted() -> None:
    meter = UsageMeter()
    meter.turn_complete()  # the report comes after, on its own
    meter.report(report(100, 10))
    meter.turn_complete()
    meter.report(report(120, 10))
    assert meter.totals().total_tokens == 240


def test_a_new_connection_starts_over() -> None:
    meter = UsageMeter()
    meter.report(report(100, 10))
    meter.new_connection()  # e.g. a drop mid-turn: what was reported stays counted
    meter.report(report(50, 5))  # the new connection's first turn, lower than the old's
    meter.report(report(50, 5))  # repeated: once
    meter.turn_complete()
    assert meter.totals().total_tokens == 165


def test_a_new_connection_after_a_closed_turn_with_the_same_prompt_is_a_new_turn() -> None:
    meter = UsageMeter()
    meter.report(report(100, 10))
    meter.turn_complete()
    meter.new_connection()
    meter.report(report(100, 10))
    assert meter.totals().total_tokens == 220


def test_audio_bytes_become_seconds() -> None:
    meter = UsageMeter(audio_in_bytes=48000, audio_out_bytes=24000)
    meter.audio_in_bytes += 16000
    totals = meter.totals()
    assert (totals.audio_in_seconds, totals.audio_out_seconds) == (2.0, 0.5)
    assert totals.to_dict() == {
        "tokens": {},
        "total_tokens": 0,
        "audio_in_seconds": 2.0,
        "audio_out_seconds": 0.5,
    }


def test_a_resumed_conversation_goes_on_from_its_totals() -> None:
    first = UsageMeter()
    first.report(report(100, 10))
    first.turn_complete()
    first.audio_in_bytes += 32000
    carried = first.totals()
    second = UsageMeter.continuing(carried)
    assert second.totals() == carried
    second.report(report(100, 10))  # a new socket's connection: a new turn even if equal
    second.turn_complete()
    second.audio_out_bytes += 48000
    totals = second.totals()
    assert totals.total_tokens == 220
    assert totals.tokens == {"prompt": {"AUDIO": 100, "TEXT": 100}, "response": {"AUDIO": 20}}
    assert (totals.audio_in_seconds, totals.audio_out_seconds) == (1.0, 1.0)


def test_empty_totals() -> None:
    assert UsageMeter().totals() == UsageTotals()


def test_what_one_socket_used_is_the_difference_of_totals() -> None:
    before = UsageTotals(tokens={"prompt": {"TEXT": 5}}, total_tokens=5, audio_in_bytes=10)
    after = UsageTotals(
        tokens={"prompt": {"TEXT": 8, "AUDIO": 2}, "response": {"TEXT": 1}},
        total_tokens=11,
        audio_in_bytes=10,
        audio_out_bytes=4,
    )
    assert usage_since(after, before) == UsageTotals(
        tokens={"prompt": {"TEXT": 3, "AUDIO": 2}, "response": {"TEXT": 1}},
        total_tokens=6,
        audio_out_bytes=4,
    )
    assert usage_since(after, UsageTotals()) == after
    assert usage_since(before, before) == UsageTotals()
