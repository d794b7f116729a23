"""Files served from one directory: the app's built front end (``STATIC_DIR``) and the demo page.

Quart's ``send_file`` does the HTTP part (``ETag``/``Last-Modified``, 304 and 412, ranges,
``HEAD``; the file read in chunks through trio's thread-backed file wrapper); this module decides
which file, if any, answers a name.

Nothing outside the directory is served: a name with a NUL, a backslash, a component starting
with ``.`` (``..``, ``.env``, ``.git``; ``.well-known`` excepted), or a request path with an
encoded separator (``%2F``, ``%5C``) is refused (404) before the file system is asked;
:func:`werkzeug.security.safe_join` then joins the name, and the joined path is resolved
(symlinks followed) and refused unless it lies inside the directory. So a symlink inside the
directory is served when its target is inside too, and refused when it points out.
"""

from __future__ import annotations

import enum
import mimetypes
import re
from pathlib import Path

import attrs
import trio
from quart import Response, request, send_file
from werkzeug.security import safe_join

from liveproxy.protocol.schema import shown
from liveproxy.web.responses import error_response

#: A content hash before the extension, as Vite, webpack and esbuild write it: ``app-3f9a1c.js``,
#: ``index.3f9a1c2b.css``, ``index-BxK3_a9Q.js`` (one character class, no nested quantifier).
HASHED_NAME = re.compile(r"[.-]([A-Za-z0-9_-]{6,})\.[A-Za-z0-9]+$")
#: Hashed assets never change under their name.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Other files of the app (``favicon.ico``, ``robots.txt``): a short cache, then revalidated.
SHORT = "public, max-age=300"
#: ``index.html`` (and the demo page): always revalidated, so a new build shows at once.
NO_CACHE = "no-cache"
#: Precompressed siblings, best first: (``Accept-Encoding`` token, file suffix).
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".wasm": "application/wasm",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".pdf": "application/pdf",
    ".gz": "application/gzip",
    ".br": "application/octet-stream",
}


class Lookup(enum.Enum):
    MISSING = "missing"  # nothing by that name: the fallback may answer
    REFUSED = "refused"  # outside the directory or unsafe: 404, never the fallback


@attrs.frozen
class Found:
    """A file to send: ``path`` (resolved), the ``served`` variant and its ``encoding`` (None:
    the file itself), and whether any precompressed sibling exists (``Vary``)."""

    path: Path
    served: Path
    encoding: str | None
    has_variants: bool


def content_type(name: str) -> str:
    """The MIME type of a file name (``application/octet-stream`` when unknown)."""
    suffix = Path(name).suffix.lower()
    if suffix in _TYPES:
        return _TYPES[suffix]
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    return guessed if guessed and encoding is None else "application/octet-stream"


def is_hashed(name: str) -> bool:
    """Whether a file name carries a content hash (6+ base64url characters with a digit; a word
    such as ``app-config.js`` does not count)."""
    match = HASHED_NAME.search(name)
    return match is not None and any(c.isdigit() for c in match.group(1))


def unsafe_name(name: str) -> bool:
    """A name refused before the file system is asked: NUL, backslash, a dot component."""
    if "\x00" in name or "\\" in name:
        return True
    return any(part.startswith(".") and part != ".well-known" for part in name.split("/"))


def locate(root: Path, name: str) -> Path | Lookup:
    """The regular file ``name`` inside ``root`` (resolved, which must be resolved too), or why
    not. Blocking: run it in a thread."""
    joined = safe_join(str(root), name)
    if joined is None:
        return Lookup.REFUSED
    try:
        path = Path(joined).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        return Lookup.MISSING
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop, a NUL
        return Lookup.REFUSED
    if root not in path.parents:
        return Lookup.REFUSED
    return path if path.is_file() else Lookup.MISSING


def choose(root: Path, name: str, accepted: tuple[str, ...]) -> Found | Lookup:
    """:func:`locate` ``name`` and its precompressed siblings; the best sibling whose encoding
    is ``accepted`` is served. Blocking: run it in a thread."""
    path = locate(root, name)
    if isinstance(path, Lookup):
        return path
    variants = {encoding: locate(root, name + suffix) for encoding, suffix in ENCODINGS}
    present = {encoding: p for encoding, p in variants.items() if isinstance(p, Path)}
    for encoding in accepted:
        if encoding in present:
            return Found(path, present[encoding], encoding, has_variants=True)
    return Found(path, path, None, has_variants=bool(present))


def _resolved(path: Path) -> Path:
    return path.resolve()


@attrs.frozen
class StaticFiles:
    """Serves the files of ``root``. ``fallback`` (the app's ``index.html``) answers a name that
    is missing, for client-side routing; ``app_cache`` applies the app's cache rules (else every
    file is ``no-cache``)."""

    root: Path = attrs.field(converter=_resolved)
    fallback: str | None = None
    app_cache: bool = False

    async def serve(self, name: str) -> Response:
        """The file ``name`` for the current request (``GET`` or ``HEAD``); 404 ``not_found``
        when refused, or missing with no fallback."""
        raw_path = request.scope.get("raw_path") or b""
        if unsafe_name(name) or b"%2f" in raw_path.lower() or b"%5c" in raw_path.lower():
            return _not_found(name)
        accepted = tuple(e for e, _ in ENCODINGS if request.accept_encodings.quality(e) > 0)
        found = await trio.to_thread.run_sync(choose, self.root, name, accepted)
        fallback = found is Lookup.MISSING and self.fallback is not None
        if found is Lookup.MISSING and self.fallback is not None:  # a client-side route
            found = await trio.to_thread.run_sync(choose, self.root, self.fallback, accepted)
        if not isinstance(found, Found):
            return _not_found(name)
        response = await send_file(
            found.served, mimetype=content_type(found.path.name), conditional=True
        )
        response.headers.pop("Expires", None)  # send_file's, from Quart's default max age
        response.headers["Cache-Control"] = self._cache_control(found.path.name, fallback)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if found.encoding is not None:
            response.headers["Content-Encoding"] = found.encoding
        if found.has_variants:
            response.vary.add("Accept-Encoding")
        return response

    def _cache_control(self, name: str, fallback: bool) -> str:
        if not self.app_cache or fallback or name == "index.html":
            return NO_CACHE
        return IMMUTABLE if is_hashed(name) else SHORT


def _not_found(name: str) -> Response:
    return error_response(404, "not_found", f"no such file: {shown(name)}")
