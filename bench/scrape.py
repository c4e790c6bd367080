"""What the web face costs ingest: the same load on three engines, side by side.

    python -m bench.scrape [--interval 5] [--messages 20000] [--connections 8] [--repeat 1]
                           [--mix ref[,siu]] [--keep-tmp]

1. `no http`: no `http:` section (no web server, no metrics instruments);
2. `http idle`: `http:` configured (every frame counted, every batch timed) but never scraped;
3. `http scraped`: the same, with a scraper fetching /metrics and /readyz every `--interval`
   seconds through the whole timed run (as Prometheus and a load balancer would), and a viewer
   logged in to the console whose dashboard reloads its figures every `--interval` seconds (as
   an open browser tab does: the page once, then its panel).

Each engine gets a fresh SQLite database (synchronous FULL); each is warmed up, then timed as in
`bench.run` (msg/s, ACK p50/p99, server CPU per message; `--repeat N` keeps the fastest of N).
The scraper's own figures (requests, p50 and max response time, failures) are printed too.
Figures are printed, never judged: the machine may be busy.  A wrong ACK makes the exit
status 1 (2 when an engine would not start).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadgen import parse_mix
from bench.measure import HOST, Settings, Throughput, measure
from bench.procs import free_port, scratch_dir
from bench.run import engine_server
from bench.synth import Synth
from bench.web import console_login


@dataclass(slots=True)
class Scraper:
    """Fetches each path every `interval` seconds on its own thread until stopped."""

    base: str
    interval: float
    paths: tuple[str, ...] = ("/metrics", "/readyz")
    opener: urllib.request.OpenerDirector = field(default_factory=urllib.request.build_opener)
    times_ms: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                started = time.perf_counter()
                try:
                    with self.opener.open(self.base + path, timeout=10) as r:
                        r.read()
                    self.times_ms.append((time.perf_counter() - started) * 1000)
                except (OSError, urllib.error.URLError):
                    self.failures += 1
            self._stop.wait(self.interval)

    def line(self) -> str:
        if not self.times_ms:
            return f"scraper: no answer ({self.failures} failures)"
        return (f"scraper: {len(self.times_ms)} requests ({', '.join(self.paths)} every "
                f"{self.interval:g} s), p50 {statistics.median(self.times_ms):.1f} ms, max "
                f"{max(self.times_ms):.1f} ms, {self.failures} failures")


def run_one(name: str, s: Settings, tmp: Path, http: bool, interval: float | None
            ) -> tuple[Throughput, list[Scraper]]:
    """One engine on a fresh database; with `interval`, scraped and its dashboard open during
    the timed run."""
    tmp.mkdir()
    port = free_port(HOST)
    base = f"http://{HOST}:{port}"
    extra = {"http": {"listen": {"host": HOST, "port": port}}} if http else None
    scrapers: list[Scraper] = []
    with engine_server(tmp, extra) as server:
        if interval:
            viewer = console_login(base, tmp / "bench.yaml", "viewer")
            scrapers = [Scraper(base, interval),
                        Scraper(base, interval, ("/dashboard/panel",), viewer)]
        for scraper in scrapers:
            scraper.start()
        try:
            result = measure(name, server, s, Synth(s.mix))
        finally:
            for scraper in scrapers:
                scraper.stop()
    print(result.line(), flush=True)
    for scraper in scrapers:
        print(f"{'':<12} {scraper.line()}", flush=True)
    return result, scrapers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between scrapes")
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--mix", default="ref")
    p.add_argument("--keep-tmp", action="store_true")
    a = p.parse_args(argv)
    if a.interval <= 0 or min(a.messages, a.connections, a.repeat) < 1:
        p.error("--interval must be > 0; --messages, --connections and --repeat >= 1")
    s = Settings(a.messages, a.connections, 0, a.warmup, parse_mix(a.mix), a.repeat)
    results: list[Throughput] = []
    with scratch_dir("hl7-bench-scrape-", a.keep_tmp) as tmp:
        try:
            for name, http, interval in (("no http", False, None), ("http idle", True, None),
                                         ("http scraped", True, a.interval)):
                results.append(run_one(name, s, tmp / name.replace(" ", "-"), http,
                                       interval)[0])
        except RuntimeError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
    base = results[0]
    for r in results[1:]:
        print(f"{r.server}: {r.report.msg_per_s / base.report.msg_per_s - 1:+.1%} msg/s, "
              f"{r.cpu_us_per_msg - base.cpu_us_per_msg:+.1f} us CPU/msg against no http")
    return 1 if any(r.report.failed for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
