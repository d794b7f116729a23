"""The upstream a server uses, resolved when it starts: Google's, or the built-in emulator.

With an API key it is the Developer API; with a project and no key, Vertex AI with Application
Default Credentials; with neither, the built-in Gemini Live emulator (unless ``EMULATOR=false``:
then there is none, and sessions fail with ``upstream_unavailable``).
"""

from __future__ import annotations

import logging
import secrets

import attrs
import trio

from liveproxy.config import Config
from liveproxy.redact import SECRETS, redact_url
from liveproxy.upstream.credentials import ApiKey, Credentials, GoogleAuth, NoCredentials
from liveproxy.upstream.target import UpstreamTarget, target_for, upstream_url

log = logging.getLogger("liveproxy")

#: Logged once, by whoever starts the built-in emulator.
EMULATOR_NOTICE = (
    "no Google credentials configured: using the built-in Gemini Live emulator at %s "
    "(set GOOGLE_API_KEY or PROJECT_ID to reach Gemini)"
)


@attrs.frozen
class SharedEmulator:
    """A supervisor's built-in emulator, shared by its workers: its URL and the key it accepts."""

    url: str
    key: str = attrs.field(repr=False)


async def resolve_target(
    config: Config,
    nursery: trio.Nursery,
    shared_emulator: SharedEmulator | None = None,
    emulator_scope: trio.CancelScope | None = None,
) -> UpstreamTarget | None:
    """The upstream of ``config``; None in "simple" mode (logged).

    In emulator mode the built-in emulator is ``shared_emulator`` (a supervisor's), else one
    started in ``nursery`` under ``emulator_scope``.

    Raises:
        UpstreamUnavailable: Vertex AI is configured but no credentials can be found.
    """
    if config.mode == "simple":
        log.warning("no upstream configured: sessions will fail (set GOOGLE_API_KEY)")
        return None
    if config.mode == "emulator":
        if shared_emulator is None:
            key = secrets.token_urlsafe(16)
            scope = emulator_scope or trio.CancelScope()
            url = await nursery.start(run_emulator, key, scope)
            log.info(EMULATOR_NOTICE, url)
        else:
            url, key = shared_emulator.url, shared_emulator.key
        SECRETS.add(key)
        return emulator_target(config, url, key)
    target = await google_target(config)
    log.info("upstream: %s (%s backend)", redact_url(target.url), config.backend)
    return target


def emulator_target(config: Config, url: str, key: str) -> UpstreamTarget:
    """The built-in emulator at ``url``, which accepts ``key``."""
    live_url = upstream_url(attrs.evolve(config, upstream_url=url))
    return target_for(config, live_url, ApiKey(key), key)


async def google_target(config: Config, credentials: Credentials | None = None) -> UpstreamTarget:
    """The upstream for configured credentials: the API key, or Vertex AI's ADC (or given ones).

    Raises:
        UpstreamUnavailable: Vertex AI is configured but no credentials can be found.
    """
    if credentials is None:
        if config.api_key:
            credentials = ApiKey(config.api_key)
        elif config.project_id:
            credentials = await GoogleAuth.from_environment()
        else:
            credentials = NoCredentials()
    return target_for(config, upstream_url(config), credentials, config.api_key or "")


async def run_emulator(
    key: str,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the built-in emulator, accepting ``key``, until ``scope`` is cancelled; reports its
    URL."""
    from liveproxy.emulator import EmulatorConfig, serve

    with scope:
        async with trio.open_nursery() as nursery:
            emulator = await nursery.start(
                serve, EmulatorConfig(api_keys=(key,), port=0, record_messages=False)
            )
            task_status.started(emulator.url)
