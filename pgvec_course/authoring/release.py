"""Write the learners' copy of the course (`pgvec-course release DIR`): no solutions, no hidden tests.

The copy holds what a learner needs to clone, `make start` and work: the lessons, the generated
exercises, the package, README, Makefile, pyproject and docker-compose. It is then searched for
every string and function name of the hidden tests, and refused (and removed) if one is found.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

from ..config import HOME_DIR
from ..grading.hidden import FOLDER
from .generate import generate

# What a learner's copy holds: folders and top-level files of the course repository.
INCLUDE = ("lessons", "exercises", "pgvec_course", "README.md", "Makefile", "pyproject.toml",
           "docker-compose.yml", ".gitignore", "LICENSE", "NOTICE")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints"}


class ReleaseError(ValueError):
    """The learners' copy cannot be written, or would give away hidden tests."""


def course_files(root: Path) -> list[Path]:
    """Return the files of a release, relative to `root` (git's tracked files when it is a repository)."""
    try:
        # Tracked files and new ones not yet committed, never what .gitignore leaves out (caches, data).
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard", "--", *INCLUDE], check=True,
                                capture_output=True).stdout.decode().split("\0")
        files = [Path(p) for p in listed if p and (root / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [p.relative_to(root) for name in INCLUDE for p in sorted((root / name).rglob("*"))
                 if p.is_file()] + [Path(name) for name in INCLUDE if (root / name).is_file()]
    return sorted(p for p in set(files) if not SKIP_PARTS & set(p.parts) and p.suffix != ".pyc")


def secrets(hidden: Path) -> set[str]:
    """Return what must never appear in a learner's copy: hidden inputs, reference names and their texts."""
    found: set[str] = set()
    for path in sorted(hidden.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.add(node.name)
                # Long texts inside the grader's code (questions it asks, its docstrings).
                found |= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)
                          and isinstance(c.value, str) and len(c.value) >= 20}
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "INPUTS"
                                                      for t in node.targets):
                # The inputs themselves; the dict's keys are question ids, which are public.
                values = node.value.values if isinstance(node.value, ast.Dict) else [node.value]
                found |= {c.value for v in values for c in ast.walk(v) if isinstance(c, ast.Constant)
                          and isinstance(c.value, str) and len(c.value) >= 4}
    return found


def leaks(out: Path, hidden: Path) -> list[str]:
    """Return 'file: secret' for every hidden string or name found in the release, and hidden files."""
    problems = [f"{p.relative_to(out)}: a hidden-tests file" for p in out.rglob("*")
                if p.is_file() and (FOLDER.parts[0] in p.relative_to(out).parts)]
    wanted = secrets(hidden)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        problems += [f"{path.relative_to(out)}: {secret[:60]!r}" for secret in sorted(wanted)
                     if secret in text]
    return problems


def release(out: str | Path, *, root: str | Path = HOME_DIR, hidden: str | Path | None = None) -> list[Path]:
    """Write the learners' copy of the course into `out` (new or empty); return the files written."""
    root, out = Path(root), Path(out)
    hidden = Path(hidden) if hidden else root / FOLDER
    if not (root / "pyproject.toml").is_file() or not (root / "solutions").is_dir():
        raise ReleaseError(f"{root} is not the course repository (no pyproject.toml and solutions/): "
                           "run this from its top folder, or pass --root")
    if not hidden.is_dir():
        raise ReleaseError(f"no hidden tests in {hidden}: pass --hidden DIR, so the copy can be checked "
                           "against them")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out} is not empty: choose a new folder (nothing was written)")
    if out.resolve().is_relative_to(root.resolve()):
        raise ReleaseError(f"{out} is inside the course repository: choose a folder outside it")
    stale = generate(root, check=True)
    if stale:
        raise ReleaseError(f"{len(stale)} exercises are out of date with their masters: run "
                           "'pgvec-course generate' first")
    files = course_files(root)
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, out / rel)
    problems = leaks(out, hidden)
    if problems:
        shutil.rmtree(out)
        raise ReleaseError("the copy would give hidden tests away, so it was removed:\n  "
                           + "\n  ".join(problems))
    return files


def cmd_release(args: argparse.Namespace) -> int:
    try:
        files = release(args.dir, root=args.root, hidden=args.hidden)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tops = sorted({f.parts[0] for f in files})
    print(f"wrote {len(files)} files to {args.dir} ({', '.join(tops)}): no solutions/, no hidden tests")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `pgvec-course release`."""
    p = sub.add_parser("release", help="write the learners' copy of the course, without solutions or hidden "
                                       "tests")
    p.add_argument("dir", metavar="DIR", help="a new (or empty) folder outside the course repository")
    p.add_argument("--root", default=str(HOME_DIR), help="the course repository's top folder")
    p.add_argument("--hidden", metavar="DIR", help="the hidden tests to check against (default: "
                                                   "ROOT/solutions/hidden)")
    p.set_defaults(func=cmd_release)
