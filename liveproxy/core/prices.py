"""The operator's price table (``PRICES_FILE``): what a session's metered tokens cost.

TOML, USD per million tokens, per model, per token kind and modality::

    [models."gemini-3.1-flash-live-preview"]
    prompt = { TEXT = 0.75, AUDIO = 3.0 }
    response = { TEXT = 4.5, AUDIO = 12.0 }
    thoughts = { MODALITY_UNSPECIFIED = 4.5 }

Kinds and modalities are those of :mod:`liveproxy.core.usage`. Cached tokens are part of the
prompt's: with a ``cached`` price they are charged at it instead of the prompt's; without one,
at the prompt's. A session whose model has no table, or that used a (kind, modality) its
table does not price, gets no cost: none is ever guessed.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import attrs

from liveproxy.core.usage import KINDS, MODALITIES, UsageTotals

_KIND_NAMES = frozenset(name for name, _, _ in KINDS)


class PricesError(ValueError):
    """A price table that cannot be read or is not one."""


@attrs.frozen
class Prices:
    """model -> (kind, modality) -> USD per million tokens."""

    models: dict[str, dict[tuple[str, str], float]] = attrs.Factory(dict)

    def cost(self, model: str, usage: UsageTotals) -> float | None:
        """What ``usage`` cost in USD (rounded to 1e-6), or None when not all of it is priced."""
        table = self.models.get(model.removeprefix("models/"))
        if table is None:
            return None
        micro = 0.0
        for kind, by_modality in usage.tokens.items():
            for modality, tokens in by_modality.items():
                if kind == "cached":
                    cached = table.get((kind, modality))
                    prompt = table.get(("prompt", modality))
                    if cached is not None and prompt is not None:
                        micro += tokens * (cached - prompt)
                    continue
                price = table.get((kind, modality))
                if price is None:
                    return None
                micro += tokens * price
        return round(micro / 1_000_000, 6)


def parse_prices(data: dict[str, Any]) -> Prices:
    """Raises PricesError: ``data`` (a TOML document) is not a price table."""
    models = data.get("models")
    if set(data) != {"models"} or not isinstance(models, dict):
        raise PricesError("a price table has one [models] table, one sub-table per model")
    parsed: dict[str, dict[tuple[str, str], float]] = {}
    for model, kinds in models.items():
        if not isinstance(kinds, dict):
            raise PricesError(f"models.{model}: expected a table of token kinds")
        table: dict[tuple[str, str], float] = {}
        for kind, by_modality in kinds.items():
            if kind not in _KIND_NAMES or not isinstance(by_modality, dict):
                raise PricesError(
                    f"models.{model}.{kind}: expected a table of one of {sorted(_KIND_NAMES)}"
                )
            for modality, price in by_modality.items():
                if modality not in MODALITIES:
                    raise PricesError(f"models.{model}.{kind}.{modality}: unknown modality")
                if isinstance(price, bool) or not isinstance(price, int | float):
                    raise PricesError(f"models.{model}.{kind}.{modality}: expected a number")
                if not math.isfinite(price) or price < 0:
                    raise PricesError(f"models.{model}.{kind}.{modality}: expected >= 0")
                table[(kind, modality)] = float(price)
        parsed[model] = table
    return Prices(parsed)


def read_prices(path: Path | None) -> Prices | None:
    """The table in ``path`` (None: no table).

    Raises:
        PricesError: it cannot be read or is not a price table.
    """
    if path is None:
        return None
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PricesError(f"PRICES_FILE {path}: {exc}") from None
    try:
        return parse_prices(data)
    except PricesError as exc:
        raise PricesError(f"PRICES_FILE {path}: {exc}") from None
