"""The emulator's settings and the faults it can inject, as frozen attrs values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from liveproxy.protocol.closes import INTERNAL, RESERVED

Speed = Literal["realtime", "fast"]
Mode = Literal["conversation", "echo"]


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _optional_count(
    _inst: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0 or None, got {value}")


def _close_code(_inst: object, _attribute: attrs.Attribute[int], value: int) -> None:
    if not 1000 <= value <= 4999 or value in RESERVED:
        raise ValueError(f"close_code {value} cannot be sent in a close frame")


@attrs.frozen
class Faults:
    """Misbehaviour injected into connections; all off by default.

    The ``*_after`` faults count the client messages received after ``setup``; they fire right
    after the N-th such message has been received and recorded (0: right after ``setupComplete``).
    The message that triggers ``close_after``, ``drop_after`` or ``stall_after`` is not answered;
    ``malformed_after`` and ``go_away_after`` let it be processed normally.
    """

    #: Refuse the HTTP upgrade with this status and a small JSON body like Google's errors.
    reject_status: int | None = None
    #: Accept TCP and read the upgrade request, but never answer it.
    hang_upgrade: bool = False
    #: Wait this long (trio time) before sending ``setupComplete``.
    setup_complete_delay: float = attrs.field(default=0.0, validator=_non_negative)
    #: Never send ``setupComplete``; keep reading (and recording) client messages.
    withhold_setup_complete: bool = False
    #: Close with ``close_code`` / ``close_reason`` after N client messages.
    close_after: int | None = attrs.field(default=None, validator=_optional_count)
    close_code: int = attrs.field(default=INTERNAL, validator=_close_code)
    close_reason: str = "Internal error encountered."
    #: Drop the TCP connection, without a close frame, after N client messages.
    drop_after: int | None = attrs.field(default=None, validator=_optional_count)
    #: Stop reading and sending after N client messages; the connection stays open until its
    #: lifetime ends, when it is dropped without a close frame.
    stall_after: int | None = attrs.field(default=None, validator=_optional_count)
    #: Send one frame that is not JSON after N client messages, then carry on.
    malformed_after: int | None = attrs.field(default=None, validator=_optional_count)
    #: Send ``goAway`` after N client messages (``timeLeft`` = the go-away lead) and close 1011
    #: when that time is up.
    go_away_after: int | None = attrs.field(default=None, validator=_optional_count)
    #: Send each turn's ``usageMetadata`` again, alone (empty ``serverContent``), right after
    #: its ``turnComplete``: the same turn reported twice, as some models do.
    repeat_usage: bool = False


def _names(values: str | Iterable[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def _optional_names(values: str | Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else _names(values)


@attrs.frozen
class EmulatorConfig:
    """How the emulator listens and behaves.

    ``api_keys`` empty accepts any credential (a request with none still gets Google's 1008
    unregistered-caller close).

    Models: with ``models`` None (the default) the emulator serves Google's Live models for the
    connection's backend (:data:`liveproxy.protocol.live_models.LIVE_MODELS`); a tuple serves
    exactly those names instead. ``extra_models`` (the command line's ``--model``) are served in
    addition, and ``any_model`` serves every well-formed name. An entry without a ``/`` matches
    ``models/<entry>`` and ``…/models/<entry>``. Anything else closes 1008 with Google's reason,
    and so does a model Google has shut down, whatever these say. A served model has the rules
    of :data:`~liveproxy.protocol.live_models.LIVE_MODELS` if it is there, none otherwise.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_keys: tuple[str, ...] = attrs.field(default=(), converter=_names)
    models: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_names)
    extra_models: tuple[str, ...] = attrs.field(default=(), converter=_names)
    any_model: bool = False
    speed: Speed = attrs.field(
        default="realtime", validator=attrs.validators.in_(("realtime", "fast"))
    )
    mode: Mode = attrs.field(
        default="conversation", validator=attrs.validators.in_(("conversation", "echo"))
    )
    lifetime_seconds: float = attrs.field(default=600.0, validator=attrs.validators.gt(0))
    go_away_lead_seconds: float = attrs.field(default=50.0, validator=_non_negative)
    handle_ttl_seconds: float = attrs.field(default=7200.0, validator=attrs.validators.gt(0))
    tls_cert: str | None = None
    tls_key: str | None = None
    send_binary: bool = True
    #: Keep every message in ``ConnectionRecord.received`` / ``.sent`` (counters are always kept),
    #: and the records of closed connections. The command line (and ``liveproxy serve``'s
    #: built-in emulator) turns this off so a long-running emulator does not grow without bound.
    record_messages: bool = True
    faults: Faults = Faults()

    def __attrs_post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
