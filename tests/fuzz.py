"""The long-running fuzzer behind `make fuzz`: random frames through the real decoder and
pipeline for as long as asked, every new crasher minimised and saved to the corpus.

    python tests/fuzz.py --minutes 10 [--seed N] [--corpus DIR] [--strict] [--postgres]

A crasher is a frame that breaks one of the properties `tests/fuzzing.py` checks.  It is new
when its signature (the property and the exception or event, never message text) has not been
seen in this run nor in the corpus already.  New crashers are minimised against a fresh
database and written as `crash-<sha256 prefix>.bin`; `tests/test_fuzz.py` replays every corpus
frame from then on.  The seed is printed, so a run can be repeated.  `--postgres` runs against a
throw-away PostgreSQL cluster (`tests/pgcluster.py`) instead of SQLite files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzing  # noqa: E402 - tests/ is not a package
from fuzzing import Finding, Harness, signature  # noqa: E402

from engine.config import Config  # noqa: E402

FRESH_DB_EVERY = 50_000  # frames: keep the database (and SQLite's WAL) small
REPORT_EVERY_S = 30.0
RESEND = 0.05  # the share of frames that are a recent frame sent again


@dataclass(frozen=True, slots=True)
class Fuzzer:
    """What a run needs: the channel config, where crashers go, and fresh databases."""

    config: Config
    corpus: Path
    fresh_db: Callable[[], Path | str]  # a new, empty database (SQLite file or URL)

    def check_alone(self, raw: bytes) -> list[Finding]:
        """The findings of one frame on a fresh database."""
        harness = Harness(self.fresh_db(), self.config)
        try:
            return harness.check([raw])
        finally:
            harness.close()

    def known_signatures(self) -> set[tuple[str, str]]:
        """What the corpus frames already break."""
        known: set[tuple[str, str]] = set()
        for path in sorted(self.corpus.glob("*")):
            if path.suffix in (".hl7", ".bin"):
                known |= signature(self.check_alone(path.read_bytes()))
        return known

    def keep(self, raw: bytes, wanted: frozenset[tuple[str, str]]) -> Path:
        """Minimise a crasher against fresh databases (when it fails alone) and save it."""
        def still_fails(candidate: bytes) -> bool:
            return wanted <= signature(self.check_alone(candidate))

        if still_fails(raw):
            raw = fuzzing.minimise(raw, still_fails, budget=150)
        return fuzzing.save(raw, self.corpus)

    def run(self, minutes: float, seed: int) -> int:
        """Fuzz until the time is up; return how many new crashers were saved."""
        rng = random.Random(seed)
        seeds = fuzzing.seed_frames()
        known = self.known_signatures()
        print(f"fuzz: seed {seed}, {minutes:g} min, {len(seeds)} samples, corpus {self.corpus} "
              f"({len(known)} known signatures)", flush=True)
        deadline = time.monotonic() + minutes * 60
        next_report = time.monotonic() + REPORT_EVERY_S
        frames = saved = 0
        recent: deque[bytes] = deque(maxlen=100)
        harness = Harness(self.fresh_db(), self.config)
        while time.monotonic() < deadline:
            if frames and frames % FRESH_DB_EVERY == 0:
                harness.close()
                harness = Harness(self.fresh_db(), self.config)
            if recent and rng.random() < RESEND:
                raw = rng.choice(recent)  # a resend: answered as the first time (docs/hl7-rules.md)
            else:
                raw = fuzzing.random_frame(rng, seeds)
                recent.append(raw)
            frames += 1
            for finding in harness.check([raw], rng):
                sig = signature([finding])
                if sig <= known:
                    continue
                known |= sig
                path = self.keep(finding.frame, sig)
                saved += 1
                print(f"fuzz: NEW {finding.kind}: {finding.detail} -> {path} "
                      f"({path.stat().st_size} bytes)", flush=True)
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                print(f"fuzz: {frames} frames, {saved} new crashers", flush=True)
        harness.close()
        print(f"fuzz: done, {frames} frames, {saved} new crashers saved under {self.corpus}",
              flush=True)
        return saved


@contextlib.contextmanager
def databases(postgres: bool) -> Iterator[Callable[[], Path | str]]:
    """Fresh databases for one run: SQLite files in a temporary directory, or databases in a
    throw-away PostgreSQL cluster."""
    with tempfile.TemporaryDirectory(prefix="hl7-fuzz-") as tmp:
        if not postgres:
            yield lambda: Path(tempfile.mkdtemp(dir=tmp)) / "engine.db"
            return
        from pgcluster import PgCluster, find_binaries

        binaries = find_binaries()
        if binaries is None:
            raise SystemExit("fuzz: PostgreSQL server binaries (initdb, pg_ctl) not found")
        cluster = PgCluster(binaries)
        cluster.start()
        try:
            yield lambda: cluster.url(cluster.create_database())
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("FUZZ_MINUTES", "10")))
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--corpus", type=Path, default=fuzzing.CORPUS)
    parser.add_argument("--strict", action="store_true",
                        help="the channel with `validation: strict` (hl7apy; ~20 ms a frame)")
    parser.add_argument("--postgres", action="store_true",
                        help="a throw-away PostgreSQL cluster instead of SQLite files")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    fuzzing.configure_quiet_logs()
    config = fuzzing.shipped_config("strict" if args.strict else "")
    with databases(args.postgres) as fresh_db:
        Fuzzer(config, args.corpus, fresh_db).run(args.minutes, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
