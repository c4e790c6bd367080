"""The fuzz harness: hostile frames through the engine's real pieces, in process, and the
properties every answer must keep.

A frame goes through `FrameDecoder` (fed in random chunk sizes), then `Pipeline.process_batch`
against a real SQLite file, with the shipped `channels.yaml` channel.  `Harness.check` reports a
`Finding` for every broken property: the batch raised; the ACKs are not what `ack_codes` says
for the verdict (count, MSA-1), do not parse, or do not carry the inbound MSH-10 in MSA-2; or the
engine took an "unexpected internal error" path (a logged `*_failed` event, ERR-3 207).

The generators (`mutate`, `random_msh`, `random_frame`) draw from a `random.Random`, so the
pytest suite (hypothesis, fixed seed) and the long-running fuzzer (`tests/fuzz.py`) share them.
Findings carry no message text, only the property broken and the exception or event name.
"""

from __future__ import annotations

import hashlib
import random
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import yaml
from structlog.testing import capture_logs

from engine.ack import AckBuilder, ack_codes
from engine.config import Config, load_config, parse_config
from engine.errors import HL7Error
from engine.mllp.framing import END_BLOCK, START_BLOCK, FrameDecoder
from engine.parsing import InboundMessage, parse
from engine.pipeline import Job, Pipeline, Result
from engine.store.database import open_database

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
CORPUS = Path(__file__).resolve().parent / "corpus"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# Log events that mean a bug behind the one-job boundary, never an answer to input.
BUG_EVENTS = frozenset({"ledger.apply_failed", "ledger.mapping_failed", "validation.failed",
                        "writer.batch_failed", "store.commit_failed", "pipeline.prepare_failed",
                        "ack.build_failed", "writer.batch_lost", "writer.callback_failed"})
INTERNAL_ERROR = "207"


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken property for one frame: what broke, and the bytes that broke it."""

    kind: str  # raised | acks | unparsable_ack | msa2 | logged | internal_error | framing | resend
    detail: str  # an exception or event name, codes: never message text
    frame: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.frame).hexdigest()[:16]


# --- seeds ------------------------------------------------------------------------------------


def seed_frames() -> list[tuple[str, bytes]]:
    """Every sample under `samples/` (story included) as the sending tool sends it: LF and CRLF
    become CR, except in the CRLF sample."""
    found = []
    for path in sorted(SAMPLES.rglob("*.hl7")):
        data = path.read_bytes()
        if path.name != "crlf_terminators.hl7":
            data = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        found.append((str(path.relative_to(SAMPLES)), data))
    return found


def corpus_frames() -> list[Path]:
    """The crash corpus: one raw frame payload per file (`.hl7` or `.bin`)."""
    return sorted(p for p in CORPUS.glob("*") if p.suffix in (".hl7", ".bin"))


# --- hostile values ---------------------------------------------------------------------------

HOSTILE: tuple[bytes, ...] = (
    b"99999999999999999999", b"9" * 400, b"-99999999999999999999", b"1e308", b"1E+99999",
    b"NaN", b"Infinity", b"-0", b".", b"+-1", b"0.0000000000000000001", b"00000000000000000001",
    b'""', b'"', b"", b" ", b"\x00", b"\xef\xbb\xbf",
    "\u00b2".encode(), b"\xb2", b"\xb2\xb3", "\u0662\u0660\u0662\u0666".encode(),
    "\u0662\u0660\u0662\u0666\u0660\u0663\u0660\u0661".encode(), "\uff12\uff10\uff12\uff16".encode(),
    b"0000", b"00000000", b"00000101", b"9999", b"99991231235959", b"99991231235959-1400",
    b"00010101000000+1400", b"18000101", b"29991231235959.9999", b"20260230", b"2026030209301",
    b"20260302093000+9999", b"20260302093000.", b"20260302093000.99999999999999999999",
    b"A" * 5000, b"\\" * 3, b"\\X\\", b"\\XZZ\\", b"\\X0D0A\\", b"\\X0\\", b"\\E\\\\F\\",
    b"\\C2842\\", b"\\H\\x\\N\\", b"\\.br\\", b"|", b"^", b"~", b"&", b"#", b"^^^^^", b"~~~~",
    b"&&&&", b"a^b~c&d", b"\r", b"\n", b"\r\n", b"\x0b", b"\x1c", b"\x1c\r", b"MSH|^~\\&|",
    b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", "\U0001f600".encode(), b"\xe2\x80\xae",
    b"SIU", b"S12", b"REF", b"I12", b"ORC", b"NW", b"2.5.1", b"2.3", b"P", b"AL", b"NE", b"ER",
    b"SU", b"8859/1", b"UNICODE UTF-8", b"ISO IR192", b"GB 18030-2000", b"BIG-5", b"KLINGON",
    b"Booked", b"Complete", b"Noshow", b"HOURS", b"MIN", b"-5", b"527041", b"8785",
)

# MSH-2 candidates: the standard ones, the v2.7 truncation character, odd and hostile sets.
ENCODINGS: tuple[bytes, ...] = (
    b"^~\\&", b"^~\\&#", b"$*\\%", b"^~\\&#!", b"^~\\", b"^^\\&", b"^~ &", b"^~\\a",
    b"^~\\\xb2", b"^~\\&\xb2", b"\xa7~\\&", b"^~\r&", b"", b"^", b"!@#$", b"!@#$%",
)
FIELD_SEPS: tuple[bytes, ...] = (b"|", b"!", b"*", b"\xb2", b"^", b" ", b"1", b"\x00", b"\x0b")

# --- generators -------------------------------------------------------------------------------


def segments_of(payload: bytes) -> list[bytes]:
    """A payload's segments (CR, LF or CRLF separated), without empty lines."""
    text = payload.replace(b"\r\n", b"\r")
    lines = text.split(b"\r") if b"\r" in text else text.split(b"\n")
    return [line for line in lines if line]


