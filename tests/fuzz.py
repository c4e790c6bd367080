"""The long-running fuzzer behind `make fuzz`: random frames through the real decoder and
pipeline for as long as asked, every new crasher minimised and saved to the corpus.

    python tests/fuzz.py --minutes 10 [--seed N] [--corpus DIR] [--strict]

A crasher is a frame that breaks one of the properties `tests/fuzzing.py` checks.  It is new
when its signature (the property and the exception or event, never message text) has not been
seen in this run nor in the corpus already.  New crashers are minimised against a fresh
database and written as `crash-<sha256 prefix>.bin`; `tests/test_fuzz.py` replays every corpus
frame from then on.  The seed is printed, so a run can be repeated.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzing  # noqa: E402 - tests/ is not a package
from fuzzing import Finding, Harness, signature  # noqa: E402

from engine.config import Config  # noqa: E402

FRESH_DB_EVERY = 50_000  # frames: keep the SQLite file (and its WAL) small
REPORT_EVERY_S = 30.0
RESEND = 0.05  # the share of frames that are a recent frame sent again


def known_signatures(corpus: Path, workdir: Path, config: Config) -> set[tuple[str, str]]:
    """What the corpus frames already break (each on a fresh database)."""
    known: set[tuple[str, str]] = set()
    for path in sorted(corpus.glob("*")):
        if path.suffix in (".hl7", ".bin"):
            known |= signature(_fresh_check(path.read_bytes(), workdir, config))
    return known


def _fresh_check(raw: bytes, workdir: Path, config: Config) -> list[Finding]:
    db = Path(tempfile.mkdtemp(dir=workdir)) / "replay.db"
    harness = Harness(db, config)
    try:
        return harness.check([raw])
    finally:
        harness.close()


def keep(raw: bytes, wanted: frozenset[tuple[str, str]], workdir: Path, corpus: Path,
         config: Config) -> Path:
    """Minimise a crasher against fresh databases (when it fails alone) and save it."""
    def still_fails(candidate: bytes) -> bool:
        return wanted <= signature(_fresh_check(candidate, workdir, config))

    if still_fails(raw):
        raw = fuzzing.minimise(raw, still_fails, budget=150)
    return fuzzing.save(raw, corpus)


def run(minutes: float, seed: int, corpus: Path, config: Config) -> int:
    """Fuzz until the time is up; return how many new crashers were saved."""
    fuzzing.configure_quiet_logs()
    rng = random.Random(seed)
    seeds = fuzzing.seed_frames()
    with tempfile.TemporaryDirectory(prefix="hl7-fuzz-") as tmp:
        workdir = Path(tmp)
        known = known_signatures(corpus, workdir, config)
        print(f"fuzz: seed {seed}, {minutes:g} min, {len(seeds)} samples, corpus {corpus} "
              f"({len(known)} known signatures)", flush=True)
        deadline = time.monotonic() + minutes * 60
        frames = saved = 0
        recent: deque[bytes] = deque(maxlen=100)
        harness = Harness(workdir / "fuzz-0.db", config)
        next_report = time.monotonic() + REPORT_EVERY_S
        while time.monotonic() < deadline:
            if frames and frames % FRESH_DB_EVERY == 0:
                harness.close()
                harness = Harness(workdir / f"fuzz-{frames}.db", config)
            if recent and rng.random() < RESEND:
                raw = rng.choice(recent)  # a resend: answered as the first time (HL7-SPEC §8)
            else:
                raw = fuzzing.random_frame(rng, seeds)
                recent.append(raw)
            frames += 1
            for finding in harness.check([raw], rng):
                sig = signature([finding])
                if sig <= known:
                    continue
                known |= sig
                path = keep(finding.frame, sig, workdir, corpus, config)
                saved += 1
                print(f"fuzz: NEW {finding.kind}: {finding.detail} -> {path} "
                      f"({path.stat().st_size} bytes)", flush=True)
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                print(f"fuzz: {frames} frames, {saved} new crashers", flush=True)
        harness.close()
    print(f"fuzz: done, {frames} frames, {saved} new crashers saved under {corpus}", flush=True)
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("FUZZ_MINUTES", "10")))
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--corpus", type=Path, default=fuzzing.CORPUS)
    parser.add_argument("--strict", action="store_true",
                        help="the channel with `validation: strict` (hl7apy; ~20 ms a frame)")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    run(args.minutes, seed, args.corpus, fuzzing.shipped_config("strict" if args.strict else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
