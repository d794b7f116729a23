"""``liveproxy`` on the command line: each command's own help, the version, no command."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import liveproxy
from liveproxy.cli import build_parser, main
from liveproxy.emulator import cli as emulator_cli
from liveproxy.serving import server

#: The ``liveproxy`` script pip installed next to this Python.
SCRIPT = str(Path(sys.executable).with_name("liveproxy"))


def liveproxy_command(*argv: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m liveproxy ARGV`` (``script``: ``liveproxy ARGV``), run to its end."""
    command = [SCRIPT] if script else [sys.executable, "-m", "liveproxy"]
    return subprocess.run(
        [*command, *argv],
        env=dict(os.environ, COLUMNS="80"),  # argparse's help width
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("script", [False, True], ids=["python -m liveproxy", "liveproxy"])
def test_version_is_the_packages_one(script: bool) -> None:
    done = liveproxy_command("--version", script=script)
    version = f"liveproxy {liveproxy.__version__}\n"
    assert (done.returncode, done.stdout, done.stderr) == (0, version, "")
    # pyproject reads liveproxy.__version__: the installed metadata says the same.
    assert importlib.metadata.version("liveproxy") == liveproxy.__version__


@pytest.mark.parametrize("script", [False, True], ids=["python -m liveproxy", "liveproxy"])
def test_no_command_prints_the_help_and_exits_2(
    script: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    done = liveproxy_command(script=script)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == build_parser(load=()).format_help()
    assert "serve     serve the proxy" in done.stderr
    assert "emulator  run the Gemini Live emulator" in done.stderr


def test_an_unknown_command_is_a_usage_error() -> None:
    done = liveproxy_command("serv")
    assert done.returncode == 2
    assert "invalid choice: 'serv'" in done.stderr


def test_serve_help_shows_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: liveproxy serve [-h] [--host HOST] [--port PORT]")
    assert "default: HOST or 127.0.0.1" in out
    assert "default: PORT or 8000" in out


def test_emulator_help_shows_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["emulator", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: liveproxy emulator [-h] [--host HOST] [--port PORT]")
    for option in ("--api-key KEY", "--speed {realtime,fast}", "--drop-after N", "--verbose"):
        assert option in out
    assert out == emulator_cli.build_parser().format_help()


def test_serve_options_are_the_servers() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "0"])
    assert (args.command, args.host, args.port, args.run) == ("serve", "0.0.0.0", 0, server.run)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == (None, None)


def test_the_emulator_command_gives_the_config_its_own_parser_gives() -> None:
    argv = ["--port", "0", "--speed", "fast", "--api-key", "k", "--drop-after", "3"]
    args = build_parser().parse_args(["emulator", *argv])
    assert args.run == emulator_cli.run
    alone = emulator_cli.build_parser().parse_args(argv)
    assert emulator_cli.config_from_args(args) == emulator_cli.config_from_args(alone)


def test_only_the_chosen_commands_module_is_imported() -> None:
    """``liveproxy --version`` and ``liveproxy emulator`` do without the web stack."""
    check = (
        "import sys\n"
        "from liveproxy.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('liveproxy.serving.server', 'liveproxy.emulator.cli',"
        " 'quart', 'hypercorn') if m in sys.modules))\n"
    )
    for argv, imported in (
        (["--version"], "[]"),
        (["--help"], "[]"),
        (["emulator", "--help"], "['liveproxy.emulator.cli']"),
        (["serve", "--help"], "['hypercorn', 'liveproxy.serving.server', 'quart']"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", check, *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.stdout.splitlines()[-1] == imported, (argv, done.stderr)
