"""Where Gemini Live is, and as whom the proxy connects: the Developer API, Vertex AI, or any
Live-compatible URL (the emulator)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs

from liveproxy.config import Config
from liveproxy.protocol.live_models import Backend
from liveproxy.upstream.credentials import Credentials

DEVELOPER_BASE = "wss://generativelanguage.googleapis.com"


@attrs.frozen
class UpstreamTarget:
    """Where and as whom the proxy connects upstream, and how each connection is kept alive."""

    url: str
    model: str
    credentials: Credentials
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)
    max_message_size: int = 32 * 1024 * 1024
    backend: Backend = "developer"
    #: Vertex AI's project and location, for the model's resource name.
    project: str | None = None
    location: str = "us-central1"
    #: WebSocket pings (0: none), and how long a pong may take before the connection counts as
    #: dropped (Gemini's pongs take 8-30 s).
    ping_interval: float = 30.0
    pong_timeout: float = 60.0

    @property
    def transparent(self) -> bool:
        """Vertex resumes transparently (the Developer API's SDKs refuse the option)."""
        return self.backend == "vertex"

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        return redact(text, self.secrets)

    def model_path(self, model: str) -> str:
        """``model`` as ``setup.model`` wants it for the backend."""
        if self.backend == "vertex":
            if model.startswith("projects/"):
                return model
            if not model.startswith("publishers/"):
                model = f"publishers/google/models/{model}"
            return f"projects/{self.project}/locations/{self.location}/{model}"
        if model.startswith(("models/", "tunedModels/")):
            return model
        return f"models/{model}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***`` (the longest first, so a secret
    that contains another is replaced whole)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def upstream_url(config: Config) -> str:
    """The Live endpoint for ``config``: Developer API or Vertex AI, or ``UPSTREAM_URL``."""
    if config.backend == "vertex":
        version = config.api_version or "v1"
        path = f"/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
        host = (
            "aiplatform.googleapis.com"
            if config.location == "global"
            else f"{config.location}-aiplatform.googleapis.com"
        )
        base = f"wss://{host}"
    else:
        version = config.api_version or "v1beta"
        path = f"/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
        base = DEVELOPER_BASE
    if config.upstream_url:
        if urlsplit(config.upstream_url).path not in ("", "/"):
            return config.upstream_url
        base = config.upstream_url.rstrip("/")
    return base + path


def target_for(config: Config, url: str, credentials: Credentials, *secrets: str) -> UpstreamTarget:
    """The target of ``config`` at ``url`` with ``credentials`` (``secrets`` never shown)."""
    return UpstreamTarget(
        url=url,
        model=config.model,
        credentials=credentials,
        secrets=tuple(s for s in secrets if s),
        max_message_size=config.upstream_max_message_bytes,
        backend=config.backend,
        project=config.project_id,
        location=config.location,
        ping_interval=config.upstream_ping_interval_seconds,
        pong_timeout=config.upstream_pong_timeout_seconds,
    )
