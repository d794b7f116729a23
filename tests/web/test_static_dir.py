"""``STATIC_DIR`` on a real ``liveproxy serve``: a built app's files, its client-side routes, the
validators and cache rules, precompressed siblings, and nothing outside the directory ever."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

from liveproxy.emulator import Emulator
from liveproxy.web.static_files import IMMUTABLE, NO_CACHE, SHORT, is_hashed
from tests.http import HttpResponse, request
from tests.metrics_scrape import metrics_port, until_scraped
from tests.served import Served, liveproxy_process
from tests.web.test_bot_check import PROJECT as BOT_PROJECT
from tests.web.test_bot_check import SECRET as BOT_SECRET
from tests.web.test_bot_check import SITE_KEY as BOT_SITE_KEY
from tests.web.test_bot_check import start_verifier
from tests.wsclient import BrowserClient, has_key

INDEX = (
    b'<!doctype html><title>seed app</title><script type="module" src="/assets/app-3f9a1c2b.js">'
)
SCRIPT = b"export const answer = 42;\n" * 200
SECRET = b"outside the directory\n"
ASSET = "/assets/app-3f9a1c2b.js"


def build_app(tmp_path: Path) -> Path:
    """A directory shaped like Vite's ``dist/``, and things beside it that must stay unserved."""
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "app-3f9a1c2b.js").write_bytes(SCRIPT)
    (dist / "assets" / "app-3f9a1c2b.js.gz").write_bytes(gzip.compress(SCRIPT))
    (dist / "assets" / "index-BxK3_a9Q.css").write_bytes(b"body { margin: 0 }\n")
    (dist / "robots.txt").write_bytes(b"User-agent: *\n")
    (dist / ".env").write_bytes(b"GOOGLE_API_KEY=dotfile\n")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "dist-other").mkdir()
    (tmp_path / "dist-other" / "secret.txt").write_bytes(SECRET)
    (dist / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (dist / "outside").symlink_to(tmp_path / "dist-other")
    (dist / "assets" / "alias.js").symlink_to("app-3f9a1c2b.js")  # inside: served
    return dist


async def get(served: Served, path: str, method: str = "GET", **headers: str) -> HttpResponse:
    return await request("127.0.0.1", served.port, method, path, headers=headers)


def test_hashed_names_are_the_bundlers_not_words() -> None:
    hashed = ["app-3f9a1c.js", "index.3f9a1c2b.css", "index-BxK3_a9Q.js", "chunk-a1-b2_c3.mjs"]
    plain = ["app.js", "app-config.js", "vendor-styles.css", "index.html", "app-3f9a1.js"]
    assert [is_hashed(n) for n in hashed] == [True] * len(hashed)
    assert [is_hashed(n) for n in plain] == [False] * len(plain)


async def test_files_by_path_with_types_validators_and_cache_rules(tmp_path: Path) -> None:
    async with liveproxy_process(STATIC_DIR=str(build_app(tmp_path))) as served:
        index = await get(served, "/")
        assert (index.status, index.body) == (200, INDEX)
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["cache-control"] == NO_CACHE
        assert "expires" not in index.headers
        assert (await get(served, "/index.html")).body == INDEX

        asset = await get(served, ASSET)
        assert (asset.status, asset.body) == (200, SCRIPT)
        assert asset.headers["content-type"] == "text/javascript; charset=utf-8"
        assert asset.headers["cache-control"] == IMMUTABLE
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert asset.headers["vary"] == "Accept-Encoding"  # it has a .gz sibling
        assert "content-encoding" not in asset.headers
        css = await get(served, "/assets/index-BxK3_a9Q.css")
        assert (css.headers["content-type"], css.headers["cache-control"]) == (
            "text/css; charset=utf-8",
            IMMUTABLE,
        )
        robots = await get(served, "/robots.txt")
        assert (robots.headers["content-type"], robots.headers["cache-control"]) == (
            "text/plain; charset=utf-8",
            SHORT,
        )
        assert "vary" not in robots.headers
        alias = await get(served, "/assets/alias.js")  # a symlink inside, to a file inside
        assert (alias.status, alias.body) == (200, SCRIPT)

        head = await get(served, ASSET, "HEAD")
        assert (head.status, head.body) == (200, b"")
        assert head.headers["content-length"] == str(len(SCRIPT))
        assert head.headers["etag"] == asset.headers["etag"]

        etag, modified = asset.headers["etag"], asset.headers["last-modified"]
        for validator in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            again = await get(served, ASSET, **validator)
            assert (again.status, again.body) == (304, b"")
            assert again.headers["etag"] == etag
            assert again.headers["cache-control"] == IMMUTABLE
        changed = await get(served, ASSET, **{"If-None-Match": '"other"'})
        assert (changed.status, changed.body) == (200, SCRIPT)
        part = await get(served, ASSET, Range="bytes=0-5")
        assert (part.status, part.body) == (206, SCRIPT[:6])


async def test_precompressed_siblings_when_the_request_accepts_them(tmp_path: Path) -> None:
    async with liveproxy_process(STATIC_DIR=str(build_app(tmp_path))) as served:
        plain = await get(served, ASSET)
        for accepted in ("gzip", "br, gzip, deflate", "*"):
            packed = await get(served, ASSET, **{"Accept-Encoding": accepted})
            assert packed.status == 200
            assert gzip.decompress(packed.body) == SCRIPT
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["vary"] == "Accept-Encoding"
            assert packed.headers["content-type"] == "text/javascript; charset=utf-8"
            assert packed.headers["content-length"] == str(len(packed.body))
            assert packed.headers["etag"] != plain.headers["etag"]  # another representation
        for refused in ("br", "gzip;q=0, identity", "identity"):
            unpacked = await get(served, ASSET, **{"Accept-Encoding": refused})
            assert (unpacked.body, unpacked.headers.get("content-encoding")) == (SCRIPT, None)
        # No sibling: the file itself, and no Vary.
        css = await get(served, "/assets/index-BxK3_a9Q.css", **{"Accept-Encoding": "gzip"})
        assert (css.status, css.headers.get("content-encoding")) == (200, None)


async def test_client_side_routes_get_index_html_and_the_api_is_not_swallowed(
    tmp_path: Path,
) -> None:
    dist = build_app(tmp_path)
    async with liveproxy_process(STATIC_DIR=str(dist), AUTH_PATHS="/api/auth /login") as served:
        for route in ("/orders/17", "/orders/17/", "/settings?tab=voice", "/assets/gone-a1b2c3.js"):
            page = await get(served, route)
            assert (page.status, page.body) == (200, INDEX), route
            assert page.headers["cache-control"] == NO_CACHE
            assert page.headers["content-type"] == "text/html; charset=utf-8"
        for path in ("/api/nope", "/api", "/api/", "/ws", "/ws/more"):
            answer = await get(served, path)
            assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found"), path
        for path in ("/api/auth", "/login"):
            answer = await get(served, path)
            assert (answer.status, answer.json()["error"]["code"]) == (405, "method_not_allowed")
        assert (await get(served, "/api/health")).json()["status"] == "ok"
        assert (await get(served, "/orders/17", "POST")).status == 405
        # The demo page moved aside, and still works.
        demo = await get(served, "/demo/")
        assert (demo.status, demo.headers["cache-control"]) == (200, NO_CACHE)
        assert b"liveproxy demo" in demo.body
        assert (await get(served, "/demo/app.js")).status == 200
        assert (await get(served, "/demo/nope.js")).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets%2f..%2f..%2fsecret.txt",
        "/assets%2F..%2F..%2Fsecret.txt",
        "/..%5csecret.txt",
        "/assets%5capp-3f9a1c2b.js",
        "/assets\\app-3f9a1c2b.js",
        "/../dist-other/secret.txt",
        "/leak.txt",
        "/outside/secret.txt",
        "/.env",
        "/assets/.%2e/.env",
        "/index.html%00.js",
        "/%00",
        "/" + "a" * 5000,
    ],
)
async def test_nothing_outside_the_directory_is_served(tmp_path: Path, path: str) -> None:
    async with liveproxy_process(STATIC_DIR=str(build_app(tmp_path))) as served:
        answer = await get(served, path)
        assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found")
        assert SECRET not in answer.body


