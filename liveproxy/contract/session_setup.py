"""From the browser's setup to the one sent upstream.

Every field Gemini Live's setup accepts is passed on (in camelCase); an unknown field is refused
the way Gemini would refuse it. The browser-friendly shortcuts of the earlier servers are
expanded first: transcription flags given as ``true``/``false``, ``tools`` given as one object,
``system_instruction`` given as a plain string (as Google's SDKs accept it).
The server owns the model (unless the browser asks for one in ``ALLOWED_MODELS``),
context-window compression and session resumption. A setup the chosen model is known to refuse
(:mod:`liveproxy.protocol.live_models`) is refused here, in Google's words, before a Gemini
connection is spent; a model not in that table is passed on unchecked.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import orjson

from liveproxy.config import Config
from liveproxy.contract.errors import InvalidSetup
from liveproxy.protocol.casing import to_camel
from liveproxy.protocol.gemini_messages import SETUP
from liveproxy.protocol.live_models import Backend, check_setup, rules_for
from liveproxy.protocol.schema import SchemaError, normalise

#: The fields a browser may give as ``true``/``false`` (``true`` means ``{}``).
TRANSCRIPTION_FLAGS: Final = ("inputAudioTranscription", "outputAudioTranscription")

#: The setup used when a browser starts streaming without one (older clients).
DEFAULT_SETUP: dict[str, Any] = {
    "generationConfig": {"responseModalities": ["AUDIO"]},
    "inputAudioTranscription": {},
    "outputAudioTranscription": {},
}


@attrs.frozen
class SetupPolicy:
    """What the server owns in a setup: the model (a browser may ask for one of
    ``allowed_models``), whether context-window compression is added, and the backend whose
    models' rules a setup is checked against."""

    model: str
    allowed_models: frozenset[str] = frozenset()
    context_window_compression: bool = True
    backend: Backend = "developer"
    #: The server's tools' ``functionDeclarations`` (camelCase), added to every setup after the
    #: browser's own; a browser function of the same name is replaced by the server's.
    tool_declarations: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> SetupPolicy:
        return cls(
            config.model, config.allowed_models, config.context_window_compression, config.backend
        )


def object_shortcut_expanded(name: str, value: Any) -> Any:
    """``value`` of the setup field ``name`` (camelCase), expanded if it is one of the object
    shortcuts: ``tools`` as one object, ``systemInstruction`` as a plain string (as Google's
    SDKs take it)."""
    if name == "tools" and isinstance(value, dict):
        return [value]
    if name == "systemInstruction" and isinstance(value, str):
        return {"parts": [{"text": value}]}
    return value


def browser_setup(raw: Any, policy: SetupPolicy) -> dict[str, Any]:
    """Validate the browser's ``setup`` object; return it normalised, with the server's fields.

    Raises:
        InvalidSetup: not an object, a field Gemini does not know, a value of the wrong type, or
            a setup the chosen model refuses (its reason as Google words it).
    """
    if not isinstance(raw, dict):
        raise InvalidSetup("setup must be a JSON object")
    # The shortcuts, applied under the keys as sent: the schema then names them as sent, and
    # refuses a field given in both casings.
    setup: dict[str, Any] = {}
    requested: Any = None
    for key, value in raw.items():
        name = to_camel(key)
        if name in TRANSCRIPTION_FLAGS and value in (True, False, None):
            if value is True:
                setup[key] = {}
        elif name == "model":
            requested = value
        elif name != "sessionResumption":
            setup[key] = object_shortcut_expanded(name, value)
    try:
        normalised = normalise(SETUP, setup, "setup")
    except SchemaError as exc:
        raise InvalidSetup(exc.reason) from None
    model = requested if allows_model(requested, policy) else policy.model
    _add_server_tools(normalised, policy.tool_declarations)
    refusal = check_setup(model, policy.backend, normalised)
    if refusal is not None:
        raise InvalidSetup(f"{model}: {refusal.reason}")
    return _with_server_fields(normalised, model, policy)


def default_setup(policy: SetupPolicy) -> dict[str, Any]:
    """The server's setup for a browser that sent none (text out for a model without audio)."""
    setup: dict[str, Any] = orjson.loads(orjson.dumps(DEFAULT_SETUP))
    rules = rules_for(policy.model, policy.backend)
    if rules is not None and "AUDIO" not in rules.outputs:
        setup["generationConfig"]["responseModalities"] = ["TEXT"]
        del setup["outputAudioTranscription"]
    _add_server_tools(setup, policy.tool_declarations)
    return _with_server_fields(setup, policy.model, policy)


def allows_model(model: Any, policy: SetupPolicy) -> bool:
    """Whether a setup may ask for ``model`` (a name in ``ALLOWED_MODELS``, bare or as
    ``models/...``; a setup asking for another gets the server's)."""
    if not isinstance(model, str) or not model:
        return False
    allowed = policy.allowed_models
    return model in allowed or model.removeprefix("models/") in allowed


def _add_server_tools(setup: dict[str, Any], declarations: tuple[dict[str, Any], ...]) -> None:
    """Add the server's function declarations as one more tool, after the browser's; drop the
    browser's functions of the same names (the server runs those)."""
    if not declarations:
        return
    names = {d["name"] for d in declarations}
    tools: list[Any] = []
    for tool in setup.get("tools") or ():
        functions = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if isinstance(functions, list):
            kept = [f for f in functions if not (isinstance(f, dict) and f.get("name") in names)]
            if not kept and len(tool) == 1:
                continue
            tool = dict(tool, functionDeclarations=kept)
        tools.append(tool)
    tools.append({"functionDeclarations": [dict(d) for d in declarations]})
    setup["tools"] = tools


def _with_server_fields(setup: dict[str, Any], model: str, policy: SetupPolicy) -> dict[str, Any]:
    """Add the model (bare name; the upstream adapter expands it) and the server-owned
    features."""
    setup["model"] = model
    if policy.context_window_compression:
        setup.setdefault("contextWindowCompression", {"slidingWindow": {}})
    setup["sessionResumption"] = {}
    return setup


def upstream_setup_message(
    setup: dict[str, Any], model: str, handle: str | None, *, transparent: bool = False
) -> str:
    """The ``{"setup": ...}`` message for one upstream connection (resuming ``handle`` if any).

    ``transparent`` asks for transparent resumption: every handle then says which client message
    it includes last (``lastConsumedClientMessageIndex``), so exactly the later ones are sent
    again. Vertex only: the Developer API's SDKs refuse it.
    """
    message = dict(setup, model=model)
    resumption: dict[str, Any] = {"handle": handle} if handle else {}
    if transparent:
        resumption["transparent"] = True
    message["sessionResumption"] = resumption
    return orjson.dumps({"setup": message}).decode()
