"""The ingest workers' share of `/metrics`: each worker process's counters and histograms, sent
to the main process over its socket pair and added to the main process's own at scrape time.

With `workers:` above 1, frames are answered and batches committed in several processes, but
only the main process serves `/metrics`.  A worker keeps its instruments in a registry of its
own (`engine.web.metrics.Metrics`, with the same names and labels) and, once a second and when
it stops, sends their cumulative values (`samples_of`, as `encode` chunks).  The main process
keeps the latest values per worker (`WorkerSamples.update`) and adds them to its own samples of
the same name and labels (`WorkerSamples.merged`).  When a worker dies, its last values are kept
as retired, so a restarted worker starting again from 0 never makes a counter go backwards.

Only counters and histograms travel (every sample of theirs adds up across processes); gauges
are the main process's alone (connections are counted there for every process).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import Metric
from prometheus_client.samples import Sample

from engine.workers import METRICS

CHUNK_BYTES = 48_000  # each datagram stays well under the socket pair's buffer
ADDITIVE = frozenset({"counter", "histogram"})

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


def _key(sample: Sample) -> Key:
    return sample.name, tuple(sorted(sample.labels.items()))


def samples_of(families: Iterable[Metric]) -> dict[Key, float]:
    """The counter and histogram samples of a registry's families, by name and labels."""
    return {_key(s): s.value for family in families if family.type in ADDITIVE
            for s in family.samples if not s.name.endswith("_created")}


def encode(samples: Mapping[Key, float]) -> Iterator[bytes]:
    """`samples` as datagrams of at most about CHUNK_BYTES each."""
    chunk: list[list[Any]] = []
    size = 0
    for (name, labels), value in samples.items():
        item = [name, dict(labels), value]
        chunk.append(item)
        size += len(json.dumps(item))
        if size >= CHUNK_BYTES:
            yield METRICS + json.dumps(chunk).encode()
            chunk, size = [], 0
    if chunk:
        yield METRICS + json.dumps(chunk).encode()


def decode(data: bytes) -> dict[Key, float]:
    """One datagram's samples; nothing for a malformed one."""
    try:
        items = json.loads(data[len(METRICS):])
        return {(str(name), tuple(sorted((str(k), str(v)) for k, v in labels.items()))):
                float(value) for name, labels, value in items}
    except (ValueError, TypeError, AttributeError):
        return {}


class WorkerSamples:
    """The main process's record of its workers' samples."""

    def __init__(self) -> None:
        self.live: dict[int, dict[Key, float]] = {}
        self.retired: dict[Key, float] = {}

    def update(self, worker: int, data: bytes) -> None:
        """A worker's datagram: its latest cumulative values."""
        self.live.setdefault(worker, {}).update(decode(data))

    def retire(self, worker: int) -> None:
        """A worker is gone: its last values stay in the sums."""
        for key, value in self.live.pop(worker, {}).items():
            self.retired[key] = self.retired.get(key, 0.0) + value

    def totals(self) -> dict[Key, float]:
        """Every worker's values (retired ones included), summed by name and labels."""
        out = dict(self.retired)
        for samples in self.live.values():
            for key, value in samples.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def merged(self, families: Iterable[Metric]) -> Iterator[Metric]:
        """The main process's families with the workers' values added, including label sets
        only a worker has seen."""
        extra = self.totals()
        for family in families:
            if family.type not in ADDITIVE or not extra:
                yield family
                continue
            names = _sample_names(family)
            own = {_key(s): s for s in family.samples}
            samples = [s._replace(value=s.value + extra.get(k, 0.0)) for k, s in own.items()]
            samples += [Sample(name, dict(labels), value) for (name, labels), value
                        in extra.items() if name in names and (name, labels) not in own]
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = sorted(samples, key=_order)
            yield out


def _sample_names(family: Metric) -> set[str]:
    if family.type == "counter":
        return {family.name + "_total"}
    return {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}


def _order(sample: Sample) -> tuple[Any, ...]:
    """Label set first, then buckets (by bound), count, sum: the text format's order."""
    labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
    rank = 0 if sample.name.endswith(("_bucket", "_total")) else \
        1 if sample.name.endswith("_count") else 2
    bound = float(sample.labels.get("le", "0").replace("+Inf", "inf"))
    return labels, rank, bound
