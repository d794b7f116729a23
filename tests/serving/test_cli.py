"""``liveproxy`` on the command line: each command's own help, the version, no command, and
an address it cannot listen on."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

import liveproxy
from liveproxy.cli import build_parser, main
from liveproxy.emulator import cli as emulator_cli
from liveproxy.serving import server
from tests.conftest import TEXT_SETUP
from tests.served import liveproxy_serve, serve_refused, signed_in_socket
from tests.wsclient import BrowserClient, has_key, texts

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
    words = " ".join(out.split())  # as argparse wraps them
    assert "default: HOST or 127.0.0.1" in words
    assert "default: PORT or 8000" in words
    assert "--example-tools also run the example server tools" in words


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


# -- an address that cannot be listened on ----------------------------------------------------

IN_USE = f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}"


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def serve_to_the_end(**settings: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m liveproxy serve`` with ``settings`` over our environment, run until it exits."""
    env = dict(os.environ, HOST="127.0.0.1", PORT="0", LOG_LEVEL="WARNING")
    env.update(settings)
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "liveproxy", "serve"],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "{port}"),
        ({"WORKERS": "2"}, "{port}"),
        ({"METRICS_BIND": "127.0.0.1:{port}"}, "{port} (METRICS_BIND)"),
        ({"METRICS_BIND": "127.0.0.1:{port}", "WORKERS": "2"}, "{port} (METRICS_BIND)"),
    ],
    ids=["PORT", "PORT, 2 workers", "METRICS_BIND", "METRICS_BIND, 2 workers"],
)
async def test_a_port_in_use_is_one_line_and_exit_1(settings: dict[str, str], named: str) -> None:
    with held_port() as port:
        if "METRICS_BIND" not in settings:
            settings = {**settings, "PORT": str(port)}
        settings = {name: value.format(port=port) for name, value in settings.items()}
        done = await serve_to_the_end(**settings)
    address = named.format(port=port)
    expected = f"liveproxy: cannot listen on 127.0.0.1:{address}: {IN_USE}\n"
    assert (done.returncode, done.stderr.decode(), done.stdout) == (1, expected, b"")


async def test_with_the_default_log_the_error_is_the_last_line_and_no_traceback() -> None:
    """``make run`` on a busy port: the built-in emulator's line, then the error."""
    with held_port() as port:
        done = await serve_to_the_end(PORT=str(port), LOG_LEVEL="INFO", EMULATOR="true")
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"liveproxy: cannot listen on 127.0.0.1:{port}: {IN_USE}"


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_an_address_not_of_this_host_is_one_line_too(workers: str) -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never a local address.
    done = await serve_to_the_end(HOST="192.0.2.1", PORT="8000", WORKERS=workers)
    reason = f"[Errno {errno.EADDRNOTAVAIL}] {os.strerror(errno.EADDRNOTAVAIL)}"
    expected = f"liveproxy: cannot listen on 192.0.2.1:8000: {reason}\n"
    assert (done.returncode, done.stderr.decode()) == (1, expected)


def test_a_tool_that_cannot_be_loaded_stops_serve_with_a_clear_error_and_exit_2(
    tmp_path: Path,
) -> None:
    done = serve_refused({"TOOLS_MODULES": "no_such_tools_module"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("liveproxy: tools error: ")
    assert "no_such_tools_module" in done.stderr
    assert "Traceback" not in done.stderr


async def test_make_runs_example_tool_runs_in_every_worker() -> None:
    # `make run` is `liveproxy serve --example-tools`: its get_time runs on the server, in each
    # worker the supervisor starts.
    settings = {"WORKERS": "2", "AUTH_RATE_LIMIT": "0"}
    async with liveproxy_serve(("--example-tools",), settings) as host:
        for _ in range(2):
            async with signed_in_socket(host.port) as ws:
                client = BrowserClient(ws)
                await client.send_json(TEXT_SETUP)
                assert "setupComplete" in await client.recv_json()
                await client.send_json(
                    {"type": "text", "text": 'call get_time {"timezone": "UTC"}'}
                )
                with trio.fail_after(10):
                    frames = await client.recv_until(has_key("serverContent", "turnComplete"))
            [result] = [
                orjson.loads(f)["serverToolResult"]
                for f in frames
                if isinstance(f, str) and "serverToolResult" in f
            ]
            assert result["name"] == "get_time"
            assert result["response"]["timezone"] == "UTC"
            assert "get_time returned" in "".join(texts(frames))


def test_a_bad_prices_file_stops_serve_with_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."m"]\nprompt = { SMELL = 1.0 }\n')
    done = serve_refused({"PRICES_FILE": str(prices)}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("liveproxy: configuration error: PRICES_FILE ")
    assert "SMELL" in done.stderr
    assert "Traceback" not in done.stderr
