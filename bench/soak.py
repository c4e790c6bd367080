"""The soak: valid traffic alongside hostile traffic for N minutes, against the real engine.

    python -m bench.soak [--minutes 2] [--valid-connections 4] [--valid-rate 100]
                         [--no-hostile KIND[,KIND]]... [--seed 1] [--keep-tmp]

The engine runs as `bench.run` starts it (a subprocess on a free loopback port, a fresh SQLite
file, synchronous FULL), its channel's `max_frame_bytes` set to 64 KiB.  For the whole time:
  * valid REF^I12 and SIU^S12 (bench.synth) on `--valid-connections` connections, paced to
    `--valid-rate` messages per second in all, each waiting for its ACK (at most 10 s);
  * every hostile kind of `bench.hostile`, each in its own loop, one attempt every
    `--hostile-interval` seconds (`--no-hostile` turns kinds off, to isolate one that fails);
  * VmRSS and the open file descriptors of the engine, every `--sample-seconds`.
Then, with the traffic stopped: the engine must still be alive and answer a fresh valid
message; it is stopped (SIGTERM) and its database read.  The checks (bench.soak_report) print
PASS or FAIL; the exit status is 1 when a valid message was not answered or stored exactly once
or the engine died, 2 when it would not start.  Memory and descriptors that grow are reported as
FAIL without failing the run (a shared machine).  The summary goes to bench/results/soak.json.
Every wait has a timeout: the run ends within about `--minutes` plus a minute, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.hostile import ANSWER_WAIT_S, KINDS, Hostile, open_stream
from bench.loadgen import END, START, msa_fields
from bench.measure import HOST
from bench.procs import ServerProcess, open_fds, rss_mb, scratch_dir
from bench.run import engine_server
from bench.soak_report import Outcome, judge, read_database, render
from bench.summary import write_results
from bench.synth import Synth

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
MAX_FRAME_BYTES = 64 * 1024
ACK_TIMEOUT_S = 10.0
GROUPS = {"all": KINDS}  # `--no-hostile all`: valid traffic alone


@dataclass(slots=True)
class Valid:
    """Valid traffic: what was sent, and every ACK received, by the control id it names."""

    synth: Synth
    sent: list[str] = field(default_factory=list)
    acks: dict[str, list[str]] = field(default_factory=dict)
    latencies_ns: list[int] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       timeout: float = ACK_TIMEOUT_S) -> str | None:
        """Send the next message and wait for the ACK naming it; its MSA-1, or None."""
        msg = self.synth.next()
        writer.write(START + msg.payload + END)
        self.sent.append(msg.control_id)
        t0 = time.perf_counter_ns()
        await asyncio.wait_for(writer.drain(), timeout)
        if await self.read_acks(reader, msg.control_id, timeout):
            self.latencies_ns.append(time.perf_counter_ns() - t0)
            return self.acks[msg.control_id][-1]
        return None

    async def read_acks(self, reader: asyncio.StreamReader, control_id: str | None,
                        timeout: float) -> bool:
        """Record every ACK frame until one names `control_id`; False after `timeout`."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                ack = await asyncio.wait_for(reader.readuntil(END), left)
            except TimeoutError:
                break
            code, echoed = (part.decode(errors="replace") for part in msa_fields(ack))
            self.acks.setdefault(echoed, []).append(code)
            if echoed == control_id:
                return True
        return False


