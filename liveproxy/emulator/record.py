"""What the emulator observed about one connection, for tests and logs."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import trio

from liveproxy.emulator.config import Faults
from liveproxy.emulator.endings import EndedBy
from liveproxy.emulator.store import SessionState

CredentialKind = Literal["api_key", "bearer", "token", "access_token"]
Api = Literal["developer", "vertex"]


@attrs.frozen
class IssuedHandle:
    """A resumption handle a connection sent: it stands for the conversation after the client
    message ``last_consumed`` of that connection, with ``turns`` model turns done."""

    handle: str
    last_consumed: int
    turns: int


@attrs.define(eq=False)
class ConnectionRecord:
    """One accepted TCP connection, filled in as the connection goes.

    ``received`` holds ``(kind, camelCase body)`` of every client message after ``setup``, and
    ``sent`` every server message, unless ``EmulatorConfig.record_messages`` is off; in echo
    mode the audio messages and their echoes are only counted. The counters are always exact.

    Client messages are numbered per connection: ``setup`` is 0, the n-th message after it is n
    (``received[n - 1]``). ``consumed`` is the number of the last one the conversation has
    processed; ``issued`` lists the resumption handles sent, each with the number of the last
    message it includes (what ``lastConsumedClientMessageIndex`` says, when ``transparent``).
    A connection that resumed a handle has it in ``resumed_handle``, and in ``resumed_after``
    that handle's ``last_consumed`` (numbered on the connection that issued it).
    ``conversation`` is the conversation itself, live (None until the setup is accepted): the
    turns, tokens and input it has heard, across every connection it has been on.
    """

    faults: Faults = attrs.field(factory=Faults)
    path: str = ""
    query: dict[str, str] = attrs.Factory(dict)
    headers: dict[str, str] = attrs.Factory(dict)
    credential: str | None = None
    credential_kind: CredentialKind | None = None
    api: Api | None = None
    api_version: str = ""
    method: str = ""
    setup: dict[str, Any] | None = None
    model: str | None = None
    session_id: str = ""
    resumed_handle: str | None = None
    resumed_after: int | None = None
    transparent: bool = False
    conversation: SessionState | None = None
    consumed: int = 0
    issued: list[IssuedHandle] = attrs.Factory(list)
    received: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    received_count: int = 0
    sent: list[dict[str, Any]] = attrs.Factory(list)
    sent_count: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    ended_by: EndedBy | None = None
    closed: trio.Event = attrs.Factory(trio.Event)
    #: A REST call (``POST /v1alpha/auth_tokens``), not a Live connection: it leaves
    #: ``Emulator.connections`` when it closes.
    rest: bool = False
    #: The ephemeral token that opened this connection, when one did.
    token: str | None = None

    async def wait_closed(self) -> None:
        """Wait until the connection is over and its TCP stream is closed."""
        await self.closed.wait()
