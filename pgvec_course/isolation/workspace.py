"""One submission's workspace: its folder, its users, its limits, and a watch that enforces them.

The folder lives in /dev/shm when it has room (a template cluster copies in milliseconds there, and
files written to memory count against the submission's memory cap), else in the system's temp
folder. It holds `kernel/` (the kernel's working folder, connection file and sockets), `pgdata/`
(its database server's files) and `pgsock/` (that server's socket). Only the grader can enter
the folder itself; each sandbox gets its own sub-folders bound in.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from . import limits, sandbox

PREFIX = "pgvec-course-"  # pgvec-course-<grader pid>-<token>: swept when that grader is gone
SHM = Path("/dev/shm")
MAX_FILES = 100_000  # a fresh database server holds about 700


@dataclass
class Workspace:
    """A submission's folder, the uids its kernel and server run as, and how its caps are enforced."""

    root: Path
    caps: limits.Caps
    sandboxed: bool
    kernel_uid: int | None = None
    server_uid: int | None = None
    cgroup: limits.Cgroup | None = None
    stopped: str = ""  # why the watch stopped the submission, if it did
    peak: dict[str, float] = field(default_factory=dict)

    @property
    def kernel_dir(self) -> Path:
        return self.root / "kernel"

    @property
    def data_dir(self) -> Path:
        return self.root / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.root / "pgsock"

    @property
    def enforcement(self) -> str:
        """Say how the caps are enforced, for the result JSON."""
        how = "cgroup v1 (memory, pids, cpuacct) for the whole submission" if self.cgroup else \
            "rlimits per process"
        return f"{how}; disk and CPU time watched by the grader"

    def wrap(self, argv: list[str], layout: sandbox.Layout) -> list[str]:
        """Return the command that runs `argv` in this submission's cgroup, rlimits and sandbox."""
        if self.sandboxed:
            inner = sandbox.command(argv, layout)
        else:  # trusted: no sandbox, but Postgres still may not run as root
            inner = sandbox.drop_to(layout.uid) + argv if layout.uid is not None else argv
        own_uid = layout.uid is not None
        return limits.join(limits.rlimits(self.caps, own_uid=own_uid) + inner, self.cgroup)

    def kill(self) -> None:
        """SIGKILL every process of this submission: its cgroup, and any process naming its folder."""
        if self.cgroup is not None:
            self.cgroup.kill()
        _kill_naming(self.root)
        _kill_uids({self.kernel_uid, self.server_uid})

    def kill_kernel(self) -> None:
        """SIGKILL the kernel's sandbox (and so everything in it), leaving the database for scoring."""
        _kill_naming(self.kernel_dir)
        _kill_uids({self.kernel_uid})

    def disk_use(self) -> tuple[int, int]:
        """Return the bytes and the files and folders the folder holds now (database, WAL, anything).

        Raise Unmeasurable for a folder nested past the longest path the system opens: files could
        hide below it. (os.walk recursed, so 1,500 nested folders killed the watch, caps and all.)
        """
        total = count = 0
        stack = [str(self.root)]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        count += 1
                        with suppress(OSError):
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    raise Unmeasurable("its folders are nested deeper than the grader can measure") from None
        return total, count


class Unmeasurable(OSError):
    """A submission's folder cannot be measured whole."""


