"""Budgets in a real ``liveproxy serve``: settings refused at start (one line, exit 2), and
``liveproxy_budget_refusals_total{scope}`` counting sign-ins refused and sessions ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from liveproxy.emulator import Emulator
from tests.conftest import TEXT_SETUP
from tests.http import request
from tests.metrics_scrape import metrics_port, scrape
from tests.models import TEST_MODEL
from tests.served import eventually, liveproxy_process, serve_refused, signed_in_socket
from tests.wsclient import BrowserClient

PRICES = f'[models."{TEST_MODEL}"]\nprompt = {{ TEXT = 1.0 }}\n'


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"BUDGET_TOTAL": "5 usd/month"}, "BUDGET_TOTAL: usd budgets need a PRICES_FILE"),
        (
            {"BUDGET_PER_CLIENT": "5 eur/month", "PRICES_FILE": "prices.toml"},
            "BUDGET_PER_CLIENT: eur budgets need a PRICES_FILE in eur; it is in usd",
        ),
        ({"BUDGET_PER_CLIENT": "60 minutes/week"}, "BUDGET_PER_CLIENT='60 minutes/week' is"),
    ],
)
def test_a_budget_that_cannot_be_counted_stops_serve_with_exit_2(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    (tmp_path / "prices.toml").write_text(PRICES)
    done = serve_refused(settings, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"liveproxy: configuration error: {message}")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


async def talk_until_session_end(client: BrowserClient) -> dict[str, Any]:
    """Text turns until ``sessionEnd``: its content."""
    with trio.fail_after(20):
        for n in range(1000):
            await client.send_json({"type": "text", "text": f"turn {n}"})
            while True:
                event = await client.recv_json()
                if "sessionEnd" in event:
                    end: dict[str, Any] = event["sessionEnd"]
                    return end
                if event.get("serverContent", {}).get("turnComplete"):
                    break
    raise AssertionError("no sessionEnd")


async def test_refusals_and_endings_are_counted_by_scope(
    emulator: Emulator, tmp_path: Path
) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    settings = {
        "METRICS_BIND": "127.0.0.1:0",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "GOOGLE_API_KEY": "test-key",
        "UPSTREAM_URL": emulator.url,
        "BUDGET_TOTAL": "100 tokens/day",
    }
    async with liveproxy_process(**settings) as served:
        port = await metrics_port(served)
        async with signed_in_socket(served.port) as ws:
            client = BrowserClient(ws)
            await client.send_json(TEXT_SETUP)
            end = await talk_until_session_end(client)
        assert end["reason"] == "budget_exhausted"
        refused = await request("127.0.0.1", served.port, "POST", "/api/auth")
        assert refused.json()["error"]["code"] == "budget_exhausted"

        async def counted() -> bool:
            found = await scrape(port)
            return found.value("liveproxy_budget_refusals_total", scope="total") == 2

        await eventually(counted, 10)
        found = await scrape(port)
        assert found.value("liveproxy_budget_refusals_total", scope="client") == 0
    assert "Traceback" not in served.text
