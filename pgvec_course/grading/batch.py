"""`pgvec-course grade` and `validate`: grade a class's notebooks, `--jobs` at a time, into a gradebook.

Each notebook is graded by grader.grade_one in a sandbox, kernel and database server of its own;
its files are written the moment it is done (report.Gradebook).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ..config import HOME_DIR
from ..isolation import databases, limits, sandbox, workspace
from . import hidden, report
from .grader import Options, Submission, grade_one, seed_cache


def find_submissions(paths: list[Path]) -> list[tuple[str, Path]]:
    """Return (learner, notebook) pairs: a file is one learner, a folder holds notebooks or folders."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_file():  # named by the instructor: a link is followed
            found.append((path.stem, path.resolve() if path.is_symlink() else path))
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"no notebook or folder at {path}; pass .ipynb files or folders of them")
        for entry in sorted(path.iterdir()):
            if entry.is_symlink():  # in a learner's upload it points elsewhere here: a row saying so
                if entry.suffix == ".ipynb" or entry.is_dir():
                    found.append((entry.stem if entry.suffix == ".ipynb" else entry.name, entry))
            elif entry.is_file() and entry.suffix == ".ipynb":
                found.append((entry.stem, entry))
            elif entry.is_dir() and not entry.name.startswith("."):
                notebooks = sorted(p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
                if notebooks:  # a folder per learner (an LMS export): the folder names the learner
                    found.append((entry.name, notebooks[0] if len(notebooks) == 1 else entry))
    found = [(_short(learner), nb) for learner, nb in found]
    # A name seen again gets the first free suffix: "ada", "ada" and "ada-2" must not share files.
    taken = {learner for learner, _ in found}
    used: set[str] = set()
    unique = []
    for learner, nb in found:
        name, n = learner, 1
        while name in used or (n > 1 and name in taken):
            n += 1
            name = f"{learner}-{n}"
        used.add(name)
        unique.append((name, nb))
    return unique


MAX_NAME = 100  # bytes of a learner's name: its files add ".json" or ".md" and a temporary suffix


def _short(name: str) -> str:
    # A file or folder name may take 255 bytes, and then learner.json's temporary file could not be
    # made: the whole batch stopped. Long names keep their start and a digest of the whole. Control
    # characters (a terminal escape in a file name) never reach the summary printed to your terminal.
    name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in name)
    raw = name.encode()
    if len(raw) <= MAX_NAME:
        return name
    return raw[:MAX_NAME - 9].decode(errors="ignore") + "-" + hashlib.sha256(raw).hexdigest()[:8]


def prepare(options: Options) -> Path:
    """Clear what killed graders left, make the database template once, and embed the seed cache."""
    workspace.sweep()
    databases.ensure_template(lambda: workspace.workspace(caps=options.caps, sandboxed=options.sandboxed))
    return seed_cache()


def grade_batch(subs: list[tuple[str, Path]], *, options: Options, jobs: int = 1, progress: bool = True,
                on_result: Callable[[Submission], None] | None = None) -> list[Submission]:
    """Grade submissions, `jobs` at a time, each in its own sandbox and server; report each as it ends."""
    from tqdm.auto import tqdm

    seed = prepare(options)
    results: list[Submission] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(subs), desc="Grading", unit="notebook", disable=not progress) as bar:
        futures = [pool.submit(grade_one, learner, path, options, seed) for learner, path in subs]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.update(1)
    order = {learner: n for n, (learner, _) in enumerate(subs)}
    return sorted(results, key=lambda s: order[s.learner])


