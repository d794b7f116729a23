"""Reading a ``liveproxy serve`` process's Prometheus metrics in tests: over ``METRICS_BIND``
(its port from the ``metrics on http://HOST:PORT/metrics`` log line), or, once the process is
gone, from the ``PROMETHEUS_MULTIPROC_DIR`` it counted into (added up as its listener would).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import trio
from prometheus_client.parser import text_string_to_metric_families

from liveproxy.serving.metrics_listener import scraper
from tests.http import request
from tests.served import Served

#: A sample's key: its name and its labels.
Key = tuple[str, frozenset[tuple[str, str]]]


@attrs.frozen
class Scrape:
    """One scrape: every sample by name and labels."""

    samples: dict[Key, float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it is not there."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def shown(sample: Key) -> str:
    """A sample's key as the text format writes it: ``name{label="value"}``."""
    name, labels = sample
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
    return f"{name}{{{inner}}}" if inner else name


def parse(text: str) -> Scrape:
    """The samples of a scrape in the text format."""
    return Scrape(
        {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    )


async def metrics_port(served: Served) -> int:
    """The port of ``served``'s metrics listener (``METRICS_BIND=127.0.0.1:0``), from its log."""
    pattern = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"
    await served.wait_for(lambda text: re.search(pattern, text) is not None)
    match = re.search(pattern, served.text)
    assert match is not None
    return int(match.group(1))


async def scrape(port: int) -> Scrape:
    """``GET /metrics`` on ``port``."""
    response = await request("127.0.0.1", port, "GET", "/metrics")
    assert response.status == 200, response.body
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.body.decode())


async def until_scraped(port: int, name: str, value: float, **labels: str) -> Scrape:
    """Scrape until ``name{labels}`` is ``value`` (the processes count as they go)."""
    with trio.fail_after(10):
        while True:
            found = await scrape(port)
            if found.value(name, **labels) == value:
                return found
            await trio.sleep(0.02)


def read_directory(directory: Path) -> Scrape:
    """What a listener on ``directory`` (a ``PROMETHEUS_MULTIPROC_DIR``) would serve: for a
    process that has exited, whose files stay (the operator's directory is never removed)."""
    return parse(scraper(str(directory))().decode())
