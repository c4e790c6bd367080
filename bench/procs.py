"""Server subprocesses for the bench, and what /proc says about them (Linux only).

`/proc/<pid>/stat` fields 14 and 15 (utime, stime, in clock ticks) cover every thread of the
process; `/proc/<pid>/task/<tid>/stat` gives the same per thread, so the reactor thread (tid ==
pid) can be told from the others (the engine's writer thread).  `VmRSS` comes from
`/proc/<pid>/status`, and the open file descriptors are the entries of `/proc/<pid>/fd`.  An engine
with ingest workers counts its worker processes in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary folder for one benchmark's servers, removed afterwards unless `keep`
    (`--keep-tmp`: its path is printed)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago: bind port 0, read it, close."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds used so far: the whole process, and its main (reactor) thread alone."""

    total: float
    main_thread: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.total - other.total, self.main_thread - other.main_thread)


def _ticks(stat_path: Path) -> int:
    text = stat_path.read_text()
    # comm (field 2) may hold spaces; fields after its closing parenthesis start at field 3.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime (14) + stime (15)


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (the engine's ingest workers)."""
    out: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:  # field 4: ppid
            out.append(int(stat.parent.name))
    return out


def cpu_times(pid: int) -> CpuTimes:
    """utime + stime of the process and its live children (all threads), and of the process's
    main thread alone, in seconds."""
    proc = Path(f"/proc/{pid}")
    total = _ticks(proc / "stat")
    for child in children(pid):
        with contextlib.suppress(OSError):  # it just ended
            total += _ticks(Path(f"/proc/{child}/stat"))
    return CpuTimes(total / CLOCK_TICKS, _ticks(proc / "task" / str(pid) / "stat") / CLOCK_TICKS)


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) in MiB, of the process and its live children."""
    total = 0.0
    for p in (pid, *children(pid)):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    if not total:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return total


def open_fds(pid: int) -> int:
    """Open file descriptors (entries of /proc/<pid>/fd) of the process and its live children."""
    total = 0
    for p in (pid, *children(pid)):
        with contextlib.suppress(OSError):  # a child that just ended
            total += sum(1 for _ in Path(f"/proc/{p}/fd").iterdir())
    return total


class ServerProcess:
    """A server subprocess listening on host:port; `with` starts it, waits, and stops it."""

    def __init__(self, name: str, argv: Sequence[str], host: str, port: int, log: Path,
                 cwd: Path | None = None, start_timeout: float = 60.0,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.env = env  # None: this process's environment
        self.argv = list(argv)
        self.host, self.port = host, port
        self.log = log
        self.cwd = cwd
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.cwd,
                                         env=self.env)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _wait_listening(self) -> None:
        """Poll-connect until the port accepts; fail early if the process exits."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before "
                                   f"listening:\n{self.output_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not listening on {self.host}:{self.port} after "
                           f"{self.start_timeout:g} s:\n{self.output_tail()}")

    def output_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a clean shutdown drains the engine's writer), then SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
