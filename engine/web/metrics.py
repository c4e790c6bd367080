"""The engine's Prometheus metrics: one `CollectorRegistry` per engine (never the global one),
the instruments the ingest, writer and delivery paths feed, and the gauges read at scrape time.

The metric names and labels are a contract (docs/monitoring.md).  Labels carry channel and
destination names, message types, ACK codes, statuses and priority codes: never patient data.
Label values stay bounded: a message type outside the channel's accept list is `other`, one that
could not be read is `unknown`; a priority code the ledger has no deadline for is `other`.
prometheus_client's instruments are thread-safe: the writer thread and the delivery thread pool
update them directly.  The per-frame ones are plain counts (`FrameCounts`), updated and read
on the reactor thread (frames are answered there, scrapes and worker reports run there).
With ingest workers, each worker process keeps the same instruments and
the main process adds their values to its own (engine.web.workers).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine.config import Channel, Config
from engine.ledger.lifecycle import STATUSES
from engine.web.workers import WorkerSamples, encode, samples_of

PREFIX = "hl7_engine_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
NO_ACK = "none"  # a frame answered by no ACK
Oversize = Callable[[bytes, int, int], tuple[list[bytes], dict[str, str]]]


def type_label(channel: Channel, message_type: str) -> str:
    """`REF^I12` when the channel accepts it; `other` when it does not; `unknown` when the
    frame had no readable MSH-9."""
    kind, _, rest = message_type.partition("^")
    trigger = rest.split("^")[0]
    if not kind:
        return "unknown"
    return f"{kind}^{trigger}" if channel.accepts(kind, trigger) else "other"


def ack_code(acks: Iterable[bytes]) -> str:
    """MSA-1 of the first ACK (`AA`, `AE`, `AR`, `CA`, …), `none` without one."""
    for ack in acks:
        at = ack.find(b"\rMSA|")
        code = ack[at + 5: at + 7].decode("ascii", "replace") if at >= 0 else ""
        return code if code.isalpha() else "?"
    return NO_ACK


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the database says, read in one go off the reactor (engine/web/snapshot.py)."""

    queues: tuple[Mapping[str, object], ...] = ()  # engine.outbound.views.queue_state rows
    referrals: Mapping[str, int] = field(default_factory=dict)  # status → count
    overdue: Mapping[str, int] = field(default_factory=dict)  # priority code → count


class Metrics:
    """The instruments of one engine, in a registry of its own."""

    def __init__(self) -> None:
        # No `_created` series beside each counter and histogram (process-wide).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.workers = WorkerSamples()  # the ingest workers' values (engine.web.workers)
        r = self.registry
        self.frames = FrameCounts()
        r.register(self.frames)
        self.batch_size = Histogram(
            PREFIX + "commit_batch_size", "Frames per group commit", buckets=BATCH_BUCKETS,
            registry=r)
        self.commit_seconds = Histogram(
            PREFIX + "commit_seconds", "Time to work and commit one batch", buckets=COMMIT_BUCKETS,
            registry=r)
        self.deliveries = Counter(
            PREFIX + "deliveries", "Delivery attempts by outcome (delivered, retry, dead)",
            ["destination", "outcome"], registry=r)

    def message(self, channel: Channel, message_type: str, acks: Iterable[bytes],
                seconds: float) -> None:
        """One frame answered (on the reactor)."""
        self.frames.count(channel.name, type_label(channel, message_type), ack_code(acks))
        self.frames.observe(channel.name, seconds)

    def oversize(self, channel: Channel, answer: Oversize) -> Oversize:
        """The listener's answer to an oversized frame (engine.ack.AckBuilder.too_large), with
        the frame counted: its type `unknown` (its body was never read)."""
        def counted(head: bytes, size: int, limit: int) -> tuple[list[bytes], dict[str, str]]:
            acks, about = answer(head, size, limit)
            self.frames.count(channel.name, "unknown", ack_code(acks))
            return acks, about

        return counted

    def commit(self, batch: int, seconds: float) -> None:
        """One batch worked and committed (on the writer thread)."""
        self.batch_size.observe(batch)
        self.commit_seconds.observe(seconds)

    def delivery(self, destination: str, outcome: str) -> None:
        """One delivery attempt settled: delivered, retry or dead (any thread)."""
        self.deliveries.labels(destination, outcome).inc()

    def live(self, config: Callable[[], Config], connections: Callable[[], Mapping[str, int]],
             snapshot: Callable[[], Snapshot | None]) -> None:
        """Register the gauges computed at scrape time."""
        self.registry.register(LiveGauges(config, connections, snapshot))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, the ingest workers' values added."""
        return generate_latest(_WithWorkers(self.registry, self.workers))

    def worker_datagrams(self) -> list[bytes]:
        """In a worker process: this process's counters and histograms, for the main one."""
        return list(encode(samples_of(self.registry.collect())))


