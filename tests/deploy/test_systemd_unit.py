"""deploy/liveproxy.service: read, checked by systemd where it exists, and run.

- Read: the keys a drain depends on (KillSignal, KillMode, a TimeoutStopSec beyond liveproxy's
  own deadlines, taken from its code), the command, the runtime directory, the hardening.
- ``systemd-analyze verify`` and its offline security review, where ``systemd-analyze`` is
  installed (CI images may lack it: the other checks still run there).
- Run: the unit's command (the binary: this checkout's) with the unit's environment and
  deploy/liveproxy.env, under the kernel's own ban on writable and executable memory
  (``PR_SET_MDWE``, Linux 6.3+; what ``MemoryDenyWriteExecute=yes`` forbids), serves a session;
  the unit's KillSignal, sent to its main process alone (``KillMode=mixed``), drains it and it
  exits 0 well within TimeoutStopSec.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

from liveproxy.config import Config
from liveproxy.emulator import Emulator
from liveproxy.serving.server import CLOSE_MARGIN_SECONDS
from liveproxy.serving.supervisor import KILL_MARGIN_SECONDS
from tests.conftest import AUDIO_SETUP
from tests.deploy import DEPLOY, env_file
from tests.http import request
from tests.wsclient import BrowserClient, has_key

UNIT = DEPLOY / "liveproxy.service"
NAME = "liveproxy"  # %N of liveproxy.service
#: The binary the unit runs, and the one that stands for it here.
INSTALLED = "/opt/liveproxy/.venv/bin/liveproxy"
HERE = str(Path(sys.executable).parent / "liveproxy")
ORIGIN = "https://app.example.com"  # deploy/liveproxy.env's ALLOWED_ORIGINS
HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes",
    "RestrictNamespaces": "yes",
}
#: Turns on the kernel's MDWE (PR_SET_MDWE = 65, PR_MDWE_REFUSE_EXEC_GAIN = 1), inherited
#: across exec, then runs the command.
MDWE_SHIM = """
import ctypes, os, sys
on = ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0
sys.stderr.write("mdwe: " + ("on" if on else "unavailable") + "\\n")
os.execv(sys.argv[1], sys.argv[1:])
"""


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit's sections and their keys, each with every value it is given, in order.

    (configparser keeps only a repeated key's last value; systemd adds most of them up.)
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not Key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def expand(value: str, runtime: str = "/run") -> str:
    """The specifiers this unit uses: %N (its name), %t (the runtime root), %%."""
    return re.sub(r"%[Nt%]", lambda m: {"%N": NAME, "%t": runtime, "%%": "%"}[m.group()], value)


def test_the_unit_is_valid_stops_by_draining_and_is_hardened(tmp_path: Path) -> None:
    service = read_unit(UNIT)["Service"]
    command = shlex.split(one(service, "ExecStart"))
    assert command == [INSTALLED, "serve"]
    assert one(service, "Type") == "exec"

    assert one(service, "KillSignal") == "SIGTERM"  # what liveproxy drains on
    assert one(service, "KillMode") == "mixed"  # to the supervisor, which tells its workers
    grace = Config().shutdown_grace_seconds
    one_worker = grace + CLOSE_MARGIN_SECONDS  # sessions ended, closes sent
    supervisor = grace + 2 * CLOSE_MARGIN_SECONDS + KILL_MARGIN_SECONDS  # kills a stuck worker
    stop = float(one(service, "TimeoutStopSec"))
    assert stop > supervisor > one_worker, (stop, supervisor)
    assert one(service, "Restart") == "on-failure"

    assert expand(one(service, "EnvironmentFile")) == "/etc/liveproxy/liveproxy.env"
    runtime_dir = "/run/" + expand(one(service, "RuntimeDirectory"))
    environment = dict(expand(v).split("=", 1) for v in service["Environment"])
    assert environment["XDG_RUNTIME_DIR"] == runtime_dir == "/run/liveproxy"
    for key, value in HARDENING.items():
        assert value in service.get(key, []), f"{key}={value}: {service.get(key)}"
    assert "WantedBy" in read_unit(UNIT)["Install"]

    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # CI images may lack it: what is above still holds there
        # verify checks that ExecStart's binary exists: this checkout's stands in for /opt's.
        unit = tmp_path / UNIT.name
        unit.write_text(UNIT.read_text().replace(INSTALLED, HERE))
        verified = subprocess.run(
            [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert verified.returncode == 0, verified.stderr
        assert verified.stderr == verified.stdout == "", verified.stderr  # not even a warning
        # The offline security review: an exposure of 2.0 at most ("OK").
        review = subprocess.run(
            [analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert review.returncode == 0, review.stdout + review.stderr


async def test_the_units_command_serves_and_drains_on_its_kill_signal(
    tmp_path: Path, emulator: Emulator
) -> None:
    service = read_unit(UNIT)["Service"]
    runtime_root = tmp_path / "run"
    runtime = runtime_root / expand(one(service, "RuntimeDirectory"))
    runtime.mkdir(mode=0o700, parents=True)
    # What systemd hands the process: a bare environment, the unit's Environment=, then its
    # EnvironmentFile (which wins). Then what differs here: a free port, the test's emulator
    # (with the key the file would hold), a short grace, and one host on its own: no
    # STATE_URL, so that the workers share an SQLite file in the runtime directory.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:  # the code under test, where it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env |= dict(expand(v, str(runtime_root)).split("=", 1) for v in service["Environment"])
    env |= env_file(DEPLOY / Path(expand(one(service, "EnvironmentFile"))).name)
    del env["STATE_URL"]
    grace = 1.0
    env |= {
        "PORT": "0",
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "SHUTDOWN_GRACE_SECONDS": str(grace),
    }
    command = shlex.split(one(service, "ExecStart"))
    command[0] = HERE
    workers = len(os.sched_getaffinity(0))  # WORKERS=auto
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", MDWE_SHIM, *command], env=env, cwd="/", stderr=subprocess.PIPE
    )
    log: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_read_log, process, log, workers)
            if workers > 1:
                assert list(runtime.glob("liveproxy-*/state.db")), list(runtime.iterdir())
            token = await _token(port)
            url = f"ws://127.0.0.1:{port}/ws?token={token}"
            async with open_websocket_url(url, extra_headers=[(b"Origin", ORIGIN.encode())]) as ws:
                client = BrowserClient(ws)
                await client.send_json(AUDIO_SETUP)  # the deployed default model speaks audio
                assert "setupComplete" in await client.recv_json()
                await client.send_json({"type": "text", "text": "hello"})
                with trio.fail_after(5):
                    await client.recv_until(has_key("serverContent", "turnComplete"))

                process.send_signal(getattr(signal, one(service, "KillSignal")))
                stopping = trio.current_time()
                ended = await client.wait_closed()
            with trio.fail_after(float(one(service, "TimeoutStopSec"))):
                status = await process.wait()
            took = trio.current_time() - stopping
    finally:
        if process.returncode is None:
            process.kill()
    text = "".join(log)
    assert status == 0, text
    assert took < grace + CLOSE_MARGIN_SECONDS + 2, text
    assert (ended.code, ended.last_event["sessionEnd"]["reason"]) == (1001, "shutdown")
    assert "Traceback" not in text
    if _kernel() >= (6, 3):
        assert "mdwe: on" in text  # it all ran under MemoryDenyWriteExecute's rule
    assert list(runtime.iterdir()) == []  # the store is removed at exit


def _kernel() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


async def _token(port: int) -> str:
    response = await request("127.0.0.1", port, "POST", "/api/auth", b"", {"Origin": ORIGIN})
    assert response.status == 200, response.body
    token: str = response.json()["session_token"]
    return token


async def _read_log(
    process: trio.Process,
    log: list[str],
    workers: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Collect stderr; report the port once every worker listens."""
    ready = r"Running on http://127\.0\.0\.1:(\d+)" + (
        rf" with {workers} workers" if workers > 1 else ""
    )
    assert process.stderr is not None
    reported = False
    with trio.fail_after(30) as startup:
        async for chunk in process.stderr:
            log.append(chunk.decode(errors="replace"))
            match = re.search(ready, "".join(log))
            if match and not reported:
                reported = True
                startup.deadline = float("inf")
                task_status.started(int(match.group(1)))
    assert reported, "the service exited before listening:\n" + "".join(log)
