"""Which WebSocket paths the emulator serves, and what a request's path and query say."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import attrs

from liveproxy.emulator.record import Api

_DEVELOPER = re.compile(
    r"ws/google\.ai\.generativelanguage\.(?P<version>v1alpha|v1beta|v1)\.GenerativeService"
    r"\.(?P<method>BidiGenerateContent|BidiGenerateContentConstrained)"
)
_VERTEX = re.compile(
    r"ws/google\.cloud\.aiplatform\.(?P<version>v1|v1beta1)\.LlmBidiService"
    r"/(?P<method>BidiGenerateContent)"
)


@attrs.frozen
class Route:
    """A Live API endpoint: which API, which version, which method."""

    api: Api
    api_version: str
    method: str

    @property
    def constrained(self) -> bool:
        """Whether this is the ephemeral-token method ``BidiGenerateContentConstrained``."""
        return self.method == "BidiGenerateContentConstrained"


def split_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into its path and its query (the last value of a repeated name)."""
    path, _, query = target.partition("?")
    return path, dict(parse_qsl(query, keep_blank_values=True))


def match_route(path: str) -> Route | None:
    """The route for ``path`` (any number of leading slashes), or None if it is not served."""
    stripped = path.lstrip("/")
    found = _DEVELOPER.fullmatch(stripped)
    if found:
        return Route("developer", found["version"], found["method"])
    found = _VERTEX.fullmatch(stripped)
    if found:
        return Route("vertex", found["version"], found["method"])
    return None
