"""The Twisted service tree: the group-commit writer and one MLLP listener per channel.

`make_service(config, reactor, db)` builds it; only `engine/cli/run.py` (and `send`, for its
one connection) runs the global reactor.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError

from engine.ack import AckBuilder
from engine.config import Channel, Config, Destination
from engine.errors import CannotListen
from engine.housekeeping import PurgeService, SweepService
from engine.ingest import frame_handler
from engine.logs import emit
from engine.mllp.options import ListenerOptions
from engine.mllp.reactor import around_polls
from engine.mllp.server import MLLPServerFactory, listening_factory
from engine.outbound.passthrough import Relay, Waiters
from engine.outbound.queue import Delivered, QueueWorker
from engine.pipeline import Job, Pipeline, Result, failed
from engine.reload import ConfigDiff, diff
from engine.store import Database
from engine.store.lock import WriteLock
from engine.store.outbound import bookkeeping_database
from engine.store.writer import GroupCommitWriter
from engine.tls import TLSFileError
from engine.web.metrics import Metrics
from engine.web.server import HttpService
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
        self._bind()

    def _bind(self) -> None:
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

    def replace(self, channel: Channel, factory: MLLPServerFactory) -> None:
        """A reload changed this channel: new connections get `factory`.  On the same address
        the bound port stays and only its factory changes (nothing to rebind); on another, the
        old port closes and the new one is bound."""
        same = (channel.host, channel.port) == (self.channel.host, self.channel.port)
        self.channel, self.factory = channel, factory
        if same and self.listening is not None:
            self.listening.factory = listening_factory(factory)
            self.listening.factory.doStart()
            log.info("mllp.listener_replaced", channel=channel.name, port=self.port)
            return
        old = self.listening
        self.listening = None
        d = defer.maybeDeferred(old.stopListening) if old is not None else defer.succeed(None)
        d.addCallback(lambda _: self._listen_again())

    def _listen_again(self) -> None:
        try:
            self._bind()
        except CannotListen as exc:
            emit("error", "mllp.listen_failed", {"channel": exc.channel, "host": exc.host,
                                                 "port": exc.port, "error": exc.reason})

    def retire(self) -> None:
        """A reload removed this channel: stop listening; its connections finish the frames
        they sent, then close."""
        self.factory.retire()
        self.disownServiceParent()


class DeliveryService(service.Service):
    """Works each destination's queue, one pass at a time per destination, so a slow downstream
    never holds the others.  Passes run on the reactor (`engine.outbound.queue`); their store
    work and file writes run on its thread pool.  Passes start twice a second, and a pass that
    delivered something is followed at once by the next (no pause while a queue has rows)."""

    def __init__(self, destinations: tuple[Destination, ...], db: Database, reactor: Any,
                 answered: Callable[[int, bytes], bool] | None = None,
                 metrics: Metrics | None = None) -> None:
        def now() -> datetime:
            return datetime.now(UTC).replace(tzinfo=None)

        self.reactor = reactor
        self.loop: Any = None
        self.busy: set[str] = set()
        self.db = bookkeeping_database(db)
        self.workers: dict[str, QueueWorker] = {
            d.name: QueueWorker(d, self.db, now, reactor) for d in destinations}
        for worker in self.workers.values():
            worker.answered = answered  # pass-through senders waiting for a row's answer
            worker.observe = metrics.delivery if metrics is not None else None

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
            worker.stop()  # the attempt under way ends now, uncounted
            if name not in self.busy:  # a busy one closes when its pass ends
                worker.close()
        return super().stopService()

    def tick(self) -> None:
        for name in self.workers:
            self.start(name)

    def start(self, name: str) -> None:
        """A pass for this destination, unless one is under way."""
        if name in self.busy or not self.running:
            return
        self.busy.add(name)
        self.workers[name].start_pass().addBoth(self.done, name)

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


class ReloadRefused(Exception):
    """A reload that only a restart could apply; nothing was changed."""


class EngineService(service.MultiService):
    """The root of the service tree, holding what a reload changes: the running config, the
    pipeline, and each channel's factory and listener."""

    def __init__(self, config: Config, reactor: Any, db: Database, pipeline: Pipeline,
                 writer: GroupCommitWriter[Job, Result], builders: dict[str, AckBuilder]
                 ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.db = db
        self.pipeline = pipeline
        self.writer = writer
        self.builders = builders
        self.waiters: Waiters | None = None
        self.factories: dict[str, MLLPServerFactory] = {}
        self.listeners: dict[str, ListenerService] = {}
        self.delivery: DeliveryService | None = None
        self.sweeper: SweepService | None = None  # the main process's (workers do not sweep)
        self.metrics: Metrics | None = None  # with `http:` (engine/web/)

    @property
    def connections(self) -> int:
        return sum(f.connections for f in self.factories.values())

    def factory(self, channel: Channel) -> MLLPServerFactory:
        """A new factory for this channel (its ACK builder made on first use)."""
        builder = self.builders.setdefault(
            channel.name, AckBuilder(channel.ack.application, channel.ack.facility))
        if channel.ack.passthrough and self.waiters is None:
            self.waiters = Waiters(self.reactor)
        relay = _relay(channel, self.builders, self.waiters, self.db, self.reactor)
        handler = frame_handler(channel, self.writer, relay, self.metrics)
        oversize = (builder.too_large if self.metrics is None
                    else self.metrics.oversize(channel, builder.too_large))
        made = MLLPServerFactory(listener_options(channel), handler, self.reactor,
                                 oversize=oversize)
        self.factories[channel.name] = made
        return made

    def reload(self, new: Config) -> ConfigDiff:
        """Apply `new` (already validated): channels added, removed or replaced now, the rest
        at the writer's next batch.  Raises ReloadRefused, changing nothing, when only a
        restart could apply it."""
        change = diff(self.config, new)
        if change.restart:
            raise ReloadRefused(f"{', '.join(change.restart)} changed: restart the engine to "
                                "apply it")
        if change.channels and self.config.workers > 1:
            raise ReloadRefused("channels changed and the engine runs with workers > 1: "
                                "restart the engine to apply it")
        self.pipeline.reconfigure(new)
        channels = {ch.name: ch for ch in new.channels}
        for name in change.removed:
            self.listeners.pop(name).retire()
            self.factories.pop(name, None)
        for name in change.changed:
            old = self.factories[name]
            self.listeners[name].replace(channels[name], self.factory(channels[name]))
            old.retire()
        for name in change.added:
            self.listeners[name] = ListenerService(channels[name], self.factory(channels[name]),
                                                   self.reactor)
            self.listeners[name].setServiceParent(self)
        if change.destinations:
            self._redeliver(new)
        self.config = new
        if self.sweeper is not None:
            self.sweeper.interval(new.ledger.sweep_interval_minutes)
        return change

    def apply(self, new: Config) -> dict[str, object]:
        """`reload`, for the SIGHUP handler: what changed, as `config.reloaded` logs it."""
        return self.reload(new).fields()

    def _redeliver(self, new: Config) -> None:
        """Destinations changed: a new delivery service for the new set (the queues are rows
        in the database; a destination removed keeps its rows for when it comes back)."""
        old, self.delivery = self.delivery, None
        if old is not None:
            old.disownServiceParent()
        if not new.destinations:
            return
        delivery = DeliveryService(new.destinations, self.db, self.reactor,
                                   self.waiters.reporter() if self.waiters else None,
                                   self.metrics)
        self.delivery = delivery

        def start(waited: float = 0.0) -> None:
            # A pass under way finishes first: two workers must never send one queue's head.
            if old is not None and old.busy and waited < 60:
                self.reactor.callLater(0.1, start, waited + 0.1)
            elif self.delivery is delivery and self.running:
                delivery.setServiceParent(self)

        start()


EXIT_WRITER_DIED = 70  # EX_SOFTWARE: the supervisor should restart the engine


def exit_now(_exc: BaseException) -> None:
    """The writer thread died (`writer.died` is logged): no frame would be answered again, so
    the process ends at once with EXIT_WRITER_DIED for its supervisor to restart it.  Nothing
    is lost: what was not committed was not acknowledged."""
    from engine.logs import flush_logs

    try:
        flush_logs()
    finally:
        os._exit(EXIT_WRITER_DIED)


def make_service(config: Config, reactor: Any, db: Database, worker_argv: Sequence[str] = (),
                 link: socket.socket | None = None,
                 on_writer_died: Callable[[BaseException], None] = exit_now
                 ) -> EngineService:
    """The whole engine as one MultiService: writer first, then the listeners, then delivery.

    With `workers:` > 1 the main process accepts for every channel and starts the workers
    (`worker_argv` is what they are started with); a worker (`link`, its socket pair) takes
    the connections handed to it and runs no delivery."""
    builders = {ch.name: AckBuilder(ch.ack.application, ch.ack.facility) for ch in config.channels}
    shared = config.workers > 1
    # Other processes (`workers:`) or other engines on the same database may write: SQLite's
    # batches take turns; PostgreSQL's lock the keys they touch (engine.store.keylocks).
    pipeline = Pipeline(db, builders, config, lock=WriteLock(db))
    # A worker keeps its own instruments too and sends their values to the main process.
    metrics = Metrics() if config.http is not None else None
    writer: GroupCommitWriter[Job, Result] = GroupCommitWriter(
        pipeline.process_batch, reactor.callFromThread, failed(builders),
        max_batch=config.database.group_commit_max, on_stop=pipeline.close,
        commit_delay_s=config.database.commit_delay_ms / 1000, on_died=on_writer_died,
        observe=metrics.commit if metrics is not None else None)
    top = EngineService(config, reactor, db, pipeline, writer, builders)
    top.metrics = metrics
    factories = [top.factory(ch) for ch in config.channels]
    writer.expect(lambda: top.connections)
    writer.hand_over_after_polls(partial(around_polls, reactor))
    WriterService(writer).setServiceParent(top)
    if link is not None:
        LinkService(link, {ch.name: f for ch, f in zip(config.channels, factories, strict=True)
                           if not ch.ack.passthrough}, reactor, metrics).setServiceParent(top)
        return top
    dispatch = Dispatch(local_share=not config.destinations)
    if metrics is not None:
        dispatch.on_metrics, dispatch.on_gone = metrics.workers.update, metrics.workers.retire
    for ch, factory in zip(config.channels, factories, strict=True):
        if shared:
            AcceptorService(ch, factory, reactor, dispatch).setServiceParent(top)
        else:
            top.listeners[ch.name] = ListenerService(ch, factory, reactor)
            top.listeners[ch.name].setServiceParent(top)
    if shared:
        WorkerPool(config.workers - 1, worker_argv, dispatch, reactor).setServiceParent(top)
    top.sweeper = SweepService(reactor, db, lambda: top.config)
    top.sweeper.setServiceParent(top)
    PurgeService(reactor, db, lambda: top.config).setServiceParent(top)
    if config.destinations:
        top.delivery = DeliveryService(config.destinations, db, reactor,
                                       top.waiters.reporter() if top.waiters else None, metrics)
        top.delivery.setServiceParent(top)
    if metrics is not None:  # the web face (`http:`): metrics and health
        HttpService(top, metrics, reactor).setServiceParent(top)
    return top


def _relay(channel: Channel, builders: dict[str, AckBuilder], waiters: Waiters | None,
           db: Database, reactor: Any) -> Relay | None:
    if not channel.ack.passthrough or waiters is None:
        return None
    return Relay(channel.ack.passthrough, channel.ack.timeout_s, builders[channel.name], waiters,
                 db, reactor)


def listener_options(channel: Channel) -> ListenerOptions:
    """What the MLLP server obeys, from the channel's `limits`, `framing` and `listen`."""
    limits = channel.limits
    return ListenerOptions(
        channel.name, limits.max_frame_bytes, limits.idle_timeout_s, limits.max_connections,
        limits.max_queued_frames, limits.frame_timeout_s, limits.max_connections_per_address,
        channel.tolerate_missing_cr, channel.mllp_release, channel.allow, channel.tls)
