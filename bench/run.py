"""The whole benchmark: bare server, then the engine, then the engine's memory over a long run.

    python -m bench.run [--messages 20000] [--connections 8] [--rss-messages 100000]
                        [--warmup 500] [--repeat 1] [--mix ref[,siu]] [--keep-tmp]

Between the two, `bench.floor`: the engine's own database statements for the same mix, replayed
alone on sqlite3 (the database floor: no engine with this store can be faster on one SQLite
file), so the target can be read against what the machine allows.

For each server (a subprocess on a free loopback port): a warm-up, then the timed run, giving
msg/s, ACK latency p50/p99 and the server's CPU per message (utime+stime of every thread, from
/proc); `--repeat N` keeps the fastest of N timed runs.  The engine gets a fresh SQLite database
(synchronous FULL) in a temporary folder.  Then VmRSS of the same engine is read after another
warm-up and after `--rss-messages` more.

The targets (engine/bare throughput >= 0.2, RSS growth < 50 MB per 100k) are printed as PASS or
MISS and never fail the run: the machine may be busy.  A wrong ACK (not AA, wrong MSA-2, missing)
does: the exit status is then 1 (2 when a server would not start).  The summary is also written
to `bench/results/latest.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.floor import floor
from bench.loadgen import parse_mix
from bench.measure import HOST, Memory, Settings, Throughput, measure, measure_memory
from bench.procs import ServerProcess, free_port
from bench.summary import render, summarize, write_results
from bench.synth import Synth

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


# --- the servers -----------------------------------------------------------------------------


def bare_server(tmp: Path) -> ServerProcess:
    port = free_port(HOST)
    argv = [sys.executable, "-m", "bench.bare_server", "--host", HOST, "--port", str(port)]
    if TLS_FILES:
        argv += ["--tls-cert", TLS_FILES["cert"], "--tls-key", TLS_FILES["key"]]
    return ServerProcess("bare", argv, HOST, port, tmp / "bare.out", cwd=ROOT)


TLS_FILES: dict[str, str] = {}  # `--tls`: the servers' certificate and key


def use_tls(tmp: Path) -> None:
    """`--tls`: a throw-away CA (trustme, a test dependency) signs a certificate for HOST; both
    servers serve TLS with it and the load generator trusts the CA."""
    import ssl

    import trustme

    from bench.loadgen import TLS

    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    TLS_FILES.update(cert=str(tmp / "server.pem"), key=str(tmp / "server.key"))
    Path(TLS_FILES["cert"]).write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(TLS_FILES["key"])
    context = ssl.create_default_context()
    ca.configure_trust(context)
    TLS.context = context


def engine_server(tmp: Path, extra: dict[str, Any] | None = None,
                  channel: dict[str, Any] | None = None) -> ServerProcess:
    """The engine on a fresh database, with a one-channel config (channel `bench`, with the
    channel keys in `channel`, e.g. `limits`, plus the top-level keys in `extra`, e.g.
    destinations and routes) written to `tmp`."""
    port = free_port(HOST)
    config = {
        "database": {"url": f"sqlite:///{tmp / 'bench.db'}", "sqlite_synchronous": "FULL"},
        "log": {"file": str(tmp / "engine.log"), "level": "info"},
        "channels": [{"name": "bench", "listen": {"host": HOST, "port": port,
                                                  **({"tls": TLS_FILES} if TLS_FILES else {})},
                      "accept": ["REF^I12-I15", "SIU^S12-S26"], **(channel or {})}],
        **(extra or {}),
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    script = Path(sys.executable).with_name("hl7-engine")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "engine"]
    argv = [*command, "run", "--config", str(path), "--quiet"]
    return ServerProcess("engine", argv, HOST, port, tmp / "engine.out", cwd=ROOT)


def engine_log_facts(tmp: Path) -> dict[str, Any]:
    """From the engine's log file: error-level events, and the writer's group-commit batches."""
    facts: dict[str, Any] = {"engine_error_events": 0}
    try:
        lines = (tmp / "engine.log").read_text(errors="replace").splitlines()
    except OSError:
        return facts
    for line in lines:
        if '"level":"error"' in line:
            facts["engine_error_events"] += 1
        elif '"writer.stopped"' in line:
            event = json.loads(line)  # one per process: summed over the ingest workers
            batches = facts.get("writer_batches", 0) + event.get("batches", 0)
            messages = facts.get("writer_messages", 0) + event.get("messages", 0)
            facts["writer_batches"], facts["writer_messages"] = batches, messages
            facts["avg_commit_batch"] = round(messages / batches, 2) if batches else None
    return facts


# --- the run ---------------------------------------------------------------------------------


def run_bare(s: Settings, tmp: Path) -> Throughput:
    with bare_server(tmp) as server:
        result = measure("bare", server, s, Synth(s.mix))
    print(result.line(), flush=True)
    return result


def run_engine(s: Settings, tmp: Path, workers: int = 1
               ) -> tuple[Throughput, Memory | None, dict[str, Any]]:
    """Throughput, then memory, on one engine (with `workers` ingest processes); also how it
    stopped and what it logged."""
    synth = Synth(s.mix)
    server = engine_server(tmp, {"workers": workers} if workers > 1 else None)
    with server:
        result = measure("engine", server, s, synth)
        print(result.line(), flush=True)
        memory = measure_memory(server, s, synth) if s.rss_messages else None
        status = server.stop()
    if memory is not None:
        print(f"engine RSS {memory.after_warmup_mb:.1f} MB after warm-up, {memory.end_mb:.1f} MB "
              f"after {memory.messages} more: {memory.growth_mb:+.1f} MB "
              f"({memory.report.line().strip() if memory.report else '-'})", flush=True)
    return result, memory, {"engine_exit_status": status, "workers": workers,
                            **engine_log_facts(tmp)}


def settings(argv: list[str] | None) -> tuple[Settings, bool, int]:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=20000, help="timed messages per server")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rss-messages", type=int, default=100000,
                   help="messages for the engine's memory check (0 skips it)")
    p.add_argument("--warmup", type=int, default=500, help="untimed messages before each run")
    p.add_argument("--repeat", type=int, default=1,
                   help="timed runs per server, the fastest kept (default: %(default)s)")
    p.add_argument("--mix", default="ref", help="message kinds, round-robin: ref, siu")
    p.add_argument("--workers", type=int, default=1,
                   help="the engine's ingest processes (its `workers:`; default: %(default)s)")
    p.add_argument("--tls", action="store_true",
                   help="both servers listen with TLS, the load generator connects with it")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the engine's database, config and log")
    a = p.parse_args(argv)
    if min(a.messages, a.connections, a.repeat, a.workers) < 1 or min(a.rss_messages,
                                                                      a.warmup) < 0:
        p.error("--messages, --connections, --repeat and --workers must be >= 1, "
                "the others >= 0")
    try:
        Synth(parse_mix(a.mix))
    except ValueError as exc:
        p.error(str(exc))
    return Settings(a.messages, a.connections, a.rss_messages, a.warmup, parse_mix(a.mix),
                    a.repeat, a.tls), a.keep_tmp, a.workers


def main(argv: list[str] | None = None) -> int:
    s, keep, workers = settings(argv)
    loadavg = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="hl7-bench-"))
    try:
        if s.tls:
            use_tls(tmp)
        bare = run_bare(s, tmp)
        db_floor = floor(s.mix, min(s.messages, 8000), s.connections)
        print(db_floor.line(), flush=True)
        engine, memory, extra = run_engine(s, tmp, workers)
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(s, bare, engine, memory, {"loadavg": loadavg, **extra},
                        db_floor.msg_per_s)
    print()
    print(render(summary))
    write_results(RESULTS, summary)
    return 0 if summary["acks_all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
