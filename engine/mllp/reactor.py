"""The engine's reactor: Twisted's epoll reactor without its per-event log context.

Twisted's epoll reactor runs every readable or writable event inside `log.callWithLogger`: it
asks the connection for its log prefix and pushes a context for Twisted's own log (the
"system" of what is logged meanwhile), about 1.4 us per event, and each frame received is one
event.  The engine logs through structlog and gives Twisted's log no observer, so that context
is never read.  What the wrapper also does, log whatever an event raises and go on with the
other events of the same poll, `EngineReactor.doPoll` keeps.  `install` makes it the global
reactor of `run` and `worker` (engine/cli/run.py); without epoll (not Linux), or should a
Twisted release rename what `doPoll` reads, the engine runs on Twisted's default reactor.
`around_polls` has it run a call before each poll and after each poll's events: the writer's
`hand_over` (engine/store/writer.py), so the frames one poll reads go to the writer together.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

from twisted.python import log

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll: `install` leaves Twisted's default reactor
    EPollReactor = object  # type: ignore[assignment,misc]

# What `EngineReactor.doPoll` reads of Twisted's epoll reactor.
_READS = ("_poller", "_selectables", "_doReadOrWrite")


class EngineReactor(EPollReactor):
    """EPollReactor whose events run without `log.callWithLogger`; an event that raises is
    logged to Twisted's log (`log.err`), as the wrapper logged it, and the poll goes on.
    What `around_polls` registers runs before each poll (for what the timed and thread calls
    did since) and after each poll's events."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._around: list[Callable[[], None]] = []

    def around_polls(self, call: Callable[[], None]) -> None:
        """Run `call` before each poll and after its events; it must not raise."""
        self._around.append(call)

    def doPoll(self, timeout: float | None) -> None:
        for call in self._around:
            call()
        try:
            events = self._poller.poll(-1 if timeout is None else timeout,
                                       len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables, handle = self._selectables, self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)  # type: ignore[no-untyped-call]
            except KeyboardInterrupt:
                raise
            except BaseException:  # noqa: BLE001 - as callWithLogger: logged, the poll goes on
                log.err()  # type: ignore[no-untyped-call]
        for call in self._around:
            call()

    doIteration = doPoll


def install() -> bool:
    """Make an `EngineReactor` the global reactor (True), unless a reactor is installed
    already (e.g. the tests' session reactor), there is no epoll, or this Twisted's epoll
    reactor lacks what `doPoll` reads."""
    if EPollReactor is object or "twisted.internet.reactor" in sys.modules:
        return False
    reactor = EngineReactor()
    if not all(hasattr(reactor, name) for name in _READS):
        return False
    from twisted.internet.main import installReactor

    installReactor(reactor)  # type: ignore[no-untyped-call]
    return True


def around_polls(reactor: Any, call: Callable[[], None]) -> bool:
    """Have `reactor` run `call` before each poll and after its events: True on an
    `EngineReactor`, False (nothing done) on any other reactor."""
    if not isinstance(reactor, EngineReactor):
        return False
    reactor.around_polls(call)
    return True
