"""What one session costs each state store: admit + start_session + end_session, timed; and
what a budget costs: the one store call a session makes per usage report (at most), timed.

``python bench/store_cost.py`` starts a private redis-server when one is installed, runs N
sign-in-to-session cycles one after another and 20 at a time on each store, and prints the
mean wall time per cycle and cycles per second. Then, on each store, N budget charges (a
client's and the deployment's token counters, settled and topped up in one call, as
:class:`~liveproxy.core.budget_guard.BudgetGuard` makes them) one after another and 20 at a
time: microseconds per call, and calls per second.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import trio

from liveproxy.core.budget import Charge
from liveproxy.store import Grant, Limits, Rate, StateStore
from liveproxy.store.memory import MemoryStore
from liveproxy.store.redis import open_redis_store
from liveproxy.store.sqlite import open_sqlite_store

CYCLES = 2000
CONCURRENCY = 20
LIMITS = Limits(token_ttl=30, max_sessions=100_000, per_client=50)
RATE = Rate(10**9, 1.0)


async def cycle(store: StateStore, n: int) -> None:
    client = f"c{n % 50}"
    assert await store.take_sign_in(client, RATE) == 0.0
    token = await store.admit(Grant(180, origin="https://app", client=client), LIMITS)
    assert isinstance(token, str)
    lease = await store.start_session(token, f"s{n}")
    assert lease is not None
    await store.end_session(lease)


async def measure(store: StateStore) -> tuple[float, float]:
    """(ms per cycle one at a time, cycles per second 20 at a time)."""
    start = time.perf_counter()
    for n in range(CYCLES):
        await cycle(store, n)
    serial = (time.perf_counter() - start) / CYCLES * 1000
    start = time.perf_counter()
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(n: int) -> None:
        async with limiter:
            await cycle(store, n)

    async with trio.open_nursery() as nursery:
        for n in range(CYCLES):
            nursery.start_soon(one, CYCLES + n)
    return serial, CYCLES / (time.perf_counter() - start)


def report_charges(n: int) -> list[Charge]:
    """A usage report's charge: 120 tokens used past the hold on the client's counter and the
    total, a slice of 5000 asked for each (limits never reached)."""
    return [
        Charge(f"c:c{n % 50}|tokens|2026-12-05", 120.0, 5000.0, 1e12, 86400.0),
        Charge("t|tokens|2026-12-05", 120.0, 5000.0, 1e12, 86400.0),
    ]


async def measure_charges(store: StateStore) -> tuple[float, float]:
    """(µs per charge call one at a time, calls per second 20 at a time)."""
    start = time.perf_counter()
    for n in range(CYCLES):
        await store.charge(report_charges(n))
    serial = (time.perf_counter() - start) / CYCLES * 1e6
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(n: int) -> None:
        async with limiter:
            await store.charge(report_charges(n))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(CYCLES):
            nursery.start_soon(one, n)
    return serial, CYCLES / (time.perf_counter() - start)


@asynccontextmanager
async def memory() -> AsyncIterator[StateStore]:
    yield MemoryStore(time.time)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run(url: str | None) -> None:
    directory = Path(tempfile.mkdtemp(prefix="store-cost-"))
    stores: list[tuple[str, Callable[[], AbstractAsyncContextManager[StateStore]]]] = [
        ("memory:", memory),
        ("sqlite:", lambda: open_sqlite_store(str(directory / "state.db"), time.time, 30)),
    ]
    if url is not None:
        stores.append(("redis://", lambda: open_redis_store(url, time.time, 30)))
    try:
        print(f"{'store':10} {'ms/cycle (serial)':>18} {'cycles/s (20 at once)':>22}")
        for name, open_store in stores:
            async with open_store() as store:
                serial, parallel = await measure(store)
            print(f"{name:10} {serial:18.3f} {parallel:22.0f}")
        print()
        print(f"{'store':10} {'µs/charge (serial)':>19} {'charges/s (20 at once)':>23}")
        for name, open_store in stores:
            async with open_store() as store:
                serial, parallel = await measure_charges(store)
            print(f"{name:10} {serial:19.1f} {parallel:23.0f}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    """Run the measurement, with a private redis-server when one is installed."""
    if not shutil.which("redis-server"):
        trio.run(run, None)
        return 0
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        trio.run(run, f"redis://127.0.0.1:{port}/0")
    finally:
        redis.terminate()
        redis.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
