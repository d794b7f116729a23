"""The resume lifecycle: a conversation kept when its socket ends, taken back by a new sign-in.

A socket whose session ends resumably (the browser left, the server drains) leaves its
conversation in the state store for ``RESUME_WINDOW_SECONDS`` under the socket's resume token
(:func:`keep`); ``POST /api/auth {"resume"}`` takes it back (:func:`take`), and puts it back
until its own expiry when the sign-in is then refused (:func:`put_back`); the new socket's
session continues it (:func:`continued`). Only the same page (``Origin``) and, when sign-in is
on, the same user may take a conversation back (:func:`resume_client`).
"""

from __future__ import annotations

import logging

from liveproxy.core.resumable import Resumable
from liveproxy.logs import fields
from liveproxy.store import Conversation, Grant, StateStore, StoreUnavailable
from liveproxy.web.responses import Refusal, state_unavailable

log = logging.getLogger("liveproxy")

NOT_FOUND = Refusal(
    404, "resume_not_found", "no conversation to resume for this token (unknown, used or expired)"
)


def resume_client(client: str) -> str:
    """Who may resume a conversation besides its origin: a signed-in client (``sub:...``) must
    be the same; an address is not checked (a phone moving from Wi-Fi to mobile data changes
    it, and that is when a conversation most needs resuming)."""
    return client if client.startswith("sub:") else ""


async def take(
    store: StateStore, token: str, origin: str | None, client: str
) -> tuple[Conversation, Resumable]:
    """The conversation kept under ``token`` for this page and client, taken (single use).

    Raises:
        Refusal: 404 ``resume_not_found`` (unknown, used, expired, another page's, or a stored
            state that cannot be read), 503 ``state_unavailable``.
    """
    try:
        conversation = await store.take_conversation(token, origin, resume_client(client))
    except StoreUnavailable:
        log.warning("state store unreachable: no conversation resumed")
        raise state_unavailable() from None
    if conversation is None:
        raise NOT_FOUND
    try:
        return conversation, Resumable.from_json(conversation.state)
    except ValueError:
        log.warning("a kept conversation's state is unreadable: it cannot be resumed")
        raise NOT_FOUND from None


async def put_back(store: StateStore, token: str, conversation: Conversation) -> None:
    """Keep a conversation taken for a resume that was refused, until its own expiry."""
    try:
        await store.return_conversation(token, conversation)
    except StoreUnavailable:
        log.warning("state store unreachable: a refused resume's conversation is lost")


def continued(grant: Grant) -> Resumable | None:
    """The conversation a spent token's grant continues (None: a new one, or a stored state
    that cannot be read, which then starts anew rather than fail)."""
    if grant.resume is None:
        return None
    try:
        return Resumable.from_json(grant.resume)
    except ValueError:
        log.warning("a resumed conversation's stored state is unreadable: starting anew")
        return None


async def keep(
    store: StateStore, resumable: Resumable | None, token: str, grant: Grant, window: float
) -> None:
    """Keep the conversation for a new socket, for ``window`` seconds, under ``token`` (only
    the same origin, and the same signed-in client, may take it back)."""
    if resumable is None:
        return
    encoded = resumable.to_json()
    if encoded is None:
        log.info("conversation %s not kept: its state is too large", resumable.conversation_id)
        return
    conversation = Conversation(grant.origin, resume_client(grant.client), encoded)
    try:
        await store.keep_conversation(token, conversation, window)
    except StoreUnavailable:
        log.warning("state store unreachable: a conversation could not be kept for resuming")
        return
    log.info(
        "conversation %s resumable for %gs",
        resumable.conversation_id,
        window,
        extra=fields(
            "conversation_kept",
            conversation_id=resumable.conversation_id,
            remaining_seconds=resumable.remaining_seconds,
        ),
    )
