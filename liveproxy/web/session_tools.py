"""The server's tools bound to one session: the engine's
:class:`~liveproxy.core.ports.ServerTools` port over :mod:`liveproxy.tools`."""

from __future__ import annotations

from typing import Any

import attrs

from liveproxy.core.ports import ToolTerms
from liveproxy.tools import ToolContext, ToolRegistry
from liveproxy.web.metrics import Metrics


@attrs.frozen
class SessionTools:
    """``registry``'s tools, each call given ``context``; their endings counted in ``metrics``."""

    registry: ToolRegistry
    context: ToolContext
    metrics: Metrics

    def terms(self, name: str) -> ToolTerms | None:
        tool = self.registry.tools.get(name)
        return None if tool is None else ToolTerms(timeout=tool.timeout, mirror=tool.mirror)

    async def invoke(self, name: str, args: dict[str, Any]) -> Any:
        return await self.registry.tools[name].invoke(args, self.context)

    def finished(self, name: str, result: str, seconds: float) -> None:
        self.metrics.tool_finished(name, result, seconds)
