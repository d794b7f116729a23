"""Tests that run the files of ``deploy/``: nginx.conf, liveproxy.service, liveproxy.env."""

from __future__ import annotations

from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def env_file(path: Path = DEPLOY / "liveproxy.env") -> dict[str, str]:
    """The variables of a systemd ``EnvironmentFile=`` written as deploy/liveproxy.env is.

    That file keeps to the part of systemd's syntax where this reading and systemd's agree:
    ``KEY=value`` lines and ``#`` comment lines, no quotes, escapes or continuations.
    """
    settings: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        where = f"{path.name}:{number}: {line!r}"
        assert sep, f"{where}: not KEY=value"
        assert key.isidentifier(), f"{where}: not a variable name"
        assert not any(c in value for c in "\"'\\$#"), f"{where}: quotes, escapes or comments"
        settings[key] = value
    return settings
