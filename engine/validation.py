"""Strict structure validation on demand (`hl7-engine validate`), with hl7apy.

The hot path never calls this: hl7apy needs about 30 ms per message.  It checks a message
against the standard's structure for its version (required segments and groups, cardinality,
datatypes, table values) and reports hl7apy's errors and warnings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field

from engine.errors import HL7Error
from engine.parsing.parser import BOM, parse


@dataclass(slots=True)
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(raw: bytes) -> Report:
    """hl7apy's verdict on one message (segments may end with CR, LF or CRLF)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException
    from hl7apy.parser import parse_message
    from hl7apy.validation import Validator

    report = Report()
    try:
        msg = parse(raw)
    except HL7Error as exc:
        report.errors.append(str(exc))
        return report
    data = raw[len(BOM):] if raw.startswith(BOM) else raw
    text = data.decode(msg.charset, errors="replace")
    text = text.replace("\r\n", "\r") if "\r" in text else text.replace("\n", "\r")
    try:
        parsed = parse_message(text.strip("\r\n") + "\r",
                               validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True)
    except (HL7apyException, ValueError, KeyError) as exc:
        report.errors.append(f"hl7apy cannot read it: {type(exc).__name__}: {exc}")
        return report
    fd, path = tempfile.mkstemp(prefix="hl7-validate-")
    os.close(fd)
    try:
        with contextlib.suppress(HL7apyException):  # the report file lists every problem
            Validator.validate(parsed, report_file=path)
        with open(path, encoding="utf-8") as f:
            for line in f:
                kind, _, what = line.strip().partition(": ")
                (report.errors if kind == "Error" else report.warnings).append(what)
    finally:
        os.unlink(path)
    return report
