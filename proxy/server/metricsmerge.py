"""``/metrics`` of ``--workers N``: worker 0 sums every worker's exposition into one.

Layer 4. framegate's metric cells (``proxy.metrics``: ``FastCounter`` and
friends) are plain Python objects that prometheus_client's multiprocess mode
cannot see, so worker 0 scrapes the other workers instead: each serves its own
``/metrics`` on a private loopback admin port the supervisor picked
(``Config.worker_metrics``). The texts are parsed with prometheus_client's
parser and summed sample by sample (same name and labels): counters, gauges
such as open connections, histogram buckets, sums and counts. Three kinds are
not summed:

* ``process_*`` (CPU, memory, file descriptors) and ``framegate_cluster_*``
  (each process's view of Redis) get a ``worker`` label: a sum of start times
  or of "degraded" flags means nothing, and per worker they show which one
  is in trouble;
* ``*_created`` timestamps take the earliest;
* ``python_*`` and info metrics are worker 0's (every worker runs the same).

A worker that does not answer within ``METRICS_SCRAPE_TIMEOUT_S`` (restarting,
say) is left out of that scrape and counted in ``framegate_workers_unscraped``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from proxy.limits import METRICS_SCRAPE_TIMEOUT_S

logger = logging.getLogger(__name__)

PER_WORKER_PREFIXES: Final = ("process_", "framegate_cluster_")
FIRST_WORKER_ONLY_PREFIXES: Final = ("python_",)
WORKER_LABEL: Final = "worker"
UNSCRAPED: Final = "framegate_workers_unscraped"

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


class _Merged(Collector):
    """The merged families, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge_expositions(texts: Sequence[str], unscraped: int = 0) -> bytes:
    """Worker ``i``'s exposition is ``texts[i]``; returns one exposition summed over them."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[_SampleKey, float]] = {}
    for index, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            if index > 0 and (family.type == "info" or family.name.startswith(FIRST_WORKER_ONLY_PREFIXES)):
                continue
            per_worker = family.name.startswith(PER_WORKER_PREFIXES)
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            merged = values[family.name]
            for sample in family.samples:
                labels = dict(sample.labels)
                if per_worker:
                    labels[WORKER_LABEL] = str(index)
                key = (sample.name, tuple(labels.items()))
                if key not in merged:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    for name, family in families.items():
        for (sample_name, label_pairs), value in values[name].items():
            family.add_sample(sample_name, dict(label_pairs), value)
    gauge = Metric(UNSCRAPED, "Workers whose /metrics could not be read for this scrape", "gauge")
    gauge.add_sample(UNSCRAPED, {}, float(unscraped))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([*families.values(), gauge]))
    return generate_latest(registry)


async def _scrape(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                logger.warning("worker metrics at %s answered %d; left out of this scrape", url, response.status)
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("worker metrics at %s unreachable (%s); left out of this scrape", url, exc)
        return None


def summing_exposition(
    local: Callable[[], tuple[bytes, str]], peers: Sequence[str]
) -> Callable[[], Awaitable[tuple[bytes, str]]]:
    """Worker 0's ``/metrics``: its own exposition plus every peer's, summed."""

    async def exposition() -> tuple[bytes, str]:
        body, content_type = local()
        timeout = aiohttp.ClientTimeout(total=METRICS_SCRAPE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            scraped = await asyncio.gather(*(_scrape(session, url) for url in peers))
        texts = [body.decode(), *(text for text in scraped if text is not None)]
        return merge_expositions(texts, sum(text is None for text in scraped)), content_type

    return exposition
