"""A validator for Google's protobuf-JSON messages: the machinery behind the Gemini Live schema.

Google parses client messages as protobuf JSON: every field may be spelled in snake_case or
lowerCamelCase, unknown names and ill-typed values are refused with a close 1007 whose reason
names the field in snake_case (``Unknown name "x" at 'setup.generation_config'``). The free-form
``Struct`` payloads (function parameters, call args, function responses) are user data: their keys
are neither validated nor renamed, only their depth is bounded (:data:`MAX_DEPTH`).

This module holds the field and message types, :func:`declare` to build message types, and
:func:`normalise` / :func:`parse_oneof`, which return a camelCase copy of a valid value or raise
:class:`SchemaError` with Google's reason text. Gemini Live's own messages are declared in
:mod:`liveproxy.protocol.gemini_messages`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs
import orjson

from liveproxy.protocol.b64 import decode_b64
from liveproxy.protocol.casing import to_camel, to_snake
from liveproxy.protocol.closes import INVALID_ARGUMENT

#: How deep a message body may nest: objects and arrays, the body itself being level 1 (so a
#: whole client message, ``{"setup": body}``, is at most one level deeper). Real setups and tool
#: schemas are far shallower; the bound keeps every later walk of a body (``orjson.dumps`` stops
#: at 254 levels, a recursive reader at Python's recursion limit) safe.
MAX_DEPTH: Final = 64


class Scalar(enum.Enum):
    """Leaf value kinds, named after protobuf's types as Google names them in error reasons."""

    STRING = "TYPE_STRING"
    INT32 = "TYPE_INT32"
    INT64 = "TYPE_INT64"
    FLOAT = "TYPE_FLOAT"
    BOOL = "TYPE_BOOL"
    BYTES = "TYPE_BYTES"
    DURATION = "type.googleapis.com/google.protobuf.Duration"
    STRUCT = "type.googleapis.com/google.protobuf.Struct"
    VALUE = "type.googleapis.com/google.protobuf.Value"


@attrs.frozen
class Enum:
    """An enum field; ``values`` empty means any name is accepted."""

    name: str
    values: frozenset[str] = frozenset()


@attrs.frozen(eq=False)
class Message:
    """A message type; ``fields`` is a thunk so message types can refer to each other.

    Compared and hashed by identity: two message types may share a name (protos nest), each keeps
    its own fields.
    """

    name: str
    _fields: Callable[[], Mapping[str, Field]] = attrs.field(repr=False)

    @property
    def fields(self) -> Mapping[str, Field]:
        return _resolved(self)


FieldType: TypeAlias = Scalar | Enum | Message


@attrs.frozen
class Field:
    type: FieldType
    repeated: bool = False


#: Each message type's fields, built on first use; keyed by the message type itself (identity).
_RESOLVED: dict[Message, Mapping[str, Field]] = {}


def _resolved(message: Message) -> Mapping[str, Field]:
    fields = _RESOLVED.get(message)
    if fields is None:
        fields = _RESOLVED[message] = message._fields()
    return fields


def repeated(type_: FieldType) -> Field:
    """A repeated field of ``type_`` (a JSON array)."""
    return Field(type_, repeated=True)


def declare(name: str, build: Callable[[], Mapping[str, FieldType | Field]]) -> Message:
    """A message type named ``name``; ``build`` returns its fields (camelCase) when first needed.

    A field given as a bare type is a singular field of that type.
    """

    def fields() -> Mapping[str, Field]:
        return {k: v if isinstance(v, Field) else Field(v) for k, v in build().items()}

    return Message(name, fields)