class FrameCounts(Collector):
    """The instruments fed once per frame, on the reactor: `messages` (by channel, type and
    ACK code) and `ack_latency_seconds` (by channel), counted in plain dicts and lists (an
    addition per frame, and a C bisect for the latency's bucket, where prometheus_client's
    children take a lock per update and its Histogram finds the bucket in Python), and
    exposed at scrape time as the Counter and Histogram of the same names, help, labels and
    buckets, their series in the order first seen."""

    def __init__(self) -> None:
        self.messages: dict[tuple[str, str, str], float] = {}
        self.buckets: dict[str, list[float]] = {}  # per channel: frames per bucket, +Inf last
        self.sums: dict[str, float] = {}  # per channel: the latencies' sum

    def count(self, channel: str, type_label: str, ack: str) -> None:
        key = (channel, type_label, ack)
        self.messages[key] = self.messages.get(key, 0.0) + 1.0

    def observe(self, channel: str, seconds: float) -> None:
        buckets = self.buckets.get(channel)
        if buckets is None:
            buckets = self.buckets[channel] = [0.0] * (len(LATENCY_BUCKETS) + 1)
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1.0  # `le`: the bound included
        self.sums[channel] = self.sums.get(channel, 0.0) + seconds

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            PREFIX + "messages", "Frames received, by the first ACK code they got (none: no "
            "reply was due); retransmissions count", labels=["channel", "type", "ack"])
        for labels, value in list(self.messages.items()):
            messages.add_metric(list(labels), value)
        yield messages
        latency = HistogramMetricFamily(
            PREFIX + "ack_latency_seconds", "From a frame handed to the writer to its ACK "
            "handed to the connection", labels=["channel"])
        for channel, buckets in list(self.buckets.items()):
            latency.add_metric([channel], _cumulative(buckets), self.sums[channel])
        yield latency


def _cumulative(buckets: list[float]) -> list[tuple[str, float]]:
    """Per-bucket counts as the text format's `le` buckets: each bound with its running total."""
    return list(zip(_LE, accumulate(buckets), strict=True))


_LE = (*map(floatToGoString, LATENCY_BUCKETS), "+Inf")


class _WithWorkers(Collector):
    """The registry's families with the workers' samples added (engine.web.workers)."""

    def __init__(self, registry: CollectorRegistry, workers: WorkerSamples) -> None:
        self.registry, self.workers = registry, workers

    def collect(self) -> Iterable[Metric]:
        return self.workers.merged(self.registry.collect())


class LiveGauges(Collector):
    """Gauges read at scrape time: open connections from the listeners' factories, and the
    database's figures from the latest snapshot (none before the first read)."""

    def __init__(self, config: Callable[[], Config], connections: Callable[[], Mapping[str, int]],
                 snapshot: Callable[[], Snapshot | None]) -> None:
        self.config = config
        self.connections = connections
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None, {}))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.snapshot(), self.connections()))

    def _families(self, snap: Snapshot | None, connections: Mapping[str, int]
                  ) -> Iterator[Metric]:
        config = self.config()
        conn = GaugeMetricFamily(PREFIX + "connections", "Open MLLP connections",
                                 labels=["channel"])
        for ch in config.channels:
            conn.add_metric([ch.name], connections.get(ch.name, 0))
        yield conn
        yield from _queue_families(snap)
        statuses = GaugeMetricFamily(PREFIX + "referrals", "Referrals in each status",
                                     labels=["status"])
        overdue = GaugeMetricFamily(PREFIX + "referrals_overdue", "Pending or accepted "
                                    "referrals past their deadline to be scheduled",
                                    labels=["priority"])
        if snap is not None:
            for status in STATUSES:
                statuses.add_metric([status], snap.referrals.get(status, 0))
            for code, n in priority_counts(snap.overdue, config).items():
                overdue.add_metric([code], n)
        yield statuses
        yield overdue


def priority_counts(found: Mapping[str, int], config: Config) -> dict[str, int]:
    """Counts by priority code, every code with a deadline listed (0 included), the codes
    without one summed under `other` and referrals without a priority under `none`."""
    out = dict.fromkeys(config.ledger.deadlines, 0)
    for code, n in found.items():
        key = code if code in out else "none" if not code else "other"
        out[key] = out.get(key, 0) + n
    return out


def _queue_families(snap: Snapshot | None) -> Iterator[Metric]:
    depth = GaugeMetricFamily(PREFIX + "queue_depth", "Queued outbound messages",
                              labels=["destination"])
    oldest = GaugeMetricFamily(PREFIX + "queue_oldest_seconds", "Age of the oldest queued "
                               "outbound message (0: none queued)", labels=["destination"])
    dead = GaugeMetricFamily(PREFIX + "dead_letters", "Outbound messages given up on",
                             labels=["destination"])
    for q in snap.queues if snap is not None else ():
        name = str(q["destination"])
        depth.add_metric([name], float(_number(q["depth"])))
        oldest.add_metric([name], float(_number(q["oldest_age_s"])))
        dead.add_metric([name], float(_number(q["dead_letters"])))
    yield depth
    yield oldest
    yield dead


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
