"""The endings table of the browser contract, as the code holds it (sync)."""

from __future__ import annotations

import pytest

from liveproxy.contract import errors
from liveproxy.contract.endings import (
    BROWSER_CLOSED,
    BUDGET_EXHAUSTED,
    ENDED_BY_OPERATOR,
    SHUTDOWN,
    TIME_LIMIT,
    UPSTREAM_CLOSED,
    Ended,
    outcome_code,
)
from liveproxy.protocol.closes import rules_out_resuming


@pytest.mark.parametrize(
    ("ending", "reason", "close_code", "announced"),
    [
        (TIME_LIMIT, "time_limit", 1000, True),
        (UPSTREAM_CLOSED, "upstream_closed", 1000, True),
        (SHUTDOWN, "shutdown", 1001, True),
        (BROWSER_CLOSED, "browser_closed", 1000, False),
        (ENDED_BY_OPERATOR, "ended_by_operator", 1000, True),
        (BUDGET_EXHAUSTED, "budget_exhausted", 1000, True),
    ],
)
def test_normal_endings(ending: Ended, reason: str, close_code: int, announced: bool) -> None:
    assert (ending.reason, ending.close_code, ending.announced) == (
        reason,
        close_code,
        announced,
    )


@pytest.mark.parametrize(
    ("error", "code", "close_code"),
    [
        (errors.InvalidSetup, "invalid_setup", 1007),
        (errors.MessageTooBig, "message_too_big", 1009),
        (errors.UpstreamUnavailable, "upstream_unavailable", 1013),
        (errors.UpstreamRejected, "upstream_rejected", 1011),
        (errors.UpstreamFailed, "upstream_error", 1011),
        (errors.SlowClient, "slow_client", 1008),
        (errors.RateLimited, "rate_limited", 1008),
        (errors.AtCapacity, "at_capacity", 1013),
    ],
)
def test_error_endings(error: type[errors.SessionError], code: str, close_code: int) -> None:
    assert (error.code, error.close_code) == (code, close_code)
    assert outcome_code(error("why")) == code


@pytest.mark.parametrize(
    ("code", "reason", "final"),
    [
        (1007, "Request contains an invalid argument.", True),
        (1008, "BidiGenerateContent session not found", True),
        (1011, "You exceeded your current quota", True),
        (1011, "Internal error encountered.", False),
        (1006, "", False),
        (1001, "going away", False),
    ],
)
def test_which_upstream_closes_rule_out_resuming(code: int, reason: str, final: bool) -> None:
    assert rules_out_resuming(code, reason) is final