def cmd_grade(args: argparse.Namespace) -> int:
    try:
        subs = find_submissions([Path(p) for p in args.paths])
        caps = limits.Caps(memory=limits.parse_size(args.memory), disk=limits.parse_size(args.disk))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not subs:
        print("error: no notebooks found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if not args.trust_submissions and not (support := sandbox.support()).ok:
        print(f"error: cannot sandbox the notebooks: {support.detail}. To grade without a sandbox, only "
              "work you trust, pass --trust-submissions", file=sys.stderr)
        return 2
    options = Options(exercise=args.exercise, timeout=args.timeout, cell_timeout=args.cell_timeout, caps=caps,
                      sandboxed=not args.trust_submissions, hidden=Path(args.hidden) if args.hidden else None)
    out = Path(args.out)
    try:
        book = report.Gradebook(out, learners=[learner for learner, _ in subs], gradescope=args.gradescope)
    except report.GradebookBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with book:
        todo = [(learner, path) for learner, path in subs if not (args.resume and book.has(learner, path))]
        if len(todo) < len(subs):
            print(f"--resume: {len(subs) - len(todo)} already graded in {out}, {len(todo)} to go")
        grade_batch(todo, options=options, jobs=args.jobs, progress=not args.quiet, on_result=book.add)
        results = book.results()
    print(report.summary(results))
    print(f"wrote {out / 'grades.csv'} and one .json and .md per learner in {out}")
    return 1 if any(s.status == "error" for s in results) else 0


def validate(
    *, root: Path = HOME_DIR, jobs: int = 2, out: Path | None = None, hidden_dir: Path | None = None
) -> list[tuple[Submission, str]]:
    """Grade the solution masters and generated exercises; return (result, problem or '') pairs.

    Hidden tests come from `hidden_dir`, else the root's solutions/hidden/ when it has one.
    """
    solutions = sorted((root / "solutions").glob("*.ipynb"))
    exercises = sorted((root / "exercises").glob("*.ipynb"))
    if not solutions:
        raise FileNotFoundError(f"no solution notebooks in {root / 'solutions'}")
    subs = [(f"solution-{p.stem}", p) for p in solutions] + [(f"exercise-{p.stem}", p) for p in exercises]
    # The course's own notebooks: sandboxed where this machine can, trusted where it cannot.
    if hidden_dir is None and (root / hidden.FOLDER).is_dir():
        hidden_dir = root / hidden.FOLDER
    options = Options(sandboxed=sandbox.support().ok, hidden=hidden_dir)
    results = grade_batch(subs, options=options, jobs=jobs, progress=False)
    if out is not None:
        report.write_all(results, out)
    checked = []
    for sub in results:
        master = sub.learner.startswith("solution-")
        want = sub.max if master else 0.0
        problem = ""
        errors = sub.execution.get("errors") or []
        if sub.status != "graded":
            problem = f"status {sub.status}: {sub.reason}"
        elif master and errors:  # full marks all the same, but the feedback would show an error not theirs
            problem = f"a cell raised while graded ({'; '.join(errors)[:300]})"
        elif sub.score != want:
            failing = [f"{q['id']}: {q['feedback']}" for q in sub.questions if q["passed"] != (want > 0)]
            problem = f"scored {sub.score:g}, expected {want:g} ({'; '.join(failing)[:300]})"
        checked.append((sub, problem))
    return checked


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        checked = validate(root=Path(args.root), jobs=args.jobs, out=Path(args.out) if args.out else None,
                           hidden_dir=Path(args.hidden) if args.hidden else None)
    except FileNotFoundError as exc:
        print(f"error: {exc}; run it from the course repository or pass --root", file=sys.stderr)
        return 1
    print(report.summary([sub for sub, _ in checked]))
    for sub, problem in checked:
        if problem:
            print(f"FAIL {sub.learner}: {problem}")
    bad = sum(bool(problem) for _, problem in checked)
    print(f"{len(checked) - bad} of {len(checked)} notebooks graded as expected")
    return 1 if bad else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the `grade` and `validate` commands."""
    p = sub.add_parser("grade", help="grade learners' notebooks, each in its own kernel and database")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a notebook, or a folder of notebooks")
    p.add_argument("--exercise", help="grade as this exercise (default: the notebook's metadata)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument("--out", default="grades", help="folder for grades.csv and feedback (default grades/)")
    p.add_argument("--timeout", type=int, help="seconds for a whole notebook (default: the exercise's)")
    p.add_argument("--cell-timeout", type=int, help="seconds for one cell (default: --timeout)")
    p.add_argument("--gradescope", action="store_true",
                   help="also write Gradescope's results.json for each learner (OUT/gradescope/LEARNER.json)")
    p.add_argument("--resume", action="store_true", help="skip learners already graded in --out")
    p.add_argument("--memory", default="4G", help="memory cap per submission, kernel + database (default 4G)")
    p.add_argument("--disk", default="2G", help="cap on a submission's database and files (default 2G)")
    p.add_argument("--trust-submissions", action="store_true",
                   help="grade without the sandbox (no bubblewrap here): only for notebooks you trust")
    p.add_argument("--hidden", metavar="DIR", help="folder of the hidden tests (default: solutions/hidden/ "
                   "of the course repository, or $PGVEC_HIDDEN_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_grade)
    v = sub.add_parser("validate", help="check solutions get full marks and exercises zero")
    v.add_argument("--root", default=str(HOME_DIR), help="folder holding solutions/ and exercises/")
    v.add_argument("--jobs", type=int, default=2)
    v.add_argument("--out", help="also write the reports here")
    v.add_argument("--hidden", metavar="DIR",
                   help="folder of the hidden tests (default: ROOT/solutions/hidden/)")
    v.set_defaults(func=cmd_validate)

