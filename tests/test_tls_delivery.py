"""Delivery to an MLLP destination over TLS and mutual TLS, against a real TLS downstream on
loopback and a real database: delivered when the certificates agree; when they do not, nothing
is delivered, the attempt's error names the TLS failure, the whole destination waits
(`unreachable`) and `delivery.tls_failed` is logged."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from certs import Pki, make_pki
from delivering import Driven, driven
from enginectl import (
    ROOT,
    Engine,
    outbound_states,
    sample_payload,
    send_samples,
    write_config,
)
from sink import Sink
from sqlalchemy import Engine as Database
from sqlalchemy import insert, select
from structlog.testing import capture_logs
from twisted.internet import reactor

from engine.config import Destination
from engine.outbound.queue import Delivered
from engine.store.database import open_database
from engine.store.schema import deliveries, outbound
from engine.tls import ClientTLS

REACTOR: Any = reactor  # running in a thread for the session (conftest `reactor`)
pytestmark = pytest.mark.usefixtures("reactor")

NOW = datetime(2026, 11, 28, 9, 0)
#: The column `outbound_states` adds here: why the last attempt failed.
ERROR = "last_error"
UNTRUSTED = "connection: TLS handshake failed (certificate verify failed)"


@pytest.fixture(name="pki", scope="module")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(name="db")
def db_fixture(sqlite_url: str) -> Iterator[Database]:
    db = open_database(sqlite_url)
    yield db
    db.dispose()


def _server(pki: Pki, client_ca: Path | None = None) -> ssl.SSLContext:
    """The downstream's side: its certificate for 127.0.0.1; with `client_ca`, mutual TLS
    (TLS 1.3 only, so a client without a certificate is refused by one known alert)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_ca is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def _message(n: int) -> bytes:
    return sample_payload("ref_i12_v251.hl7").replace(b"REF-I12-V251", f"OUT-{n}".encode())


def _queue(db: Database, keys: list[str]) -> None:
    """One row per key, OUT-1.. in order (a per_key destination's keys)."""
    with db.begin() as conn:
        conn.execute(insert(outbound), [{
            "destination": "down", "route": "r", "message_id": n, "control_id": f"OUT-{n}",
            "payload": _message(n), "status": "queued", "attempts": 0, "last_error": "",
            "created_at": NOW, "order_key": key} for n, key in enumerate(keys, 1)])


def _attempt_errors(db: Database) -> list[str]:
    with db.connect() as conn:
        return list(conn.scalars(select(deliveries.c.error).order_by(deliveries.c.id)))


def _worker(db: Database, sink: Sink, tls: ClientTLS | None, order_key: str = "",
            ack_timeout_s: float = 5.0) -> Driven:
    dest = Destination("down", "mllp", host="127.0.0.1", port=sink.port,
                       ack_timeout_s=ack_timeout_s, retry_initial_s=0.0, retry_max_s=0.0,
                       order_key=order_key, tls=tls)
    return driven(dest, db, lambda: NOW, REACTOR, jitter=lambda: 0.5)


def _one_pass(db: Database, sink: Sink, keys: list[str], tls: ClientTLS, **options: Any
              ) -> tuple[Delivered, list[MutableMapping[str, Any]]]:
    """Queue a row per key, run one pass of a worker with `tls` against `sink`, close both:
    (what the pass did, the events it logged)."""
    try:
        _queue(db, keys)
        worker = _worker(db, sink, tls, **options)
        with capture_logs() as logs:
            result = worker.run_pass()
        worker.close()
    finally:
        sink.close()
    return result, logs


def _tls_failed(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str]]:
    return [(e["destination"], e["error"]) for e in logs if e["event"] == "delivery.tls_failed"]


def test_a_tls_destination_gets_every_message_once_in_order(db: Database, pki: Pki) -> None:
    """`tls: {ca}` trusting the downstream's CA: three messages delivered once each, in queue
    order, over one TLS connection kept between them."""
    sink = Sink(ssl_context=_server(pki))
    result, _ = _one_pass(db, sink, ["", "", ""], ClientTLS(ca=str(pki.ca)))
    assert (result.delivered, result.error) == (3, "")
    assert sink.received == [_message(1), _message(2), _message(3)]
    assert sink.connections == 1
    assert outbound_states(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1),
                                   ("OUT-3", "delivered", 1)]