def _replace_field(rng: random.Random, seg: bytes, value: bytes) -> bytes:
    fields = seg.split(b"|")
    if len(fields) < 2:
        return seg + b"|" + value
    n = rng.randrange(2 if fields[0] == b"MSH" else 1, len(fields) + 3)
    fields += [b""] * (n + 1 - len(fields))
    fields[n] = value
    return b"|".join(fields)


def _replace_component(rng: random.Random, seg: bytes, value: bytes) -> bytes:
    fields = seg.split(b"|")
    if len(fields) < 3:
        return seg
    n = rng.randrange(2 if fields[0] == b"MSH" else 1, len(fields))
    comps = fields[n].split(b"^")
    comps[rng.randrange(len(comps))] = value
    fields[n] = b"^".join(comps)
    return b"|".join(fields)


def hostile(rng: random.Random) -> bytes:
    """One hostile value, sometimes repeated or glued to another."""
    value = rng.choice(HOSTILE)
    roll = rng.random()
    if roll < 0.1:
        return value * rng.randrange(2, 50)
    if roll < 0.2:
        return value + rng.choice(HOSTILE)
    return value


# Fields the mappers read as numbers, dates, keys or codes: hit more often than the others.
TARGETS: dict[bytes, tuple[int, ...]] = {
    b"SCH": (1, 2, 4, 9, 10, 11, 25, 26, 27), b"TQ1": (7, 8, 9), b"AIS": (3, 4, 7, 8),
    b"AIL": (3, 6), b"AIP": (3, 6), b"AIG": (8,), b"RF1": (1, 2, 6, 7, 8, 11),
    b"ORC": (1, 2, 3, 5, 7), b"OBR": (2, 3, 4, 27), b"PID": (3,), b"PRD": (1, 4),
    b"OBX": (3, 5, 11), b"DG1": (3,), b"MSH": (9, 10, 12, 15, 16, 18),
}


def _targeted(rng: random.Random, seg: bytes) -> bytes:
    """A hostile value in a field the mappers read (a whole field, or one component)."""
    fields = seg.split(b"|")
    numbers = TARGETS.get(fields[0])
    if not numbers:
        return _replace_field(rng, seg, hostile(rng))
    n = rng.choice(numbers) - (1 if fields[0] == b"MSH" else 0)
    fields += [b""] * (n + 1 - len(fields))
    comps = fields[n].split(b"^")
    comps[rng.randrange(len(comps))] = hostile(rng)
    fields[n] = hostile(rng) if rng.random() < 0.5 else b"^".join(comps)
    return b"|".join(fields)


