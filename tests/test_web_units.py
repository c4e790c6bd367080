"""The web face in process: the `http:` section's parsing and errors, the reload rule for it,
the metrics module (labels, exposition, the scrape-time gauges, the snapshot cache) and the
readiness verdict; one HTTPS fetch of /healthz under `http.tls`."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import pytest
import yaml
from certs import make_pki
from enginectl import Engine, metric_samples, write_config
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.config import ConfigError, Http, parse_config
from engine.reload import diff
from engine.tls import ListenTLS
from engine.web.health import listener_states, readiness
from engine.web.metrics import Metrics, Snapshot, ack_code, priority_counts, type_label
from engine.web.snapshot import CachedSnapshot

CHANNELS = "channels: [{name: a, listen: {port: 2575}, accept: [REF^I12, SIU^S12-S14]}]\n"


def _parse(http: str) -> Http | None:
    return parse_config(yaml.safe_load(CHANNELS + http)).http


def _problems(http: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _parse(http)
    return caught.value.problems


# --- config ---------------------------------------------------------------------------------


def test_no_http_section_means_no_web_server() -> None:
    """Without `http:` the config has no web face (None); with it, host and port as given,
    port 0 allowed (a free one), host defaulting to loopback."""
    assert _parse("") is None
    assert _parse("http: {listen: {port: 0}}") == Http("127.0.0.1", 0, None)
    assert _parse("http: {listen: {host: 0.0.0.0, port: 9100}}") == Http("0.0.0.0", 9100, None)


@pytest.mark.parametrize(("http", "problems"), [
    ("http: {listen: {host: 127.0.0.1, port: 70000}}",
     ["http.listen.port: expected an integer in 0-65535, got 70000"]),
    ("http: {listen: {port: x}, tsl: {}}",
     ["http.tsl: unknown key; did you mean 'tls'?",
      "http.listen.port: expected an integer in 0-65535, got 'x'"]),
    ("http:", ["http.listen: required (listen: {host: 127.0.0.1, port: 8080})"]),
    ("http: [1]", ["http: expected a mapping, got a list"]),
    ("http: {listen: {host: 127.0.0.1}}",
     ["http.listen.port: required, expected 0-65535 (0 picks a free port)"]),
    ("http: {listen: {port: 2575, hots: x}}",
     ["http.listen.hots: unknown key; did you mean 'host'?",
      "http.listen.port: already used by channels[0]"]),
    ("http: {listen: {port: 8080}, tls: {cert: /nonexistent.pem}}",
     ["http.tls.key: required: a PEM file"]),
    ("http: {listen: {port: 8080}, tls: {cert: /nonexistent.pem, key: /nonexistent.key}}",
     ["http.tls: cannot read /nonexistent.pem (No such file or directory)"]),
])
def test_bad_http_values_are_reported_with_their_path(http: str, problems: list[str]) -> None:
    """Each bad `http:` value is a problem with its YAML path, as elsewhere in the file."""
    assert _problems(http) == problems


def test_http_tls_is_a_listen_tls(tmp_path: Path) -> None:
    """`http.tls` takes exactly a channel's `listen.tls` settings, relative to the file."""
    pki = make_pki(tmp_path)
    http = _parse(f"http: {{listen: {{port: 0}}, tls: {{cert: {pki.server_cert}, "
                  f"key: {pki.server_key}}}}}")
    assert http is not None and http.tls == ListenTLS(str(pki.server_cert), str(pki.server_key))


def test_changing_http_needs_a_restart() -> None:
    """A reload that changes `http:` is refused: only a restart rebinds the web face."""
    old = parse_config(yaml.safe_load(CHANNELS + "http: {listen: {port: 8080}}"))
    new = parse_config(yaml.safe_load(CHANNELS + "http: {listen: {port: 8081}}"))
    assert diff(old, new).restart == ("http",)
    assert diff(old, old).restart == ()


# --- metrics --------------------------------------------------------------------------------


