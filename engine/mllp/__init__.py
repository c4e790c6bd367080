"""MLLP transport: frame decoding and the Twisted protocol that carries it (docs/hl7-rules.md)."""
