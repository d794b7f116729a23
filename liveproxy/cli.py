"""Command line: ``liveproxy serve`` (the proxy) and ``liveproxy emulator`` (the Live stand-in).

Each command declares its options where it is implemented (``add_arguments`` in
:mod:`liveproxy.serving.server` and :mod:`liveproxy.emulator.cli`) and gets its own
``--help``. Only the chosen command's module is imported: the server's is the whole web stack,
which ``liveproxy --version`` and ``liveproxy emulator`` do without.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, cast

from liveproxy import __version__

#: Each command: the module that declares its options and runs it, and its line in ``--help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (
        "liveproxy.serving.server",
        "serve the proxy: the demo page, the HTTP API and the /ws WebSocket",
    ),
    "emulator": (
        "liveproxy.emulator.cli",
        "run the Gemini Live emulator on its own (ws://127.0.0.1:9000)",
    ),
}

DESCRIPTION = "Browser apps talk to Google's Gemini Live API; the API key stays on the server."
EPILOG = "'liveproxy COMMAND --help' shows a command's options. See README.md."

Run = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


class _Command(Protocol):
    """What a command's module offers (see :data:`COMMANDS`)."""

    DESCRIPTION: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int: ...


def build_parser(load: Collection[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The ``liveproxy`` parser. The commands in ``load`` get their options (their modules are
    imported); the others are only named, with their one-line help."""
    parser = argparse.ArgumentParser(prog="liveproxy", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"liveproxy {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        command = commands.add_parser(name, help=summary, description=summary)
        if name in load:
            module = cast(_Command, importlib.import_module(module_name))
            command.description = module.DESCRIPTION
            module.add_arguments(command)
            command.set_defaults(run=module.run, parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the process exit status.

    No command prints the help to stderr and returns 2, argparse's status for a usage error.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    # The top level has no option that takes a value: its first other word names the command.
    chosen = next((word for word in args if not word.startswith("-")), None)
    parser = build_parser(load=[chosen] if chosen in COMMANDS else [])
    parsed = parser.parse_args(args)
    if parsed.command is None:
        parser.print_help(sys.stderr)
        return 2
    run = cast(Run, parsed.run)
    return run(parsed, cast(argparse.ArgumentParser, parsed.parser))
