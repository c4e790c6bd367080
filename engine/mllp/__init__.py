"""MLLP transport: frame decoding and the Twisted protocol that carries it (HL7-SPEC §1)."""
