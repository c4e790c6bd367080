"""Pure functions from `InboundMessage` to ledger changes, one module per message family.

`map_message(msg, rules)` picks the mapper by MSH-9; content errors raise `ContentError`
subclasses (AE with a table-0357 code and an exact ERR location).  Nothing here touches the
database: rules that need the ledger's state (204 unknown key, 205 duplicate key, matching)
belong to `engine.ledger`.
"""