def test_type_and_ack_labels_stay_bounded() -> None:
    """Accepted types keep their name, others are `other`, unreadable ones `unknown`; the ACK
    label is the first ACK's MSA-1, `none` without an ACK."""
    ch = parse_config(yaml.safe_load(CHANNELS)).channels[0]
    assert [type_label(ch, t) for t in ("REF^I12", "REF^I12^REF_I12", "SIU^S13", "ADT^A01",
                                         "REF^I15", "REF", "")] == [
        "REF^I12", "REF^I12", "SIU^S13", "other", "other", "other", "unknown"]
    assert ack_code([b"MSH|^~\\&|\rMSA|AE|1\r", b"MSH|^~\\&|\rMSA|AA|1\r"]) == "AE"
    assert ack_code([]) == "none"


def test_priority_counts_list_every_deadline_code() -> None:
    """Overdue counts by priority: every code with a deadline (0 included), the rest summed as
    `other`, no priority as `none`."""
    config = parse_config(yaml.safe_load(CHANNELS))
    assert priority_counts({"S": 2, "X": 1, "Y": 2, "": 4}, config) == {
        "S": 2, "A": 0, "R": 0, "other": 3, "none": 4}


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return metric_samples(metrics.exposition().decode())


def test_exposition_has_every_contract_name_and_no_created_series() -> None:
    """The exposition carries the instruments fed so far and the scrape-time gauges (from the
    snapshot), each engine in a registry of its own (two engines never mix)."""
    config = parse_config(yaml.safe_load(CHANNELS))
    ch = config.channels[0]
    metrics, other = Metrics(), Metrics()
    metrics.message(ch, "REF^I12", [b"MSH|\rMSA|AA|1\r"], 0.002)
    metrics.commit(3, 0.004)
    metrics.delivery("ehr", "retry")
    snap = Snapshot(({"destination": "ehr", "depth": 4, "oldest_age_s": 12.5,
                      "dead_letters": 1},), {"pending": 2}, {"R": 1})
    metrics.live(lambda: config, lambda: {"a": 2}, lambda: snap)
    samples = _samples(metrics)
    assert samples[("hl7_engine_messages_total",
                    (("ack", "AA"), ("channel", "a"), ("type", "REF^I12")))] == 1
    assert samples[("hl7_engine_ack_latency_seconds_count", (("channel", "a"),))] == 1
    assert samples[("hl7_engine_commit_batch_size_sum", ())] == 3
    assert samples[("hl7_engine_commit_seconds_count", ())] == 1
    assert samples[("hl7_engine_deliveries_total",
                    (("destination", "ehr"), ("outcome", "retry")))] == 1
    assert samples[("hl7_engine_connections", (("channel", "a"),))] == 2
    assert samples[("hl7_engine_queue_depth", (("destination", "ehr"),))] == 4
    assert samples[("hl7_engine_queue_oldest_seconds", (("destination", "ehr"),))] == 12.5
    assert samples[("hl7_engine_dead_letters", (("destination", "ehr"),))] == 1
    assert samples[("hl7_engine_referrals", (("status", "pending"),))] == 2
    assert samples[("hl7_engine_referrals", (("status", "closed"),))] == 0
    assert samples[("hl7_engine_referrals_overdue", (("priority", "R"),))] == 1
    assert not [name for name, _ in samples if name.endswith("_created")]
    assert not [name for name, _ in _samples(other) if name.startswith("hl7_engine_messages")]


def test_the_snapshot_is_read_once_per_ttl_and_served_while_a_read_runs() -> None:
    """The first scrape waits for the first read; scrapes within the TTL read nothing; a stale
    one starts a read and is served the cached figures meanwhile; a failed read keeps them."""
    clock = Clock()
    runs: list[defer.Deferred[Snapshot]] = []

    def run(_read: object) -> defer.Deferred[Snapshot]:
        runs.append(defer.Deferred())
        return runs[-1]

    cache = CachedSnapshot(lambda: Snapshot(), run, clock.seconds, ttl_s=5)
    first = cache.fresh()
    assert len(runs) == 1 and not first.called
    one, two = Snapshot(referrals={"pending": 1}), Snapshot(referrals={"pending": 2})
    runs[0].callback(one)
    assert first.result is one
    clock.advance(4)
    assert cache.fresh().result is one and len(runs) == 1
    clock.advance(1)
    assert cache.fresh().result is one and len(runs) == 2  # stale: a read runs, old served
    assert cache.fresh().result is one and len(runs) == 2  # one read at a time
    runs[1].callback(two)
    assert cache.fresh().result is two
    clock.advance(5)
    cache.fresh()
    runs[2].errback(RuntimeError("database gone"))
    assert cache.fresh().result is two and len(runs) == 4


