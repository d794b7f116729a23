"""What a supervisor tells each worker process it starts, through the environment.

A worker is ``liveproxy serve`` run with these variables set: it serves on the listening socket
it inherited (``fd``), tells the supervisor once it listens (writes a line to ``ready_fd``),
and, in emulator mode, uses the one emulator the supervisor runs for all workers.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from liveproxy.upstream.startup import SharedEmulator

ENV_PREFIX = "LIVEPROXY_WORKER_"


@attrs.frozen
class WorkerSpec:
    """One worker's place: its number, its listening socket, where to say it is ready."""

    id: int
    fd: int
    ready_fd: int
    state_url: str
    emulator: SharedEmulator | None = None

    def to_env(self) -> dict[str, str]:
        env = {
            f"{ENV_PREFIX}ID": str(self.id),
            f"{ENV_PREFIX}FD": str(self.fd),
            f"{ENV_PREFIX}READY_FD": str(self.ready_fd),
            "STATE_URL": self.state_url,
        }
        if self.emulator is not None:
            env[f"{ENV_PREFIX}EMULATOR_URL"] = self.emulator.url
            env[f"{ENV_PREFIX}EMULATOR_KEY"] = self.emulator.key
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerSpec | None:
        """The spec a supervisor set in ``env``, or None when this process is not a worker."""
        if f"{ENV_PREFIX}ID" not in env:
            return None
        url = env.get(f"{ENV_PREFIX}EMULATOR_URL")
        emulator = SharedEmulator(url, env[f"{ENV_PREFIX}EMULATOR_KEY"]) if url else None
        return cls(
            id=int(env[f"{ENV_PREFIX}ID"]),
            fd=int(env[f"{ENV_PREFIX}FD"]),
            ready_fd=int(env[f"{ENV_PREFIX}READY_FD"]),
            state_url=env["STATE_URL"],
            emulator=emulator,
        )
