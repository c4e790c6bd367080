"""Outbound delivery: each destination's queue, worked in order, to files or MLLP downstreams."""
