"""The argument parser of `hl7-engine`: every command, its options, and where the global options
(`--config`, `--database`) may go.
"""

from __future__ import annotations

import argparse

from engine.cli import users
from engine.ledger.lifecycle import STATUSES as REFERRAL_STATUSES

DEFAULT_LIMIT = 50  # rows a listing prints unless --limit says otherwise


_GLOBAL_OPTIONS = ("--config and --database may come before or after the command; given in both "
                   "places, the one after the command wins.")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config and --database, on the main parser (with their defaults) and again on each
    command's parser.  A command's copies default to SUPPRESS: argparse copies a sub-parser's
    whole namespace over the main one's, so a default there would undo `--database URL COMMAND`."""
    wins = "; here it overrides one given before the command" if suppress else ""
    parser.add_argument("--config", default=argparse.SUPPRESS if suppress else "channels.yaml",
                        metavar="PATH",
                        help=f"channels.yaml to use (default: channels.yaml{wins})")
    parser.add_argument("--database", metavar="URL",
                        default=argparse.SUPPRESS if suppress else None,
                        help="database URL, overriding the config (sqlite:///FILE or "
                             f"postgresql+psycopg://USER@HOST/DB{wins})")


def _positive(text: str) -> int:
    """--limit's type: a whole number of rows, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows, at least 1, got {text!r}")
    return value


def _limit_option(parser: argparse.ArgumentParser, *names: str) -> None:
    parser.add_argument(*names, "--limit", dest="limit", type=_positive, default=DEFAULT_LIMIT,
                        metavar="N", help="print at most N rows (default: %(default)s); the text "
                                          "output then says how many more there are")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    p = argparse.ArgumentParser(prog="hl7-engine",
                                description="HL7 v2 interface engine that tracks referrals.",
                                epilog=_GLOBAL_OPTIONS)
    _global_options(p, suppress=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="start every channel's MLLP listener")
    run.add_argument("--quiet", action="store_true",
                     help="terminal shows warnings only (the log file keeps everything)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="processes, overriding the config's `workers:` (1-64; its default is 1, "
                          "or 2 with destinations)")
    worker = sub.add_parser("worker", parents=[common])  # started by `run`, not by hand
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--link-fd", type=int, required=True)
    sub.add_parser("reload", parents=[common],
                   help="check the config, then have the engine running with it reload it "
                        "(SIGHUP; no restart, connections stay open)")
    sub.add_parser("check-config", parents=[common],
                   help="validate the configuration, print every problem with its YAML path")
    send = sub.add_parser("send", parents=[common], help="send HL7 files over MLLP, print ACKs")
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument("--timeout", type=float, default=10.0, metavar="S",
                      help="seconds to wait for each ACK (default: %(default)s)")
    send.add_argument("--as-is", action="store_true",
                      help="send the bytes unchanged (default: LF and CRLF become CR)")
    send.add_argument("--tls", action="store_true",
                      help="connect with TLS, trusting the system's certificate authorities")
    send.add_argument("--ca", metavar="PATH",
                      help="trust this CA certificate (PEM) instead of the system's; implies --tls")
    send.add_argument("--cert", metavar="PATH",
                      help="present this client certificate (PEM, leaf first) for mutual TLS; "
                           "needs --key; implies --tls")
    send.add_argument("--key", metavar="PATH",
                      help="the private key (PEM, not encrypted) of --cert")
    send.add_argument("--server-name", metavar="NAME",
                      help="the name the server's certificate must carry (default: the --to "
                           "host); implies --tls")
    tail = sub.add_parser("tail", parents=[common], help="the message log, newest last")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new messages")
    _limit_option(tail, "-n", "--lines")
    tail.add_argument("--channel")
    tail.add_argument("--type", metavar="TYPE^TRIGGER", help="e.g. REF^I12")
    tail.add_argument("--status", choices=["accepted", "errored", "rejected"])
    tail.add_argument("--json", action="store_true",
                      help="one JSON object per line (JSON lines), with or without -f")
    show = sub.add_parser("show", parents=[common], help="one stored message, with its ACK")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true",
                      help="also print the message body (writes an audit event)")
    show.add_argument("--json", action="store_true")
    refs = sub.add_parser("referrals", parents=[common], help="the referral ledger")
    refs.add_argument("--status", choices=REFERRAL_STATUSES,
                      help="only referrals in this status")
    refs.add_argument("--overdue", action="store_true",
                      help="only pending/accepted referrals past their deadline to be scheduled")
    refs.add_argument("--json", action="store_true")
    _limit_option(refs)
    one = sub.add_parser("referral", parents=[common], help="one referral with its history")
    one.add_argument("id", metavar="ID", help="any of its keys, as EI text: MFP-R-1001^PCPEHR")
    one.add_argument("--json", action="store_true")
    appts = sub.add_parser("appointments", parents=[common], help="appointments and their match")
    appts.add_argument("--json", action="store_true")
    _limit_option(appts)
    work = sub.add_parser("worklist", parents=[common],
                          help="what waits for a person, oldest first: unmatched and ambiguous "
                               "appointments, then no-shows to rebook; each with why and what "
                               "clears it")
    work.add_argument("--json", action="store_true")
    _limit_option(work)
    link = sub.add_parser("link", parents=[common],
                          help="link an appointment to a referral by hand (history: via manual)")
    link.add_argument("appointment", metavar="APPOINTMENT")
    link.add_argument("referral", metavar="REFERRAL")
    val = sub.add_parser("validate", parents=[common],
                         help="check files against the HL7 standard's structure (hl7apy)")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument("--warnings", action="store_true", help="also print hl7apy's warnings")
    queue = sub.add_parser("queue", parents=[common],
                           help="per destination: state, depth, oldest age, dead letters")
    queue.add_argument("--json", action="store_true")
    for verb, text in (("pause", "stop sending to a destination (its queue keeps filling)"),
                       ("resume", "send to a paused destination again"),
                       ("retry", "retry a destination's head now, resetting its backoff")):
        act = sub.add_parser(verb, parents=[common], help=text)
        act.add_argument("destination", metavar="DEST")
    rel = sub.add_parser("release", parents=[common], help="queue dead letters again")
    rel.add_argument("destination", metavar="DEST")
    rel.add_argument("id", nargs="?", type=int, metavar="ID", help="one queue id (default: all)")
    rep = sub.add_parser("replay", parents=[common],
                         help="queue a stored message again: through its channel's routes as "
                              "configured now, or as received to one destination (--to)")
    rep.add_argument("message_id", type=int, metavar="MESSAGE_ID")
    rep.add_argument("--to", metavar="DEST",
                     help="send the bytes as received to this destination, whatever the routes "
                          "say (default: through the routes, filters and transforms)")
    report = sub.add_parser(
        "report", parents=[common],
        help="of the referrals received in a period: booked, how fast, seen, loop closed, lost",
        epilog="How each figure is counted: README.md \"The referral report\", or "
               "`python -m pydoc engine.store.ledger.report`.")
    report.add_argument("--since", metavar="DATE",
                        help="first day of the cohort (by received_at), YYYY-MM-DD, UTC midnight "
                             "(default: 90 days before --until)")
    report.add_argument("--until", metavar="DATE",
                        help="the day after the cohort (excluded), YYYY-MM-DD, UTC midnight "
                             "(default: now)")
    report.add_argument("--by", choices=["specialty", "source", "priority"],
                        help="the same figures per group, and the total")
    report.add_argument("--json", action="store_true")
    sub.add_parser("sweep", parents=[common],
                   help="expire pending/accepted referrals past RF1-8 and report overdue ones "
                        "(run also daily by `run`)")
    purge = sub.add_parser("purge", parents=[common],
                           help="empty message bodies and delivered/dead outbound payloads "
                                "older than the retention (run also daily by `run` when "
                                "retention.message_bodies_days is set)")
    purge.add_argument("--older-than", type=float, metavar="DAYS",
                       help="purge bodies older than this (default: the config's "
                            "retention.message_bodies_days)")
    purge.add_argument("--dry-run", action="store_true",
                       help="only count what would be purged; change nothing")
    purge.add_argument("--vacuum", action="store_true",
                       help="SQLite: also give the freed space back to the file system; a file "
                            "made before retention existed is rebuilt once (VACUUM), which needs "
                            "the database to itself briefly: the engine's writes wait meanwhile")
    users.register(sub, common)
    return p
