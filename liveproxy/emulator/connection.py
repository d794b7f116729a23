"""One accepted WebSocket, from the setup message to its ending.

The connection runs in one nursery: the lifetime timer and the session (the reader, plus the
conversation and its speaker in conversation mode). Whichever task ends the connection raises
an :class:`~liveproxy.emulator.endings.Ending`; :meth:`Connection.run` catches it, once, and
performs it (close frame, dropped TCP, or nothing when the client already went).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import attrs
import trio

from liveproxy.emulator import messages
from liveproxy.emulator.auth import refusal
from liveproxy.emulator.catalog import ModelCatalog
from liveproxy.emulator.config import EmulatorConfig, Faults
from liveproxy.emulator.conversation import Conversation, run_conversation
from liveproxy.emulator.decode import ClientMessage, decode_client
from liveproxy.emulator.endings import Close, Drop, Ending, PeerGone
from liveproxy.emulator.lifetime import Lifetime
from liveproxy.emulator.options import SessionOptions, read_setup
from liveproxy.emulator.pending import Pending
from liveproxy.emulator.record import ConnectionRecord
from liveproxy.emulator.routes import Route
from liveproxy.emulator.speaker import Speaker
from liveproxy.emulator.store import Checkpoint, HandleStore, SessionState, new_session_id
from liveproxy.emulator.tokens import TokenBook
from liveproxy.emulator.transport import Transport
from liveproxy.protocol.closes import (
    ABNORMAL,
    INTERNAL,
    INVALID_ARGUMENT,
    INVALID_PAYLOAD,
    MEDIA_CHUNKS_DEPRECATED,
    POLICY,
    SESSION_NOT_FOUND,
    truncate_reason,
)

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Internal error encountered."
#: Client messages buffered between the reader and the conversation.
INPUT_QUEUE = 16

Dispatch = Callable[[ClientMessage], Awaitable[None]]


@attrs.frozen
class Shared:
    """What all connections of one emulator share."""

    config: EmulatorConfig
    store: HandleStore
    models: ModelCatalog
    #: Minted ephemeral tokens, and the wall clock they are judged by.
    tokens: TokenBook = attrs.Factory(TokenBook)
    wall_time: Callable[[], float] = time.time


def _first(group: BaseExceptionGroup[Ending]) -> Ending:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, Ending)
    return leaf


class Connection:
    """The Live API session on one accepted WebSocket."""

    def __init__(
        self, transport: Transport, record: ConnectionRecord, route: Route, shared: Shared
    ) -> None:
        self._transport = transport
        self._record = record
        self._route = route
        self._config = shared.config
        self._store = shared.store
        self._models = shared.models
        self._tokens = shared.tokens
        self._wall_time = shared.wall_time
        self._faults: Faults = record.faults
        self._echo = shared.config.mode == "echo"
        self._ready = trio.Event()
        self._lifetime = Lifetime(
            shared.config.lifetime_seconds, shared.config.go_away_lead_seconds
        )
        self._count = 0

    async def run(self) -> None:
        """Serve until the connection ends, then end it and note how in the record.

        Never raises but ``Cancelled``: a failure of the emulator itself is logged and the
        client gets close 1011 "Internal error encountered.".
        """
        ending: Ending = Close(INTERNAL, INTERNAL_ERROR)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._lifetime.run, self._transport, self._ready)
                await self._serve()
        except* Ending as group:
            ending = _first(group)
        except* Exception:
            logger.exception("emulator connection to %s failed", self._record.path)
            ending = Close(INTERNAL, INTERNAL_ERROR)
        await self._end(ending)

    async def _end(self, ending: Ending) -> None:
        record = self._record
        if isinstance(ending, Close):
            record.close_code, record.close_reason = ending.code, truncate_reason(ending.reason)
            record.ended_by = "server"
            await self._transport.close(ending.code, ending.reason)
        elif isinstance(ending, Drop):
            record.close_code, record.ended_by = ABNORMAL, "dropped"
            await self._transport.drop()
        elif isinstance(ending, PeerGone):
            record.close_code, record.close_reason = ending.code, ending.reason
            record.ended_by = ending.ended_by
        logger.info(
            "connection %s (%s) ended by %s: %s %s",
            record.session_id or "-",
            record.model or "no model",
            record.ended_by,
            record.close_code,
            record.close_reason or "",
        )

    async def _serve(self) -> NoReturn:
        """Check the credential and the setup, answer it, then read until the end.

        Raises:
            Ending: always, eventually.
        """
        frame = await self._transport.receive()
        credential = self._record.credential
        kind = self._record.credential_kind
        found = (credential, kind) if credential is not None and kind is not None else None
        refused = refusal(found, self._route, self._config.api_keys, self._tokens)
        if refused is not None:
            raise refused
        first = decode_client(frame)
        if first.kind != "setup":
            raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
        setup = first.body
        if found is not None and found[0] in self._tokens:
            setup = self._spend_token(found[0], setup)
        self._record.setup = setup
        self._record.model = setup.get("model")
        options = read_setup(
            setup,
            api=self._route.api,
            api_version=self._route.api_version,
            models=self._models,
        )
        checkpoint = self._resume(options)
        state = checkpoint.state
        if self._faults.setup_complete_delay:
            await trio.sleep(self._faults.setup_complete_delay)
        if not self._faults.withhold_setup_complete:
            vertex = self._route.api == "vertex"
            await self._transport.send(
                messages.setup_complete(state.session_id if vertex else None)
            )
            self._ready.set()
        await self._apply_faults()
        if self._faults.withhold_setup_complete:
            await self._read(_ignore)
        if self._echo:
            await self._read(self._echo_audio)
        await self._converse(options, checkpoint)

    def _spend_token(self, name: str, setup: dict[str, Any]) -> dict[str, Any]:
        """The client's ``setup`` under the ephemeral token ``name``'s locks; the token's use
        is spent (unless the setup resumes) and the session ends at its ``expireTime``.

        Raises:
            Close: 1007 "Missing or malformed auth token": expired or spent.
        """
        resumption = setup.get("sessionResumption")
        resuming = isinstance(resumption, dict) and bool(resumption.get("handle"))
        now = self._wall_time()
        token = self._tokens.admit(name, now, resuming=resuming)
        self._record.token = name
        self._lifetime.end_by(trio.current_time() + token.request.expire_at - now)
        return token.locked(setup)

    def _resume(self, options: SessionOptions) -> Checkpoint:
        """The conversation this connection continues: the one its handle stands for, or a
        new one.

        Raises:
            Close: 1008 "BidiGenerateContent session not found" for an unknown or expired
                handle.
        """
        record = self._record
        if options.handle is None:
            checkpoint = Checkpoint(SessionState(new_session_id()), Pending(), 0)
        else:
            resumed = self._store.resume(options.handle)
            if resumed is None:
                raise Close(POLICY, SESSION_NOT_FOUND)
            checkpoint = resumed
            record.resumed_handle = options.handle
            record.resumed_after = resumed.last_consumed
        record.session_id = checkpoint.state.session_id
        record.conversation = checkpoint.state
        record.transparent = options.transparent
        return checkpoint

    async def _converse(self, options: SessionOptions, checkpoint: Checkpoint) -> NoReturn:
        conversation = Conversation(options, checkpoint.state, checkpoint.pending)
        speaker = Speaker(
            self._transport,
            options,
            checkpoint.state,
            self._store,
            realtime=self._config.speed == "realtime",
            vertex=self._route.api == "vertex",
            checkpoint=conversation.checkpoint,
            owes=conversation.owes,
            record=self._record,
        )
        send, receive = trio.open_memory_channel[ClientMessage](INPUT_QUEUE)

        async def to_conversation(message: ClientMessage) -> None:
            try:
                await send.send(message)
            except trio.BrokenResourceError:  # the conversation has ended the connection: its
                await trio.sleep_forever()  # Ending is on its way to cancel this reader

        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_conversation, conversation, speaker, receive, self._note_consumed
            )
            with send:
                await self._read(to_conversation)

    def _note_consumed(self, index: int) -> None:
        self._record.consumed = index

    async def _read(self, dispatch: Dispatch) -> NoReturn:
        """Receive, validate, record and dispatch client messages, applying the faults."""
        while True:
            message = decode_client(await self._transport.receive())
            self._note(message)
            if message.kind == "setup":
                raise Close(INVALID_PAYLOAD, INVALID_ARGUMENT)
            if message.kind == "realtimeInput" and "mediaChunks" in message.body:
                raise Close(INVALID_PAYLOAD, MEDIA_CHUNKS_DEPRECATED)
            self._count += 1
            await self._apply_faults()
            await dispatch(message)

    def _note(self, message: ClientMessage) -> None:
        record = self._record
        record.received_count += 1
        if self._config.record_messages and not (self._echo and message.audio is not None):
            record.received.append((message.kind, message.body))

    async def _apply_faults(self) -> None:
        """Fire the ``*_after`` faults due at the current message count."""
        faults, count = self._faults, self._count
        if faults.malformed_after == count:
            await self._transport.send_malformed()
        if faults.go_away_after == count:
            self._lifetime.go_away_now()
        if faults.close_after == count:
            raise Close(faults.close_code, faults.close_reason)
        if faults.drop_after == count:
            raise Drop()
        if faults.stall_after == count:
            self._transport.stall()
            await trio.sleep_forever()

    async def _echo_audio(self, message: ClientMessage) -> None:
        if message.audio is not None:
            await self._transport.send(messages.model_audio(message.audio), keep=False)


async def _ignore(_message: ClientMessage) -> None:
    """Withheld setupComplete: client messages are recorded but not answered."""
