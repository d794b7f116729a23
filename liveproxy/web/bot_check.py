"""Bot checks on ``POST /api/auth`` (``BOT_CHECK``): the page's token, one HTTPS call to its
provider's verifier, accepted or refused.

Each provider's documented call (``url`` is ``BOT_CHECK_URL``, by default the provider's own):

- ``recaptcha-enterprise``: ``POST {url}/v1/projects/{project}/assessments?key=<API key>``, JSON
  ``{"event": {"token", "siteKey", "expectedAction", "userIpAddress", "userAgent"}}``; read
  ``tokenProperties.valid``, ``.invalidReason``, ``.action``, ``.hostname`` and
  ``riskAnalysis.score``.
- ``recaptcha`` (v3): ``POST {url}/recaptcha/api/siteverify``, a form of ``secret``,
  ``response``, ``remoteip``; read ``success``, ``score``, ``action``, ``hostname``,
  ``error-codes``.
- ``turnstile``: ``POST {url}/turnstile/v0/siteverify``, the same form; ``success``, ``action``,
  ``hostname``, ``error-codes`` (no score).
- ``hcaptcha``: ``POST {url}/siteverify``, the same form plus ``sitekey`` when set; ``success``,
  ``hostname``, ``error-codes`` and, with hCaptcha Enterprise, ``score``: a *risk* score (higher
  is riskier), so ``1 - score`` is what ``BOT_CHECK_MIN_SCORE`` is compared with. No action.

A token is refused (:class:`BotCheckFailed`: 403 ``bot_check_failed``) when the provider says it
is invalid, expired or already used, or when its action is not ``BOT_CHECK_ACTION``, its
hostname is not expected (:func:`expected_hostnames`) or its score is below
``BOT_CHECK_MIN_SCORE``. The verifier unreachable, not done within ``timeout_seconds`` in all
(connecting, sending, the whole answer), answering other than 2xx, more than
:data:`MAX_ANSWER_BYTES` or not in its documented shape, or refusing our own request (a wrong
secret, site key or project) is :class:`BotCheckUnavailable` (503 ``bot_check_unavailable``):
no token is issued then (fail closed).

The secret is never in a message or a log line: the Enterprise API key travels in the URL's
query as Google documents, so the URL is never shown and the ``httpx`` logger's request lines
are redacted at their source (:data:`~liveproxy.redact.SECRETS`).
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Any, Final
from urllib.parse import quote, urlsplit

import attrs
import httpcore  # noqa: F401  # httpx imports it at its first request: here, at start
import httpx
import orjson
import trio

from liveproxy.config import BotCheckSettings, BotProvider
from liveproxy.redact import SECRETS

log = logging.getLogger("liveproxy.bot_check")

#: The largest verifier answer read.
MAX_ANSWER_BYTES: Final = 64 * 1024
#: The most of a User-Agent passed on to reCAPTCHA Enterprise.
MAX_USER_AGENT_CHARS: Final = 512
DEFAULT_URLS: Final[dict[BotProvider, str]] = {
    "recaptcha-enterprise": "https://recaptchaenterprise.googleapis.com",
    "recaptcha": "https://www.google.com",
    "turnstile": "https://challenges.cloudflare.com",
    "hcaptcha": "https://api.hcaptcha.com",
}
PATHS: Final[dict[BotProvider, str]] = {
    "recaptcha-enterprise": "/v1/projects/{project}/assessments",
    "recaptcha": "/recaptcha/api/siteverify",
    "turnstile": "/turnstile/v0/siteverify",
    "hcaptcha": "/siteverify",
}
#: ``error-codes`` that say our request was wrong (the secret, the site key), not the token.
OUR_ERRORS: Final = frozenset(
    {
        "missing-input-secret",
        "invalid-input-secret",
        "bad-request",
        "internal-error",
        "sitekey-secret-mismatch",
        "invalid-sitekey",
        "invalid-remoteip",
    }
)
_TOKEN_ERRORS: Final = {
    "missing-input-response": "the token is missing",
    "invalid-input-response": "the token is invalid or has expired",
    "timeout-or-duplicate": "the token has expired or was already used",
    "invalid-or-already-seen-response": "the token is invalid or was already used",
    "already-seen-response": "the token was already used",
    "expired-input-response": "the token has expired",
}
_INVALID_REASONS: Final = {
    "MALFORMED": "the token is malformed",
    "EXPIRED": "the token has expired",
    "DUPE": "the token was already used",
    "SITE_MISMATCH": "the token is for another site key",
    "MISSING": "the token is missing",
    "BROWSER_ERROR": "the browser failed to make the token",
}
_WORD: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@attrs.define(eq=False)
class BotCheckFailed(Exception):
    """The token is refused; ``message`` says why (never the token)."""

    message: str

    def __str__(self) -> str:
        return self.message


class BotCheckUnavailable(BotCheckFailed):
    """The verifier gave no usable verdict (a server-side failure: fail closed)."""


@attrs.frozen
class Verdict:
    """A token the provider accepted, in common terms."""

    hostname: str | None
    #: None: the provider has no action (hCaptcha).
    action: str | None
    #: How likely a human, from 0.0 to 1.0; None: the provider gave none.
    score: float | None


def expected_hostnames(
    settings: BotCheckSettings, allowed_origins: frozenset[str] | None, host: str | None
) -> frozenset[str]:
    """The hostnames a token may have been made on: ``BOT_CHECK_HOSTNAMES``; else the hosts of
    ``ALLOWED_ORIGINS`` when it lists origins (not ``*``); else the request's ``Host`` without
    its port (the page is served by this server)."""
    if settings.hostnames:
        return settings.hostnames
    if allowed_origins and "*" not in allowed_origins:
        return frozenset(h for o in allowed_origins if (h := urlsplit(o).hostname))
    try:
        name = urlsplit(f"//{host or ''}").hostname
    except ValueError:  # a Host that is no host
        name = None
    return frozenset({name}) if name else frozenset()


class BotCheck:
    """The configured provider's verifier, over one HTTP client (closed by :meth:`aclose`)."""

    def __init__(self, settings: BotCheckSettings) -> None:
        """Raises: ValueError: ``BOT_CHECK`` is not set, or no secret."""
        if settings.provider is None or not settings.secret:
            raise ValueError("the bot check is not configured")
        self.settings = settings
        self.provider: BotProvider = settings.provider
        path = PATHS[self.provider].format(project=quote(settings.project or "", safe=""))
        self._url = (settings.url or DEFAULT_URLS[self.provider]) + path
        SECRETS.add(settings.secret)
        _redact_httpx_lines()
        # Trusted CAs of the system, loaded now (at start), not mid-sign-in; no redirects.
        self._client = httpx.AsyncClient(verify=ssl.create_default_context(), timeout=None)

    async def aclose(self) -> None:
        """Close the HTTP client (and its pooled connections)."""
        await self._client.aclose()

    async def verify(
        self,
        token: str,
        *,
        hostnames: frozenset[str],
        remote_ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """Accept ``token`` or raise why not.

        Raises:
            BotCheckFailed: the provider refused the token, or its action, hostname or score.
            BotCheckUnavailable: no verdict within ``timeout_seconds`` or none usable.
        """
        with trio.move_on_after(self.settings.timeout_seconds):
            answer = await self._ask(token, remote_ip, user_agent)
            verdict = self._verdict(answer)
            _judge(verdict, self.settings, hostnames)
            return
        raise BotCheckUnavailable(
            f"the verifier did not answer within {self.settings.timeout_seconds:g} s"
        )

    async def _ask(self, token: str, remote_ip: str | None, user_agent: str | None) -> Any:
        """The verifier's JSON answer (cancelled with the caller's deadline)."""
        settings = self.settings
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self.provider == "recaptcha-enterprise":
            event = {
                "token": token,
                "siteKey": settings.site_key,
                "expectedAction": settings.action,
            }
            if remote_ip:
                event["userIpAddress"] = remote_ip
            if user_agent:
                event["userAgent"] = user_agent[:MAX_USER_AGENT_CHARS]
            request = self._client.build_request(
                "POST",
                self._url,
                params={"key": settings.secret},
                json={"event": event},
                headers=headers,
            )
        else:
            form = {"secret": settings.secret or "", "response": token}
            if remote_ip:
                form["remoteip"] = remote_ip
            if self.provider == "hcaptcha" and settings.site_key:
                form["sitekey"] = settings.site_key
            request = self._client.build_request("POST", self._url, data=form, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = await _read(response)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:  # its text may name the URL: only its kind is shown
            raise BotCheckUnavailable(
                f"the verifier could not be reached ({type(exc).__name__})"
            ) from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BotCheckUnavailable("the verifier's answer is not JSON") from None

    def _verdict(self, answer: Any) -> Verdict:
        if self.provider == "recaptcha-enterprise":
            return _assessment(answer)
        return _siteverify(self.provider, answer)


async def _read(response: httpx.Response) -> bytes:
    if not response.is_success:
        raise BotCheckUnavailable(f"the verifier answered HTTP {response.status_code}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():  # as sent: nothing inflated past the bound
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise BotCheckUnavailable(f"the verifier's answer is over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _assessment(answer: Any) -> Verdict:
    """reCAPTCHA Enterprise's assessment. Google's JSON leaves out fields at their default
    (proto3), so a missing ``valid`` is false and a missing score is 0.0."""
    properties = answer.get("tokenProperties") if isinstance(answer, dict) else None
    if not isinstance(properties, dict):
        raise BotCheckUnavailable("the verifier's answer has no tokenProperties")
    valid = properties.get("valid", False)
    risk = answer.get("riskAnalysis", {})
    score = risk.get("score", 0.0) if isinstance(risk, dict) else None
    if not isinstance(valid, bool) or not _is_score(score):
        raise BotCheckUnavailable("the verifier's answer is not an assessment")
    if not valid:
        reason = properties.get("invalidReason")
        words = _INVALID_REASONS.get(reason) if isinstance(reason, str) else None
        raise BotCheckFailed(f"{words or 'the token is invalid'} ({_shown(reason)})")
    return Verdict(_text(properties, "hostname"), _text(properties, "action") or "", score)


def _siteverify(provider: BotProvider, answer: Any) -> Verdict:
    """A siteverify answer (reCAPTCHA v3, Turnstile, hCaptcha)."""
    success = answer.get("success") if isinstance(answer, dict) else None
    if not isinstance(answer, dict) or not isinstance(success, bool):
        raise BotCheckUnavailable("the verifier's answer has no success")
    if not success:
        raw = answer.get("error-codes")
        codes = [c for c in raw if isinstance(c, str)] if isinstance(raw, list) else []
        shown = ", ".join(_shown(c) for c in codes[:4]) or "no error code"
        if any(c in OUR_ERRORS for c in codes):
            raise BotCheckUnavailable(f"the verifier refused this server's request ({shown})")
        words = next((_TOKEN_ERRORS[c] for c in codes if c in _TOKEN_ERRORS), None)
        raise BotCheckFailed(f"{words or 'the token was refused'} ({shown})")
    score = answer.get("score")
    if provider == "recaptcha":
        if not _is_score(score) or not isinstance(answer.get("action"), str):
            raise BotCheckUnavailable(
                "the verifier's answer has no score or action (is the key a v3 key?)"
            )
        return Verdict(_text(answer, "hostname"), answer["action"], score)
    if provider == "turnstile":
        return Verdict(_text(answer, "hostname"), _text(answer, "action") or "", None)
    if score is not None and not _is_score(score):
        raise BotCheckUnavailable("the verifier's score is not a number from 0 to 1")
    return Verdict(_text(answer, "hostname"), None, None if score is None else 1.0 - score)


def _judge(verdict: Verdict, settings: BotCheckSettings, hostnames: frozenset[str]) -> None:
    """Raises: BotCheckFailed: the wrong action or hostname, or a score below the minimum."""
    if verdict.action is not None and verdict.action != settings.action:
        raise BotCheckFailed(
            f"the token is for another action ({_shown(verdict.action)}, not {settings.action})"
        )
    hostname = (verdict.hostname or "").lower()
    if hostname not in hostnames:
        raise BotCheckFailed(f"the token was made on another site ({_shown(verdict.hostname)})")
    if verdict.score is not None and verdict.score < settings.min_score:
        raise BotCheckFailed(
            f"the score {verdict.score:.2f} is below the minimum {settings.min_score:g}"
        )


def _is_score(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _text(answer: dict[str, Any], name: str) -> str | None:
    value = answer.get(name)
    return value if isinstance(value, str) else None


def _shown(value: object) -> str:
    """A provider's word, fit for a message (a code, an action, a hostname), or a placeholder."""
    if isinstance(value, str) and _WORD.fullmatch(value):
        return value
    return "none given" if value in (None, "") else "unreadable"


class _Redacted(logging.Filter):
    """Registered secrets out of a logger's lines, before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = SECRETS.redact(record.getMessage())
        record.args = ()
        return True


def _redact_httpx_lines() -> None:
    httpx_log = logging.getLogger("httpx")  # 'HTTP Request: POST <url> ...' names the URL
    if not any(isinstance(f, _Redacted) for f in httpx_log.filters):
        httpx_log.addFilter(_Redacted())