async def test_the_seed_app_on_one_origin_needs_no_cors(
    tmp_path: Path, emulator: Emulator, nursery: trio.Nursery
) -> None:
    # The seed's deployment in two settings: its built front end in STATIC_DIR, its
    # reCAPTCHA Enterprise check on sign-in (a local fake of Google's verifier here).
    verifier = await start_verifier(nursery, "recaptcha-enterprise")
    settings = {
        "STATIC_DIR": str(build_app(tmp_path)),
        "GOOGLE_API_KEY": "k",
        "UPSTREAM_URL": emulator.url,
        "BOT_CHECK": "recaptcha-enterprise",
        "BOT_CHECK_SECRET": BOT_SECRET,
        "BOT_CHECK_SITE_KEY": BOT_SITE_KEY,
        "BOT_CHECK_PROJECT": BOT_PROJECT,
        "BOT_CHECK_URL": f"http://127.0.0.1:{verifier.port}",
        "METRICS_BIND": "127.0.0.1:0",
        "LOG_LEVEL": "DEBUG",
    }
    async with liveproxy_process(**settings) as served:
        origin = f"http://127.0.0.1:{served.port}"
        page = await get(served, "/orders/17")
        assert page.body == INDEX
        assert (await get(served, ASSET)).body == SCRIPT

        async def sign_in(body: bytes, page_origin: str = origin) -> HttpResponse:
            headers = {"Origin": page_origin}
            return await request("127.0.0.1", served.port, "POST", "/api/auth", body, headers)

        without = await sign_in(b'{"session_duration": 60}')
        assert (without.status, without.json()["error"]["code"]) == (400, "bot_check_required")
        signed_in = await sign_in(b'{"session_duration": 60, "recaptcha_token": "good-seed"}')
        assert signed_in.status == 200, signed_in.body
        # Nothing configured made that work: the page's origin is the server's own.
        foreign = await sign_in(b'{"recaptcha_token": "good-2"}', "https://elsewhere.example")
        assert foreign.status == 403
        token = signed_in.json()["session_token"]
        async with open_websocket_url(
            f"ws://127.0.0.1:{served.port}/ws?token={token}",
            extra_headers=[(b"Origin", origin.encode())],
        ) as ws:
            client = BrowserClient(ws)
            await client.send_json({"setup": {}})
            with trio.fail_after(10):
                await client.recv_until(has_key("setupComplete"))
        port = await metrics_port(served)
        counted = await until_scraped(
            port, "liveproxy_tokens_total", 1, result="bot_check_required"
        )
        assert counted.value("liveproxy_tokens_total", result="issued") == 1
        log = served.text
    [checked] = verifier.requests
    assert checked["checked"] == {"token": "good-seed"}  # the request had its shape
    assert BOT_SECRET not in log
