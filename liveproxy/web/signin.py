"""Optional sign-in: ``POST /api/auth`` with ``Authorization: Bearer <JWT>``.

With ``AUTH_JWT_SECRET`` tokens are HS256, signed with that secret; with ``AUTH_JWKS_URL`` they
are RS256, ES256 or EdDSA, signed by a key of that JSON Web Key Set, named by the token's
``kid``. ``AUTH_JWT_AUDIENCE`` / ``AUTH_JWT_ISSUER`` are checked when set. A token must carry
``exp`` and a string ``sub`` (the client's identity; logs carry :func:`identity_hash` of it).

The key set is fetched with httpx on the event loop (asynchronously: no thread), at most one
fetch at a time, under one overall deadline that cancels the request (a server that trickles its
answer costs ``fetch_timeout``, no more) and bounded in size; it is cached, refetched when a
token names an unknown ``kid`` (at most once per ``refetch_cooldown`` seconds, so random ``kid``
values cannot make the proxy hammer the endpoint) and when it is older than ``max_key_age``.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
from collections.abc import Callable
from typing import Any, ClassVar, Final

import attrs
import httpcore  # noqa: F401  # httpx imports it at its first client: here, not mid-sign-in
import httpx
import jwt
import orjson
import trio
from jwt.exceptions import InvalidSubjectError

from liveproxy.config import SignInSettings
from liveproxy.redact import redact_url
from liveproxy.web.clients import short_hash

log = logging.getLogger("liveproxy.signin")

#: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
LEEWAY_SECONDS: Final = 30
#: Longer tokens are refused before they are decoded.
MAX_TOKEN_BYTES: Final = 8192
#: The largest key set read.
MAX_JWKS_BYTES: Final = 256 * 1024
#: Redirects followed to the key set, each to an http(s) URL (as many as urllib followed).
MAX_JWKS_REDIRECTS: Final = 10
#: HS256 needs a key of at least 256 bits (RFC 7518, 3.2).
JWKS_ALGORITHMS: Final = frozenset({"RS256", "ES256", "EdDSA"})
_LEEWAY_NOTE: Final = f"({LEEWAY_SECONDS} s of clock skew allowed)"


@attrs.define(eq=False)
class Unauthorized(Exception):
    """The request is not signed in: answer 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``.

    ``message`` names the reason and never contains the token.
    """

    code: ClassVar[str] = "unauthorized"

    message: str

    def __str__(self) -> str:
        return self.message


class KeysUnavailable(Unauthorized):
    """The signing keys could not be fetched: a server-side failure (the auth route: 503)."""


def identity_hash(sub: str) -> str:
    """A short stable name of ``sub`` for logs (16 hex chars of its SHA-256)."""
    return short_hash(sub, 16)


class SignIn:
    """Checks ``Authorization`` headers against the configured secret or key set.

    ``clock`` (seconds) paces key set refetches; ``fetch_timeout`` bounds one fetch.
    """

    def __init__(
        self,
        settings: SignInSettings,
        *,
        clock: Callable[[], float] = trio.current_time,
        fetch_timeout: float = 5.0,
        refetch_cooldown: float = 60.0,
        retry_after_failure: float = 5.0,
        max_key_age: float = 3600.0,
    ) -> None:
        """Raises: ValueError: sign-in is not enabled in ``settings``."""
        if not settings.enabled:
            raise ValueError("sign-in is not configured")
        self.settings = settings
        self._keys = (
            None
            if settings.jwks_url is None
            else _KeySet(
                settings.jwks_url,
                clock=clock,
                fetch_timeout=fetch_timeout,
                refetch_cooldown=refetch_cooldown,
                retry_after_failure=retry_after_failure,
                max_key_age=max_key_age,
            )
        )

    async def verify(self, authorization: str | None) -> str:
        """The ``sub`` of the Bearer token in ``authorization`` (the header's value).

        Raises:
            Unauthorized, KeysUnavailable: as :meth:`claims` raises.
        """
        subject: str = (await self.claims(authorization))["sub"]
        return subject

    async def claims(self, authorization: str | None) -> dict[str, Any]:
        """The claims of the Bearer token in ``authorization`` (the header's value), once it is
        verified; its ``sub`` is a non-empty string.

        Raises:
            Unauthorized: the header is missing or not Bearer; the token is too large, malformed,
                of an algorithm not allowed, names an unknown key, is badly signed, expired, not
                yet valid, for another audience or issuer, has no ``exp`` or ``sub``, or has
                claims JSON text cannot keep (a lone surrogate, a 65-bit integer, deep nesting).
            KeysUnavailable: the key set could not be fetched (a subclass of Unauthorized).
        """
        token = _bearer_token(authorization)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is malformed") from None
        alg = header.get("alg")
        key: jwt.PyJWK | str
        if self._keys is None:
            if alg != "HS256":
                raise Unauthorized(
                    f"the token's algorithm {_shown(alg)} is not allowed (HS256 only)"
                )
            assert self.settings.jwt_secret is not None
            key = self.settings.jwt_secret
        else:
            if alg not in JWKS_ALGORITHMS:
                raise Unauthorized(
                    f"the token's algorithm {_shown(alg)} is not allowed (RS256, ES256 or EdDSA)"
                )
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise Unauthorized("the token names no signing key (kid)")
            key = await self._keys.key(kid)
            if key.algorithm_name != alg:
                raise Unauthorized(f"the token's algorithm {_shown(alg)} does not match its key's")
        return self._decode(token, key, str(alg))

    def _decode(self, token: str, key: jwt.PyJWK | str, alg: str) -> dict[str, Any]:
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": settings.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_reason(exc)) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("the token's subject (sub) is not a non-empty string")
        try:  # the claims are kept as JSON text (a session's budget is read from them)
            orjson.dumps(claims)
        except orjson.JSONEncodeError:
            raise Unauthorized(
                "the token's claims cannot be kept (a lone surrogate, an integer over 64 bits "
                "or nesting over 255 levels)"
            ) from None
        return claims


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise Unauthorized("sign-in required: send Authorization: Bearer <JWT>")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header is not a Bearer token")
    token = token.strip()
    if not token:
        raise Unauthorized("the Bearer token is empty")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"the token is too large (over {MAX_TOKEN_BYTES} bytes)")
    return token


def _shown(alg: object) -> str:
    return repr(alg[:16]) if isinstance(alg, str) else "(none given)"


def _reason(exc: jwt.PyJWTError) -> str:
    """What was wrong with a token, in words (no part of the token)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"the token has expired {_LEEWAY_NOTE}"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return f"the token is not valid yet (nbf or iat in the future, {LEEWAY_SECONDS} s allowed)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature is invalid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        names = {
            "exp": "expiry (exp)",
            "sub": "subject (sub)",
            "aud": "audience (aud)",
            "iss": "issuer (iss)",
        }
        return f"the token has no {names.get(exc.claim, exc.claim)}"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is for another audience (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token is from another issuer (iss)"
    if isinstance(exc, InvalidSubjectError):
        return "the token's subject (sub) is not a non-empty string"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "the token's algorithm is not allowed"
    if isinstance(exc, jwt.InvalidKeyError):
        return "the token's signing key is not usable (too short)"
    return "the token is malformed"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted CAs, as urllib used (httpx's default is certifi's bundle); loaded
    once (some 40 ms of file reads), at start rather than on the event loop mid-sign-in."""
    return ssl.create_default_context()


async def fetch_keys(url: str) -> dict[str, jwt.PyJWK]:
    """GET the key set at ``url``; its usable signing keys by ``kid``.

    No deadline of its own: the caller's cancel scope bounds it all (connecting, redirects, the
    headers, the body) and cancels the request when it passes, so a server that trickles its
    answer a byte at a time costs that deadline (httpx's own timeouts, like urllib's, are per
    read, which a trickle defeats). Up to :data:`MAX_JWKS_REDIRECTS` redirects to http(s) URLs
    are followed. Keys of another algorithm than RS256/ES256/EdDSA, for another use than ``sig``
    or without a ``kid`` are left out.

    Raises:
        httpx.HTTPError: the request failed (refused, reset, not HTTP).
        OSError: a status other than 2xx.
        ValueError: a redirect to another scheme or too many; the answer is over 256 KiB, not
            a JSON key set, or has no usable key.
    """
    return _usable_keys(await _get(url))


async def _get(url: str) -> bytes:
    """The body of a 2xx answer to GET ``url``, at most :data:`MAX_JWKS_BYTES` of it read.

    A client per fetch (a fetch every few seconds at most), closed with it.
    """
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(verify=_tls_context(), timeout=None) as client:
        request = client.build_request("GET", url, headers=headers)
        for _ in range(MAX_JWKS_REDIRECTS + 1):
            response = await client.send(request, stream=True)
            try:
                if response.next_request is None:
                    return await _read_body(response)
                request = response.next_request
            finally:
                await response.aclose()
            if request.url.scheme not in ("http", "https"):
                raise ValueError("the key set redirected to a URL that is not http(s)")
    raise ValueError(f"the key set redirected more than {MAX_JWKS_REDIRECTS} times")


async def _read_body(response: httpx.Response) -> bytes:
    if not response.is_success:
        raise OSError(f"the key set answered {response.status_code}")
    chunks: list[bytes] = []
    size = 0
    # Raw: the body as sent (Accept-Encoding: identity asked for no compression); nothing is
    # inflated past the bound before it is counted.
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > MAX_JWKS_BYTES:
            raise ValueError(f"the key set is over {MAX_JWKS_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _usable_keys(body: bytes) -> dict[str, jwt.PyJWK]:
    document = orjson.loads(body)
    raw = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(raw, list):
        raise ValueError("the answer is not a JSON Web Key Set")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in raw:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if isinstance(kid, str) and kid and key.algorithm_name in JWKS_ALGORITHMS:
            keys[kid] = key
    if not keys:
        raise ValueError("the key set has no usable signing key")
    return keys


class _KeySet:
    """The cached key set of ``url``, one fetch at a time (the lock: a fetch ends, by its
    deadline or its caller's cancellation, before the lock is released)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float],
        fetch_timeout: float,
        refetch_cooldown: float,
        retry_after_failure: float,
        max_key_age: float,
    ) -> None:
        self._url = url
        self._clock = clock
        self._fetch_timeout = fetch_timeout
        self._refetch_cooldown = refetch_cooldown
        self._retry_after_failure = retry_after_failure
        self._max_key_age = max_key_age
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = -math.inf
        self._next_fetch_at = -math.inf
        self._lock = trio.Lock()
        _tls_context()  # loaded now, at start

    def _usable(self, kid: str) -> bool:
        fresh = self._clock() - self._fetched_at < self._max_key_age
        return fresh and self._keys is not None and kid in self._keys

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key named ``kid``, refetching the set when it lacks it (within the cooldown).

        Raises:
            KeysUnavailable: no key set could be fetched.
            Unauthorized: the key set has no key ``kid``.
        """
        if not self._usable(kid):
            async with self._lock:
                if not self._usable(kid) and self._clock() >= self._next_fetch_at:
                    await self._refetch()
        if self._keys is None:
            raise KeysUnavailable("the signing keys could not be fetched")
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("the token's signing key (kid) is unknown")
        return key

    async def _refetch(self) -> None:
        shown = redact_url(self._url)
        # A fetch started counts as a failure until it succeeds: one cancelled with its caller
        # (the client went away) still paces the next.
        self._next_fetch_at = self._clock() + self._retry_after_failure
        keys: dict[str, jwt.PyJWK] | None = None
        with trio.move_on_after(self._fetch_timeout) as deadline:
            try:
                keys = await fetch_keys(self._url)
            except Exception as exc:  # any failure means: no keys from this fetch
                log.warning("sign-in: the signing keys at %s could not be fetched: %r", shown, exc)
        if deadline.cancelled_caught:
            log.warning("sign-in: fetching the signing keys at %s timed out", shown)
        if keys is not None:
            self._keys = keys
            self._fetched_at = self._clock()
            self._next_fetch_at = self._fetched_at + self._refetch_cooldown
            log.info("sign-in: %d signing keys fetched from %s", len(keys), shown)
        else:
            self._next_fetch_at = self._clock() + self._retry_after_failure
