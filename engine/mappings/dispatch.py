"""Choose the mapper by MSH-9.1: REF/RRI, ORM/OMG/OSU or SIU."""

from __future__ import annotations

from collections.abc import Callable

from engine.mappings.changes import Change
from engine.mappings.limits import bounded
from engine.mappings.orders import map_order
from engine.mappings.referral import map_ref
from engine.mappings.results import map_results
from engine.mappings.rules import MappingRules
from engine.mappings.scheduling import map_siu
from engine.parsing.message import InboundMessage

Mapper = Callable[[InboundMessage, MappingRules], list[Change]]

MAPPERS: dict[str, Mapper] = {
    "REF": map_ref,
    "RRI": map_ref,
    "ORM": map_order,
    "OMG": map_order,
    "OSU": map_order,
    "SIU": map_siu,
    "ORU": map_results,
    "MDM": map_results,
}


def map_message(msg: InboundMessage, rules: MappingRules) -> list[Change]:
    """The ledger changes a message carries; [] for a message type no mapper reads (e.g. ACK).
    Each fits the ledger's columns (`engine.mappings.limits`): 102 for an over-long id."""
    mapper = MAPPERS.get(msg.header.message_type)
    return list(map(bounded, mapper(msg, rules))) if mapper is not None else []
