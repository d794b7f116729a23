"""Writing tool modules (and installed distributions) into a directory on ``sys.path``."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest


def write_module(directory: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A fresh module (a name never imported before) holding ``source``, importable by name."""
    name = f"tools_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(directory))
    return name
