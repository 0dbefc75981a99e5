"""The gates' I/O: the proxies' ``:15020/stats/prometheus``, and a user's Prometheus.

Which pods to scrape is what Prometheus itself would use: the pods annotated
``prometheus.io/scrape: "true"`` (with ``prometheus.io/port`` and ``prometheus.io/path``),
as every tcpmesh proxy pod is. A pod that does not answer fails the whole
scrape (``ScrapeFailed``): a window's baseline or measurement without one proxy's share
would be wrong, so the controller measures again at its next sync instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from tcpmesh.controllers.gates import Sample, parse_samples
from tcpmesh.runtime.storeapi import StoreLike

log = logging.getLogger("tcpmesh.controllers.scrape")

SCRAPE_TIMEOUT = 5.0
MetricsSource = Callable[[], Awaitable[list[Sample]]]


class ScrapeFailed(RuntimeError):
    """A proxy did not answer: a window's numbers would be missing its share."""


def scrape_targets(pods: list[dict[str, Any]]) -> list[str]:
    """The metrics URLs of the running pods that ask to be scraped."""
    urls = []
    for pod in pods:
        annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if annotations.get("prometheus.io/scrape") != "true" or not ip:
            continue
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        port = annotations.get("prometheus.io/port", "15020")
        path = annotations.get("prometheus.io/path", "/stats/prometheus")
        urls.append(f"http://{ip}:{port}{path}")
    return urls


def pod_metrics(store: StoreLike) -> MetricsSource:
    """A ``MetricsSource`` over every scrapeable pod the store knows."""

    async def collect() -> list[Sample]:
        urls = scrape_targets(store.list("Pod"))
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            texts = await asyncio.gather(*(_text(session, url) for url in urls))
        missing = [url for url, text in zip(urls, texts, strict=True) if text is None]
        if missing:
            raise ScrapeFailed(f"no metrics from {', '.join(missing)}")
        return [sample for text in texts if text for sample in parse_samples(text)]

    return collect


async def _text(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as response:
            if response.status != 200:
                log.info("scrape %s: HTTP %d", url, response.status)
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("scrape %s: %s", url, exc)
        return None


async def prometheus_value(address: str, query: str) -> float | str:
    """The one number a PromQL instant query returns, or why there is none."""
    url = address.rstrip("/") + "/api/v1/query"
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params={"query": query}) as response,
        ):
            doc = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"cannot query {address}: {exc or type(exc).__name__}"
    return query_number(doc)


def query_number(doc: Any) -> float | str:
    """The value of a Prometheus query response with one scalar or one vector sample."""
    if not isinstance(doc, Mapping) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, Mapping) else None
        return f"query failed: {error or 'not a Prometheus response'}"
    data = doc.get("data") or {}
    result: Any = data.get("result") if isinstance(data, Mapping) else None
    try:
        if not isinstance(data, Mapping) or not isinstance(result, list):
            return "the query returned no result"
        if data.get("resultType") == "scalar":
            value = float(result[1])
        elif data.get("resultType") == "vector" and len(result) == 1:
            value = float(result[0]["value"][1])
        else:
            count = len(result) if isinstance(result, list) else 0
            return f"the query returned {count} series, not one number"
    except (TypeError, ValueError, IndexError, KeyError):
        return "the query returned no number"
    return "the query returned NaN" if math.isnan(value) else value
