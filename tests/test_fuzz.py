"""Fuzzing that stays in the suite: hostile frames through the MLLP decoder and the real
pipeline (SQLite file, the shipped channel), and the crash corpus replayed frame by frame.

Each frame must keep the properties `tests/fuzzing.py` checks: `process_batch` never raises;
the ACKs are exactly what `ack_codes` says for the verdict (count and MSA-1), each parses and
echoes the inbound MSH-10 in MSA-2; no "unexpected internal error" path (a logged `*_failed`
event, ERR-3 207) is taken.  Hypothesis runs derandomized with bounded example counts, so the
suite is deterministic; `make fuzz` runs the same checks for as long as asked, at random.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzing import (
    CORPUS,
    ENCODINGS,
    FIELD_SEPS,
    HOSTILE,
    NOW,
    Finding,
    Harness,
    corpus_frames,
    describe,
    mutate,
    seed_frames,
    shipped_config,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import Location
from engine.parsing import parse
from engine.pipeline import Job

SEEDS = seed_frames()

# Crashes in modules this suite does not own, each with the reason; a finding with one of these
# signatures is tolerated by the generated tests, and its corpus frame is a strict xfail, until
# the module is fixed (the xfail then fails as XPASS: remove the entry).
KNOWN: dict[str, str] = {}
KNOWN_FRAMES: dict[str, str] = {}


def fuzz_settings(examples: int) -> settings:
    """Fixed seed, bounded count, no example database: the same examples on every run."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def unexpected(findings: list[Finding]) -> list[dict[str, object]]:
    """The findings not in `KNOWN`, as rows without message text."""
    return describe([f for f in findings if f"{f.kind}:{f.detail}" not in KNOWN])


@pytest.fixture(name="harness", scope="module")
def harness_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One pipeline and SQLite file for a whole generated test: the ledger state builds up."""
    harness = Harness(tmp_path_factory.mktemp("fuzz") / "engine.db")
    yield harness
    harness.close()


# --- (a) generated frames -------------------------------------------------------------------


@fuzz_settings(1000)
@given(payload=st.binary(max_size=400), rnd=st.randoms(use_true_random=False))
def test_random_bytes_in_a_frame(harness: Harness, payload: bytes, rnd: random.Random) -> None:
    """Any bytes in an MLLP frame (chunked at random) are answered by the rules."""
    assert unexpected(harness.check([payload], rnd)) == []


@fuzz_settings(1000)
@given(tail=st.binary(max_size=300), rnd=st.randoms(use_true_random=False))
def test_random_bytes_after_an_msh_start(harness: Harness, tail: bytes,
                                         rnd: random.Random) -> None:
    """Random bytes behind `MSH|^~\\&|` get past the first check and into the header reader."""
    assert unexpected(harness.check([b"MSH|^~\\&|" + tail], rnd)) == []


MSH_DEFAULTS: dict[int, bytes] = {
    3: b"SENDER", 4: b"FAC", 5: b"REFTRACK", 6: b"HUB", 7: b"20260301090000",
    9: b"REF^I12", 10: b"CTRL-1", 11: b"P", 12: b"2.5.1",
}
FIELD_VALUES = st.one_of(
    st.sampled_from(HOSTILE), st.binary(max_size=12),
    st.sampled_from([b"SIU^S12^SIU_S12", b"ORM^O01", b"OMG^O19", b"RRI^I12", b"REF^I14",
                     b"2.3", b"2.8.2", b"2.9", b"AL", b"NE", b"ER", b"SU", b"8859/1"]),
)


@st.composite
def msh_frames(draw: st.DrawFn) -> bytes:
    """An MSH with random contents over a sample's body: field separator, a 4/5-character (or
    broken) MSH-2, some of MSH-3..18 replaced with hostile values, non-ASCII bytes or junk."""
    fs = draw(st.sampled_from(FIELD_SEPS))
    enc = draw(st.one_of(st.sampled_from(ENCODINGS), st.binary(min_size=4, max_size=5)))
    fields = dict(MSH_DEFAULTS) | draw(st.dictionaries(st.integers(3, 18), FIELD_VALUES,
                                                       max_size=5))
    line = b"MSH" + fs + enc + fs + fs.join(fields.get(n, b"") for n in range(3, max(fields) + 1))
    _, body = draw(st.sampled_from(SEEDS))
    rest = body.replace(b"\r\n", b"\r").split(b"\r")[1:]
    return b"\r".join([line, *(seg.replace(b"|", fs) for seg in rest)])


@fuzz_settings(2000)
@given(payload=msh_frames(), rnd=st.randoms(use_true_random=False))
def test_random_msh_fields(harness: Harness, payload: bytes, rnd: random.Random) -> None:
    """Odd delimiters, 4/5-character MSH-2, non-ASCII bytes and huge numbers in the header."""
    assert unexpected(harness.check([payload], rnd)) == []


# --- (b) mutated samples --------------------------------------------------------------------


@fuzz_settings(5000)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False),
       resend=st.booleans())
def test_mutated_samples(harness: Harness, seed: tuple[str, bytes], rnd: random.Random,
                         resend: bool) -> None:
    """Every sample, mutated: byte flips, inserts, deletes, segments duplicated, removed or
    swapped, fields and components replaced with hostile values (huge numbers, `""`, "²" and
    Arabic-Indic digits, years 0000/9999, long strings, delimiters), header fields hit.  With
    `resend`, the same bytes follow in the batch: a retransmission answered like the original."""
    payload = mutate(rnd, seed[1])
    assert unexpected(harness.check([payload, payload] if resend else [payload], rnd)) == []


@fuzz_settings(1000)
@given(seeds=st.lists(st.sampled_from(SEEDS), min_size=2, max_size=6),
       rnd=st.randoms(use_true_random=False))
def test_batches_of_mutated_samples(harness: Harness, seeds: list[tuple[str, bytes]],
                                    rnd: random.Random) -> None:
    """Several mutated samples in one batch (group commit): each is answered by the rules."""
    payloads = [mutate(rnd, body) if rnd.random() < 0.7 else body for _, body in seeds]
    assert unexpected(harness.check(payloads, rnd)) == []


@pytest.fixture(name="strict_harness", scope="module")
def strict_harness_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The shipped channel with `validation: strict` (hl7apy's structure check)."""
    harness = Harness(tmp_path_factory.mktemp("fuzz-strict") / "engine.db",
                      shipped_config("strict"))
    yield harness
    harness.close()