def _segment_op(rng: random.Random, segs: list[bytes]) -> list[bytes]:
    i = rng.randrange(len(segs))
    op = rng.randrange(9)
    if op >= 7:
        return segs[:i] + [_targeted(rng, segs[i])] + segs[i + 1:]
    if op == 0:
        return segs[:i + 1] + [segs[i]] * rng.randrange(1, 4) + segs[i + 1:]
    if op == 1 and len(segs) > 1:
        return segs[:i] + segs[i + 1:]
    if op == 2:
        j = rng.randrange(len(segs))
        segs = list(segs)
        segs[i], segs[j] = segs[j], segs[i]
        return segs
    if op == 3:
        return segs[:i] + [_replace_field(rng, segs[i], hostile(rng))] + segs[i + 1:]
    if op == 4:
        return segs[:i] + [_replace_component(rng, segs[i], hostile(rng))] + segs[i + 1:]
    if op == 5:
        return segs[:i] + [segs[i][: rng.randrange(len(segs[i]) + 1)]] + segs[i + 1:]
    return segs + [rng.choice(segs)]


def _byte_op(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return hostile(rng)
    i = rng.randrange(len(data))
    op = rng.randrange(5)
    if op == 0:
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
    if op == 1:
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    if op == 2:
        return data[:i] + rng.randbytes(rng.randrange(1, 8)) + data[i:]
    if op == 3:
        return data[:i] + data[i + rng.randrange(1, 16):]
    return data[:i] + hostile(rng) + data[i:]


def _msh_op(rng: random.Random, segs: list[bytes]) -> list[bytes]:
    """Hit the header: MSH-2 encoding characters, MSH-12, MSH-15/16, MSH-18, MSH-9, MSH-10."""
    msh = segs[0]
    if not msh.startswith(b"MSH") or len(msh) < 8:
        return segs
    if rng.random() < 0.3:
        end = msh.find(msh[3:4], 4)
        if end > 0:
            msh = msh[:4] + rng.choice(ENCODINGS) + msh[end:]
    else:
        fields = msh.split(b"|")
        n = rng.choice((9, 10, 11, 12, 15, 16, 18, 3, 4, 7))
        if n - 1 < 2:
            return segs
        fields += [b""] * (n - len(fields))
        fields[n - 1] = hostile(rng)
        msh = b"|".join(fields)
    return [msh, *segs[1:]]


def mutate(rng: random.Random, payload: bytes, rounds: int = 0) -> bytes:
    """A sample mutated 1-4 times: byte flips, inserts, deletes, segment duplication, removal
    and swaps, fields and components replaced with hostile values, header fields hit."""
    data = payload
    for _ in range(rounds or rng.randrange(1, 5)):
        kind = rng.random()
        segs = segments_of(data)
        if kind < 0.25 or not segs:
            data = _byte_op(rng, data)
            continue
        segs = _msh_op(rng, segs) if kind < 0.45 else _segment_op(rng, segs)
        data = b"\r".join(segs) + b"\r"
    return data


def random_msh(rng: random.Random, body: Sequence[bytes] = ()) -> bytes:
    """An MSH with random field contents (odd delimiters, 4/5-char MSH-2, non-ASCII bytes,
    huge numbers), followed by `body` segments (rewritten to its field separator)."""
    fs = rng.choice(FIELD_SEPS) if rng.random() < 0.3 else b"|"
    enc = rng.choice(ENCODINGS) if rng.random() < 0.5 else b"^~\\&"
    standard = [b"SENDER", b"FAC", b"REFTRACK", b"HUB", b"20260301090000", b"",
                rng.choice((b"REF^I12", b"SIU^S12^SIU_S12", b"ORM^O01", b"OMG^O19", b"RRI^I12",
                            b"SIU^S14", b"OSU^O51", b"ADT^A01", b"", b"REF")),
                b"CTRL-" + str(rng.randrange(10**6)).encode(), b"P", b"2.5.1", b"", b"",
                b"", b"", b"", b""]
    fields = [rng.choice((hostile(rng), rng.randbytes(rng.randrange(12)), value, value))
              if rng.random() < 0.35 else value for value in standard]
    fields = fields[: rng.randrange(6, len(fields) + 1)]
    msh = b"MSH" + fs + enc + fs + fs.join(fields)
    rest = [seg.replace(b"|", fs) for seg in body]
    return b"\r".join([msh, *rest]) + b"\r"


def random_frame(rng: random.Random, seeds: Sequence[tuple[str, bytes]]) -> bytes:
    """One frame from the fuzzer's mix: mostly mutated samples, some random MSHs over a
    sample's body, a few random byte strings (some behind a valid MSH start)."""
    roll = rng.random()
    _, seed = rng.choice(seeds)
    if roll < 0.7:
        return mutate(rng, seed)
    if roll < 0.9:
        return random_msh(rng, segments_of(seed)[1:])
    noise = rng.randbytes(rng.randrange(200))
    return b"MSH|^~\\&|" + noise if rng.random() < 0.5 else noise


# --- MLLP -------------------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """The MLLP envelope around one payload."""
    return bytes([START_BLOCK]) + payload + bytes([END_BLOCK, 0x0D])


def chunked(data: bytes, rng: random.Random) -> Iterable[bytes]:
    """`data` cut at random sizes (1 byte to all of it), as TCP reads may deliver it."""
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 7, 64, 512, len(data)))
        yield data[pos:pos + size]
        pos += size


