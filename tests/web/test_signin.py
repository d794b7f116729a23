"""Sign-in: every refusal of ``SignIn.verify``, and a key set served over real HTTP.

HS256 with a secret; RS256, ES256 and EdDSA keys generated here, served as a JWKS by a small
trio + h11 server on port 0. Refetch pacing uses an injected clock; I/O uses real time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from typing import Any

import attrs
import h11
import jwt
import orjson
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from liveproxy.config import SignInSettings, settings_from_env
from liveproxy.web.signin import KeysUnavailable, SignIn, Unauthorized, identity_hash

SECRET = secrets.token_urlsafe(32)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "user-1",
        "exp": int(time.time()) + 86_400,
    }  # minted at collection: outlives any run
    return {k: v for k, v in (base | overrides).items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def signed(key: Any, alg: str, kid: str | None, **overrides: Any) -> str:
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret_signin(**settings: str) -> SignIn:
    return SignIn(SignInSettings(jwt_secret=SECRET, **settings))


async def refused(signin: SignIn, authorization: str | None) -> str:
    with pytest.raises(Unauthorized) as caught:
        await signin.verify(authorization)
    message = caught.value.message
    token = (authorization or "").partition(" ")[2]
    assert len(token) < 8 or token not in message, "a refusal must not echo the token"
    return message


# --- settings ---------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    assert not settings_from_env({}).enabled
    assert not settings_from_env({"AUTH_JWT_SECRET": "  "}).enabled
    settings = settings_from_env(
        {"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_AUDIENCE": "app", "AUTH_JWT_ISSUER": "idp"}
    )
    assert settings == SignInSettings(jwt_secret=SECRET, audience="app", issuer="idp")
    assert settings.enabled
    assert SECRET not in repr(settings)
    jwks = settings_from_env({"AUTH_JWKS_URL": "https://idp.example/.well-known/jwks.json"})
    assert jwks.enabled


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTH_JWT_SECRET": SECRET, "AUTH_JWKS_URL": "https://idp.example/jwks"}, "AUTH_JWKS_URL"),
        ({"AUTH_JWKS_URL": "ftp://idp.example/jwks"}, "AUTH_JWKS_URL"),
        ({"AUTH_JWKS_URL": "idp.example/jwks"}, "AUTH_JWKS_URL"),
        ({"AUTH_JWT_SECRET": "short"}, "AUTH_JWT_SECRET"),
        ({"AUTH_JWT_AUDIENCE": "app"}, "AUTH_JWT_AUDIENCE"),
        ({"AUTH_JWT_ISSUER": "idp"}, "AUTH_JWT_ISSUER"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        settings_from_env(env)
    assert "short" not in str(caught.value)


def test_signin_needs_settings_that_enable_it() -> None:
    with pytest.raises(ValueError, match="not configured"):
        SignIn(SignInSettings())


def test_identity_hash_is_short_stable_and_distinct() -> None:
    assert identity_hash("user-1") == identity_hash("user-1")
    assert len(identity_hash("user-1")) == 16
    assert identity_hash("user-1") != identity_hash("user-2")
    assert "user" not in identity_hash("user-1")


# --- HS256 ------------------------------------------------------------------------------------


async def test_a_good_hs256_token_gives_its_subject() -> None:
    signin = secret_signin()
    assert await signin.verify(f"Bearer {hs256()}") == "user-1"
    assert await signin.verify(f"bearer  {hs256(sub='x')} ") == "x"
    # within the leeway, and an audience nobody asked about is not checked
    assert await signin.verify(f"Bearer {hs256(exp=int(time.time()) - 10)}") == "user-1"
    assert await signin.verify(f"Bearer {hs256(aud='someone')}") == "user-1"


def _header_only(header: bytes) -> str:
    return f"{b64(header)}.{b64(b'{}')}.{b64(b'sig')}"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "sign-in required"),
        ("", "sign-in required"),
        ("Basic dXNlcjpwYXNz", "not a Bearer token"),
        ("Bearer", "empty"),
        ("Bearer    ", "empty"),
        ("Bearer " + "a" * 9000, "too large"),
        ("Bearer garbage", "malformed"),
        ("Bearer a.b.c", "malformed"),
        ("Bearer ..", "malformed"),
        ("Bearer \u00e9\u00e9.\u00e9.\u00e9", "malformed"),
        ("Bearer " + _header_only(b"[1, 2]"), "malformed"),
        ("Bearer " + _header_only(b"not json"), "malformed"),
        ("Bearer " + _header_only(b'{"alg": 5}'), "(none given) is not allowed"),
        ("Bearer " + _header_only(b'{"typ": "JWT"}'), "(none given) is not allowed"),
        ("Bearer " + _header_only(b'{"alg": "HS256", "kid": {}}'), "malformed"),
        ("Bearer " + _header_only(b'{"alg": "HS256"}'), "signature is invalid"),
    ],
)
async def test_hostile_headers_are_refused_with_the_reason(
    authorization: str | None, reason: str
) -> None:
    assert reason in await refused(secret_signin(), authorization)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode(claims(), "x" * 32, algorithm="HS256"), "signature is invalid"),
        (hs256(exp=int(time.time()) - 60), "has expired (30 s of clock skew allowed)"),
        (hs256(nbf=int(time.time()) + 86_400), "not valid yet"),
        (hs256(iat=int(time.time()) + 86_400), "not valid yet"),
        (hs256(exp=None), "no expiry (exp)"),
        (hs256(exp="tomorrow"), "malformed"),
        (hs256(sub=None), "no subject (sub)"),
        (hs256(sub=42), "subject (sub)"),
        (hs256(sub=""), "subject (sub)"),
        (jwt.encode(claims(), "", algorithm="none"), "algorithm 'none' is not allowed"),
        (jwt.encode(claims(), SECRET * 2, algorithm="HS512"), "algorithm 'HS512' is not allowed"),
        (signed(RSA_KEY, "RS256", "rsa-1"), "algorithm 'RS256' is not allowed (HS256 only)"),
    ],
)
async def test_bad_hs256_tokens_are_refused_with_the_reason(token: str, reason: str) -> None:
    assert reason in await refused(secret_signin(), f"Bearer {token}")


async def test_a_tampered_payload_breaks_the_signature() -> None:
    header, _, signature = hs256().split(".")
    payload = b64(orjson.dumps(claims(sub="admin")))
    message = await refused(secret_signin(), f"Bearer {header}.{payload}.{signature}")
    assert "signature is invalid" in message


async def test_audience_and_issuer_are_checked_when_set() -> None:
    signin = secret_signin(audience="liveproxy", issuer="https://idp.example")
    good = {"aud": "liveproxy", "iss": "https://idp.example"}
    assert await signin.verify(f"Bearer {hs256(**good)}") == "user-1"
    assert await signin.verify(f"Bearer {hs256(**good | {'aud': ['x', 'liveproxy']})}")
    cases: list[tuple[dict[str, Any], str]] = [
        (good | {"aud": "elsewhere"}, "another audience (aud)"),
        (good | {"aud": None}, "no audience (aud)"),
        (good | {"iss": "https://evil.example"}, "another issuer (iss)"),
        (good | {"iss": None}, "no issuer (iss)"),
    ]
    for overrides, reason in cases:
        assert reason in await refused(signin, f"Bearer {hs256(**overrides)}")


# --- a key set over HTTP ----------------------------------------------------------------------


def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return dict(data, kid=kid, **extra)


@attrs.define
class JwksServer:
    """Serves ``body`` (default: ``{"keys": keys}``) with ``status``; counts requests.

    Misbehaviours, each until the test turns it off: ``release`` (an event) holds the answer
    until it is set; ``trickle`` sends the status line and headers one byte every so many
    seconds; ``endless`` sends a body of JSON whitespace without end; ``redirects`` answers that
    many requests 302 to ``location``. ``dropped`` is set when a client hangs up on an answer.
    """

    keys: list[dict[str, Any]]
    status: int = 200
    body: bytes | None = None
    hits: int = 0
    requested: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event | None = None
    trickle: float | None = None
    endless: bool = False
    redirects: int = 0
    location: str = "/moved/jwks.json"
    dropped: trio.Event = attrs.Factory(trio.Event)
    sent: int = 0
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                self.hits += 1
                self.requested.set()
                if self.release is not None and not await self._held(stream, self.release):
                    return
                await self._answer(stream, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped.set()

    async def _held(self, stream: trio.SocketStream, release: trio.Event) -> bool:
        """Waits for ``release``: False (and ``dropped`` set) when the client hangs up first."""
        hung_up = False
        async with trio.open_nursery() as nursery:

            async def released() -> None:
                await release.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(released)
            with contextlib.suppress(trio.BrokenResourceError):
                while await stream.receive_some(65536):
                    pass
            hung_up = True
            self.dropped.set()
            nursery.cancel_scope.cancel()
        return not hung_up

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection) -> None:
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        if self.redirects > 0:
            self.redirects -= 1
            status, body = 302, b""
            headers.append(("Location", self.location))
        else:
            status = self.status
            body = self.body if self.body is not None else orjson.dumps({"keys": self.keys})
        if not self.endless:
            headers.append(("Content-Length", str(len(body))))
        head = conn.send(h11.Response(status_code=status, headers=headers))
        if (pace := self.trickle) is not None:
            for byte in head:
                await stream.send_all(bytes([byte]))
                self.sent += 1
                await trio.sleep(pace)
        else:
            await stream.send_all(head)
        if self.endless:
            whitespace = conn.send(h11.Data(data=b" " * 65536))
            while True:
                await stream.send_all(whitespace)
                self.sent += len(whitespace)
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))


async def serve_jwks(nursery: trio.Nursery, *keys: dict[str, Any]) -> JwksServer:
    server = JwksServer(list(keys))
    listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
    server.port = listeners[0].socket.getsockname()[1]
    return server


@attrs.define
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def jwks_signin(server: JwksServer, clock: Clock | None = None, **kw: Any) -> SignIn:
    settings = SignInSettings(jwks_url=server.url, audience=kw.pop("audience", None))
    return SignIn(settings, clock=clock or Clock(), **kw)


ALL_KEYS = (
    jwk(RSA_KEY, "rsa-1"),
    jwk(EC_KEY, "ec-1", use="sig"),
    jwk(ED_KEY, "ed-1"),
    # left out: a symmetric key, a key for encryption, a key of another algorithm, no kid
    {"kty": "oct", "kid": "hmac", "k": b64(SECRET.encode())},
    jwk(RSA_KEY_2, "enc", use="enc"),
    jwk(RSA_KEY_2, "rs384", alg="RS384"),
    {k: v for k, v in jwk(RSA_KEY_2, "x").items() if k != "kid"},
    {"kty": "RSA", "kid": "broken", "n": "AQAB"},
)


def rsa_token() -> str:
    return f"Bearer {signed(RSA_KEY, 'RS256', 'rsa-1')}"


async def test_rs256_es256_and_eddsa_tokens_are_accepted(nursery: trio.Nursery) -> None:
    server = await serve_jwks(nursery, *ALL_KEYS)
    signin = jwks_signin(server, audience="liveproxy")
    for key, alg, kid in [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1")]:
        assert await signin.verify(f"Bearer {signed(key, alg, kid, aud='liveproxy')}") == "user-1"
    assert await signin.verify(f"Bearer {signed(ED_KEY, 'EdDSA', 'ed-1', aud='liveproxy')}")
    assert server.hits == 1  # fetched once, then cached


async def test_key_set_refusals_name_the_reason(nursery: trio.Nursery) -> None:
    server = await serve_jwks(nursery, *ALL_KEYS)
    signin = jwks_signin(server)
    rsa_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # the classic confusion: HS256 "signed" with the RSA public key as the HMAC secret
    confused_header = b64(orjson.dumps({"alg": "HS256", "kid": "rsa-1"}))
    signing_input = f"{confused_header}.{b64(orjson.dumps(claims()))}"
    mac = hmac.new(rsa_pem, signing_input.encode(), hashlib.sha256).digest()
    rsa_as_hmac = f"{signing_input}.{b64(mac)}"
    cases = [
        (signed(RSA_KEY, "RS256", None), "names no signing key (kid)"),
        (signed(RSA_KEY, "RS256", "nobody"), "signing key (kid) is unknown"),
        (signed(RSA_KEY_2, "RS256", "rsa-1"), "signature is invalid"),
        (signed(RSA_KEY, "RS256", "rsa-1", exp=int(time.time()) - 60), "has expired"),
        (signed(EC_KEY, "ES256", "rsa-1"), "algorithm 'ES256' does not match its key's"),
        (signed(RSA_KEY, "RS512", "rsa-1"), "algorithm 'RS512' is not allowed"),
        (rsa_as_hmac, "algorithm 'HS256' is not allowed (RS256, ES256 or EdDSA)"),
        (jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"}), "'none'"),
        (jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "hmac"}), "'HS256'"),
        (signed(RSA_KEY_2, "RS256", "enc"), "unknown"),
        (signed(RSA_KEY_2, "RS256", "rs384"), "unknown"),
        (signed(RSA_KEY_2, "RS256", "broken"), "unknown"),
    ]
    for token, reason in cases:
        assert reason in await refused(signin, f"Bearer {token}"), reason
    assert server.hits == 1  # unknown kids within the cooldown: no refetch


async def test_a_rotated_key_is_fetched_and_a_flood_of_kids_fetches_once_per_cooldown(
    nursery: trio.Nursery,
) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "2026-01"))
    clock = Clock()
    signin = jwks_signin(server, clock)
    assert await signin.verify(f"Bearer {signed(RSA_KEY, 'RS256', '2026-01')}") == "user-1"
    server.keys = [jwk(RSA_KEY, "2026-01"), jwk(RSA_KEY_2, "2026-02")]
    rotated = f"Bearer {signed(RSA_KEY_2, 'RS256', '2026-02', sub='user-2')}"
    assert "unknown" in await refused(signin, rotated)  # within the cooldown of the first fetch
    assert server.hits == 1
    clock.now = 61
    assert await signin.verify(rotated) == "user-2"
    assert server.hits == 2

    clock.now = 122
    floods: list[str] = []

    async def random_kid() -> None:
        token = signed(RSA_KEY, "RS256", secrets.token_hex(8))
        floods.append(await refused(signin, f"Bearer {token}"))

    async with trio.open_nursery() as flood:
        for _ in range(50):
            flood.start_soon(random_kid)
    for _ in range(50):
        await random_kid()
    assert len(floods) == 100
    assert all("unknown" in message for message in floods)
    assert server.hits == 3  # one refetch for a hundred unknown kids
    assert await signin.verify(rotated) == "user-2"  # known keys still work, no fetch
    assert server.hits == 3


async def test_an_old_key_set_is_refreshed_and_kept_if_the_refresh_fails(
    nursery: trio.Nursery,
) -> None:
    server = await serve_jwks(nursery, jwk(EC_KEY, "ec-1"))
    clock = Clock()
    signin = jwks_signin(server, clock, max_key_age=3600)
    token = f"Bearer {signed(EC_KEY, 'ES256', 'ec-1')}"
    assert await signin.verify(token) == "user-1"
    clock.now = 3601
    server.status = 500
    assert await signin.verify(token) == "user-1"
    assert server.hits == 2
    server.status, server.keys = 200, [jwk(EC_KEY, "ec-2")]  # ec-1 revoked
    clock.now = 3607
    assert "unknown" in await refused(signin, token)
    assert server.hits == 3


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b"{}"),
        (404, b"not found"),
        (200, b"not json"),
        (200, b'{"keys": "no"}'),
        (200, b"[]"),
        (200, orjson.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})),
        (200, orjson.dumps({"keys": [jwk(RSA_KEY, "rsa-1")], "pad": "x" * 300_000})),
    ],
)
async def test_a_bad_key_set_answer_is_keys_unavailable_retried_after_a_pause(
    nursery: trio.Nursery, status: int, body: bytes
) -> None:
    server = await serve_jwks(nursery)
    server.status, server.body = status, body
    clock = Clock()
    signin = jwks_signin(server, clock, retry_after_failure=5)
    token = f"Bearer {signed(RSA_KEY, 'RS256', 'rsa-1')}"
    for _ in range(3):
        with pytest.raises(KeysUnavailable, match="the signing keys could not be fetched"):
            await signin.verify(token)
    assert server.hits == 1
    clock.now = 5
    server.status, server.body = 200, None
    server.keys = [jwk(RSA_KEY, "rsa-1")]
    assert await signin.verify(token) == "user-1"
    assert server.hits == 2


async def test_an_unreachable_key_set_is_keys_unavailable() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the test asks it
    signin = SignIn(SignInSettings(jwks_url=f"http://127.0.0.1:{port}/jwks"))
    with trio.fail_after(10), pytest.raises(KeysUnavailable) as caught:
        await signin.verify(f"Bearer {signed(RSA_KEY, 'RS256', 'rsa-1')}")
    assert isinstance(caught.value, Unauthorized)
    assert caught.value.message == "the signing keys could not be fetched"


async def test_a_key_set_that_never_answers_times_out(nursery: trio.Nursery) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.release = trio.Event()  # never set
    signin = jwks_signin(server, fetch_timeout=0.3)
    with trio.fail_after(5), pytest.raises(KeysUnavailable):
        await signin.verify(f"Bearer {signed(RSA_KEY, 'RS256', 'rsa-1')}")
    assert server.hits == 1


@pytest.mark.parametrize("stall", ["trickle", "silence"])
async def test_a_stalling_key_set_costs_one_fetch_timeout_then_sign_in_recovers(
    nursery: trio.Nursery, stall: str
) -> None:
    """A server that trickles its status line and headers (a byte every 0.5 s, each in time for
    any per-read timeout) or never answers holds a fetch for ``fetch_timeout`` at most: the
    request is cancelled, not left running, and the next fetch, after ``retry_after_failure``,
    succeeds once the server behaves."""
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    if stall == "trickle":
        server.trickle = 0.5
    else:
        server.release = trio.Event()
    clock = Clock()
    signin = jwks_signin(server, clock, fetch_timeout=1, retry_after_failure=5)
    start = trio.current_time()
    with trio.fail_after(10), pytest.raises(KeysUnavailable):
        await signin.verify(rsa_token())
    assert 0.9 <= trio.current_time() - start < 3
    assert server.hits == 1

    server.trickle = None  # the provider recovers
    if server.release is not None:
        server.release.set()
    with trio.fail_after(10), pytest.raises(KeysUnavailable):
        await signin.verify(rsa_token())  # within the pause after a failure: no fetch
    assert server.hits == 1
    clock.now = 5
    start = trio.current_time()
    with trio.fail_after(10):
        assert await signin.verify(rsa_token()) == "user-1"
    assert trio.current_time() - start < 3
    assert server.hits == 2
    with trio.fail_after(5):
        await server.dropped.wait()  # the stalled request was hung up, not left running


async def test_a_cancelled_sign_in_stops_its_fetch_and_still_paces_the_next(
    nursery: trio.Nursery,
) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.release = trio.Event()  # never set
    clock = Clock()
    signin = jwks_signin(server, clock, fetch_timeout=30, retry_after_failure=5)
    with trio.move_on_after(10) as waited:
        async with trio.open_nursery() as inner:
            inner.start_soon(signin.verify, rsa_token())
            await server.requested.wait()
            inner.cancel_scope.cancel()  # the client went away mid-fetch
    assert not waited.cancelled_caught
    with trio.fail_after(5):
        await server.dropped.wait()  # the fetch was stopped with its caller
    start = trio.current_time()
    with trio.fail_after(10), pytest.raises(KeysUnavailable):
        await signin.verify(rsa_token())  # a started fetch counts: no fetch for 5 s
    assert trio.current_time() - start < 1
    assert server.hits == 1
    server.release = None
    clock.now = 5
    with trio.fail_after(10):
        assert await signin.verify(rsa_token()) == "user-1"
    assert server.hits == 2


async def test_an_endless_key_set_is_cut_off_past_256_kib(nursery: trio.Nursery) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.endless = True  # JSON whitespace without end: only the size bound stops it
    signin = jwks_signin(server, fetch_timeout=30)
    start = trio.current_time()
    with trio.fail_after(20), pytest.raises(KeysUnavailable):
        await signin.verify(rsa_token())
    assert trio.current_time() - start < 10  # stopped by its size, not by the deadline
    with trio.fail_after(10):
        await server.dropped.wait()  # the fetch hung up
    assert server.hits == 1


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/jwks.json", "file:///etc/passwd"])
async def test_a_redirect_to_another_scheme_is_keys_unavailable(
    nursery: trio.Nursery, location: str
) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.redirects, server.location = 1, location
    with trio.fail_after(10), pytest.raises(KeysUnavailable):
        await jwks_signin(server).verify(rsa_token())
    assert server.hits == 1


async def test_http_redirects_are_followed_a_bounded_number_of_times(
    nursery: trio.Nursery,
) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.redirects = 1  # to /moved/jwks.json, same server
    with trio.fail_after(10):
        assert await jwks_signin(server).verify(rsa_token()) == "user-1"
    assert server.hits == 2
    server.redirects = 1000  # a redirect loop
    with trio.fail_after(10), pytest.raises(KeysUnavailable):
        await jwks_signin(server).verify(rsa_token())
    assert 2 < server.hits - 2 <= 11


async def test_a_slow_key_set_does_not_block_the_event_loop(nursery: trio.Nursery) -> None:
    server = await serve_jwks(nursery, jwk(RSA_KEY, "rsa-1"))
    server.release = trio.Event()
    signin = jwks_signin(server)
    subs: list[str] = []

    async def sign_in() -> None:
        subs.append(await signin.verify(f"Bearer {signed(RSA_KEY, 'RS256', 'rsa-1')}"))

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(sign_in)
            # The server (on this loop) sees the request while the fetch is under way: the
            # fetch does not block the loop.
            await server.requested.wait()
            inner.start_soon(tick)
            while ticks < 100:
                await trio.lowlevel.checkpoint()
            assert subs == []
            server.release.set()
            while not subs:
                await trio.lowlevel.checkpoint()
            inner.cancel_scope.cancel()
    assert subs == ["user-1"]