class Soak:
    """One soak run against a started engine."""

    def __init__(self, server: ServerProcess, a: argparse.Namespace, kinds: tuple[str, ...]
                 ) -> None:
        self.server = server
        self.a = a
        self.kinds = kinds
        self.valid = Valid(Synth(("ref", "siu")))
        self.hostile = Hostile(HOST, server.port, MAX_FRAME_BYTES, a.seed)
        self.samples: list[tuple[float, float, int]] = []  # (seconds, RSS MiB, open fds)
        self.t0 = time.monotonic()
        self.deadline = self.t0 + a.minutes * 60
        self.died_at: float | None = None

    def stopping(self) -> bool:
        return self.died_at is not None or time.monotonic() >= self.deadline

    def sample(self) -> None:
        if self.server.proc is not None and self.server.proc.poll() is not None:
            self.died_at = self.died_at or round(time.monotonic() - self.t0, 1)
            return
        try:
            self.samples.append((round(time.monotonic() - self.t0, 1),
                                 round(rss_mb(self.server.pid), 1), open_fds(self.server.pid)))
        except (OSError, RuntimeError):
            self.died_at = self.died_at or round(time.monotonic() - self.t0, 1)

    async def run(self) -> None:
        self.sample()
        tasks = [self._sampler(), *(self._sender() for _ in range(self.a.valid_connections)),
                 *(self._hostile(kind) for kind in self.kinds)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), self.a.minutes * 60 + 60)
        except TimeoutError:
            self.valid.problems["soak cut at its time bound"] += 1

    async def _sampler(self) -> None:
        while not self.stopping():
            await asyncio.sleep(min(self.a.sample_seconds,
                                    max(0.05, self.deadline - time.monotonic())))
            self.sample()

    async def _sender(self) -> None:
        pause = self.a.valid_connections / self.a.valid_rate
        while not self.stopping():
            try:
                reader, writer = await open_stream(HOST, self.server.port, ANSWER_WAIT_S)
            except (OSError, TimeoutError):
                self.valid.problems["connect failed"] += 1
                await asyncio.sleep(1.0)
                continue
            try:
                while not self.stopping():
                    if await self.valid.exchange(reader, writer) is None:
                        self.valid.problems["no ACK within 10 s (reconnected)"] += 1
                        break
                    await asyncio.sleep(pause)
                else:  # a late second ACK for the last message would show here
                    await self.valid.read_acks(reader, None, 0.3)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self.valid.problems[f"connection lost ({type(exc).__name__})"] += 1
                await asyncio.sleep(0.5)
            finally:
                writer.close()

    async def _hostile(self, kind: str) -> None:
        while not self.stopping():
            bound = max(0.1, self.deadline - time.monotonic()) + 2 * ANSWER_WAIT_S
            try:
                await asyncio.wait_for(self.hostile.attempt(kind, self.deadline), bound)
            except TimeoutError:
                self.hostile.tallies[kind].outcomes["attempt cut at the time bound"] += 1
            await asyncio.sleep(self.a.hostile_interval)

    async def fresh_message(self) -> tuple[str | None, float]:
        """After the traffic: one valid message on a new connection; (MSA-1 or None, ms)."""
        t0 = time.perf_counter()
        try:
            reader, writer = await open_stream(HOST, self.server.port, ANSWER_WAIT_S)
        except (OSError, TimeoutError):
            return None, 0.0
        try:
            code = await self.valid.exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            code = None
        finally:
            writer.close()
        return code, (time.perf_counter() - t0) * 1000


def soak(server: ServerProcess, a: argparse.Namespace, kinds: tuple[str, ...], tmp: Path
         ) -> dict[str, Any]:
    """Run the traffic, the after-checks and the database read; the figures, judged."""
    run = Soak(server, a, kinds)
    asyncio.run(run.run())
    time.sleep(2.0)  # let the engine close what the hostile kinds left behind
    run.sample()
    idle = run.samples[-1] if run.died_at is None and run.samples else None
    alive = server.proc is not None and server.proc.poll() is None
    fresh, fresh_ms = asyncio.run(run.fresh_message()) if alive else (None, 0.0)
    status = server.stop(20.0)
    stored, hostile_stored = read_database(tmp / "bench.db", run.valid.synth, run.hostile.digests)
    outcome = Outcome(run.valid.sent, run.valid.acks, run.valid.latencies_ns,
                      dict(run.valid.problems), stored, hostile_stored, run.samples, idle,
                      run.died_at, alive, fresh, fresh_ms, status,
                      {k: run.hostile.tallies[k].as_dict() for k in kinds})
    return judge(outcome, a, kinds, tmp)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, tuple[str, ...]]:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--valid-connections", type=int, default=4)
    p.add_argument("--valid-rate", type=float, default=100.0,
                   help="valid messages per second over all connections (default: %(default)s)")
    p.add_argument("--no-hostile", action="append", default=[], metavar="KIND[,KIND]",
                   help=f"turn a hostile kind off (repeatable): {', '.join(KINDS)}, or all")
    p.add_argument("--hostile-interval", type=float, default=0.5,
                   help="seconds between two attempts of one kind (default: %(default)s)")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1, help="seed of the hostile bytes")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the engine's database, config and log")
    a = p.parse_args(argv)
    off: set[str] = set()
    for item in (part.strip() for arg in a.no_hostile for part in arg.split(",")):
        if item not in KINDS and item not in GROUPS:
            p.error(f"--no-hostile: unknown kind {item!r}; expected one of "
                    f"{', '.join(KINDS)}, all")
        off.update(GROUPS.get(item, (item,)))
    if a.minutes <= 0 or a.valid_connections < 1 or a.valid_rate <= 0:
        p.error("--minutes and --valid-rate must be > 0, --valid-connections >= 1")
    return a, tuple(kind for kind in KINDS if kind not in off)


def main(argv: list[str] | None = None) -> int:
    a, kinds = parse(argv)
    print(f"soak: {a.minutes:g} min, {a.valid_connections} valid connections at "
          f"{a.valid_rate:g} msg/s, hostile kinds: {', '.join(kinds) or 'none'}", flush=True)
    with scratch_dir("hl7-soak-", a.keep_tmp) as tmp:
        try:
            server = engine_server(tmp, channel={"limits": {"max_frame_bytes": MAX_FRAME_BYTES}})
            with server:
                summary = soak(server, a, kinds, tmp)
        except RuntimeError as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 2
    print(render(summary))
    write_results(a.results, summary)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
