"""``liveproxy emulator`` on the command line."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.cli import main as liveproxy_main
from liveproxy.emulator import EmulatorConfig, Faults
from liveproxy.emulator.cli import build_parser, config_from_args, main

from .helpers import KEYED_PATH, MODEL, receive, send


def test_every_flag_reaches_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--host", "0.0.0.0", "--port", "0", "--api-key", "a", "--api-key", "b",
            "--model", "models/m", "--model", "n", "--any-model",
            "--tls-cert", "c.pem", "--tls-key", "k.pem",
            "--speed", "fast", "--mode", "echo", "--lifetime", "30", "--go-away-lead", "5",
            "--handle-ttl", "60", "--text-frames", "--record",
            "--reject-status", "429", "--hang-upgrade", "--setup-delay", "1.5",
            "--no-setup-complete", "--close-after", "3", "--close-code", "4000",
            "--close-reason", "bye", "--drop-after", "4", "--stall-after", "5",
            "--malformed-after", "6", "--go-away-after", "7",
        ]
    )  # fmt: skip
    assert config_from_args(args) == EmulatorConfig(
        host="0.0.0.0",
        port=0,
        api_keys=("a", "b"),
        extra_models=("models/m", "n"),
        any_model=True,
        tls_cert="c.pem",
        tls_key="k.pem",
        speed="fast",
        mode="echo",
        lifetime_seconds=30,
        go_away_lead_seconds=5,
        handle_ttl_seconds=60,
        send_binary=False,
        record_messages=True,
        faults=Faults(
            reject_status=429,
            hang_upgrade=True,
            setup_complete_delay=1.5,
            withhold_setup_complete=True,
            close_after=3,
            close_code=4000,
            close_reason="bye",
            drop_after=4,
            stall_after=5,
            malformed_after=6,
            go_away_after=7,
        ),
    )


def test_defaults() -> None:
    config = config_from_args(build_parser().parse_args([]))
    assert config == EmulatorConfig(port=9000, record_messages=False)


@pytest.mark.parametrize(
    "argv", [["--tls-cert", "only-cert.pem"], ["--close-code", "1006"], ["--speed", "slow"]]
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    alone = capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        liveproxy_main(["emulator", *argv])  # `liveproxy emulator ...` says the same
    assert exited.value.code == 2
    assert capsys.readouterr().err == alone
    assert alone.startswith("usage: liveproxy emulator ")


async def test_a_port_in_use_exits_1() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        command = [sys.executable, "-m", "liveproxy", "emulator", "--port", str(port)]
        with trio.fail_after(20):
            done = await trio.run_process(command, capture_stderr=True, check=False)
    finally:
        await listeners[0].aclose()
    assert done.returncode == 1
    assert done.stderr.startswith(b"liveproxy emulator: ")


async def test_runs_serves_and_exits_0_on_sigint() -> None:
    command = [sys.executable, "-m", "liveproxy", "emulator", "--port", "0", "--speed", "fast"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    with trio.fail_after(20):
        line = b""
        while not line.endswith(b"\n"):
            line += await process.stdout.receive_some(1)
        prefix, url = line.decode().strip().rsplit(" ", 1)
        assert prefix == "emulator listening on"
        assert url.startswith("ws://127.0.0.1:")
        async with open_websocket_url(url + KEYED_PATH) as ws:
            await send(ws, {"setup": {"model": MODEL}})
            assert await receive(ws) == {"setupComplete": {}}
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 0