def decode(payloads: Sequence[bytes], rng: random.Random) -> tuple[list[bytes], list[Finding]]:
    """Frame every payload, feed the stream to a `FrameDecoder` in random chunks, and return the
    frames it gives.  A payload without MLLP control bytes must come back exactly."""
    decoder = FrameDecoder()
    stream = b"".join(frame(p) for p in payloads)
    out: list[bytes] = []
    for piece in chunked(stream, rng):
        out += decoder.feed(piece)
    out += decoder.eof()
    findings = []
    clean = [p for p in payloads if START_BLOCK not in p and END_BLOCK not in p]
    if len(clean) == len(payloads) and out != list(payloads):
        findings.append(Finding("framing", f"{len(payloads)} frames in, {len(out)} out",
                                b"".join(payloads)))
    return out, findings


# --- the engine -------------------------------------------------------------------------------


def shipped_config(validation: str = "") -> Config:
    """`channels.yaml` as shipped: its `referrals` channel, ledger and routes; `validation`
    ("strict") overrides the channels' `validation:`."""
    if not validation:
        return load_config(ROOT / "channels.yaml")
    data = yaml.safe_load((ROOT / "channels.yaml").read_text(encoding="utf-8"))
    for channel in data["channels"]:
        channel["validation"] = validation
    return parse_config(data)


class Harness:
    """A `Pipeline` on a real SQLite file with the shipped channel, and the property checks."""

    def __init__(self, db: Path | str, config: Config | None = None) -> None:
        """`db`: a SQLite file, or a database URL (PostgreSQL)."""
        self.config = config or shipped_config()
        self.channel = self.config.channels[0]
        url = f"sqlite:///{db}" if isinstance(db, Path) else db
        self.db = open_database(url, synchronous="OFF")
        builders = {ch.name: AckBuilder(ch.ack.application, ch.ack.facility)
                    for ch in self.config.channels}
        self.pipeline = Pipeline(self.db, builders, self.config, clock=lambda: NOW)
        # MSA-1s of every committed frame, by digest: a resend must be answered the same.
        self.answers: dict[str, list[str]] = {}

    def close(self) -> None:
        self.pipeline.close()
        self.db.dispose()

    def check(self, payloads: Sequence[bytes], rng: random.Random | None = None) -> list[Finding]:
        """Decode these payloads off the wire, process them as one batch, check every answer."""
        frames, findings = decode(payloads, rng or random.Random(0))
        if not frames:
            return findings
        jobs = [Job(self.channel, raw, "127.0.0.1:1", NOW) for raw in frames]
        with capture_logs() as logs:
            try:
                results = self.pipeline.process_batch(jobs)
            except Exception as exc:  # noqa: BLE001 - the property under test
                where = raised_at(exc)
                return [*findings, *(Finding("raised", where, raw) for raw in frames)]
        bugs = [str(e.get("event")) for e in logs if e.get("event") in BUG_EVENTS]
        for raw, result in zip(frames, results, strict=True):
            findings += check_result(raw, result)
            findings += self._same_as_before(raw, result)
            findings += [Finding("logged", event, raw) for event in bugs]
        return findings

    def _same_as_before(self, raw: bytes, result: Result) -> list[Finding]:
        """A frame sent again (same bytes, readable MSH-10) gets the ACK codes it got first."""
        if not result.committed or not result.control_id:
            return []
        digest = hashlib.sha256(raw).hexdigest()
        try:
            codes = [parse(a).get("MSA.1") for a in result.acks]
        except HL7Error:
            return []  # reported by check_result
        first = self.answers.setdefault(digest, codes)
        if first == codes:
            return []
        return [Finding("resend", f"MSA-1 {codes} after {first}", raw)]


