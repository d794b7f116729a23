"""Metering end to end: exact totals of scripted conversations through the proxy.

The expected counts are added up here from the reports the emulator sent (one per turn, with
its ``turnComplete``); the emulator also sends each report a second time, alone
(``repeat_usage``), which must not count. Totals are checked where they show: ``sessionEnd``
stats, the ``USAGE_LOG`` records, and (a real process) the Prometheus metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import open_websocket, open_websocket_url

from liveproxy.emulator import ConnectionRecord, Emulator, Faults
from tests import pcm
from tests.conftest import AUDIO_SETUP, TEXT_SETUP, ProxyFactory, proxy_on
from tests.http import HttpResponse, request
from tests.metrics_scrape import metrics_port, scrape
from tests.models import TEST_MODEL
from tests.served import eventually, liveproxy_process, signed_in_socket
from tests.wsclient import BrowserClient, Frame, has_key, wait_until

ORIGIN = "http://127.0.0.1:5173"
HEADERS = [(b"Origin", ORIGIN.encode())]
#: USD per million tokens: prompt TEXT 1, AUDIO 2; response TEXT 8.
PRICES = f"""
[models."{TEST_MODEL}"]
prompt = {{ TEXT = 1.0, AUDIO = 2.0 }}
response = {{ TEXT = 8.0 }}
"""
NATIVE_AUDIO_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"

Tokens = dict[str, dict[str, int]]


def turn_reports(records: list[ConnectionRecord]) -> list[dict[str, Any]]:
    """The ``usageMetadata`` of every turn the emulator ended on these connections (the repeats,
    alone in their messages, are checked to be there and left out)."""
    reports = []
    for record in records:
        ends = [m for m in record.sent if m.get("serverContent", {}).get("turnComplete")]
        repeats = [m for m in record.sent if m.get("serverContent") == {} and "usageMetadata" in m]
        assert len(repeats) == len(ends)
        reports += [m["usageMetadata"] for m in ends]
    return reports


def added_up(reports: list[dict[str, Any]]) -> tuple[Tokens, int]:
    """Tokens by kind and modality, and the sum of ``totalTokenCount``."""
    tokens: Tokens = {}
    for report in reports:
        for kind in ("prompt", "response"):
            details = report.get(f"{kind}TokensDetails", [])
            assert sum(d["tokenCount"] for d in details) == report.get(f"{kind}TokenCount", 0)
            for detail in details:
                by_modality = tokens.setdefault(kind, {})
                modality = detail["modality"]
                by_modality[modality] = by_modality.get(modality, 0) + detail["tokenCount"]
    return tokens, sum(report["totalTokenCount"] for report in reports)


def cost(tokens: Tokens) -> float:
    prices = {("prompt", "TEXT"): 1.0, ("prompt", "AUDIO"): 2.0, ("response", "TEXT"): 8.0}
    micro = sum(
        n * prices[(kind, modality)] for kind, m in tokens.items() for modality, n in m.items()
    )
    return round(micro / 1_000_000, 6)


async def auth(port: int, body: dict[str, Any]) -> HttpResponse:
    headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
    return await request("127.0.0.1", port, "POST", "/api/auth", orjson.dumps(body), headers)


async def start(client: BrowserClient, setup: dict[str, Any] = TEXT_SETUP) -> str:
    """Send ``setup``; the resume token announced after ``setupComplete``."""
    await client.send_json(setup)
    assert "setupComplete" in await client.recv_json()
    announced = (await client.recv_until(has_key("sessionResumable")))[-1]
    assert isinstance(announced, str)
    token: str = orjson.loads(announced)["sessionResumable"]["token"]
    return token


async def talk(client: BrowserClient, text: str) -> list[Frame]:
    await client.send_json({"type": "text", "text": text})
    return await client.recv_until(has_key("serverContent", "turnComplete"))


def status(frame: Frame) -> str | None:
    if not isinstance(frame, str):
        return None
    state: str | None = orjson.loads(frame).get("sessionStatus", {}).get("state")
    return state


def records(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines()]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_conversation_is_metered_once_per_turn_across_a_switch_and_a_resume(
    kind: str, emulator: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    log, prices = tmp_path / "usage.jsonl", tmp_path / "prices.toml"
    prices.write_text(PRICES)
    emulator.set_faults(Faults(repeat_usage=True))
    emulator.queue_faults(Faults(repeat_usage=True, go_away_after=2))
    redis = request.getfixturevalue("redis_server") if kind == "redis" else None
    settings = {"usage_log": log, "prices_file": prices, "session_min_seconds": 1}
    async with proxy_on(kind, emulator, tmp_path, redis, **settings) as proxy:
        first = await auth(proxy.port, {"session_duration": 8})
        token = first.json()["session_token"]
        url = f"ws://127.0.0.1:{proxy.port}/ws?token="
        async with open_websocket_url(url + token, extra_headers=HEADERS) as ws:
            client = BrowserClient(ws)
            resume = await start(client)
            await talk(client, "one")
            # goAway after "two": the switch comes at the turn's end (its status may come first).
            await client.send_json({"type": "text", "text": "two"})
            frames: list[Frame] = []
            while "resumed" not in map(status, frames) or not any(
                has_key("serverContent", "turnComplete")(f) for f in frames
            ):
                frames.append(await client.recv())
            for frame in pcm.frames(pcm.silence(1.0)):  # a second of audio in: 32000 bytes
                await ws.send_message(frame)
            await talk(client, "three")
        await wait_until(lambda: len(emulator.connections) == 2)
        await emulator.connections[1].wait_closed()
        with trio.fail_after(10):  # the socket's session over, its conversation kept
            await proxy.state.gauges.wait_idle()

        again = await auth(proxy.port, {"resume": resume})
        assert again.status == 200, again.body
        async with open_websocket_url(
            url + again.json()["session_token"], extra_headers=HEADERS
        ) as ws:
            client = BrowserClient(ws)
            await start(client)
            await talk(client, "four")
            with trio.fail_after(15):
                ended = await client.wait_closed()
        end = ended.last_event["sessionEnd"]
        assert end["reason"] == "time_limit"

        connections = emulator.connections
        assert len(connections) == 3  # the first, the one switched to, the resumed socket's
        first_socket = turn_reports(connections[:2])
        second_socket = turn_reports(connections[2:])
        assert (len(first_socket), len(second_socket)) == (3, 1)
        tokens, total = added_up(first_socket + second_socket)
        assert set(tokens) == {"prompt", "response"}
        assert tokens["response"]["TEXT"] > 0
        usage = end["stats"]["usage"]
        assert usage == {
            "tokens": tokens,
            "total_tokens": total,
            "audio_in_seconds": 1.0,
            "audio_out_seconds": 0.0,
            "cost_usd": cost(tokens),
        }
        # The older keys stay what they were: the latest report's counts.
        last = second_socket[-1]
        assert end["stats"]["total_token_count"] == last["totalTokenCount"]
        assert end["stats"]["prompt_token_count"] == last["promptTokenCount"]
        assert end["stats"]["response_token_count"] == last["responseTokenCount"]

        await wait_until(lambda: log.exists() and len(records(log)) == 2)
        one, two = records(log)
        first_tokens, first_total = added_up(first_socket)
        second_tokens, second_total = added_up(second_socket)
        assert one["conversation_id"] == two["conversation_id"] == one["session_id"]
        assert two["session_id"] != one["session_id"]
        assert one["model"] == two["model"] == TEST_MODEL
        assert one["reason"] in ("browser_closed", None)  # None: cancelled as the browser left
        assert two["reason"] == "time_limit"
        assert one["usage"] == {
            "tokens": first_tokens,
            "total_tokens": first_total,
            "audio_in_seconds": 1.0,
            "audio_out_seconds": 0.0,
            "cost_usd": cost(first_tokens),
        }
        assert "conversation_usage" not in one
        assert two["usage"] == {
            "tokens": second_tokens,
            "total_tokens": second_total,
            "audio_in_seconds": 0.0,
            "audio_out_seconds": 0.0,
            "cost_usd": cost(second_tokens),
        }
        assert two["conversation_usage"] == usage  # the records of a conversation add up to it
        assert 0 < two["seconds"] <= 8
        assert one["started"] <= one["ended"] <= two["started"] <= two["ended"]
        assert one["ended"].endswith("+00:00")
        assert len(one["client"]) < 40  # a hash, not the address


async def test_audio_is_metered_in_seconds_each_way(
    make_proxy: ProxyFactory, emulator: Emulator, tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    proxy = await make_proxy(model=NATIVE_AUDIO_MODEL, usage_log=log)
    sent = pcm.speech(1.2) + pcm.silence(1.0)
    received = 0
    async with proxy.session(AUDIO_SETUP) as client:
        for frame in pcm.frames(sent):
            await client.ws.send_message(frame)
        frames = await client.recv_until(has_key("serverContent", "turnComplete"))
        received = sum(len(f) for f in frames if isinstance(f, bytes))
    assert received > 0
    await wait_until(lambda: log.exists() and len(records(log)) == 1)
    (record,) = records(log)
    usage = record["usage"]
    assert usage["audio_in_seconds"] == round(len(sent) / 32000, 3)
    assert usage["audio_out_seconds"] == round(received / 48000, 3)
    tokens, total = added_up(
        [m["usageMetadata"] for m in emulator.connections[0].sent if "usageMetadata" in m]
    )
    assert usage["tokens"] == tokens
    assert tokens["response"]["AUDIO"] > 0
    assert usage["total_tokens"] == total
    assert "cost_usd" not in usage  # no prices: no cost


async def test_a_real_process_counts_usage_in_its_metrics_and_log(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_faults(Faults(repeat_usage=True))
    directory = tmp_path / "prometheus"
    directory.mkdir()
    log = tmp_path / "usage.jsonl"
    settings = {
        "METRICS_BIND": "127.0.0.1:0",
        "MAX_SESSIONS_PER_CLIENT": "0",
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "USAGE_LOG": str(log),
    }
    async with liveproxy_process(**settings) as served:
        port = await metrics_port(served)
        async with signed_in_socket(served.port) as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            assert "setupComplete" in await client.recv_json()
            for frame in pcm.frames(pcm.silence(0.5)):
                await ws.send_message(frame)
            await talk(client, "hello")
            await talk(client, "again")
        tokens, _ = added_up(turn_reports(emulator.connections))

        async def counted() -> bool:
            found = await scrape(port)
            return (
                all(
                    found.value("liveproxy_tokens_used_total", model=TEST_MODEL, kind=k, modality=m)
                    == n
                    for k, by_modality in tokens.items()
                    for m, n in by_modality.items()
                )
                and found.value("liveproxy_audio_seconds_total", direction="in") == 0.5
            )

        await eventually(counted, 10)
        found = await scrape(port)
        assert found.value("liveproxy_audio_seconds_total", direction="out") == 0
        used = sum(v for (n, _), v in found.samples.items() if n == "liveproxy_tokens_used_total")
        assert used == sum(n for m in tokens.values() for n in m.values())
        (record,) = records(log)
        assert record["usage"]["tokens"] == tokens
        assert record["usage"]["audio_in_seconds"] == 0.5
    ended = next(line for line in served.log if "session_ended" in line or " ended after " in line)
    assert "audio_in_seconds=0.500" in ended
    assert "Traceback" not in served.text


NATIVE_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)


async def test_a_gemini_native_session_is_metered_too(
    make_proxy: ProxyFactory, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_faults(Faults(repeat_usage=True))
    log = tmp_path / "usage.jsonl"
    proxy = await make_proxy(usage_log=log)
    minted = await request("127.0.0.1", proxy.port, "POST", "/api/auth", b'{"ephemeral": {}}')
    token = minted.json()["name"].removeprefix("auth_tokens/")
    resource = f"{NATIVE_PATH}?access_token={token}"
    async with open_websocket("127.0.0.1", proxy.port, resource, use_ssl=False) as ws:
        setup = {"model": f"models/{TEST_MODEL}", "generationConfig": {}}
        setup["generationConfig"] = {"responseModalities": ["TEXT"]}
        await ws.send_message(orjson.dumps({"setup": setup}).decode())
        assert orjson.loads(await ws.get_message()) == {"setupComplete": {}}
        for text in ("one", "two"):
            await ws.send_message(orjson.dumps({"realtimeInput": {"text": text}}).decode())
            while (
                not orjson.loads(await ws.get_message())
                .get("serverContent", {})
                .get("turnComplete")
            ):
                pass
    await wait_until(lambda: log.exists() and len(records(log)) == 1)
    (record,) = records(log)
    tokens, total = added_up(turn_reports(emulator.connections))
    assert record["model"] == TEST_MODEL
    assert record["usage"]["tokens"] == tokens
    assert record["usage"]["total_tokens"] == total > 0
