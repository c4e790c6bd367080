"""Synthetic HL7 v2.5.1 messages for the load generator: REF^I12 and SIU^S12, fake data only.

Modelled on `samples/ref_i12_v251.hl7` and `samples/siu_s12_v251.hl7`: `TESTPATIENT` names, MRNs
1000xx (NORTHCLINIC) and 2000xx (SOUTHHOSP), `TESTDOC` providers, 555-01xx phones.  Every message
gets a unique MSH-10, and every REF a unique referral id in RF1-6 (every SIU a unique SCH-1/2).
Segments end with CR, as on the wire.  Dates follow the calendar: a referral is effective today
and expires in 180 days (RF1-7/8), its appointment is in 30 days, so the ledger sees what a live
feed gives it (no referral expired on arrival, however long after writing this the bench runs).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.ack import base36 as _base36

NATO = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA", "JULIET")

REF_I12 = "\r".join((
    "MSH|^~\\&|PCPEHR|NORTHCLINIC|REFTRACK|HUB|{ts}||REF^I12^REF_I12|{cid}|P|2.5.1",
    "RF1|P^Pending^HL70283|R^Routine^HL70280|Med^Medical^HL70281|RP^Return patient after "
    "evaluation^HL70282|O^Outpatient^HL70284|{ref}^PCPEHR|{day}|{until}|{day}|"
    "O^Provider ordered^HL70336",
    "PRD|RP|TESTDOC^REFERRING^A^^DR|100 TEST ST^^ANYTOWN^ZZ^00000|FAMMED^^^NORTHCLINIC|"
    "^WPN^PH^^1^555^5550110||TESTNPI0001^NPI",
    "PRD|RT|TESTDOC^NEURO^B^^DR|200 TEST AVE^^ANYTOWN^ZZ^00000|NEURO^^^SOUTHHOSP|"
    "^WPN^PH^^1^555^5550120||TESTNPI0002^NPI",
    "PID|1||{mrn}^^^NORTHCLINIC^MR~{mrn2}^^^SOUTHHOSP^MR||TESTPATIENT^{name}^^^^^L||19700101|F|||"
    "1 FAKE ST^^ANYTOWN^ZZ^00000||^PRN^PH^^1^555^5550100",
    "DG1|1||G43.909^Migraine, unspecified^I10||{day}|W",
    "PV1|1|O|FAMMED^^^NORTHCLINIC||||TESTNPI0001^TESTDOC^REFERRING^A^^DR||||||||||||"
    "V-{cid}^^^NORTHCLINIC^VN",
    "NTE|1||Synthetic referral. Not real.",
)) + "\r"

SIU_S12 = "\r".join((
    "MSH|^~\\&|SCHED|SOUTHHOSP|REFTRACK|HUB|{ts}||SIU^S12^SIU_S12|{cid}|P|2.5.1",
    "SCH|PL-{seq}^SCHED|SA-{seq}^SCHED||||NEW^New appointment^L|ROUTINE^Routine^HL70276|"
    "Normal^Normal^HL70277|30|min^minutes^ANS+|^^^{visit}^{visit_end}|||||"
    "TESTSCHEDULER^ONE|^WPN^PH^^1^555^5550150|||TESTSCHEDULER^ONE|||||Booked^Booked^HL70278|"
    "{ref}^PCPEHR",
    "PID|1||{mrn2}^^^SOUTHHOSP^MR~{mrn}^^^NORTHCLINIC^MR||TESTPATIENT^{name}^^^^^L||19700101|F|||"
    "1 FAKE ST^^ANYTOWN^ZZ^00000||^PRN^PH^^1^555^5550100",
    "PV1|1|O|NEURO^^^SOUTHHOSP||||TESTNPI0002^TESTDOC^NEURO^B^^DR||||||||||||"
    "E-{cid}^^^SOUTHHOSP^VN",
    "RGS|1|A",
    "AIS|1|A|NEUROCONS^Neurology new patient consult^L|{visit}|||30|min^minutes^ANS+",
    "AIL|1|A|NEURO^^^SOUTHHOSP|CLINIC^Clinic^L||{visit}|||30|min^minutes^ANS+",
    "AIP|1|A|TESTNPI0002^TESTDOC^NEURO^B^^DR|ATTENDING^Attending^L||{visit}|||30|"
    "min^minutes^ANS+",
)) + "\r"

TEMPLATES = {"ref": REF_I12, "siu": SIU_S12}


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send: its MSH-10 (what MSA-2 must echo) and its unframed bytes."""

    control_id: str
    payload: bytes




class Synth:
    """Makes messages on demand; ids are unique across every call on one instance.

    MSH-10 is `B<stamp><seq>` (14 characters; at most 20 is the v2.3 ST length), the stamp being
    the start time in base 36, so two runs against one database do not collide either.
    """

    def __init__(self, mix: tuple[str, ...] = ("ref",), lane: str = "B") -> None:
        unknown = [kind for kind in mix if kind not in TEMPLATES]
        if unknown or not mix:
            raise ValueError(f"mix: expected some of {', '.join(TEMPLATES)}, got {mix!r}")
        self._mix = mix
        self._prefix = lane + _base36(int(time.time()))[-5:]  # another lane: other ids
        self._patients = (ord(lane) - ord("B")) * 10_000_000  # ... and other patients
        self._ts = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self._now = time.time()
        self._templates = {kind: dated(TEMPLATES[kind], self._now) for kind in mix}
        self._seq: Iterator[int] = itertools.count(1)

    def next(self) -> Message:
        """The next message of the mix (round-robin over the kinds)."""
        seq = next(self._seq)
        kind = self._mix[(seq - 1) % len(self._mix)]
        # One referral per round of the mix: its SIU books it (SCH-26 = the REF's RF1-6), and
        # each round has a patient of its own, as a real feed mostly does.
        pair = (seq - 1) // len(self._mix)
        cid = f"{self._prefix}{seq:08d}"
        text = self._templates[kind].format(
            ts=self._ts, cid=cid, seq=f"{self._prefix}{seq:08d}",
            ref=f"BR-{self._prefix}{pair:08d}", mrn=self._patients + 1000001 + pair,
            mrn2=self._patients + 2000001 + pair,
            name=NATO[seq % len(NATO)],
        )
        return Message(cid, text.encode("ascii"))


def dated(template: str, now: float) -> str:
    """`template` with its dates filled in relative to `now`; the per-message fields left."""
    day = 86_400.0
    dates = {"{day}": time.strftime("%Y%m%d", time.gmtime(now)),
             "{until}": time.strftime("%Y%m%d", time.gmtime(now + 180 * day)),
             "{visit}": time.strftime("%Y%m%d090000", time.gmtime(now + 30 * day)),
             "{visit_end}": time.strftime("%Y%m%d093000", time.gmtime(now + 30 * day))}
    for field, value in dates.items():
        template = template.replace(field, value)
    return template


def prebuilt(synth: Synth, count: int) -> Callable[[], Message | None]:
    """A callable giving `count` messages, then None: the load shared by every connection.

    The messages are made up front, so their making is not timed with the run.
    """
    batch = [synth.next() for _ in range(count)]
    batch.reverse()
    pop = batch.pop

    def take() -> Message | None:
        return pop() if batch else None

    return take
