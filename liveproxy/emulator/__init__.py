"""A faithful, offline stand-in for Google's Gemini Live API (BidiGenerateContent).

Start it with ``await nursery.start(serve, EmulatorConfig(...))`` or ``liveproxy emulator``.
"""

from liveproxy.emulator.config import EmulatorConfig, Faults
from liveproxy.emulator.record import ConnectionRecord
from liveproxy.emulator.server import Emulator, serve

__all__ = ["ConnectionRecord", "Emulator", "EmulatorConfig", "Faults", "serve"]
