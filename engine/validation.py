"""Structure validation with hl7apy: `hl7-engine validate`, and channels with `validation: strict`.

hl7apy needs about 30 ms per message, so the hot path calls this only for strict channels
(`engine/strict.py` maps the report onto the ACK table).  It checks a message against the
standard's structure for its version (required segments and groups, cardinality, datatypes,
table values) and reports hl7apy's errors and warnings.  hl7apy is imported on first use.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

from engine.errors import HL7Error
from engine.parsing import InboundMessage
from engine.parsing.parser import BOM, parse

_MISSING = re.compile(r"Missing required child (\w+)\.\w+")


@dataclass(slots=True)
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(raw: bytes) -> Report:
    """hl7apy's verdict on one message (segments may end with CR, LF or CRLF)."""
    try:
        msg = parse(raw)
    except HL7Error as exc:
        return Report([str(exc)])
    try:
        return report(msg, raw)
    except (ValueError, KeyError) as exc:
        return Report([f"hl7apy cannot read it: {type(exc).__name__}: {exc}"])


def report(msg: InboundMessage, raw: bytes) -> Report:
    """hl7apy's verdict on `raw`, which our parser read as `msg`.  A message hl7apy refuses to
    read is one error line, `hl7apy cannot read it: <exception type>: ...`; any other exception
    from hl7apy (a bug in it) propagates: the caller decides what it means."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator

    data = raw[len(BOM):] if raw.startswith(BOM) else raw
    text = data.decode(msg.charset, errors="replace")
    text = text.replace("\r\n", "\r") if "\r" in text else text.replace("\n", "\r")
    try:
        parsed = parse_message(text.strip("\r\n") + "\r",
                               validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)
    except HL7apyException as exc:
        return Report([f"hl7apy cannot read it: {type(exc).__name__}: {exc}"])
    result = Report()
    fd, path = tempfile.mkstemp(prefix="hl7-validate-")
    os.close(fd)
    try:
        with contextlib.suppress(HL7apyException):  # the report file lists every problem
            Validator.validate(parsed, report_file=path)
        with open(path, encoding="utf-8") as f:
            for line in f:
                kind, _, what = line.strip().partition(": ")
                (result.errors if kind == "Error" else result.warnings).append(what)
    finally:
        os.unlink(path)
    result.errors = [e for e in result.errors if not _choice_noise(e, parsed.version)]
    return result


def _choice_noise(error: str, version: str) -> bool:
    """hl7apy 1.3.5 checks a choice group (ORM_O01 v2.4's `<OBR|RQD|RQ1|RXO|ODS|ODT>`) like a
    sequence, so each alternative not taken is reported as a missing required child.  hl7apy
    only builds a choice group around an alternative it found, so every such line is noise; a
    missing choice group itself is reported against its parent and kept."""
    m = _MISSING.fullmatch(error)
    return m is not None and len(m[1]) > 3 and _is_choice(m[1], version)


@lru_cache(maxsize=256)
def _is_choice(group: str, version: str) -> bool:
    from hl7apy import load_reference
    from hl7apy.exceptions import HL7apyException

    try:
        return bool(load_reference(group, "Group", version)[0] == "choice")
    except HL7apyException:
        return False
