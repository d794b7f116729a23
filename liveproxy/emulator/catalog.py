"""Which models the emulator serves: Google's Live models by default, per backend.

An app whose model name has a typo, or names a model Google has shut down, must fail against
the emulator as it fails against Google: close 1008 with Google's "not found" reason. The lists
are those of :data:`liveproxy.protocol.live_models.LIVE_MODELS`, the one table of today's Live
models (and of the rules each enforces, which :func:`~liveproxy.emulator.options.read_setup`
applies); they are a moving target, so ``EmulatorConfig.extra_models`` (``--model``) adds names
and ``any_model`` (``--any-model``) accepts every well-formed one.
"""

from __future__ import annotations

import re

import attrs

from liveproxy.emulator.record import Api
from liveproxy.protocol.closes import model_not_found
from liveproxy.protocol.live_models import LIVE_MODELS

# Google's Live models are the bare ids of LIVE_MODELS[api]. The Developer API takes
# ``models/<id>``; Vertex takes ``projects/P/locations/L/publishers/google/models/<id>`` (or, in
# express mode, ``publishers/google/models/<id>``).

_WELL_FORMED_PREFIXES = ("models/", "tunedModels/", "publishers/", "projects/")
_VERTEX_NAME = re.compile(
    r"(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/(?P<id>[^/]+)"
)
_DEVELOPER_NAME = re.compile(r"models/(?P<id>[^/]+)")


def well_formed(model: str) -> bool:
    """Whether ``model`` looks like a model resource name of either backend."""
    return model.startswith(_WELL_FORMED_PREFIXES) and not model.endswith("/")


def google_serves(model: str, api: Api) -> bool:
    """Whether Google's list for ``api`` has ``model``, spelt the way that backend wants it."""
    pattern = _VERTEX_NAME if api == "vertex" else _DEVELOPER_NAME
    found = pattern.fullmatch(model)
    return found is not None and found["id"] in LIVE_MODELS[api]


def matches(model: str, entry: str) -> bool:
    """Whether ``model`` is the configured ``entry``: the same name, or, for an entry without a
    ``/``, any ``models/<entry>`` or ``…/models/<entry>``."""
    if model == entry:
        return True
    return "/" not in entry and (model == f"models/{entry}" or model.endswith(f"/models/{entry}"))


def vertex_not_found(model: str) -> str:
    """The reason Vertex gives for a model it does not serve (the spec has the prefix; the rest
    is Vertex's usual wording for a missing publisher model)."""
    return (
        f"Publisher Model `{model}` was not found or your project does not have access to it. "
        "Please ensure you are using a valid model version. For more information, see: "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
    )


def not_found_reason(model: str, api: Api, api_version: str) -> str:
    """The (untruncated) reason of the 1008 close for a model the backend does not serve."""
    if api == "vertex":
        return vertex_not_found(model)
    return model_not_found(model, api_version)


@attrs.frozen
class ModelCatalog:
    """The models one emulator serves.

    ``listed`` None means Google's list for the connection's backend; a tuple replaces it
    (entries as in :func:`matches`). ``extra`` names are served as well; ``any_model`` serves
    every well-formed name.
    """

    listed: tuple[str, ...] | None = None
    extra: tuple[str, ...] = ()
    any_model: bool = False

    def serves(self, model: str, api: Api) -> bool:
        """Whether a setup for ``model`` on ``api`` is accepted."""
        if any(matches(model, entry) for entry in self.extra):
            return True
        if self.any_model:
            return well_formed(model)
        if self.listed is None:
            return google_serves(model, api)
        return any(matches(model, entry) for entry in self.listed)
