"""The ``ADMIN_BIND`` listener: the operator's view (:class:`~liveproxy.web.admin_app.AdminApp`)
served by Hypercorn, one per host (the supervisor with ``WORKERS`` > 1, else the server itself).

It has the metrics listener's bounds (:func:`~liveproxy.serving.metrics_listener.
metrics_hypercorn_config`): HTTP/1.1 only, a small request head that must arrive quickly,
silent connections closed, clients that stop reading dropped.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import cast

import hypercorn.trio
import trio
from hypercorn.typing import ASGIFramework

from liveproxy.config import Config
from liveproxy.serving import hypercorn_fixes
from liveproxy.serving.metrics_listener import metrics_hypercorn_config
from liveproxy.store import StateStore
from liveproxy.web.admin_app import AdminApp

log = logging.getLogger("liveproxy.admin")


async def serve_admin(
    config: Config,
    store: StateStore,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the operator's view of ``store`` on ``config.admin_bind`` (port 0 picks one) until
    cancelled; logs and reports its URL.

    Raises:
        ExceptionGroup: holding the ``OSError`` when the address cannot be listened on.
    """
    # Both checked by Config.from_env.
    assert config.admin_bind is not None
    assert config.admin_token is not None
    hypercorn_fixes.install()
    app = cast(ASGIFramework, AdminApp(store, config.admin_token, config.usage_retention_days))
    hconfig = metrics_hypercorn_config(config.admin_bind)
    hconfig.errorlog = logging.getLogger("liveproxy.admin.hypercorn")
    hconfig.errorlog.setLevel(logging.WARNING)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, hconfig, mode="asgi"))
        log.info("operator's view on %s", binds[0])
        task_status.started(binds[0])
