"""Caps on one submission's memory, processes, CPU time and disk: cgroups where allowed, rlimits otherwise.

With cgroups (v1 `memory`, `pids` and `cpuacct`, writable by root), everything the submission runs
counts together: its kernel, every child, its database server and the files they write to memory-
backed folders. Without them each process gets the same rlimits, which bound it alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "pgvec-course-"  # cgroup folder names: pgvec-course-<grader pid>-<token>
CONTROLLERS = ("memory", "pids", "cpuacct")
GiB = 2**30


@dataclass(frozen=True)
class Caps:
    """What one submission may use in all: bytes of memory and of files, tasks, CPU seconds."""

    memory: int = 4 * GiB
    disk: int = 2 * GiB
    processes: int = 512
    cpu_seconds: int = 1200


def parse_size(text: str) -> int:
    """Return bytes for a size such as 512M, 4G or 1.5GB; raise ValueError saying what is accepted."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size: write it like 512M, 4G or 1.5GB")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * factor)


def _mounts() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields = after.split()
        if len(fields) >= 3 and fields[0] == "cgroup":
            for option in fields[2].split(","):
                if option in CONTROLLERS:
                    found[option] = Path(before.split()[4])
    return found


def _own_paths() -> dict[str, str]:
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            own[name] = path
    return own


class Cgroup:
    """One submission's cgroup in each v1 controller, nested in the grader's own (parents' caps apply)."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    @classmethod
    def create(cls, caps: Caps, token: str) -> Cgroup:
        """Make the groups and set the caps; raise OSError when this machine does not allow it."""
        mounts, own = _mounts(), _own_paths()
        missing = [c for c in CONTROLLERS if c not in mounts]
        if missing:
            raise OSError(f"no cgroup v1 {', '.join(missing)} controller mounted")
        dirs: dict[str, Path] = {}
        group = cls(dirs)
        try:
            for name in CONTROLLERS:
                path = mounts[name] / own.get(name, "/").lstrip("/") / f"{PREFIX}{os.getpid()}-{token}"
                path.mkdir()
                dirs[name] = path
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(caps.memory))
            if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():  # swap counts too
                (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(caps.memory))
            (dirs["pids"] / "pids.max").write_text(str(caps.processes))
        except OSError:
            group.remove()
            raise
        return group

    def procs_files(self) -> list[str]:
        """Return the files a process writes its pid to, to join every group."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def usage(self) -> dict[str, float]:
        """Return peak memory (bytes), OOM kills, CPU seconds and tasks now, as measured so far."""
        mem = self.dirs["memory"]
        oom = _read(mem / "memory.oom_control")
        kills = re.search(r"oom_kill (\d+)", oom)
        return {"memory_peak": int(_read(mem / "memory.max_usage_in_bytes") or 0),
                "oom_kills": int(kills.group(1)) if kills else 0,
                "cpu_seconds": round(int(_read(self.dirs["cpuacct"] / "cpuacct.usage") or 0) / 1e9, 2),
                "tasks": int(_read(self.dirs["pids"] / "pids.current") or 0)}

    def kill(self) -> None:
        """SIGKILL every process in the group until none is left (a fork bomb is bounded by pids.max)."""
        for _ in range(200):
            pids = {int(p) for d in self.dirs.values() for p in _read(d / "cgroup.procs").split()}
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the groups."""
        self.kill()
        for path in self.dirs.values():
            for _ in range(100):  # the last processes take a moment to leave
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def sweep() -> list[str]:
    """Remove the cgroups of graders that are no longer running (a kill -9); return their names."""
    gone = []
    for mount in set(_mounts().values()):
        for root, dirs, _ in os.walk(mount):
            for name in dirs:
                match = re.fullmatch(re.escape(PREFIX) + r"(\d+)-\w+", name)
                if match and not _alive(int(match.group(1))):
                    Cgroup({"any": Path(root, name)}).remove()
                    gone.append(name)
            dirs[:] = [d for d in dirs if not d.startswith(PREFIX)]
    return sorted(set(gone))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def rlimits(caps: Caps, *, own_uid: bool) -> list[str]:
    """Return a prlimit prefix giving each process the caps (tasks too when the uid is its alone)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        return []
    args = [prlimit, f"--data={caps.memory}", f"--fsize={caps.disk}", f"--cpu={caps.cpu_seconds}"]
    if own_uid:  # RLIMIT_NPROC counts every process of the uid, so only for a uid of its own
        args.append(f"--nproc={caps.processes}")
    return [*args, "--"]


def join(argv: list[str], cgroup: Cgroup | None) -> list[str]:
    """Return `argv` behind a shell that first moves itself into the cgroup (so all its children are)."""
    if cgroup is None:
        return argv
    script = ('for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; '
              'shift; exec "$@"')
    return ["/bin/sh", "-c", script, "sh", *cgroup.procs_files(), "--", *argv]
