"""ORU^R01 / MDM^T02 closing a referral by its placer number, when the channel enables it."""

from __future__ import annotations

from datetime import UTC, datetime

from enginectl import sample_payload

from engine.ack import AckBuilder
from engine.config import Channel, parse_config
from engine.parsing import parse
from engine.pipeline import Job, Pipeline
from engine.store.database import open_database
from engine.store.ledger.views import list_referrals

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)  # inside the samples' windows (RF1-8 2036-07-12)
HEAD = "MSH|^~\\&|LAB|SOUTHHOSP|REFTRACK|HUB|20260301120000||{type}|{cid}|P|2.5.1\r"
PID = "PID|1||100001^^^NORTHCLINIC^MR||TESTPATIENT^ALPHA\r"


def _channel(enabled: bool) -> Channel:
    return parse_config({"channels": [{
        "name": "referrals", "listen": {"port": 0},
        "accept": ["REF^I12-I15", "ORU^R01", "MDM^T02"],
        "ledger": {"close_on_results": enabled}}]}).channels[0]


def _oru(cid: str, placer: str, code: str = "11488-4", status: str = "F") -> bytes:
    return (HEAD.format(type="ORU^R01^ORU_R01", cid=cid) + PID
            + f"ORC|RE|{placer}\rOBR|1|{placer}||{code}^Consult note^LN|||20260301"
            + "|" * 18 + f"{status}\r"
            + f"OBX|1|TX|{code}^Consult note^LN||Synthetic note.||||||{status}\r").encode()


def _mdm(cid: str, placer: str) -> bytes:
    return (HEAD.format(type="MDM^T02^MDM_T02", cid=cid) + "EVN|T02|20260301\r" + PID
            + "PV1|1|O\r"
            + f"TXA|1|11488-4^Consult note^LN|TX|||||||||||{placer}||||AU\r"
            + "OBX|1|TX|11488-4^Consult note^LN||Synthetic note.||||||F\r").encode()


def _run(url: str, enabled: bool, messages: list[bytes]) -> tuple[list[str], dict[str, str]]:
    db = open_database(url)
    channel = _channel(enabled)
    pipeline = Pipeline(db, {"referrals": AckBuilder()}, clock=lambda: NOW)
    results = pipeline.process_batch([Job(channel, m, "x", NOW) for m in messages])
    pipeline.close()
    with db.connect() as conn:
        states = {r["id"]: r["status"] for r in list_referrals(conn)}
    db.dispose()
    return [parse(r.acks[0])["MSA.1"] for r in results], states


def test_oru_with_a_final_note_closes_its_referral(sqlite_url: str) -> None:
    """An ORU^R01 whose ORC-2 names the referral and carries 11488-4 with OBX-11 F closes it;
    a result for an order the ledger does not know is accepted and changes nothing."""
    acks, states = _run(sqlite_url, True, [
        sample_payload("ref_i12_v251.hl7"), _oru("ORU-1", "MFP-R-1001^PCPEHR"),
        _oru("ORU-2", "NOT-A-REFERRAL^LAB")])
    assert acks == ["AA", "AA", "AA"]
    assert states == {"MFP-R-1001^PCPEHR": "closed"}


def test_preliminary_note_or_disabled_channel_changes_nothing(sqlite_url: str,
                                                               tmp_path: object) -> None:
    """OBX-11 P (preliminary) does not close; with `close_on_results` off nothing closes."""
    _acks, states = _run(sqlite_url, True, [
        sample_payload("ref_i12_v251.hl7"), _oru("ORU-3", "MFP-R-1001^PCPEHR", status="P")])
    assert states == {"MFP-R-1001^PCPEHR": "pending"}
    other = sqlite_url.replace("engine.db", "engine2.db")
    _acks, states = _run(other, False, [
        sample_payload("ref_i12_v251.hl7"), _oru("ORU-4", "MFP-R-1001^PCPEHR")])
    assert states == {"MFP-R-1001^PCPEHR": "pending"}


def test_mdm_t02_consult_note_closes_by_txa14(sqlite_url: str) -> None:
    """An MDM^T02 whose TXA-14 (placer order number) names the referral and whose TXA-2 is a
    closing code, authenticated (TXA-17 AU), closes it."""
    acks, states = _run(sqlite_url, True, [
        sample_payload("ref_i12_v251.hl7"), _mdm("MDM-1", "MFP-R-1001^PCPEHR")])
    assert acks == ["AA", "AA"]
    assert states == {"MFP-R-1001^PCPEHR": "closed"}
