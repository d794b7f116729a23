"""A real nginx for tests, running ``deploy/nginx.conf`` itself.

:func:`render` changes only what a test must: the listening ports (to free ports on
127.0.0.1), the files (certificate and key, pid, logs, temp directories: into the test's
directory) and the upstream servers (``127.0.0.1:8001`` and ``127.0.0.1:8002`` become the test's
instances). Every rewrite must match where it is expected, so a changed config fails here
loudly instead of running half-rewritten. :func:`running_nginx` runs it in the foreground
(``daemon off``, its error log on stderr), waits until it listens and stops it afterwards.
Without nginx the test is skipped, or fails when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
#: The upstream servers as deploy/nginx.conf names them, in order.
UPSTREAMS = ("127.0.0.1:8001", "127.0.0.1:8002")
#: Directives naming a file or directory, and where they point under a test.
FILES = {
    "pid": "nginx.pid",
    "error_log": "error.log",
    "access_log": "access.log",
    "client_body_temp_path": "body",
    "proxy_temp_path": "proxy",
    "fastcgi_temp_path": "fastcgi",
    "uwsgi_temp_path": "uwsgi",
    "scgi_temp_path": "scgi",
}
START_TIMEOUT = 10.0


def find_nginx() -> str:
    """The ``nginx`` executable; skips the test without one (fails it under CI)."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)),
        None,
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _rewrite(text: str, pattern: str, replacement: str, expected: int) -> str:
    rewritten, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == expected, f"deploy/nginx.conf: {pattern!r} matched {count}, not {expected}"
    return rewritten


def render(
    text: str,
    *,
    https_port: int,
    http_port: int,
    upstreams: Mapping[str, int],
    cert: Path,
    key: Path,
    directory: Path,
) -> str:
    """``text`` (deploy/nginx.conf) with its ports, files and upstream servers rewritten.

    ``upstreams`` maps each of :data:`UPSTREAMS` to the port of the instance it stands for.
    """
    text = _rewrite(text, r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{https_port} ssl;", 1)
    text = _rewrite(text, r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{http_port};", 1)
    for name, port in upstreams.items():
        # Each instance is listed twice: for sign-in and for everything else.
        text = _rewrite(text, rf"^(\s*server) {re.escape(name)}\b", rf"\1 127.0.0.1:{port}", 2)
    files = {name: str(directory / file) for name, file in FILES.items()}
    files |= {"ssl_certificate": str(cert), "ssl_certificate_key": str(key)}
    for directive, path in files.items():
        text = _rewrite(text, rf"^(\s*{directive}\s+)/[^\s;]+", rf"\g<1>{path}", 1)
    return text


@attrs.define
class AccessLine:
    """One line of the access log (deploy/nginx.conf's ``liveproxy`` format)."""

    method: str
    uri: str
    status: int
    upstreams: list[str]
    upstream_statuses: list[str]


_ACCESS = re.compile(
    r'"(?P<method>\S+) (?P<uri>\S+)" (?P<status>\d+) .* '
    r"upstream=(?P<upstreams>.*) upstream_status=(?P<statuses>.*)$"
)


@attrs.define
class Nginx:
    """A running nginx: its ports, its directory, its stderr so far."""

    process: trio.Process
    https_port: int
    http_port: int
    directory: Path
    log: list[str]

    @property
    def access_log(self) -> str:
        path = self.directory / FILES["access_log"]
        return path.read_text() if path.exists() else ""

    def access_lines(self) -> list[AccessLine]:
        """The access log so far, parsed (a WebSocket's line is written when it closes)."""
        lines = []
        for line in self.access_log.splitlines():
            match = _ACCESS.search(line)
            assert match, f"not in the liveproxy log format: {line}"
            lines.append(
                AccessLine(
                    match["method"],
                    match["uri"],
                    int(match["status"]),
                    match["upstreams"].split(", "),
                    match["statuses"].split(", "),
                )
            )
        return lines


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _write_config(directory: Path, **rendering: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(render(CONFIG.read_text(), directory=directory, **rendering))
    return config


@asynccontextmanager
async def running_nginx(
    directory: Path, *, upstreams: Mapping[str, int], cert: Path, key: Path
) -> AsyncIterator[Nginx]:
    """nginx with deploy/nginx.conf (rendered into ``directory``), stopped on exit (SIGTERM)."""
    executable = find_nginx()
    for attempt in range(3):  # a free port may be taken before nginx binds it: others then
        https_port, http_port = _free_port(), _free_port()
        config = _write_config(
            directory,
            https_port=https_port,
            http_port=http_port,
            upstreams=upstreams,
            cert=cert,
            key=key,
        )
        log: list[str] = []
        process = await trio.lowlevel.open_process(
            [
                executable,
                *("-p", str(directory), "-c", str(config)),
                *("-g", "daemon off; error_log stderr notice;"),
            ],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process, log)
                if await _started(process, (https_port, http_port)):
                    try:
                        yield Nginx(process, https_port, http_port, directory, log)
                    finally:
                        await _stop(process)
                    nursery.cancel_scope.cancel()
                    return
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
        if "Address already in use" not in "".join(log) or attempt == 2:
            raise RuntimeError("nginx did not start:\n" + "".join(log))


async def _started(process: trio.Process, ports: tuple[int, ...]) -> bool:
    """Wait until nginx listens on ``ports`` (True) or exits (False)."""
    with trio.fail_after(START_TIMEOUT):
        while process.returncode is None:
            if all(_listens(port) for port in ports):
                return True
            await trio.sleep(0.02)
    return False


async def _stop(process: trio.Process) -> None:
    """SIGTERM: nginx's fast shutdown (its WebSockets are cut, not waited for)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


async def _drain(process: trio.Process, log: list[str]) -> None:
    assert process.stderr is not None
    async for chunk in process.stderr:
        log.append(chunk.decode(errors="replace"))