def test_an_untrusted_server_certificate_holds_the_whole_destination(db: Database,
                                                                     pki: Pki) -> None:
    """The downstream's certificate is not signed by the CA the destination trusts: nothing is
    delivered, the attempt's error says why in OpenSSL's words, the failure holds the whole
    per_key destination (the other key's row is not tried) and is logged once.  Trusting the
    right CA afterwards delivers both on a new connection."""
    sink = Sink(ssl_context=_server(pki))
    try:
        _queue(db, ["A", "B"])
        worker = _worker(db, sink, ClientTLS(ca=str(pki.other_ca)), order_key="PID.3.1")
        with capture_logs() as logs:
            failed = worker.run_pass()
        assert (failed.delivered, failed.error) == (0, UNTRUSTED)
        assert outbound_states(db, ERROR) == [("OUT-1", "queued", 1, UNTRUSTED), ("OUT-2", "queued", 0, "")]
        assert _tls_failed(logs) == [("down", UNTRUSTED)]
        assert [e["event"] for e in logs if e["event"].startswith("queue.")] == [
            "queue.blocked"]
        assert not any("exc_info" in e or e.get("log_level") == "error" for e in logs)
        worker.dest = replace(worker.dest, tls=ClientTLS(ca=str(pki.ca)))
        recovered = worker.run_pass()
        worker.close()
    finally:
        sink.close()
    assert recovered.delivered == 2
    assert sink.received == [_message(1), _message(2)]
    assert outbound_states(db) == [("OUT-1", "delivered", 2), ("OUT-2", "delivered", 1)]
    assert _attempt_errors(db) == [UNTRUSTED, "", ""]


def test_a_certificate_for_another_name_is_refused(db: Database, pki: Pki) -> None:
    """A trusted certificate that does not name `server_name` is refused, before any message
    is sent."""
    sink = Sink(ssl_context=_server(pki))
    result, logs = _one_pass(db, sink, [""], ClientTLS(ca=str(pki.ca),
                                                      server_name="other.example.org"))
    error = "connection: TLS handshake failed (certificate does not match other.example.org)"
    assert (result.delivered, result.error) == (0, error)
    assert sink.received == []
    assert outbound_states(db, ERROR) == [("OUT-1", "queued", 1, error)]
    assert _tls_failed(logs) == [("down", error)]


def test_mutual_tls_delivers_with_the_client_certificate(db: Database, pki: Pki) -> None:
    """A downstream that demands a client certificate signed by its CA gets the messages from
    a destination with `cert`/`key`."""
    sink = Sink(ssl_context=_server(pki, client_ca=pki.ca))
    result, _ = _one_pass(db, sink, ["", ""], ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert),
                                                        key=str(pki.client_key)))
    assert (result.delivered, result.error) == (2, "")
    assert sink.received == [_message(1), _message(2)]
    assert outbound_states(db) == [("OUT-1", "delivered", 1), ("OUT-2", "delivered", 1)]


def test_mutual_tls_without_a_client_certificate_delivers_nothing(db: Database,
                                                                   pki: Pki) -> None:
    """Without `cert`/`key` the downstream refuses the handshake (TLS 1.3: after our side is
    done, by an alert): a TLS error, nothing delivered, the destination held."""
    sink = Sink(ssl_context=_server(pki, client_ca=pki.ca))
    result, logs = _one_pass(db, sink, ["A", "B"], ClientTLS(ca=str(pki.ca)),
                             order_key="PID.3.1")
    error = "connection: TLS handshake failed (tlsv13 alert certificate required)"
    assert (result.delivered, result.error) == (0, error)
    assert sink.received == []
    assert outbound_states(db, ERROR) == [("OUT-1", "queued", 1, error), ("OUT-2", "queued", 0, "")]
    assert _tls_failed(logs) == [("down", error)]


def test_a_client_certificate_from_another_ca_delivers_nothing(db: Database, pki: Pki) -> None:
    """A client certificate the downstream's CA did not sign is refused like none at all."""
    sink = Sink(ssl_context=_server(pki, client_ca=pki.ca))
    result, _ = _one_pass(db, sink, [""], ClientTLS(ca=str(pki.ca), cert=str(pki.stranger_cert),
                                                    key=str(pki.stranger_key)))
    assert result.delivered == 0 and result.error.startswith("connection: TLS handshake failed (")
    assert sink.received == [] and outbound_states(db)[0] == ("OUT-1", "queued", 1)


