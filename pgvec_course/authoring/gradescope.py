"""Gradescope's autograder: `pgvec-course gradescope EXERCISE -o autograder.zip`, and what runs in it.

Gradescope unpacks the zip into `/autograder/source`, runs its `setup.sh` once, as root, to build
an image (Ubuntu), then gives each submission a fresh container in which `run_autograder` must
leave `/autograder/results/results.json`. The zip holds the course package as a wheel, the
versions of its dependencies pinned as installed here, the exercise's hidden tests (they never
reach learners: in the container they are root's alone) and `pgvec-autograder.json`. Both scripts
read PGVEC_AUTOGRADER_ROOT (default /autograder), so a test can lay the same tree out anywhere.

Kernels run in bubblewrap where the container lets it; Docker's default seccomp profile forbids
the namespaces it needs, so on Gradescope a kernel usually runs as an unused uid instead: it
cannot read the hidden tests or the grader's files, nor write the results, and every process of
its uid is killed before they are written. It can reach the network, as any Gradescope run can.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..config import HOME_DIR
from ..grading import batch, grader, hidden, report
from ..isolation import sandbox
from ..questions import get_exercise
from . import release

CONFIG = "pgvec-autograder.json"
ISOLATION = ("auto", "bubblewrap", "uid")
SETUP_MINUTES = 2  # beyond the notebook's own time limit: start, database, scoring (at half a CPU)
# What the package's wheel is built from (the rest of the repository stays out of the zip).
WHEEL_SOURCES = ("pgvec_course", "pyproject.toml", "README.md", "LICENSE", "NOTICE")
_ENV = '''ROOT="${PGVEC_AUTOGRADER_ROOT:-/autograder}"
HOME_DIR="$ROOT/pgvec-course"
export PGVEC_GRADER_DATA_DIR="$HOME_DIR/data" PGVEC_CACHE_DIR="$HOME_DIR/cache" PGVEC_EMBEDDER=local
unset DATABASE_URL OPENAI_API_KEY OPENAI_BASE_URL PGVEC_HIDDEN_DIR
'''
SETUP_SH = '''#!/usr/bin/env bash
# pgvec-course's autograder: Gradescope runs this once, as root, to build the grading image.
set -euo pipefail
''' + _ENV + '''SOURCE="$ROOT/source"
WANTED="$(sed -n 's/.*"python": "\\([0-9.]*\\)".*/\\1/p' "$SOURCE/pgvec-autograder.json")"
PYTHON="${PGVEC_AUTOGRADER_PYTHON:-$(command -v "python${WANTED:-3}" || echo python3)}"
# System packages, only those missing: bubblewrap (the sandbox, where the container allows it),
# setpriv and prlimit (a uid and limits for each kernel), Python's venv.
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
{ command -v setpriv && command -v prlimit; } >/dev/null || need+=(util-linux)
command -v "$PYTHON" >/dev/null || need+=(python3)
"$PYTHON" -c "import ensurepip" 2>/dev/null || need+=("$(basename "$PYTHON")-venv")
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
rm -rf "$HOME_DIR/venv"
"$PYTHON" -m venv "$HOME_DIR/venv"
install=("$HOME_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "${install[@]}" -c "$SOURCE/requirements.txt" "$SOURCE"/wheels/*.whl; then
    echo "pgvec-course: the versions pinned on the instructor's machine do not install with" \\
         "$("$PYTHON" -V); installing the newest that fit instead" >&2
    "${install[@]}" "$SOURCE"/wheels/*.whl
fi
mkdir -p "$HOME_DIR/data" "$HOME_DIR/cache"
chmod 755 "$ROOT" "$HOME_DIR"  # a kernel's own uid runs the venv's Python
chmod 700 "$HOME_DIR/data" "$HOME_DIR/cache"
chmod -R go-rwx "$SOURCE"  # the hidden tests are root's alone
"$HOME_DIR/venv/bin/python" -m pgvec_course.authoring.gradescope setup --root "$ROOT"
'''
RUN_AUTOGRADER = '''#!/usr/bin/env bash
# pgvec-course's autograder: Gradescope runs this for each submission, as root, in a fresh container.
''' + _ENV + '''mkdir -p "$ROOT/results" "$ROOT/submission"
# Root's alone: the results, the submission (the grader reads the notebook, the kernel gets its cells)
# and Gradescope's metadata, which holds earlier submissions' results, hidden tests' output included.
chmod 700 "$ROOT/results" "$ROOT/submission"
chmod 600 "$ROOT/submission_metadata.json" 2>/dev/null || true
"$HOME_DIR/venv/bin/python" -m pgvec_course.authoring.gradescope run --root "$ROOT"
if [ ! -s "$ROOT/results/results.json" ]; then  # the grader itself failed: say so, score nothing
    echo '{"score": 0, "output": "The autograder failed before it could grade this submission; your' \\
         'instructor can see why in its output.", "stdout_visibility": "hidden", "tests": []}' \\
         > "$ROOT/results/results.json"
fi
'''


class GradescopeError(RuntimeError):
    """The autograder zip cannot be built, or a submission cannot be graded in this container."""


def pins(dist: str = "pgvec-course") -> list[str]:
    """Return `name==version` for every package `dist` needs, as installed here (extras followed)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(dist, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            meta = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency only for another platform or Python
        found[key] = meta.version
        for text in meta.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((req.name, frozenset(req.extras)))
    found.pop(canonicalize_name(dist), None)
    return [f"{name}=={version}" for name, version in sorted(found.items())]


def _wheel(root: Path, folder: Path) -> Path:
    """Build the course package's wheel from a clean copy of its sources (no stale build/ folder)."""
    src = folder / "src"
    for rel in release.course_files(root):
        if rel.parts[0] in WHEEL_SOURCES:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((root / rel).read_bytes())
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(folder),
                           str(src)], capture_output=True, text=True)
    wheels = sorted(folder.glob("pgvec_course-*.whl"))
    if done.returncode != 0 or not wheels:
        raise GradescopeError(f"could not build the course package's wheel (pip wheel): "
                              f"{done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(folder / "check")
    secrets = root / hidden.FOLDER
    problems = release.leaks(folder / "check", secrets) if secrets.is_dir() else []
    if problems:
        raise GradescopeError("the package would give hidden tests away:\n  " + "\n  ".join(problems))
    return wheels[0]


def _add(archive: zipfile.ZipFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def build(exercise: str, out: str | Path, *, root: str | Path = HOME_DIR,
          hidden_dir: str | Path | None = None, isolation: str = "auto") -> dict:
    """Write Gradescope's autograder zip for `exercise` to `out`; return what it holds."""
    root, out = Path(root), Path(out)
    if isolation not in ISOLATION:
        raise GradescopeError(f"isolation must be one of {', '.join(ISOLATION)}, not {isolation!r}")
    if not (root / "pyproject.toml").is_file():
        raise GradescopeError(f"{root} is not the course repository (no pyproject.toml): run this from its "
                              "top folder, or pass --root")
    try:
        tests = hidden.load(get_exercise(exercise), hidden_dir or root / hidden.FOLDER)
    except KeyError as exc:
        raise GradescopeError(str(exc).strip("'\"")) from None
    except hidden.HiddenTestsError as exc:
        raise GradescopeError(str(exc)) from None
    config = {"exercise": tests.exercise.name, "isolation": isolation, "tests_hash": tests.tests_hash,
              "max_points": tests.exercise.max_points, "package": __version__,
              "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    requirements = pins()
    with tempfile.TemporaryDirectory(prefix="pgvec-gradescope-") as tmp:
        wheel = _wheel(root, Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.tmp{os.getpid()}")
        with zipfile.ZipFile(partial, "w") as archive:
            _add(archive, "setup.sh", SETUP_SH.encode(), mode=0o755)
            _add(archive, "run_autograder", RUN_AUTOGRADER.encode(), mode=0o755)
            _add(archive, CONFIG, (json.dumps(config, indent=2) + "\n").encode())
            _add(archive, "requirements.txt", "".join(f"{r}\n" for r in requirements).encode())
            _add(archive, f"wheels/{wheel.name}", wheel.read_bytes())
            _add(archive, f"hidden/{tests.path.name}", tests.source)
        partial.replace(out)
    return {**config, "wheel": wheel.name, "pins": len(requirements), "bytes": out.stat().st_size,
            "timeout": tests.exercise.timeout}


def find_notebook(folder: Path, exercise: str) -> tuple[Path | None, str]:
    """Return the submission's notebook in `folder`, or None and what the learner should do instead."""
    found = []
    stack = [folder]  # not os.walk: it recursed, and 1,500 nested folders left no results.json at all
    while stack:
        try:
            with os.scandir(stack.pop()) as scan:
                entries = list(scan)
        except OSError:
            continue
        for entry in entries:  # never into a linked folder, never a linked notebook
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                stack.append(Path(entry.path))
            elif entry.name.endswith(".ipynb") and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    found.sort(key=lambda p: (len(p.relative_to(folder).parts), str(p)))  # os.walk's order: shallow first
    if len(found) > 1:
        found = [p for p in found if p.name == f"{exercise}.ipynb"] or found
    if not found:
        return None, f"no notebook (.ipynb) in the submission: upload your {exercise}.ipynb"
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        return None, f"the submission holds several notebooks ({names}): upload only {exercise}.ipynb"
    return found[0], ""


def _test(name: str, number: str, record: dict | None, *, max_score: float, visibility: str,
          missing: str, lead: str = "") -> dict:
    if record is None:
        score, passed, output = 0.0, False, missing or "not graded"
    else:
        score, passed = min(float(record["points"]), max_score), bool(record["passed"])
        output = "\n".join([lead + record["feedback"], *report.rubric_lines(record)])
    return {"name": name, "number": number, "score": score, "max_score": max_score,
            "status": "passed" if passed else "failed", "visibility": visibility, "output": output,
            "output_format": "text"}


def results(sub: grader.Submission, tests: hidden.HiddenTests) -> dict:
    """Return Gradescope's results.json for a submission: hidden-input questions after the due date."""
    graded, public = {q["id"]: q for q in sub.questions}, {q["id"]: q for q in sub.public}
    missing = sub.reason or report.STATUS_TEXT.get(sub.status, sub.status)
    out = []
    for n, q in enumerate(tests.exercise.questions, start=1):
        secret = tests.inputs[q.id] is not None
        if secret and q.public is not None:  # what pvc.check shows in the notebook, worth nothing here
            out.append(_test(f"{q.id}: {q.title}: your notebook's check (public inputs)", f"{n}.1",
                             public.get(q.id), max_score=0.0, visibility="visible", missing=missing,
                             lead="Not counted in your score (the hidden tests are): "))
        out.append(_test(f"{q.id}: {q.title}" + (": hidden tests" if secret else ""),
                         f"{n}.2" if secret and q.public is not None else str(n), graded.get(q.id),
                         max_score=q.points, visibility="after_due_date" if secret else "visible",
                         missing=missing))
    status = report.STATUS_TEXT.get(sub.status, sub.status)
    lines = [f"{tests.exercise.title} ({tests.exercise.name}): {status}"]
    if sub.reason:
        lines.append(sub.reason)
    shown = sum(t["max_score"] for t in out if t["visibility"] == "visible")
    lines.append(f"Questions graded on hidden inputs show their results after the due date; {shown:g} of "
                 f"{tests.exercise.max_points:g} points are shown now.")
    errors = sub.execution.get("errors") or []
    lines += ["Cells that raised an error while grading:", *[f"- {e}" for e in errors[:10]]] if errors else []
    if sub.reproducibility:
        r = sub.reproducibility
        lines.append(f"Graded with PostgreSQL {r['postgres']}, pgvector {r['pgvector']}, {r['embedder']}, "
                     f"pgvec-course {r['package']}, tests {r['tests_hash']}.")
    return {"score": round(sub.score, 2), "execution_time": round(sub.timings.get("total", 0)),
            "output": "\n".join(lines), "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": out,
            "extra_data": {"status": sub.status, "tests_hash": tests.tests_hash,
                           "isolation": sub.sandbox.get("isolation", "")}}


def isolation_options(wanted: str) -> grader.Options:
    """Return how to run kernels here: bubblewrap where it works, else (as root) a uid of their own."""
    support = sandbox.support()
    if wanted in ("auto", "bubblewrap") and support.ok:
        return grader.Options(sandboxed=True)
    if wanted == "bubblewrap":
        raise GradescopeError(f"the autograder was built to need bubblewrap, which cannot run here: "
                              f"{support.detail}. Build it with --isolation auto")
    if os.geteuid() != 0:
        raise GradescopeError("without bubblewrap, kernels run as a uid of their own, which needs root "
                              f"(Gradescope runs the autograder as root); bubblewrap: {support.detail}")
    return grader.Options(sandboxed=False, own_uid=True)


def run(root: Path) -> dict:
    """Grade the notebook in ROOT/submission into ROOT/results/results.json; return what was written."""
    started = time.monotonic()
    source = root / "source"
    config = json.loads((source / CONFIG).read_text())
    tests = hidden.load(get_exercise(config["exercise"]), source / "hidden")
    exercise = tests.exercise
    path, problem = find_notebook(root / "submission", exercise.name)
    sub = grader.Submission(learner="submission", path=str(path or root / "submission"),
                            exercise=exercise.name, status="not_gradable", reason=problem,
                            max=exercise.max_points)
    if path is not None:
        try:
            options = isolation_options(config["isolation"])
            options.exercise, options.hidden, options.public_checks = exercise.name, source / "hidden", True
            [sub] = batch.grade_batch([("submission", path)], options=options, progress=False)
        except Exception as exc:  # noqa: BLE001 - the learner gets a result and the instructor the cause
            sub.status, sub.reason = "error", f"the autograder failed: {type(exc).__name__}: {exc}"[:500]
    sub.timings["total"] = round(time.monotonic() - started, 2)
    data = results(sub, tests)
    (root / "results").mkdir(mode=0o700, exist_ok=True)
    report.write_atomic(root / "results" / "results.json", json.dumps(data, indent=2) + "\n")
    # run_autograder's output is for the instructor only (stdout_visibility hidden).
    print(report.summary([sub]))
    print(json.dumps(asdict(sub), indent=2))
    return data


def setup(root: Path) -> None:
    """Make, at image build time, what every run needs: the database template and the seed embeddings."""
    support = sandbox.support()
    print(f"pgvec-course {__version__}: bubblewrap {'works here' if support.ok else 'cannot run here'}: "
          f"{support.detail}")
    if not support.ok:
        print("kernels will run as a uid of their own, without bubblewrap (README: Gradescope)")
    if os.geteuid() == 0:
        _check_python_for_others()
    batch.prepare(grader.Options(sandboxed=support.ok, own_uid=not support.ok))
    print("ready: the database template is made and the seed embeddings cached")


def _check_python_for_others() -> None:
    """Fail the image build unless a uid of no account can run this Python, and start it again."""
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import pgvec_course'], check=True)"
    done = subprocess.run([*sandbox.drop_to(sandbox.pick_uid()), sys.executable, "-c", code],
                          capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise GradescopeError(
            f"a kernel's uid cannot run {sys.executable} (it is {os.path.realpath(sys.executable)}, in a "
            f"folder other users may not enter): set PGVEC_AUTOGRADER_PYTHON to a Python every user can "
            f"run, such as /usr/bin/python3 ({done.stderr.strip()[-200:]})")


def cmd_gradescope(args: argparse.Namespace) -> int:
    try:
        made = build(args.exercise, args.out, root=args.root, hidden_dir=args.hidden,
                     isolation=args.isolation)
    except GradescopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({made['bytes'] / 2**20:.1f} MB): {made['exercise']}, {made['max_points']:g} "
          f"points, hidden tests {made['tests_hash']}, {made['wheel']} and {made['pins']} pinned "
          f"dependencies (Python {made['python']}). Upload it as the assignment's autograder, give the "
          f"assignment {made['max_points']:g} points, and its autograder a timeout of at least "
          f"{math.ceil(made['timeout'] / 60) + SETUP_MINUTES} minutes.")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `pgvec-course gradescope`."""
    p = sub.add_parser("gradescope", help="build Gradescope's autograder.zip for an exercise")
    p.add_argument("exercise", metavar="EXERCISE", help="for example 01_knowledge_base")
    p.add_argument("-o", "--out", default="autograder.zip", help="the zip to write (default autograder.zip)")
    p.add_argument("--root", default=str(HOME_DIR), help="the course repository's top folder")
    p.add_argument("--hidden", metavar="DIR", help="the hidden tests (default: ROOT/solutions/hidden)")
    p.add_argument("--isolation", choices=ISOLATION, default="auto",
                   help="auto (the default): kernels in bubblewrap where the container allows it, else as "
                        "a uid of their own; bubblewrap: that or nothing; uid: always a uid of their own")
    p.set_defaults(func=cmd_gradescope)


def main(argv: list[str] | None = None) -> int:
    """Run `setup` or `run` for setup.sh and run_autograder: python -m pgvec_course.authoring.gradescope."""
    parser = argparse.ArgumentParser(prog="python -m pgvec_course.authoring.gradescope")
    parser.add_argument("step", choices=["setup", "run"])
    parser.add_argument("--root", type=Path, default=Path("/autograder"))
    args = parser.parse_args(argv)
    try:
        setup(args.root) if args.step == "setup" else run(args.root)
    except GradescopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
