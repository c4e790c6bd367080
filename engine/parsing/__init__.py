"""Raw bytes to a frozen `InboundMessage`: charset, delimiters, segments, escapes."""

from __future__ import annotations

from engine.parsing.escape import escape, unescape
from engine.parsing.message import Delimiters, InboundMessage
from engine.parsing.parser import parse

__all__ = ["Delimiters", "InboundMessage", "escape", "parse", "unescape"]