def raised_at(exc: BaseException) -> str:
    """`ValueError in engine/ack.py:_version_tuple`: the exception and the innermost engine
    function it came from (never its message, which may quote the input)."""
    where = ""
    for frame_summary in traceback.extract_tb(exc.__traceback__):
        path = Path(frame_summary.filename)
        if "engine" in path.parts:
            rel = path.parts[len(path.parts) - 1 - path.parts[::-1].index("engine"):]
            where = f"{'/'.join(rel)}:{frame_summary.name}"
    return f"{type(exc).__name__} in {where or '?'}"


def _inbound(raw: bytes) -> InboundMessage | None:
    try:
        return parse(raw)
    except HL7Error:
        return None


def check_result(raw: bytes, result: Result) -> list[Finding]:
    """The properties of one frame's answer (see the module docstring)."""
    msg = _inbound(raw)
    h = msg.header if msg is not None else None
    expected = ack_codes(result.verdict, h.accept_ack if h else "", h.application_ack if h else "")
    out: list[Finding] = []
    if result.verdict.code == INTERNAL_ERROR:
        out.append(Finding("internal_error", f"{result.verdict.stage.value} 207", raw))
    acks: list[InboundMessage] = []
    for ack in result.acks:
        try:
            acks.append(parse(ack))
        except HL7Error as exc:
            return [*out, Finding("unparsable_ack", f"{type(exc).__name__} {exc.location or ''}",
                                  raw)]
    got = [a.get("MSA.1") for a in acks]
    if got != expected:
        out.append(Finding("acks", f"MSA-1 {got} != ack_codes {expected}", raw))
    if not acks and (h is None or (not h.accept_ack and not h.application_ack)):
        out.append(Finding("acks", "no ACK in original mode", raw))
    want = _readable_control_id(msg)
    if want is not None and any(a.get("MSA.2") != want for a in acks):
        out.append(Finding("msa2", "MSA-2 is not the inbound MSH-10", raw))
    return out


def _readable_control_id(msg: InboundMessage | None) -> str | None:
    """The MSH-10 an ACK must echo, when it survives any charset and delimiter set unchanged
    (printable ASCII, no delimiter of either set); "" for no message; None: not checked."""
    if msg is None:
        return ""
    cid = msg.header.control_id
    special = set(msg.delimiters.field + msg.delimiters.encoding_characters + "|^~\\&#")
    if cid.isascii() and cid.isprintable() and not special.intersection(cid) and cid.strip() == cid:
        return cid
    return None


# --- minimising -------------------------------------------------------------------------------


def minimise(raw: bytes, still_fails: Callable[[bytes], bool], budget: int = 200) -> bytes:
    """A smaller frame that still fails: drop segments, then fields, then byte spans, within
    `budget` tries (cheap, not minimal)."""
    tries = 0

    def attempt(candidate: bytes) -> bool:
        nonlocal tries
        tries += 1
        return candidate != raw and still_fails(candidate)

    for unit in (b"\r", b"|"):
        parts = raw.split(unit)
        i = len(parts) - 1
        while i >= 1 and tries < budget:
            candidate = unit.join(parts[:i] + parts[i + 1:])
            if attempt(candidate):
                raw, parts = candidate, parts[:i] + parts[i + 1:]
            i -= 1
    span = max(len(raw) // 4, 1)
    while span >= 1 and tries < budget:
        pos = 0
        while pos < len(raw) and tries < budget:
            candidate = raw[:pos] + raw[pos + span:]
            if attempt(candidate):
                raw = candidate
            else:
                pos += span
        span //= 2
    return raw


def signature(findings: Iterable[Finding]) -> frozenset[tuple[str, str]]:
    """What a frame broke, to tell one crasher from another while minimising."""
    return frozenset((f.kind, f.detail.split(" ")[0]) for f in findings)


def save(raw: bytes, directory: Path = CORPUS) -> Path:
    """Write a crasher to the corpus under its digest; an existing one is kept as it is."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"crash-{hashlib.sha256(raw).hexdigest()[:16]}.bin"
    if not path.exists():
        path.write_bytes(raw)
    return path


def configure_quiet_logs() -> None:
    """Keep structlog's default printing off the fuzzer's terminal between captures."""
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())


def describe(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Findings as plain rows (kind, detail, digest, size): no message text."""
    return [{"kind": f.kind, "detail": f.detail, "digest": f.digest, "size": len(f.frame)}
            for f in findings]
