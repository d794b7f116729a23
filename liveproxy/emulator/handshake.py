"""The HTTP side of a connection: what the upgrade request says, and refusing it like Google."""

from __future__ import annotations

import http

import orjson
from trio_websocket import WebSocketRequest

from liveproxy.emulator.auth import find_credential
from liveproxy.emulator.record import ConnectionRecord
from liveproxy.emulator.routes import Route, match_route, split_target

_GOOGLE_ERRORS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request is missing required authentication credential."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def read_request(request: WebSocketRequest, record: ConnectionRecord) -> Route | None:
    """Fill ``record`` from the upgrade request; return its route (None: not served)."""
    path, query = split_target(request.path)
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    record.path, record.query, record.headers = path, query, headers
    found = find_credential(headers, query)
    if found is not None:
        record.credential, record.credential_kind = found
    route = match_route(path)
    if route is not None:
        record.api, record.api_version, record.method = route.api, route.api_version, route.method
    return route


def error_body(status: int) -> bytes:
    """A JSON error body shaped like Google's: ``{"error": {"code", "message", "status"}}``."""
    name, message = _GOOGLE_ERRORS.get(status, ("UNKNOWN", _phrase(status)))
    return orjson.dumps({"error": {"code": status, "message": message, "status": name}})


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown error."


async def reject(request: WebSocketRequest, status: int) -> None:
    """Refuse the upgrade with ``status`` and a Google-style JSON body.

    Raises:
        trio_websocket.ConnectionClosed: the client went away meanwhile.
    """
    await request.reject(
        status,
        extra_headers=[(b"content-type", b"application/json; charset=UTF-8")],
        body=error_body(status),
    )
