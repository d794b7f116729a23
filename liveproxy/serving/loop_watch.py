"""The event loop's watchdog: how long the loop went without running, logged when too long.

A task wakes every :data:`INTERVAL` seconds and measures how late it woke, in wall time: a
stretch of synchronous work on the event loop's thread (a slow regex, a large parse, a garbage
collection) delays it by that long, and it delays every other task of the process just as much.
A stall of :data:`WARN_SECONDS` or more is logged at WARNING (``event_loop_stalled``, with its
``seconds``); the longest one so far is :attr:`LoopWatch.longest`. Tests and the fuzzer read
the log: no client may make the loop stall.
"""

from __future__ import annotations

import logging
import time
from typing import Final, NoReturn

import trio

from liveproxy.logs import fields

log = logging.getLogger("liveproxy.loop")

#: How often the watchdog wakes (its cost: this many wake-ups a second, each a few µs).
INTERVAL: Final = 0.05
#: Stalls this long or longer are logged.
WARN_SECONDS: Final = 0.5


class LoopWatch:
    """Measures how late the event loop wakes a sleeping task; see the module's docstring."""

    def __init__(self) -> None:
        self.longest = 0.0

    async def run(self) -> NoReturn:
        """Watch until cancelled."""
        while True:
            before = time.perf_counter()
            await trio.sleep(INTERVAL)
            stall = time.perf_counter() - before - INTERVAL
            self.longest = max(self.longest, stall)
            if stall >= WARN_SECONDS:
                log.warning(
                    "the event loop did not run for %.2f s",
                    stall,
                    extra=fields("event_loop_stalled", seconds=round(stall, 3)),
                )
