"""The Twisted service tree: the group-commit writer and one MLLP listener per channel.

`make_service(config, reactor, db)` builds it (STYLE.md rule 10); only `engine/cli.py` imports the
global reactor.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError

from engine.ack import AckBuilder
from engine.config import Channel, Config, Destination
from engine.errors import CannotListen
from engine.logs import emit
from engine.mllp.server import Handler, MLLPServerFactory, listening_factory
from engine.pipeline import Job, Pipeline, Result, failed
from engine.routes.delivery import FileDeliverer
from engine.routes.mllp_delivery import MLLPDeliverer
from engine.routes.passthrough import Relay, Waiters
from engine.routes.worker import Delivered, QueueWorker, bookkeeping_engine
from engine.store.lock import WriteLock
from engine.store.writer import GroupCommitWriter
from engine.tls import TLSFileError
from engine.workers import Dispatch
from engine.workers_service import AcceptorService, LinkService, WorkerPool

log = structlog.get_logger("engine.service")


class WriterService(service.Service):
    """Runs the writer thread for the life of the service tree; stopping drains it."""

    def __init__(self, writer: GroupCommitWriter[Job, Result]) -> None:
        self.writer = writer

    def startService(self) -> None:
        super().startService()
        self.writer.start()

    def stopService(self) -> Any:
        self.writer.stop()
        log.info("writer.stopped", batches=self.writer.batches, messages=self.writer.jobs)
        return super().stopService()


class ListenerService(service.Service):
    """Listens on one channel's host and port (under TLS with `listen.tls`); `port` is the
    bound port once started."""

    def __init__(self, channel: Channel, factory: MLLPServerFactory, reactor: Any) -> None:
        self.channel = channel
        self.factory = factory
        self.reactor = reactor
        self.listening: Any = None
        self.port = 0

    def startService(self) -> None:
        super().startService()
        try:
            self.listening = self.reactor.listenTCP(self.channel.port,
                                                    listening_factory(self.factory),
                                                    interface=self.channel.host)
        except TLSFileError as exc:  # changed since the configuration was checked
            raise CannotListen(self.channel.name, self.channel.host, self.channel.port,
                               str(exc)) from exc
        except CannotListenError as exc:
            error = exc.socketError
            raise CannotListen(self.channel.name, self.channel.host, self.channel.port,
                               getattr(error, "strerror", None) or str(error)) from exc
        self.port = self.listening.getHost().port
        log.info("mllp.listening", channel=self.channel.name, host=self.channel.host,
                 port=self.port)

    def stopService(self) -> Any:
        super().stopService()
        if self.listening is not None:
            return self.listening.stopListening()
        return None


class DeliveryService(service.Service):
    """Works each destination's queue, one pass at a time per destination, so a slow downstream
    never holds the others: an MLLP destination's on the reactor (its Twisted client calls it
    back), a file destination's on the thread pool (its fsync would block the reactor).  Passes
    start twice a second, and a pass that delivered something is followed at once by the next
    (no pause while a queue has rows)."""

    def __init__(self, destinations: tuple[Destination, ...], db: Engine, reactor: Any,
                 answered: Callable[[int, bytes], bool] | None = None) -> None:
        def now() -> datetime:
            return datetime.now(UTC).replace(tzinfo=None)

        self.reactor = reactor
        self.loop: Any = None
        self.busy: set[str] = set()
        self.db = bookkeeping_engine(db)
        self.workers: dict[str, QueueWorker] = {
            d.name: (MLLPDeliverer(d, self.db, now, reactor) if d.type == "mllp"
                     else FileDeliverer(d, self.db, now))
            for d in destinations}
        for worker in self.workers.values():
            worker.answered = answered  # pass-through senders waiting for a row's answer

    def startService(self) -> None:
        super().startService()
        from twisted.internet.task import LoopingCall

        self.loop = LoopingCall(self.tick)
        self.loop.clock = self.reactor
        self.loop.start(0.5, now=True)

    def stopService(self) -> Any:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        for name, worker in self.workers.items():
            if isinstance(worker, MLLPDeliverer):
                worker.stop()  # its pass ends now, without counting the exchange under way
            elif name not in self.busy:  # a busy one closes when its pass ends
                worker.close()
        return super().stopService()

    def tick(self) -> None:
        for name in self.workers:
            self.start(name)

    def start(self, name: str) -> None:
        """A pass for this destination, unless one is under way."""
        from twisted.internet.threads import deferToThreadPool

        if name in self.busy or not self.running:
            return
        self.busy.add(name)
        worker = self.workers[name]
        d = (worker.start_pass() if isinstance(worker, MLLPDeliverer) else  # on the reactor
             deferToThreadPool(self.reactor, self.reactor.getThreadPool(), worker.run_pass))
        d.addBoth(self.done, name)

    def done(self, outcome: Any, name: str) -> None:
        self.busy.discard(name)
        if not self.running:
            self.workers[name].close()
        if not isinstance(outcome, Delivered):
            log.error("delivery.pass_failed", destination=name, error=outcome.type.__name__)
            return
        if outcome.delivered:
            log.info("delivery.delivered", destination=name, count=outcome.delivered)
            self.start(name)  # more may be queued
        # Dead letters: the worker logged each one (`queue.dead_letter`, with its id and error).


def make_service(config: Config, reactor: Any, db: Engine, worker_argv: Sequence[str] = (),
                 link: socket.socket | None = None) -> service.MultiService:
    """The whole engine as one MultiService: writer first, then the listeners, then delivery.

    With `workers:` > 1 the main process accepts for every channel and starts the workers
    (`worker_argv` is what they are started with); a worker (`link`, its socket pair) takes
    the connections handed to it and runs no delivery."""
    builders = {ch.name: AckBuilder(ch.ack.application, ch.ack.facility) for ch in config.channels}
    shared = config.workers > 1
    # Other processes (`workers:`) or other engines on the same database may write: batches
    # take turns (PostgreSQL's advisory lock costs one statement per batch).
    pipeline = Pipeline(db, builders, lock=WriteLock(db, processes=True), settings=config.ledger)
    pipeline.route(config.routes)
    pipeline.order_by(config.destinations)
    pipeline.answer_from(config.channels)
    waiters = Waiters(reactor) if any(ch.ack.passthrough for ch in config.channels) else None
    writer: GroupCommitWriter[Job, Result] = GroupCommitWriter(
        pipeline.process_batch, reactor.callFromThread, failed(builders),
        max_batch=config.database.group_commit_max, on_stop=pipeline.close,
        commit_delay_s=config.database.commit_delay_ms / 1000)
    factories = [MLLPServerFactory(ch, _handler(ch, writer, _relay(ch, builders, waiters, db,
                                                                  reactor)), reactor)
                 for ch in config.channels]
    writer.expect(lambda: sum(f.connections for f in factories))
    top = service.MultiService()
    WriterService(writer).setServiceParent(top)
    if link is not None:
        LinkService(link, {ch.name: f for ch, f in zip(config.channels, factories, strict=True)
                           if not ch.ack.passthrough}, reactor).setServiceParent(top)
        return top
    dispatch = Dispatch(local_share=not config.destinations)
    for ch, factory in zip(config.channels, factories, strict=True):
        if shared:
            AcceptorService(ch, factory, reactor, dispatch).setServiceParent(top)
        else:
            ListenerService(ch, factory, reactor).setServiceParent(top)
    if shared:
        WorkerPool(config.workers - 1, worker_argv, dispatch, reactor).setServiceParent(top)
    if config.destinations:
        DeliveryService(config.destinations, db, reactor,
                        waiters.reporter() if waiters else None).setServiceParent(top)
    return top


def _relay(channel: Channel, builders: dict[str, AckBuilder], waiters: Waiters | None,
           db: Engine, reactor: Any) -> Relay | None:
    if not channel.ack.passthrough or waiters is None:
        return None
    return Relay(channel.ack.passthrough, channel.ack.timeout_s, builders[channel.name], waiters,
                 db, reactor)


def _handler(channel: Channel, writer: GroupCommitWriter[Job, Result],
             relay: Relay | None = None) -> Handler:
    def handle(payload: bytes, peer: str, committed: Callable[[bool], None] | None = None
               ) -> defer.Deferred[list[bytes]]:
        d: defer.Deferred[list[bytes]] = defer.Deferred()
        started = time.perf_counter()

        def done(result: Result) -> None:
            if committed is not None:  # MLLP release 2: the commit ACK/NAK goes out first
                committed(result.committed)
            relayed = (relay is not None and result.waiting is not None
                       and result.verdict.accepted and result.message_id is not None)
            _log_result(channel.name, result, peer, len(payload), time.perf_counter() - started,
                        "downstream" if relayed else None)
            if relayed:
                assert relay is not None and result.waiting is not None  # for mypy
                relay.answer(payload, int(result.message_id or 0), result.waiting
                             ).chainDeferred(d)
                return
            d.callback(result.acks)

        writer.submit(Job(channel, payload, peer, datetime.now(UTC)), done)
        return d

    return handle


def _log_result(channel: str, r: Result, peer: str, size: int, seconds: float,
                ack: str | None = None) -> None:
    """`message.stored` (or `.retransmission`, `.not_stored`); `ack` "downstream" when the
    sender's ACK is the relayed answer, logged as `ack.relayed` when it comes."""
    event = ("message.retransmission" if r.retransmission
             else "message.stored" if r.committed else "message.not_stored")
    fields: dict[str, Any] = {
        "channel": channel, "peer": peer, "id": r.message_id, "control_id": r.control_id,
        "type": r.message_type, "size": size, "digest": r.digest[:16],
        "ack": ack or " ".join(_msa1(a) for a in r.acks), "status": r.verdict.disposition.value,
        "ms": round(seconds * 1000, 2)}
    if r.verdict.code:
        fields["error_code"] = r.verdict.code
        fields["error_location"] = str(r.verdict.location or "")
    if r.reused:
        emit("warning", "message.control_id_reused", fields)
    elif not r.committed:
        emit("error", event, fields)
    else:
        emit("info", event, fields)


def _msa1(ack: bytes) -> str:
    at = ack.find(b"\rMSA")
    return ack[at + 5: at + 7].decode("ascii", "replace") if at >= 0 else "?"
