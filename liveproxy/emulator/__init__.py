"""A faithful, offline stand-in for Google's Gemini Live API (BidiGenerateContent).

Start it with ``await nursery.start(serve, EmulatorConfig(...))`` or ``liveproxy emulator``.
"""

from liveproxy.emulator.config import EmulatorConfig, Faults
from liveproxy.emulator.record import ConnectionRecord, IssuedHandle
from liveproxy.emulator.server import Emulator, serve
from liveproxy.emulator.store import SessionState

__all__ = [
    "ConnectionRecord",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "IssuedHandle",
    "SessionState",
    "serve",
]
