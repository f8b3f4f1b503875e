"""Run a submission's processes in a bubblewrap sandbox.

Inside the sandbox a process sees its own PID namespace (everything it starts dies with it), no
network but a loopback of its own, a read-only view of the system, Python and the course's
virtualenv, a private home, /tmp and /dev/shm (memory-backed, size-capped), and the folders the
grader binds for it. The repository (`solutions/`), the grader's data folder, `--out`, other
submissions and other users' sockets are simply not there. When the grader runs as root, the
processes inside run as a uid that owns nothing on the host.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = ("install bubblewrap ('sudo apt install bubblewrap' on Debian/Ubuntu, 'sudo dnf install "
                "bubblewrap' on Fedora), or grade on a Linux machine or container that has it")
# Unused uids for sandboxed processes when the grader is root: far above any distribution's range.
UID_BASE, UID_SPAN = 3_000_000_000, 100_000_000


@dataclass(frozen=True)
class Support:
    """Whether this machine can sandbox graded notebooks, and how (or why not, and what to do)."""

    ok: bool
    detail: str


@dataclass
class Layout:
    """What one sandboxed command sees: folders bound at their own paths, environment, user.

    `env` is the whole environment: the caller starts the command with it and nothing else.
    """

    writable: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    uid: int | None = None  # switch to this uid and gid inside (the grader is root)
    tmp_bytes: int = 256 * 2**20  # each of /tmp and home
    shm_bytes: int | None = None  # /dev/shm; None: tmp_bytes
    home: str = "/home/learner"
    files: dict[str, Path] = field(default_factory=dict)  # host files shown read-only at these paths


def _bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def support() -> Support:
    """Return whether graded kernels can be sandboxed here; runs bubblewrap once to find out."""
    if not sys.platform.startswith("linux"):
        return Support(False, f"bubblewrap needs Linux, and this is {sys.platform}: grade on a Linux machine "
                              "or in a Linux container or VM")
    bwrap = _bwrap()
    if bwrap is None:
        return Support(False, f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}")
    trial = command(["true"], Layout(uid=pick_uid() if os.geteuid() == 0 else None))
    try:
        done = subprocess.run(trial, capture_output=True, text=True, timeout=30,
                              env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Support(False, f"bubblewrap could not run ({exc}): {INSTALL_HINT}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return Support(False, f"bubblewrap cannot create a sandbox here ({why}); allow unprivileged user "
                              "namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu "
                              "kernel.apparmor_restrict_unprivileged_userns=0), or grade as root or in a "
                              "container that allows them")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    who = "an unused uid (the grader is root)" if os.geteuid() == 0 else "your uid in a user namespace"
    return Support(True, f"{version or 'bubblewrap'}: kernels run without network, as {who}")


def pick_uid() -> int:
    """Return a uid (and gid) no account uses, for one sandboxed process tree."""
    return UID_BASE + secrets.randbelow(UID_SPAN)


def identity(folder: Path, uid: int, *, name: str, home: str) -> dict[str, Path]:
    """Write passwd and group files naming `uid` into `folder`; return them as Layout.files."""
    # Programs such as initdb look their user up by uid, and an unused uid has no entry.
    folder.mkdir(exist_ok=True)
    entry = f"{name}:x:{uid}:{uid}:{name}:{home}:/bin/sh"
    (folder / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\n{entry}\n")
    (folder / "group").write_text(f"root:x:0:\n{name}:x:{uid}:\n")
    return {"/etc/passwd": folder / "passwd", "/etc/group": folder / "group"}


def python_paths() -> list[Path]:
    """Return the folders a kernel needs to run this Python and import the course's package."""
    import pgvec_course

    paths = {Path(sys.prefix), Path(os.path.realpath(sys.base_prefix)), Path(sys.base_prefix),
             Path(pgvec_course.__file__).resolve().parent}
    # Site folders outside the venv (a user site, one added by a .pth file), but never a plain
    # sys.path entry: that is often the current folder, the repository itself.
    paths |= {Path(p) for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and
              Path(p).is_dir()}
    return sorted(p for p in paths if not _under(p, SYSTEM))


SYSTEM = (Path("/usr"), Path("/etc"), Path("/bin"), Path("/sbin"), Path("/lib"), Path("/lib32"),
          Path("/lib64"), Path("/libx32"), Path("/opt"))


def _under(path: Path, roots: tuple[Path, ...] | list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def command(argv: list[str], layout: Layout) -> list[str]:
    """Return the bwrap command line that runs `argv` inside a sandbox laid out as `layout`."""
    bwrap = _bwrap() or "bwrap"
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox", "--cap-drop", "ALL"]
    if layout.uid is not None:  # just what setpriv needs to switch users; it drops them too
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    for root in SYSTEM:
        if root.is_symlink():  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(root), str(root)]
        elif root.is_dir():
            args += ["--ro-bind", str(root), str(root)]
    args += ["--proc", "/proc", "--dev", "/dev"]
    created = {Path("/"), Path("/dev"), Path("/proc")}
    bound = [root for root in SYSTEM if root.is_dir() and not root.is_symlink()]
    shm = layout.tmp_bytes if layout.shm_bytes is None else layout.shm_bytes
    for scratch, size in ((Path("/tmp"), layout.tmp_bytes), (Path("/dev/shm"), shm),
                          (Path(layout.home), layout.tmp_bytes)):
        args += _parents(scratch, created, bound)
        args += ["--perms", "1777", "--size", str(size), "--tmpfs", str(scratch)]
        created.add(scratch)
    mounts = [(p, "--bind") for p in layout.writable] + [(p, "--ro-bind") for p in layout.readable]
    for path, how in sorted(mounts, key=lambda m: len(m[0].parts)):
        args += _parents(path, created, bound)
        args += [how, str(path), str(path)]
        bound.append(path)
    for dest, source in sorted(layout.files.items()):
        args += ["--ro-bind", str(source), dest]
    # The environment is the caller's process environment, built from nothing (layout.env), so no
    # secret appears on a command line; only what jupyter_client adds on the way is dropped.
    args += ["--unsetenv", "JPY_PARENT_PID"]
    if layout.cwd is not None:
        args += ["--chdir", str(layout.cwd)]
    args.append("--")
    if layout.uid is not None:
        args += drop_to(layout.uid)
    return args + list(argv)


def _parents(path: Path, created: set[Path], bound: list[Path]) -> list[str]:
    # bwrap makes missing parents of a mount point mode 0700 and owned by root, which a dropped
    # uid cannot cross: create them first, traversable. A parent inside a bound folder exists.
    out = []
    for parent in reversed(path.parents):
        if parent not in created and not _under(parent, bound):
            out += ["--perms", "0755", "--dir", str(parent)]
            created.add(parent)
    return out


def drop_to(uid: int) -> list[str]:
    """Return a command prefix that becomes `uid` (no groups, no capabilities) before running the rest."""
    # bwrap runs as root here (it must, to bind paths only root may cross); setpriv then becomes
    # the unused uid with no groups, no capabilities and no way to gain privileges back.
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs"]
    return [sys.executable, "-I", "-S", "-c",
            "import os, sys; u = int(sys.argv[1]); os.setgroups([]); os.setresgid(u, u, u); "
            "os.setresuid(u, u, u); os.execv(sys.argv[2], sys.argv[2:])", str(uid)]
