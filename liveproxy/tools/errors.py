"""The tools' errors: loading refused at start, and an invocation's own failures."""

from __future__ import annotations


class ToolLoadError(Exception):
    """The tools could not be loaded as configured; the message is one line naming the module,
    entry point, file, tool, parameter or environment variable at fault (never a variable's
    value). The server refuses to start with it."""


class ToolFailed(Exception):
    """An invocation failed on its own terms (an HTTP tool's server answered an error, or not
    JSON; arguments that do not fit the function). ``retryable`` says whether the same call may
    succeed later. The message names no header value and no argument value."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class ToolResultTooLarge(Exception):
    """A result is over the registry's ``max_result_bytes``: reading it stopped there."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the tool's result is over {limit} bytes")
        self.limit = limit
