"""The ledger's reads and writes: what ingest loads and saves, the sweep, and the read models
(views, worklist, report) the command line and the API show."""
