"""What a configuration reload changes: the difference between the running config and the new
one, as the service tree applies it and `config.reloaded` logs it.

Pure: no Twisted, no database.  The rules (docs/operations.md "Reload"):
* channels are compared whole: one whose settings changed is *replaced* (a new listener; the
  old one's connections finish the frames they sent, then close); added channels start
  listening, removed ones stop and their connections close the same way; unchanged channels
  keep their listener and their connections;
* routes, destinations, ledger settings and retention take effect for the next batch (a
  destination's queue is rows in the database: a reload never loses one);
* the database, the log, `http` and `workers` are read once at start: a change there is refused, and
  nothing else changes (restart to apply it).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """Names of what differs; `restart` lists the settings only a restart applies."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    destinations: tuple[str, ...] = ()  # added, removed or changed destinations
    routes: bool = False
    ledger: bool = False
    retention: bool = False
    restart: tuple[str, ...] = ()

    @property
    def channels(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def empty(self) -> bool:
        return not (self.channels or self.destinations or self.routes or self.ledger
                    or self.retention)

    def fields(self) -> dict[str, object]:
        """What `config.reloaded` logs: only what changed."""
        out: dict[str, object] = {}
        for key in ("added", "removed", "changed", "destinations"):
            if value := getattr(self, key):
                out[key if key == "destinations" else f"channels_{key}"] = list(value)
        for key in ("routes", "ledger", "retention"):
            if getattr(self, key):
                out[key] = True
        return out


def diff(old: Config, new: Config) -> ConfigDiff:
    """The difference between the running `old` and the reloaded `new`."""
    before = {ch.name: ch for ch in old.channels}
    after = {ch.name: ch for ch in new.channels}
    dests_before = {d.name: d for d in old.destinations}
    dests_after = {d.name: d for d in new.destinations}
    restart = tuple(name for name, a, b in (
        ("database", old.database, new.database), ("log", old.log, new.log),
        ("http", old.http, new.http)) if a != b)
    if old.workers != new.workers:  # destinations make the default 2: say so
        restart += (f"workers ({old.workers} now, {new.workers} in the file; with destinations "
                    "the default is 2)",)
    return ConfigDiff(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
        destinations=tuple(sorted(n for n in dests_before.keys() | dests_after.keys()
                                  if dests_before.get(n) != dests_after.get(n))),
        routes=old.routes != new.routes,
        ledger=old.ledger != new.ledger,
        retention=old.retention != new.retention,
        restart=restart,
    )
