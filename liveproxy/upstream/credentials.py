"""Upstream credentials: the handshake headers that authenticate the proxy to Gemini.

The API key travels in the ``x-goog-api-key`` header, never in a URL (URLs end up in logs).
Vertex AI uses OAuth2 access tokens from Application Default Credentials; google-auth refreshes
them with blocking HTTP, so the refresh runs in a worker thread, one at a time. A caller that is
cancelled (its setup deadline, its session ending) leaves at once and abandons the thread, which
finishes on its own; callers after it wait for that same thread instead of starting more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from liveproxy.contract.errors import UpstreamUnavailable

if TYPE_CHECKING:
    import google.auth.credentials

Headers = list[tuple[bytes, bytes]]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class Credentials(Protocol):
    async def headers(self) -> Headers:
        """Headers for one upstream handshake.

        Called inside the setup's deadline: it must return promptly when cancelled.

        Raises:
            UpstreamUnavailable: the credentials could not be obtained or refreshed.
        """
        ...


class NoCredentials:
    """For an upstream that needs none (an emulator started without keys)."""

    async def headers(self) -> Headers:
        return []


class ApiKey:
    """A Gemini Developer API key, sent as ``x-goog-api-key``."""

    def __init__(self, key: str) -> None:
        self._headers: Headers = [(b"x-goog-api-key", key.encode("latin-1"))]

    def __repr__(self) -> str:
        return "ApiKey('***')"

    async def headers(self) -> Headers:
        return self._headers


class GoogleAuth:
    """OAuth2 bearer tokens from google-auth credentials (ADC for Vertex AI)."""

    def __init__(self, credentials: google.auth.credentials.Credentials) -> None:
        self._credentials = credentials
        # One refresh thread at a time, even after its callers gave up on it (abandoned threads
        # hold their limiter token until they end): a hanging token endpoint costs one thread.
        self._refreshing = trio.CapacityLimiter(1)
        self.refreshes = 0

    @classmethod
    async def from_environment(cls) -> GoogleAuth:
        """Load Application Default Credentials (in a thread: it may read files or the network).

        Raises:
            UpstreamUnavailable: no usable Application Default Credentials.
        """
        import google.auth
        import google.auth.exceptions

        try:
            credentials, _ = await trio.to_thread.run_sync(
                lambda: google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            raise UpstreamUnavailable(f"no Google credentials for Vertex AI: {exc}") from None
        return cls(credentials)

    async def headers(self) -> Headers:
        credentials = self._credentials
        if not credentials.valid:
            await self._refresh()
        headers: Headers = [(b"authorization", f"Bearer {credentials.token}".encode("latin-1"))]
        quota_project = getattr(credentials, "quota_project_id", None)
        if quota_project:
            headers.append((b"x-goog-user-project", str(quota_project).encode("latin-1")))
        return headers

    async def _refresh(self) -> None:
        import google.auth.exceptions
        import google.auth.transport.requests

        credentials = self._credentials

        def refresh() -> bool:
            # A thread started after another refreshed (or an abandoned one finished) has no work.
            if credentials.valid:
                return False
            request = google.auth.transport.requests.Request()
            credentials.refresh(request)  # type: ignore[no-untyped-call]
            return True

        try:
            refreshed = await trio.to_thread.run_sync(
                refresh, abandon_on_cancel=True, limiter=self._refreshing
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            raise UpstreamUnavailable(f"could not refresh Google credentials: {exc}") from None
        if refreshed:
            self.refreshes += 1