def test_a_plain_downstream_that_never_answers_the_handshake(db: Database, pki: Pki) -> None:
    """TLS to a plain MLLP listener: the ClientHello is never answered, so the attempt ends at
    the ACK timeout as a TLS handshake failure that holds the destination, not as a missing
    ACK."""
    result, logs = _one_pass(db, Sink(lambda m, n: None), ["A", "B"], ClientTLS(ca=str(pki.ca)),
                             order_key="PID.3.1", ack_timeout_s=0.5)
    error = "connection: TLS handshake failed (no answer within 0.5 s)"
    assert (result.delivered, result.error) == (0, error)
    assert outbound_states(db, ERROR) == [("OUT-1", "queued", 1, error), ("OUT-2", "queued", 0, "")]
    assert _tls_failed(logs) == [("down", error)]


def test_a_ca_file_gone_since_load_is_an_attempt_that_failed(db: Database, pki: Pki,
                                                              tmp_path: Path) -> None:
    """The CA file, read at load, is gone when the connection is opened: the attempt fails
    with a TLS settings error naming the file, and the worker goes on (no exception)."""
    gone = tmp_path / "gone.pem"
    sink = Sink(ssl_context=_server(pki))
    result, logs = _one_pass(db, sink, [""], ClientTLS(ca=str(gone)))
    error = f"connection: TLS settings: cannot read {gone} (No such file or directory)"
    assert (result.delivered, result.error) == (0, error)
    assert sink.received == [] and sink.connections == 0
    assert outbound_states(db, ERROR) == [("OUT-1", "queued", 1, error)]
    assert _tls_failed(logs) == [("down", error)]


def test_routed_messages_reach_a_tls_destination_and_an_untrusted_one_waits(
        tmp_path: Path, sqlite_url: str, pki: Pki) -> None:
    """End to end: a running engine delivers every accepted message once, in order, to a TLS
    downstream it trusts; a second destination whose CA does not sign its downstream's
    certificate gets nothing, keeps its queue, logs `delivery.tls_failed`, and no traceback is
    written anywhere."""
    good, bad = Sink(ssl_context=_server(pki)), Sink(ssl_context=_server(pki))
    retry = {"initial_s": 0.1, "max_s": 0.5, "max_attempts": 1000}
    config = write_config(tmp_path, sqlite_url, top={
        "destinations": [
            {"name": "trusted", "type": "mllp", "host": "127.0.0.1", "port": good.port,
             "ack_timeout_s": 5, "retry": retry, "tls": {"ca": str(pki.ca)}},
            {"name": "untrusted", "type": "mllp", "host": "127.0.0.1", "port": bad.port,
             "ack_timeout_s": 5, "retry": retry, "tls": {"ca": str(pki.other_ca)}}],
        "routes": [{"name": "all", "from": "referrals", "to": ["trusted", "untrusted"]}]})
    engine = Engine(config).start()
    try:
        sent = send_samples(engine.port, ("ref_i12_v251.hl7", "siu_s12_v251.hl7",
                                          "ref_i12_v28.hl7"))
        deadline = time.monotonic() + 15
        while len(good.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        failed = engine.wait_for("delivery.tls_failed", timeout=15)
        shown = subprocess.run([sys.executable, "-m", "engine", "queue", "--json", "--config",
                                str(config)], cwd=ROOT, capture_output=True, text=True,
                               timeout=60)
    finally:
        engine.stop()
        good.close()
        bad.close()
    assert good.received == sent
    assert bad.received == []
    assert failed and {(e["destination"], e["error"]) for e in failed} == {
        ("untrusted", UNTRUSTED)}
    queues = {q["destination"]: (q["depth"], q["delivered"]) for q in json.loads(shown.stdout)}
    assert queues == {"trusted": (0, 3), "untrusted": (3, 0)}
    log_text = engine.log_file.read_text()
    assert "Traceback" not in log_text and "Traceback" not in engine.stderr
