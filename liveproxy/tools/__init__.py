"""Server tools: functions the proxy runs itself when Gemini calls them.

:mod:`.declare` is how a Python module declares one (:func:`tool`, the :class:`ToolContext`
it may ask for); :mod:`.registry` loads them (modules, installed packages' entry points, the
HTTP tools of :mod:`.http`) into a :class:`ToolRegistry` of :class:`ServerTool`; a tool is
invoked with :meth:`ServerTool.invoke`. Running calls (tasks, timeouts, mirroring) is the
session's, in :mod:`liveproxy.core`.
"""

from liveproxy.tools.declare import ToolContext, tool
from liveproxy.tools.errors import ToolFailed, ToolResultTooLarge
from liveproxy.tools.registry import ServerTool, ToolLoadError, ToolRegistry, load_tools

__all__ = [
    "ServerTool",
    "ToolContext",
    "ToolFailed",
    "ToolLoadError",
    "ToolRegistry",
    "ToolResultTooLarge",
    "load_tools",
    "tool",
]