def remove(path: Path) -> None:
    """Remove a folder however deeply it nests (shutil.rmtree recurses, and raised past ~1,000 levels)."""
    try:
        subprocess.run(["rm", "-rf", "--", str(path)], capture_output=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        shutil.rmtree(path, ignore_errors=True)


def _kill_naming(path: Path) -> None:
    import psutil

    # Every sandbox's bwrap names the folders it binds on its command line; killing it ends its
    # PID namespace, and with it every process inside.
    mine = str(path)
    for proc in psutil.process_iter(["cmdline"]):
        with suppress(psutil.Error):
            if proc.pid != os.getpid() and mine in " ".join(proc.info["cmdline"] or []):
                proc.kill()


def _kill_uids(uids: set[int | None]) -> None:
    import psutil

    # Without a PID namespace (no bubblewrap), a daemon that renamed itself still has the uid no
    # one else uses: kill its processes until none is left (a fork loop is bounded by RLIMIT_NPROC).
    uids.discard(None)
    for _ in range(100 if uids else 0):
        found = False
        for proc in psutil.process_iter(["uids", "status"]):
            with suppress(psutil.Error, TypeError):  # a zombie does nothing more: its parent reaps it
                if proc.info["status"] != psutil.STATUS_ZOMBIE and \
                        uids & {proc.info["uids"].real, proc.info["uids"].effective}:
                    proc.kill()
                    found = True
        if not found:
            return
        time.sleep(0.01)


def _base() -> Path:
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        if shutil.disk_usage(SHM).free >= 4 * limits.GiB:  # two submissions at their 2 GB disk cap
            return SHM
    return Path(tempfile.gettempdir())


@contextmanager
def workspace(*, caps: limits.Caps, sandboxed: bool, own_uid: bool = False) -> Iterator[Workspace]:
    """Create a submission's workspace (folder, uids, cgroup); remove all of it afterwards.

    `own_uid` gives an unsandboxed kernel an unused uid all the same (the grader must be root).
    """
    token = secrets.token_hex(4)
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{token}-", dir=_base()))
    ws = Workspace(root=root, caps=caps, sandboxed=sandboxed)
    try:
        if not sandboxed and os.geteuid() == 0:
            root.chmod(0o711)  # Postgres, as its own uid, reaches its folders directly
        if os.geteuid() == 0:  # a trusted kernel runs as root, as the grader does; Postgres never may
            ws.kernel_uid = sandbox.pick_uid() if sandboxed or own_uid else None
            ws.server_uid = sandbox.pick_uid()
        for path, uid in ((ws.kernel_dir, ws.kernel_uid), (ws.data_dir, ws.server_uid),
                          (ws.socket_dir, ws.server_uid)):
            path.mkdir(mode=0o700)
            if uid is not None:
                os.chown(path, uid, uid)
        ws.socket_dir.chmod(0o755)  # the kernel (another uid) connects; the folder above is closed
        ws.kernel_dir.chmod(0o711)  # bwrap, as root without capabilities, enters it before switching uid
        with suppress(OSError):
            ws.cgroup = limits.Cgroup.create(caps, token)
        yield ws
    finally:
        if ws.cgroup is not None:
            ws.peak = {**ws.peak, **ws.cgroup.usage()}
            ws.cgroup.remove()
        remove(root)


class Watch:
    """Check a running submission's disk and CPU time every `every` seconds; call `stop` when over."""

    def __init__(self, ws: Workspace, stop: Callable[[], None], *, every: float = 0.5) -> None:
        self.ws, self.stop_submission, self.every = ws, stop, every
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{ws.root.name}", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        ws = self.ws
        wait = self.every
        while not self._done.wait(wait):
            started = time.monotonic()
            try:
                disk, files = ws.disk_use()
            except Exception as exc:  # noqa: BLE001 - a watch that dies would leave the caps unenforced
                ws.stopped = str(exc) if isinstance(exc, Unmeasurable) else \
                    f"the grader could not measure its files ({type(exc).__name__}: {exc})"
                self.stop_submission()
                return
            # 100,000 files take the walk most of a second: look less often rather than spend a core
            # (and the GIL, which the other submissions' grading shares) on it.
            wait = max(self.every, 4 * (time.monotonic() - started))
            ws.peak["disk_peak"] = max(ws.peak.get("disk_peak", 0), disk)
            cpu = ws.cgroup.usage()["cpu_seconds"] if ws.cgroup else 0.0
            if disk > ws.caps.disk:
                ws.stopped = f"its files and database grew past the {_size(ws.caps.disk)} disk cap"
            elif files > MAX_FILES:  # empty files use no bytes, but the shared folder's inodes
                ws.stopped = f"it made more than {MAX_FILES:,} files and folders"
            elif cpu > ws.caps.cpu_seconds:
                ws.stopped = f"it used more than {ws.caps.cpu_seconds} s of CPU time"
            if ws.stopped:
                self.stop_submission()
                return


def _size(n: int) -> str:
    return f"{n / limits.GiB:g} GB" if n >= limits.GiB else f"{n / 2**20:g} MB"


def sweep() -> list[str]:
    """Remove the workspaces and cgroups of graders that are gone (a kill -9); return their names."""
    gone = []
    for base in {SHM, Path(tempfile.gettempdir())}:
        with suppress(OSError):
            for entry in base.iterdir():
                match = re.match(re.escape(PREFIX) + r"(\d+)-", entry.name)
                if match and entry.is_dir() and not limits._alive(int(match.group(1))):
                    _kill_server(entry / "pgdata")
                    remove(entry)
                    gone.append(entry.name)
    return gone + limits.sweep()


def _kill_server(data_dir: Path) -> None:
    # A server started without the sandbox does not die with its grader.
    with suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        if f"{data_dir}" in Path(f"/proc/{pid}/cmdline").read_text():
            os.kill(pid, 9)
            time.sleep(0.2)
