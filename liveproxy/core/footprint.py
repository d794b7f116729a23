"""What a frame held in a buffer costs in memory: the measure of every byte bound a client can fill.

A ``str`` takes 1, 2 or 4 bytes a character (the widest character decides), so its length
in characters or in UTF-8 bytes can be a quarter of what it holds: a 2 MB text with one emoji
takes 8 MB. Buffers count :func:`footprint` (what the object really takes, header included),
so their bounds are bounds on memory.
"""

from __future__ import annotations

import sys


def footprint(frame: bytes | str) -> int:
    """The bytes ``frame`` takes in memory."""
    return sys.getsizeof(frame)
