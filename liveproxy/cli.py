"""Command line: ``liveproxy serve`` (the proxy) and ``liveproxy emulator`` (the Live stand-in)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="liveproxy", description=__doc__)
    parser.add_argument("command", choices=["serve", "emulator"], nargs="?", default="serve")
    known, rest = parser.parse_known_args(args)
    if known.command == "emulator":
        from liveproxy.emulator.cli import main as emulator_main

        return int(emulator_main(rest))
    from liveproxy.serving.server import main as serve_main

    return serve_main(rest)
