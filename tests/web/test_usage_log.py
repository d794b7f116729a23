"""USAGE_LOG's writer: appended lines, and failures that are logged once and end nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from liveproxy.core.prices import parse_prices
from liveproxy.core.usage import UsageTotals
from liveproxy.web.usage_log import UsageLog, usage_dict, usage_record

USED = UsageTotals(tokens={"prompt": {"TEXT": 10}}, total_tokens=10, audio_in_bytes=16000)


async def test_records_are_appended_as_json_lines(tmp_path: Path) -> None:
    log = UsageLog(tmp_path / "usage.jsonl")
    assert await log.write({"n": 1})
    assert await log.write({"n": 2})
    lines = (tmp_path / "usage.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == [{"n": 1}, {"n": 2}]


async def test_a_failing_file_is_logged_once_until_it_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "liveproxy")
    path = tmp_path / "missing" / "usage.jsonl"
    log = UsageLog(path)
    assert not await log.write({"n": 1})
    assert not await log.write({"n": 2})
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    path.parent.mkdir()
    assert await log.write({"n": 3})
    assert "written again" in caplog.records[-1].getMessage()


def test_a_record_says_who_when_and_what_was_used() -> None:
    prices = parse_prices({"models": {"m": {"prompt": {"TEXT": 1_000_000.0}}}})
    record = usage_record(
        session_id="s2",
        conversation_id="s1",
        client="hash",
        model="m",
        started=0.0,
        ended=1.5,
        reason="time_limit",
        usage=USED,
        conversation=USED,
        prices=prices,
    )
    assert record == {
        "session_id": "s2",
        "conversation_id": "s1",
        "client": "hash",
        "model": "m",
        "started": "1970-01-01T00:00:00.000+00:00",
        "ended": "1970-01-01T00:00:01.500+00:00",
        "seconds": 1.5,
        "reason": "time_limit",
        "usage": usage_dict(USED, "m", prices),
        "conversation_usage": usage_dict(USED, "m", prices),
    }
    assert record["usage"]["cost_usd"] == 10.0
    assert record["usage"]["audio_in_seconds"] == 0.5
    assert "cost_usd" not in usage_dict(USED, "m", None)
    assert "cost_usd" not in usage_dict(USED, None, prices)