@fuzz_settings(150)
@given(seed=st.sampled_from(SEEDS), rnd=st.randoms(use_true_random=False))
def test_mutated_samples_under_strict_validation(strict_harness: Harness, seed: tuple[str, bytes],
                                                 rnd: random.Random) -> None:
    """Mutated samples on a `validation: strict` channel: hl7apy's verdicts follow the same
    rules and never fall back to `validation.failed` (about 20 ms a frame, so fewer)."""
    assert unexpected(strict_harness.check([mutate(rnd, seed[1])], rnd)) == []


# --- the crash corpus -----------------------------------------------------------------------


def _corpus_params() -> list[object]:
    params: list[object] = []
    for path in corpus_frames():
        marks = []
        if path.name in KNOWN_FRAMES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[KNOWN_FRAMES[path.name]]))
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


@pytest.mark.parametrize("path", _corpus_params())
def test_corpus_frame(path: Path, tmp_path: Path) -> None:
    """Every frame that once broke a property keeps every property, on a fresh database, fed
    whole and again one byte at a time."""
    harness = Harness(tmp_path / "engine.db")
    try:
        raw = path.read_bytes()
        assert describe(harness.check([raw])) == []
        assert describe(harness.check([raw], random.Random(1))) == []
    finally:
        harness.close()


def test_the_corpus_holds_the_known_crashers() -> None:
    """The corpus directory exists and holds the frames this file names."""
    names = {p.name for p in corpus_frames()}
    assert set(KNOWN_FRAMES) <= names
    assert "ack-version-superscript-two.bin" in names
    assert "siu-sch9-twenty-nines.hl7" in names
    assert CORPUS.is_dir()


def test_an_sch9_of_twenty_nines_is_ae_102_at_sch9(tmp_path: Path) -> None:
    """The corpus SIU whose SCH-9 overflowed the ledger's INTEGER (answered AR 207) is AE 102
    at SCH^1^9, with a text that names the field and not the value."""
    harness = Harness(tmp_path / "engine.db")
    try:
        raw = (CORPUS / "siu-sch9-twenty-nines.hl7").read_bytes()
        (result,) = harness.pipeline.process_batch([Job(harness.channel, raw, "peer", NOW)])
        ack = parse(result.acks[0])
        assert (ack["MSA.1"], ack["ERR.3"], result.verdict.location) == (
            "AE", "102", Location("SCH", 1, 9))
        assert "9999" not in result.verdict.text
    finally:
        harness.close()


def test_the_harness_reports_each_broken_property(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: a mapper bug is reported as its log event and ERR-3 207; a bug
    while preparing a frame (caught at the one-frame boundary) the same way; and a batch that
    raises as the exception and the engine function it came from."""
    import engine.pipeline as pipeline_module
    import engine.prepare as prepare_module

    harness = Harness(tmp_path / "engine.db")
    _, ref = next(s for s in SEEDS if s[0] == "ref_i12_v251.hl7")
    try:
        assert harness.check([ref]) == []

        def broken(*_args: object) -> list[object]:
            raise RuntimeError("bug")

        monkeypatch.setattr(prepare_module, "map_message", broken)
        kinds = {(f.kind, f.detail) for f in harness.check([ref.replace(b"-V251|", b"-FUZZ|")])}
        assert kinds == {("logged", "ledger.mapping_failed"), ("internal_error", "content 207")}
        monkeypatch.setattr(prepare_module, "prepare", broken)
        kinds = {(f.kind, f.detail) for f in harness.check([ref.replace(b"-V251|", b"-FZ2|")])}
        assert kinds == {("logged", "pipeline.prepare_failed"), ("internal_error", "header 207")}
        monkeypatch.setattr(pipeline_module, "prepare_safely", broken)
        (finding,) = harness.check([ref])
        assert finding.kind == "raised"
        assert finding.detail.startswith("RuntimeError in engine/pipeline.py:")
    finally:
        harness.close()
