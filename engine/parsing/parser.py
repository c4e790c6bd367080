"""The hot-path parser: bytes to `InboundMessage` with `str.split`, nothing more (MLLP payload in,
HL7 encoding rules applied).

Order matters: strip a UTF-8 BOM, read the delimiters and MSH-18 from the ASCII MSH, decode the
whole payload in that charset, then split segments (CR, LF or CRLF), then fields.  Components,
repetitions and escapes are resolved lazily, per leaf, by `InboundMessage`.
"""

from __future__ import annotations

from engine.errors import BadEncodingCharacters, Location, NotHL7, UnsupportedCharset
from engine.parsing.header import charset_name
from engine.parsing.message import STANDARD, Delimiters, InboundMessage

BOM = b"\xef\xbb\xbf"

# Table 0211 (and the spellings real senders use) to Python codecs.  "" is the empty MSH-18.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "BIG-5": "big5",
    "WINDOWS-1252": "cp1252",
    "CP1252": "cp1252",
}
FALLBACK = "cp1252"


def parse(raw: bytes) -> InboundMessage:
    """Parse one MLLP payload.  Raises `NotHL7`, `BadEncodingCharacters` or `UnsupportedCharset`."""
    data, msh = _header_line(raw)
    delims = _delimiters(msh)
    declared = _charset(msh, delims)
    text, codec = _decode(data, declared)
    segments = _split(text, delims)
    if declared and _declared(segments[0], delims) != declared:
        # A multi-byte charset (GB 18030, Big5, EUC-KR) can take an ASCII delimiter as the
        # second byte of a character: the decoded MSH then has other fields than the bytes had.
        raise UnsupportedCharset("the message does not read in the character set MSH-18 names",
                                 Location("MSH", 1, 18))
    return InboundMessage(segments, delims, codec)


def decode(raw: bytes) -> tuple[str, str]:
    """A stored payload as text, for people to read, and the codec that read it: the charset
    `parse` reads it in (MSH-18, else strict UTF-8, else cp1252).  A payload `parse` refuses
    (no MSH, bad delimiters, an MSH-18 it does not know) is read the way an empty MSH-18 is."""
    try:
        data, msh = _header_line(raw)
        charset = _charset(msh, _delimiters(msh))
    except (NotHL7, BadEncodingCharacters, UnsupportedCharset):
        data, charset = (raw[3:] if raw.startswith(BOM) else raw), ""
    return _decode(data, charset)


def _header_line(raw: bytes) -> tuple[bytes, bytes]:
    """The payload from its MSH on (a UTF-8 BOM and leading blank bytes dropped), and the MSH
    line's bytes.  The MSH line ends where `_split` ends it: at the first CR when there is one
    (an LF before it is data), else at the first LF; MSH-18 is then read from the same field
    the header and the ACK see."""
    data = raw[3:] if raw.startswith(BOM) else raw
    if data[:3] != b"MSH":
        data = data.lstrip(b"\r\n\t \x00")
    if not data.startswith(b"MSH") or len(data) < 8:
        raise NotHL7("no MSH segment at the start of the message")
    line_end = data.find(b"\r")
    if line_end < 0:
        line_end = data.find(b"\n")
    return data, (data[:line_end] if line_end >= 0 else data)


def _delimiters(msh: bytes) -> Delimiters:
    if msh[3:9] == b"|^~\\&|":
        return STANDARD
    fs = msh[3:4].decode("ascii", errors="replace")  # a non-ASCII MSH-1 byte is no delimiter
    end = msh.find(msh[3:4], 4)
    enc = msh[4:end if end >= 0 else len(msh)].decode("ascii", errors="replace")
    chars = fs + enc
    if len(enc) not in (4, 5) or len(set(chars)) != len(chars) or any(
        c.isalnum() or c in "\r\n \ufffd" for c in chars
    ):
        raise BadEncodingCharacters("MSH-1/MSH-2 must be 5 or 6 distinct delimiters",
                                    Location("MSH", 1, 2))
    return Delimiters(fs, enc[0], enc[1], enc[2], enc[3], enc[4] if len(enc) == 5 else "")


def _charset(msh: bytes, delims: Delimiters) -> str:
    fs = delims.field.encode("ascii")
    if msh.count(fs) < 17:  # no MSH-18 (most senders): nothing to split
        return ""
    fields = msh.split(fs, 18)
    name = charset_name(fields[17].decode("ascii", "replace"), delims)
    if not name:
        return ""
    codec = CHARSETS.get(name.upper())
    if codec is None:
        raise UnsupportedCharset("MSH-18 names a character set this engine does not read",
                                 Location("MSH", 1, 18))
    return codec


def _declared(msh: tuple[str, ...], delims: Delimiters) -> str | None:
    """The codec the decoded MSH-18 names (as `_charset` reads it from the bytes)."""
    return CHARSETS.get(charset_name(msh[18] if len(msh) > 18 else "", delims).upper())


def _decode(data: bytes, charset: str) -> tuple[str, str]:
    """The text and the codec that read it: an empty or ASCII MSH-18 tries strict UTF-8 or
    ASCII first and falls back to cp1252, which reads any byte."""
    if charset in ("", "ascii"):
        strict = charset or "utf-8"
        try:
            return data.decode(strict), strict
        except UnicodeDecodeError:
            return data.decode(FALLBACK, errors="replace"), FALLBACK
    return data.decode(charset, errors="replace"), charset


def _split(text: str, delims: Delimiters) -> tuple[tuple[str, ...], ...]:
    # With any CR present, CR ends segments and one LF right after it is dropped; a lone LF is data.
    # The LF of a CR LF starts the next line, and leading LFs are dropped below (no replace: a
    # two-character search costs more than the split).
    lines = text.split("\r") if "\r" in text else text.split("\n")
    fs = delims.field
    segments: list[tuple[str, ...]] = []
    for line in lines:
        if not line or line.isspace():  # `not line.strip()`, without a copy of the line
            continue
        if line[0] == "\n":  # CR LF, CR LF LF: never data before a segment name
            line = line.lstrip("\n")
        parts = line.split(fs)
        if parts[0] == "MSH":
            segments.append(("MSH", fs, *parts[1:]))
        else:
            segments.append(tuple(parts))
    return tuple(segments)