# --- health ---------------------------------------------------------------------------------


class _Listener:
    def __init__(self, name: str, bound: bool) -> None:
        self.channel = type("Ch", (), {"name": name})()
        self.listening = object() if bound else None


def test_readiness_needs_every_check() -> None:
    """Ready only with the database ok, every channel's listener bound, and the writer alive
    with a heartbeat younger than 10 s; the body names each check either way."""
    listeners = listener_states(["a", "b", "c"], [_Listener("a", True), _Listener("b", False),
                                                   object()])
    assert listeners == {"a": "bound", "b": "not bound", "c": "not bound"}
    assert readiness("ok", {"a": "bound"}, True, 0.4) == (True, {
        "status": "ready", "database": "ok", "listeners": {"a": "bound"},
        "writer": {"alive": True, "heartbeat_age_s": 0.4}})
    assert not readiness("locked", {"a": "bound"}, True, 0.4)[0]
    assert not readiness("ok", listeners, True, 0.4)[0]
    assert not readiness("ok", {"a": "bound"}, False, 0.4)[0]
    assert not readiness("ok", {"a": "bound"}, True, 10.0)[0]


@pytest.mark.slow
def test_http_tls_serves_https(tmp_path: Path) -> None:
    """With `http.tls` the web face speaks HTTPS with that certificate (its log gives an
    https URL)."""
    pki = make_pki(tmp_path / "pki")
    top = {"http": {"listen": {"host": "127.0.0.1", "port": 0},
                    "tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)}}}
    eng = Engine(write_config(tmp_path, f"sqlite:///{tmp_path / 'e.db'}", top)).start()
    try:
        url = eng.wait_for("http.listening")[0]["url"]
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(pki.ca))
        with urllib.request.urlopen(url + "/healthz", context=context, timeout=10) as r:
            assert (r.status, r.read()) == (200, b"ok\n")
    finally:
        eng.stop()


def test_the_shipped_file_serves_the_web_face_on_loopback() -> None:
    """channels.yaml enables the web face on 127.0.0.1:8080, plain HTTP."""
    from engine.config import load_config

    shipped = Path(__file__).resolve().parent.parent / "channels.yaml"
    assert load_config(shipped).http == Http("127.0.0.1", 8080, None)


# --- ingest workers' metrics -----------------------------------------------------------------

def _worker_metrics(frames: int, channel_name: str = "a") -> Metrics:
    metrics = Metrics()
    channel = parse_config(yaml.safe_load(CHANNELS)).channels[0]
    for _ in range(frames):
        metrics.message(channel, "REF^I12", [b"MSH|^~\\&|||||||ACK|1|P|2.5.1\rMSA|AA|1\r"], 0.002)
    metrics.commit(frames, 0.001)
    return metrics


def test_worker_metrics_add_to_the_main_process_and_survive_a_worker_restart() -> None:
    """Main 2 frames, worker 1 sends 3, then dies (its 3 are kept), a new worker 1 sends 1: the
    exposition shows 6 everywhere, histogram buckets included; a label set only a worker has
    seen appears too; a malformed datagram changes nothing."""
    main = _worker_metrics(2)
    key = ("hl7_engine_messages_total", (("ack", "AA"), ("channel", "a"), ("type", "REF^I12")))
    for datagram in _worker_metrics(3).worker_datagrams():
        main.workers.update(1, datagram)
    assert _samples(main)[key] == 5
    main.workers.retire(1)
    for datagram in _worker_metrics(1).worker_datagrams():
        main.workers.update(1, datagram)
    main.workers.update(2, b"m:{not json")
    seen = _samples(main)
    assert seen[key] == 6
    assert seen[("hl7_engine_ack_latency_seconds_count", (("channel", "a"),))] == 6
    assert seen[("hl7_engine_ack_latency_seconds_bucket", (("channel", "a"), ("le", "0.0025")))] == 6
    assert seen[("hl7_engine_commit_batch_size_sum", ())] == 6
    other = Metrics()
    other.deliveries.labels("files", "delivered").inc(4)
    for datagram in other.worker_datagrams():
        main.workers.update(3, datagram)
    assert _samples(main)[("hl7_engine_deliveries_total",
                           (("destination", "files"), ("outcome", "delivered")))] == 4
