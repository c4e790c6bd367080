"""The per-frame instruments (engine.web.metrics.FrameCounts), counted in plain dicts and lists:
their exposition is the text prometheus_client's own Counter and Histogram give for the same
frames, bucket edges, series order and the other instruments' places included."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from engine.config import Channel, parse_config
from engine.web.metrics import (
    BATCH_BUCKETS,
    COMMIT_BUCKETS,
    LATENCY_BUCKETS,
    PREFIX,
    Metrics,
    ack_code,
    type_label,
)
from engine.web.workers import encode, samples_of

CHANNELS = {"channels": [{"name": name, "listen": {"port": 2575 + n},
                          "accept": ["REF^I12", "SIU^S12-S14"]}
                         for n, name in enumerate(("a", "b"))]}
ACKS = {code: [b"MSH|^~\\&|||||||ACK|1|P|2.5.1\rMSA|" + code.encode() + b"|1\r"]
        for code in ("AA", "AE", "AR")}
TYPES = ("REF^I12", "SIU^S12", "ADT^A01", "", "SIU^S14^SIU_S12")
EDGES = (0.0, 0.0005, *LATENCY_BUCKETS, 31.0, 0.0009999)


class _Reference:
    """The same instruments as prometheus_client's own, in the same order."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            PREFIX + "messages", "Frames received, by the first ACK code they got (none: no "
            "reply was due); retransmissions count", ["channel", "type", "ack"], registry=r)
        self.ack_latency = Histogram(
            PREFIX + "ack_latency_seconds", "From a frame handed to the writer to its ACK "
            "handed to the connection", ["channel"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            PREFIX + "commit_batch_size", "Frames per group commit", buckets=BATCH_BUCKETS,
            registry=r)
        self.commit_seconds = Histogram(
            PREFIX + "commit_seconds", "Time to work and commit one batch",
            buckets=COMMIT_BUCKETS, registry=r)
        self.deliveries = Counter(
            PREFIX + "deliveries", "Delivery attempts by outcome (delivered, retry, dead)",
            ["destination", "outcome"], registry=r)

    def message(self, channel: Channel, message_type: str, acks: list[bytes],
                seconds: float) -> None:
        self.messages.labels(channel.name, type_label(channel, message_type),
                             ack_code(acks)).inc()
        self.ack_latency.labels(channel.name).observe(seconds)


def test_the_exposition_is_prometheus_clients_for_the_same_frames() -> None:
    channels = parse_config(CHANNELS).channels
    metrics, reference = Metrics(), _Reference()
    assert generate_latest(metrics.registry) == generate_latest(reference.registry)
    pick = random.Random(7)
    frames = [(pick.choice(channels), pick.choice(TYPES), ACKS[pick.choice(list(ACKS))],
               pick.choice(EDGES) if pick.random() < 0.3 else pick.uniform(0, 12))
              for _ in range(3000)]
    for channel, message_type, acks, seconds in frames:
        metrics.message(channel, message_type, acks, seconds)
        reference.message(channel, message_type, acks, seconds)
    counted = metrics.oversize(channels[1], lambda head, size, limit: (ACKS["AR"], {}))
    counted(b"MSH|", 10, 5)
    reference.messages.labels("b", "unknown", "AR").inc()
    metrics.commit(8, 0.002)
    reference.batch_size.observe(8)
    reference.commit_seconds.observe(0.002)
    metrics.delivery("ehr", "retry")
    reference.deliveries.labels("ehr", "retry").inc()
    assert generate_latest(metrics.registry) == generate_latest(reference.registry)
    assert metrics.worker_datagrams() == list(encode(samples_of(reference.registry.collect())))
