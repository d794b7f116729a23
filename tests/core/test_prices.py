"""PRICES_FILE: its format, its refusals, and what a session's usage costs (sync)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liveproxy.core.prices import Prices, PricesError, parse_prices, read_prices
from liveproxy.core.usage import UsageTotals

TABLE = """
[models."gemini-3.1-flash-live-preview"]
prompt = { TEXT = 1.0, AUDIO = 2 }
cached = { TEXT = 0.25 }
response = { TEXT = 8.0 }
"""


def usage(**tokens: dict[str, int]) -> UsageTotals:
    return UsageTotals(tokens=tokens)


def test_a_table_prices_each_kind_and_modality(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TABLE)
    prices = read_prices(path)
    assert prices is not None
    used = usage(prompt={"TEXT": 1_000_000, "AUDIO": 500_000}, response={"TEXT": 250_000})
    assert prices.cost("gemini-3.1-flash-live-preview", used) == 1.0 + 1.0 + 2.0
    assert prices.cost("models/gemini-3.1-flash-live-preview", used) == 4.0


def test_cached_tokens_are_charged_at_their_price_instead_of_the_prompts() -> None:
    prices = parse_prices({"models": {"m": {"prompt": {"TEXT": 1.0}, "cached": {"TEXT": 0.25}}}})
    used = usage(prompt={"TEXT": 1_000_000}, cached={"TEXT": 400_000})
    assert prices.cost("m", used) == pytest.approx(0.6 + 0.1)
    unpriced_cache = parse_prices({"models": {"m": {"prompt": {"TEXT": 1.0}}}})
    assert unpriced_cache.cost("m", used) == 1.0  # at the prompt's price: part of the prompt


def test_no_cost_is_claimed_for_what_is_not_priced() -> None:
    prices = parse_prices({"models": {"m": {"prompt": {"TEXT": 1.0}}}})
    assert prices.cost("other", usage(prompt={"TEXT": 5})) is None
    assert prices.cost("m", usage(prompt={"TEXT": 5}, thoughts={"MODALITY_UNSPECIFIED": 1})) is None
    assert prices.cost("m", UsageTotals()) == 0.0
    assert read_prices(None) is None
    assert Prices().cost("m", usage(prompt={"TEXT": 1})) is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"models": {}, "extra": 1},
        {"models": {"m": 1}},
        {"models": {"m": {"smells": {"TEXT": 1}}}},
        {"models": {"m": {"prompt": {"SMELL": 1}}}},
        {"models": {"m": {"prompt": {"TEXT": "1"}}}},
        {"models": {"m": {"prompt": {"TEXT": True}}}},
        {"models": {"m": {"prompt": {"TEXT": -1}}}},
        {"models": {"m": {"prompt": {"TEXT": float("inf")}}}},
    ],
)
def test_what_is_not_a_price_table_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(PricesError):
        parse_prices(data)


def test_an_unreadable_file_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(PricesError, match=r"missing\.toml"):
        read_prices(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[models\n")
    with pytest.raises(PricesError, match=r"bad\.toml"):
        read_prices(bad)
