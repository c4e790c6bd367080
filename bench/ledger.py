"""Ledger scenario: does matching stay flat as the ledger grows?  (issue 3, "Performance")

    python -m bench.ledger [--preload 100000] [--messages 5000] [--connections 8]

Two runs of the same load, SIU^S12 bookings whose SCH-26 names an open referral (so each is
matched by identifier and moves its referral to `scheduled`):
  * "small": the ledger holds only the referrals the bookings name;
  * "large": the same, plus `--preload` other open referrals (with keys and patients).
Referrals are written straight into the database before the engine starts, which builds the
same rows the engine would, in seconds instead of minutes.  Target: large within 1.5x of small.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bench.measure import Settings, measure
from bench.run import engine_server
from bench.synth import SIU_S12, Message, Synth
from engine.store.database import open_database
from engine.store.schema import referral_keys, referral_patients, referrals


class Bookings(Synth):
    """SIU^S12 #i books referral BR-PRE<i> of patient 3000000+i."""

    def __init__(self) -> None:
        super().__init__(("siu",))
        self._count = itertools.count(0)

    def next(self) -> Message:
        i = next(self._count)
        cid = f"{self._prefix}{i:08d}"
        text = SIU_S12.format(ts=self._ts, cid=cid, seq=cid, ref=f"BR-PRE{i:08d}",
                              mrn=3000000 + i, mrn2=4000000 + i, name="ALPHA")
        return Message(cid, text.encode("ascii"))


def preload(url: str, first: int, count: int) -> None:
    """`count` open referrals BR-PRE<first..>, each with its key and two patient ids."""
    db = open_database(url)
    now = datetime(2026, 1, 1)
    with db.begin() as conn:
        for start in range(first, first + count, 10000):
            ids = range(start, min(start + 10000, first + count))
            rows = [{"id": i + 1, "key_id": f"BR-PRE{i:08d}", "key_authority": "PCPEHR",
                     "source": "REF", "owner": "PCPEHR", "status": "pending", "priority": "R",
                     "specialty": "NEURO", "window_start": now,
                     "window_end": now + timedelta(days=365), "providers": "[]",
                     "diagnoses": "[]", "review": False, "received_at": now, "updated_at": now,
                     # open and not yet overdue, as most of a live ledger is: the
                     # engine's start-up sweep then has nothing to mark
                     "due_at": datetime.now() + timedelta(days=14)} for i in ids]
            conn.execute(insert(referrals), rows)
            conn.execute(insert(referral_keys), [
                {"referral_id": i + 1, "kind": "RF1-6", "key_id": f"BR-PRE{i:08d}",
                 "key_authority": "PCPEHR"} for i in ids])
            conn.execute(insert(referral_patients), [
                {"referral_id": i + 1, "patient_id": str(p), "authority": a}
                for i in ids for p, a in ((3000000 + i, "NORTHCLINIC"), (4000000 + i, "SOUTHHOSP"))])
    db.dispose()


def run(label: str, extra: int, s: Settings) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="hl7-bench-ledger-"))
    try:
        booked = s.warmup + s.messages
        preload(f"sqlite:///{tmp / 'bench.db'}", 0, booked + extra)
        with engine_server(tmp) as server:
            result = measure(label, server, s, Bookings())
        print(result.line(), flush=True)
        if result.report.failed:
            raise RuntimeError(f"{label}: wrong ACKs")
        return float(result.report.msg_per_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preload", type=int, default=100000)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--warmup", type=int, default=300)
    a = p.parse_args(argv)
    s = Settings(a.messages, a.connections, 0, a.warmup, ("siu",))
    try:
        small = run("small ledger", 0, s)
        large = run(f"+{a.preload} referrals", a.preload, s)
    except RuntimeError as exc:
        print(f"bench.ledger: {exc}", file=sys.stderr)
        return 1
    ratio = small / large if large else float("inf")
    verdict = "PASS" if ratio <= 1.5 else "MISS"
    print(f"\nbookings/s: small ledger {small:.0f}, with {a.preload} more referrals {large:.0f}: "
          f"small/large = {ratio:.2f} (target <= 1.5: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
