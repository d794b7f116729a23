"""JSON <-> attrs models, with one cattrs converter; every decode failure is one exception type.

The converter is strict where the API is: a string field takes only a JSON string and an integer
field only a JSON integer (``true`` and ``"5"`` are refused), so a bad body gets a clear error
instead of a silent coercion.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs
import orjson
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter as make_orjson_converter

from liveproxy.contract.errors import BadMessage
from liveproxy.contract.payloads import (
    AuthRequest,
    BotCheckInfo,
    BrowserInput,
    EphemeralRequest,
    ErrorEvent,
    ModelInfo,
    SessionEnd,
    Status,
)
from liveproxy.protocol.casing import to_snake
from liveproxy.protocol.schema import shown

T = TypeVar("T")


class DecodeError(ValueError):
    """A JSON document that does not match its model; the message says what is wrong."""


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {orjson.dumps(value).decode()[:40]}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {orjson.dumps(value).decode()[:40]}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {orjson.dumps(value).decode()[:40]}")
    return value


def make_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """A converter of JSON values to attrs models (orjson preconf) with strict scalars: a field
    takes only its own JSON type (``true`` is no integer, ``"5"`` no number); with
    ``forbid_extra_keys``, an unknown key is an error too."""
    converter = make_orjson_converter(forbid_extra_keys=forbid_extra_keys)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    return converter


CONVERTER = make_converter()
#: ``/api/status``'s model entries are camelCase on the wire, as every proxy-sent object but
#: the ``stats`` of ``sessionEnd``/``error``.
CONVERTER.register_unstructure_hook(
    ModelInfo,
    make_dict_unstructure_fn(
        ModelInfo,
        CONVERTER,
        thinking_levels=override(rename="thinkingLevels"),
        interaction_status=override(rename="interactionStatus"),
    ),
)
CONVERTER.register_unstructure_hook(
    BotCheckInfo,
    make_dict_unstructure_fn(BotCheckInfo, CONVERTER, site_key=override(rename="siteKey")),
)
CONVERTER.register_unstructure_hook(
    Status, make_dict_unstructure_fn(Status, CONVERTER, bot_check=override(rename="botCheck"))
)


def structure(data: Any, cls: type[T]) -> T:
    """Structure decoded JSON into ``cls``.

    Raises:
        DecodeError: a missing or ill-typed field, or an unknown ``type`` tag.
    """
    try:
        return CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc))
        elif isinstance(exc, KeyError):
            detail = f"unknown value {shown(str(exc))}"
        else:
            detail = str(exc)
        raise DecodeError(detail) from None


def to_json(obj: Any) -> bytes:
    """Serialise an attrs model (or plain JSON data) with orjson; None fields are kept."""
    return orjson.dumps(CONVERTER.unstructure(obj))


#: Resume tokens are 43 characters; anything much longer is not one.
MAX_RESUME_TOKEN_CHARS = 256
#: A bot check's token (Turnstile's are at most 2048 characters; reCAPTCHA's a few KiB).
MAX_BOT_TOKEN_CHARS = 4096


#: The largest ``ephemeral.config`` taken, as JSON.
MAX_EPHEMERAL_CONFIG_BYTES = 16 * 1024
#: The longest ``ephemeral.model`` taken.
MAX_MODEL_CHARS = 256
#: At most this many ``lock_additional_fields``, each at most :data:`MAX_FIELD_CHARS` long.
MAX_LOCKED_FIELDS = 32
MAX_FIELD_CHARS = 64
#: The most sessions one ephemeral token may start (``uses``; 0 is unlimited until its TTL).
MAX_EPHEMERAL_USES = 1000
_EPHEMERAL_KEYS = frozenset({"model", "config", "lock_additional_fields", "uses", "expire_seconds"})


def decode_auth_request(body: bytes) -> AuthRequest:
    """Parse the optional ``POST /api/auth`` body (none, empty, or a JSON object).

    Raises:
        DecodeError: not JSON, not an object, ``session_duration`` not an integer,
            ``resume`` not a short string, the bot token (``recaptcha_token`` or ``bot_token``,
            not both) not a string of at most 4096 characters, or an ``ephemeral`` object out of
            its bounds (see :func:`decode_ephemeral`).
    """
    if not body.strip():
        return AuthRequest()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise DecodeError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise DecodeError("the body must be a JSON object")
    data = {to_snake(k): v for k, v in data.items()}
    resume = data.get("resume")
    if resume is not None and (
        not isinstance(resume, str) or not 0 < len(resume) <= MAX_RESUME_TOKEN_CHARS
    ):
        raise DecodeError("resume must be the token of a sessionResumable message")
    bot_token = _bot_token(data)
    ephemeral = None
    if data.get("ephemeral") is not None:
        if resume is not None:
            raise DecodeError("ephemeral and resume cannot be asked for together")
        ephemeral = decode_ephemeral(data["ephemeral"])
    if data.get("session_duration") is None:
        return AuthRequest(resume=resume, bot_token=bot_token, ephemeral=ephemeral)
    try:
        request = structure({"session_duration": data["session_duration"]}, AuthRequest)
    except DecodeError:
        raise DecodeError("session_duration must be an integer number of seconds") from None
    return AuthRequest(
        request.session_duration, resume=resume, bot_token=bot_token, ephemeral=ephemeral
    )


def _bot_token(data: dict[str, Any]) -> str | None:
    """``recaptcha_token`` (the seed app's name) or ``bot_token``; None when neither is given."""
    given = [data[name] for name in ("recaptcha_token", "bot_token") if data.get(name) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise DecodeError("send one of recaptcha_token and bot_token, not both")
    token = given[0]
    if not isinstance(token, str) or not 0 < len(token) <= MAX_BOT_TOKEN_CHARS:
        raise DecodeError(
            f"the bot token must be a string of 1 to {MAX_BOT_TOKEN_CHARS} characters"
        )
    return token


def decode_ephemeral(value: Any) -> EphemeralRequest:
    """Parse ``POST /api/auth``'s ``ephemeral`` object (keys in either casing, all optional).

    Raises:
        DecodeError: not an object; an unknown key; ``model`` not a string of 1 to 256
            characters; ``config`` not an object or over 16 KiB as JSON;
            ``lock_additional_fields`` not a list of at most 32 short strings; ``uses`` not an
            integer from 0 (unlimited) to 1000; ``expire_seconds`` not an integer.
    """
    if not isinstance(value, dict):
        raise DecodeError("ephemeral must be a JSON object")
    fields = {to_snake(k): v for k, v in value.items()}
    unknown = sorted(set(fields) - _EPHEMERAL_KEYS)
    if unknown:
        raise DecodeError(f"ephemeral has an unknown field {shown(unknown[0])!r}")
    model = fields.get("model")
    if model is not None and not (isinstance(model, str) and 0 < len(model) <= MAX_MODEL_CHARS):
        raise DecodeError(f"ephemeral.model must be a model's name (1 to {MAX_MODEL_CHARS} chars)")
    config = fields.get("config")
    if config is not None:
        if not isinstance(config, dict):
            raise DecodeError("ephemeral.config must be a JSON object (a Gemini setup)")
        if len(orjson.dumps(config)) > MAX_EPHEMERAL_CONFIG_BYTES:
            raise DecodeError(
                f"ephemeral.config must be at most {MAX_EPHEMERAL_CONFIG_BYTES} bytes of JSON"
            )
    locked = fields.get("lock_additional_fields")
    if locked is not None and not (
        isinstance(locked, list)
        and len(locked) <= MAX_LOCKED_FIELDS
        and all(isinstance(f, str) and 0 < len(f) <= MAX_FIELD_CHARS for f in locked)
    ):
        raise DecodeError(
            f"ephemeral.lock_additional_fields must be a list of at most {MAX_LOCKED_FIELDS}"
            " field names"
        )
    uses = fields.get("uses", 1)
    if isinstance(uses, bool) or not isinstance(uses, int) or not 0 <= uses <= MAX_EPHEMERAL_USES:
        raise DecodeError(
            f"ephemeral.uses must be an integer from 0 (unlimited) to {MAX_EPHEMERAL_USES}"
        )
    expire = fields.get("expire_seconds")
    if expire is not None and (isinstance(expire, bool) or not isinstance(expire, int)):
        raise DecodeError("ephemeral.expire_seconds must be an integer number of seconds")
    return EphemeralRequest(
        model=model,
        config=config,
        lock_additional_fields=None if locked is None else tuple(locked),
        uses=uses,
        expire_seconds=expire,
    )


def decode_browser_input(data: dict[str, Any]) -> BrowserInput:
    """Structure a ``{"type": ...}`` browser message (keys in snake_case or camelCase).

    Raises:
        BadMessage: unknown ``type`` or a missing/ill-typed field.
    """
    snake = {to_snake(k): v for k, v in data.items()}
    try:
        return structure(snake, BrowserInput)  # type: ignore[arg-type]
    except DecodeError as exc:
        kind = data.get("type")
        if not isinstance(kind, str):
            kind_name = type(kind).__name__
            raise BadMessage(f'a message\'s "type" must be a string, not {kind_name}') from None
        raise BadMessage(f"invalid {shown(kind)!r} message: {exc}") from None


def encode_session_end(event: SessionEnd) -> str:
    """``{"sessionEnd": {"reason": ..., "stats": {...snake_case...}}}``."""
    return orjson.dumps({"sessionEnd": CONVERTER.unstructure(event)}).decode()


def encode_session_resumable(token: str, expires_in: float) -> str:
    """``{"sessionResumable": {"token": ..., "expiresIn": <whole seconds>}}``."""
    return orjson.dumps(
        {"sessionResumable": {"token": token, "expiresIn": round(expires_in)}}
    ).decode()


def encode_error(event: ErrorEvent) -> str:
    """``{"error": {"code", "message", "stats": {...snake_case...}}}``."""
    return orjson.dumps({"error": CONVERTER.unstructure(event)}).decode()
