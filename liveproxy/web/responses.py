"""JSON answers, and the one refusal type every route raises: the error shape of every endpoint."""

from __future__ import annotations

from typing import Any

import attrs
from quart import Response

from liveproxy.contract.codec import to_json
from liveproxy.contract.payloads import ApiError, ErrorResponse


def json_response(body: Any, status: int = 200) -> Response:
    """``body`` (an attrs payload or plain JSON data) as a JSON response."""
    return Response(to_json(body), status=status, content_type="application/json")


@attrs.define(eq=False)
class Refusal(Exception):
    """A request refused: ``{"error": {"code", "message"}}`` with ``status``, ``Retry-After``
    when ``retry_after`` is given, and any other ``headers``."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> Response:
        response = json_response(ErrorResponse(ApiError(self.code, self.message)), self.status)
        if self.retry_after is not None:
            response.headers["Retry-After"] = str(self.retry_after)
        for name, value in self.headers:
            response.headers[name] = value
        return response


def error_response(status: int, code: str, message: str) -> Response:
    """The error shape, as a response."""
    return Refusal(status, code, message).response()


def state_unavailable() -> Refusal:
    return Refusal(503, "state_unavailable", "the state store is unreachable")
