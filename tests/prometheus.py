"""A process's `/metrics` as Prometheus reads it (prometheus_client's own text parser)."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

Scrape = dict[str, list[Sample]]  # sample name -> samples
ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def scrape(port: int) -> Scrape:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def buckets(scrape: Scrape, name: str, **labels: str) -> list[float]:
    bounds = {
        float(s.labels["le"])
        for s in scrape.get(f"{name}_bucket", [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    }
    return sorted(b for b in bounds if b != float("inf"))


def value(scrape: Scrape, name: str, **labels: str) -> float | None:
    for sample in scrape.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None
