"""`hl7-engine`: the operator's command line (docs/cli.md describes what each command prints).

One module per family of commands (`run`, `send`, `messages`, `ledger`, `queue`, `admin`), with
the parser in `parser` and the shared output in `output`; `run` and `send` are the only modules
that run the global reactor (`send` under `task.react`, for its one MLLP connection).  Every command takes `--config PATH` (default
`channels.yaml`) and `--database URL` (overrides the config's `database`), before or after the
command name (after wins when both are given).  Exit codes: 0 done,
1 a message was not accepted or not found, 2 bad configuration or usage.

Output: every time is UTC, `2026-12-04T20:18:25Z` (`engine.timestamps`); `--json` prints an array
for a listing, one object for one item (`referral`, `show`, `report`), and JSON lines for `tail`.
Listings print at most `--limit` rows (default 50), and in text a last line saying how many more.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from engine.cli import users
from engine.cli.admin import cmd_check_config, cmd_purge, cmd_validate
from engine.cli.common import EXIT_CONFIG, EXIT_OK, error_reason, is_database_error
from engine.cli.ledger import (
    cmd_appointments,
    cmd_link,
    cmd_referral,
    cmd_referrals,
    cmd_report,
    cmd_sweep,
    cmd_worklist,
)
from engine.cli.messages import cmd_show, cmd_tail
from engine.cli.parser import build_parser
from engine.cli.queue import cmd_queue, cmd_queue_action
from engine.cli.run import cmd_reload, cmd_run, cmd_worker
from engine.cli.send import cmd_send
from engine.config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "run": cmd_run, "worker": cmd_worker, "reload": cmd_reload, "check-config": cmd_check_config, "send": cmd_send,
        "tail": cmd_tail, "show": cmd_show, "referrals": cmd_referrals,
        "referral": cmd_referral, "appointments": cmd_appointments, "worklist": cmd_worklist,
        "link": cmd_link, "report": cmd_report, "sweep": cmd_sweep, "purge": cmd_purge, "validate": cmd_validate,
        "queue": cmd_queue,
        "pause": cmd_queue_action, "resume": cmd_queue_action, "retry": cmd_queue_action,
        "release": cmd_queue_action, "replay": cmd_queue_action, **users.HANDLERS,
    }[args.command]
    try:
        return int(handler(args))
    except BrokenPipeError:  # `hl7-engine tail | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        if not is_database_error(exc):
            raise
        print(f"database: {error_reason(exc)}", file=sys.stderr)
        return EXIT_CONFIG
