"""`python -m engine` is `hl7-engine`."""

from engine.cli import main

raise SystemExit(main())