@attrs.define(eq=False)
class SchemaError(Exception):
    """A client message Google would refuse; ``reason`` is Google's close reason (code 1007)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


#: The most of a client's field name (or value) an error reason repeats.
MAX_SHOWN_CHARS: Final = 64


def shown(text: str) -> str:
    """A client's ``text`` as an error reason repeats it: at most :data:`MAX_SHOWN_CHARS`
    characters (Google's close reasons are cut at 123 bytes anyway)."""
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return text[:MAX_SHOWN_CHARS] + "..."


def _unknown(key: str, path: str) -> SchemaError:
    where = f" at '{path}'" if path else ""
    return SchemaError(
        f'Invalid JSON payload received. Unknown name "{shown(key)}"{where}: Cannot find field.'
    )


def _too_deep(path: str) -> SchemaError:
    # The limit before the path: Google's close reasons are cut to 123 bytes.
    return SchemaError(
        f"Invalid JSON payload received. Value nested deeper than {MAX_DEPTH} levels at '{path}'."
    )


def _check_depth(value: Any, depth: int, path: str) -> None:
    """Refuse ``value``, itself at level ``depth``, if it nests deeper than :data:`MAX_DEPTH`.

    Free-form values are user data of any shape: walked with an explicit stack, never recursion.
    """
    if not isinstance(value, dict | list):
        return
    pending: list[tuple[Any, int]] = [(value, depth)]
    while pending:
        item, level = pending.pop()
        if level > MAX_DEPTH:
            raise _too_deep(path)
        level += 1
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                pending.append((child, level))


def _invalid(path: str, type_name: str, value: Any, depth: int) -> SchemaError:
    _check_depth(value, depth, path)  # before orjson.dumps, which raises past 254 levels
    text = orjson.dumps(value).decode() if not isinstance(value, str) else f'"{value}"'
    if len(text) > 40:
        text = text[:40] + "..."
    return SchemaError(f"Invalid value at '{path}' ({type_name}), {text}")


#: The bit widths of protobuf's integers, whose JSON values out of range Google refuses.
_INT_BITS: Final = {Scalar.INT32: 32, Scalar.INT64: 64}


def _is_integral(value: Any, bits: int) -> bool:
    """Whether ``value`` is a JSON integer (a number or, as proto3 JSON writes int64, a decimal
    string) that fits in a signed integer of ``bits``."""
    number: int
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            return False
        number = int(value)
    elif isinstance(value, str) and len(value) <= 24:
        try:
            number = int(value)
        except ValueError:
            return False
    else:
        return False
    limit = 1 << (bits - 1)
    return -limit <= number < limit


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _is_duration(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("s") and _is_number(value[:-1])


def _check_scalar(kind: Scalar, value: Any, path: str, depth: int) -> Any:
    ok: bool
    if kind is Scalar.STRING:
        ok = isinstance(value, str)
    elif kind in _INT_BITS:
        ok = _is_integral(value, _INT_BITS[kind])
    elif kind is Scalar.FLOAT:
        ok = _is_number(value)
    elif kind is Scalar.BOOL:
        ok = isinstance(value, bool)
    elif kind is Scalar.BYTES:
        ok = isinstance(value, str)
        if ok:
            try:
                decode_b64(value)
            except ValueError:
                ok = False
    elif kind is Scalar.DURATION:
        ok = _is_duration(value)
    elif kind is Scalar.STRUCT:
        ok = isinstance(value, dict)
        if ok:
            _check_depth(value, depth, path)
    else:  # VALUE: any JSON
        ok = True
        _check_depth(value, depth, path)
    if not ok:
        raise _invalid(path, kind.value, value, depth)
    return value


def _check_enum(enum_: Enum, value: Any, path: str, depth: int) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (not enum_.values or value in enum_.values):
        return value
    raise _invalid(path, enum_.name, value, depth)


def _check_single(type_: FieldType, value: Any, path: str, depth: int) -> Any:
    if isinstance(type_, Message):
        return normalise(type_, value, path, depth)
    if isinstance(type_, Enum):
        return _check_enum(type_, value, path, depth)
    return _check_scalar(type_, value, path, depth)


def normalise(message: Message, value: Any, path: str, depth: int = 1) -> dict[str, Any]:
    """Validate ``value`` as ``message`` and return a copy with camelCase keys.

    ``depth`` is the level of ``value`` itself (1 for a message body), counted towards
    :data:`MAX_DEPTH`.

    Raises:
        SchemaError: an unknown field, a value of the wrong type, a field given twice, or a
            value nested deeper than :data:`MAX_DEPTH` levels.
    """
    if not isinstance(value, dict):
        raise _invalid(path, message.name, value, depth)
    if depth > MAX_DEPTH:
        raise _too_deep(path)
    fields = message.fields
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = to_camel(key)
        field = fields.get(name)
        if field is None:
            raise _unknown(key, path)
        if name in out:
            raise SchemaError(
                f"Invalid JSON payload received. Field '{path}.{to_snake(name)}' is set twice."
            )
        child = f"{path}.{to_snake(name)}" if path else to_snake(name)
        if field.repeated:
            if not isinstance(item, list):
                raise _invalid(child, "repeated", item, depth + 1)
            if depth >= MAX_DEPTH:
                raise _too_deep(child)
            level = depth + 2
            out[name] = [
                _check_single(field.type, x, f"{child}[{i}]", level) for i, x in enumerate(item)
            ]
        else:
            out[name] = _check_single(field.type, item, child, depth + 1)
    return out


def parse_oneof(root: Message, oneof: str, message: Any) -> tuple[str, dict[str, Any]]:
    """Check a message that sets exactly one field of ``root`` (its ``oneof`` named ``oneof``).

    Returns the field's camelCase name and its normalised value, whose levels are counted from 1
    (the wrapping object is not counted).

    Raises:
        SchemaError: not an object, not exactly one known top-level key, or an invalid body.
    """
    if not isinstance(message, dict):
        raise SchemaError("Invalid JSON payload received. Expected an object.")
    if not message:
        raise SchemaError(INVALID_ARGUMENT)
    kinds = root.fields
    kind = ""
    for key in message:
        name = to_camel(key)
        if name not in kinds:
            raise _unknown(key, "")
        if kind:
            raise SchemaError(
                f"Invalid JSON payload received. Oneof field '{oneof}' is already set. "
                f"Cannot set '{name}'"
            )
        kind = name
    (body,) = message.values()
    body_type = kinds[kind].type
    assert isinstance(body_type, Message)
    return kind, normalise(body_type, body, to_snake(kind))
