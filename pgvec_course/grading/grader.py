"""`pgvec-course grade` and `validate`: grade a class's notebooks, each in its own kernel and database."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat

from .. import __version__, db
from ..config import HOME_DIR, settings
from ..questions import EXERCISES, Context, Exercise, Outcome, get_exercise
from ..questions.scoring import blocked
from . import culprits, databases, hidden, limits, report, runner, sandbox, workspace

# Environment variables a trusted (unsandboxed) kernel never inherits: API keys, other databases.
_SCRUB = ("OPENAI_", "PG", "DATABASE_URL", "JPY_", "JUPYTER_")


@dataclass
class Options:
    """How to grade: `exercise` overrides the notebooks' metadata; None timeouts use the exercise's.

    `sandboxed=False` (`--trust-submissions`) runs kernels without bubblewrap, as the grader's user.
    """

    exercise: str | None = None
    timeout: int | None = None
    cell_timeout: int | None = None
    caps: limits.Caps = field(default_factory=limits.Caps)
    sandboxed: bool = True
    hidden: Path | None = None  # folder of the hidden tests (default: hidden.default_folder())


@dataclass
class Submission:
    """One learner's graded notebook: what `grades.csv`, `<learner>.json` and the feedback show."""

    learner: str
    path: str
    exercise: str = ""
    status: str = "graded"  # graded, timeout, hung, kernel_died, not_gradable, error
    reason: str = ""
    score: float = 0.0
    max: float = 0.0
    questions: list[dict[str, Any]] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reproducibility: dict[str, str] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)


def find_submissions(paths: list[Path]) -> list[tuple[str, Path]]:
    """Return (learner, notebook) pairs: a file is one learner, a folder holds notebooks or folders."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_file():
            found.append((path.stem, path))
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"no notebook or folder at {path}; pass .ipynb files or folders of them")
        for entry in sorted(path.iterdir()):
            if entry.is_file() and entry.suffix == ".ipynb":
                found.append((entry.stem, entry))
            elif entry.is_dir() and not entry.name.startswith("."):
                notebooks = sorted(p for p in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
                if notebooks:  # a folder per learner (an LMS export): the folder names the learner
                    found.append((entry.name, notebooks[0] if len(notebooks) == 1 else entry))
    seen: dict[str, int] = {}
    unique = []
    for learner, nb in found:
        seen[learner] = seen.get(learner, 0) + 1
        unique.append((learner if seen[learner] == 1 else f"{learner}-{seen[learner]}", nb))
    return unique


def _load(sub: Submission, path: Path, options: Options) -> tuple[nbformat.NotebookNode, Exercise] | None:
    if path.is_dir():
        sub.status, sub.reason = "not_gradable", f"{path.name} holds several notebooks; keep one per learner"
        return None
    try:
        nb = nbformat.read(path, as_version=4)
        assert isinstance(nb.cells, list)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, never raised
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        sub.status, sub.reason = "not_gradable", f"not a valid notebook ({first})"
        return None
    meta = nb.metadata.get("pgvec_course")
    name = options.exercise or (meta.get("exercise") if isinstance(meta, dict) else None)
    if not name and path.stem in EXERCISES:  # a master, or a learner who kept the file's name
        name = path.stem
    if not name:
        sub.status, sub.reason = "not_gradable", "the notebook names no exercise; pass --exercise NAME"
        return None
    try:
        exercise = get_exercise(str(name))
    except KeyError as exc:
        sub.status, sub.reason = "not_gradable", str(exc).strip("'\"")
        return None
    sub.exercise, sub.max = exercise.name, exercise.max_points
    return nb, exercise


def kernel_env(url: str, folder: Path, *, sandboxed: bool) -> dict[str, str]:
    """Return the environment of a submission's kernel: its own database, offline, no secrets.

    In the sandbox it starts empty (bwrap clears it); a trusted kernel gets the grader's, scrubbed.
    """
    if sandboxed:
        path = [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        env = {"PATH": os.pathsep.join(path),
               "HOME": sandbox.Layout().home, "USER": "learner", "LOGNAME": "learner", "LANG": "C.UTF-8",
               "TMPDIR": "/tmp"}
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(DATABASE_URL=url, PGVEC_EMBEDDER="local", PGVEC_CACHE_DIR=str(folder / ".cache"),
               PGVEC_DATA_DIR=str(folder / ".pgdata"), PGVEC_GRADER_DATA_DIR=str(folder / ".pgdata-grader"),
               PYTHONHASHSEED="0", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    return env


def seed_cache() -> Path:
    """Embed the course corpus and labelled queries once into a cache file each kernel gets a copy of."""
    from ..corpus import load_passages, load_queries
    from ..embed import get_embedder
    from ..store import document_text

    path = settings().cache_dir / "grader-seed.sqlite"
    passages = load_passages()
    texts = [p.content for p in passages] + [document_text(p.title, p.content) for p in passages]
    texts += [q.query for q in load_queries()]
    from .._embed_cache import CachedEmbedder

    # Filled from the course's own cache when it is warm; never written by a submission's kernel.
    CachedEmbedder(get_embedder("local", quiet=True), path=path).embed(texts)
    return path


def grade_one(learner: str, path: Path, options: Options, seed: Path | None = None) -> Submission:
    """Grade one notebook in a fresh sandbox, kernel and database server; never raise for a broken one."""
    started = time.monotonic()
    sub = Submission(learner=learner, path=str(path))
    loaded = _load(sub, path, options)
    if loaded is None:
        return sub
    nb, exercise = loaded
    try:
        tests = hidden.load(exercise, options.hidden)
    except hidden.HiddenTestsError as exc:
        sub.status, sub.reason = "error", str(exc)
        return sub
    timeout = options.timeout or exercise.timeout
    cell_timeout = min(options.cell_timeout or timeout, timeout)
    try:
        with workspace.workspace(caps=options.caps, sandboxed=options.sandboxed) as ws:
            try:
                _run_and_score(sub, nb, tests, ws, seed, timeout=timeout, cell_timeout=cell_timeout)
            finally:
                ws.kill()
            sub.sandbox = _sandbox_report(ws)
    except Exception as exc:  # noqa: BLE001 - one submission's failure must not stop the batch
        sub.status, sub.reason = "error", f"the grader failed: {type(exc).__name__}: {exc}"[:500]
    sub.timings["total"] = round(time.monotonic() - started, 2)
    return sub


def _run_and_score(sub: Submission, nb: nbformat.NotebookNode, tests: hidden.HiddenTests,
                   ws: workspace.Workspace, seed: Path | None, *, timeout: int, cell_timeout: int) -> None:
    exercise = tests.exercise
    folder = ws.kernel_dir
    if seed is not None:  # a copy per kernel: one submission cannot poison another's cache
        (folder / ".cache").mkdir()
        shutil.copyfile(seed, folder / ".cache" / "embeddings.sqlite")
        if ws.kernel_uid is not None:
            for item in (folder / ".cache", folder / ".cache" / "embeddings.sqlite"):
                os.chown(item, ws.kernel_uid, ws.kernel_uid)
    with databases.submission_database(ws, statement_timeout=cell_timeout) as server:
        env = kernel_env(server.url, folder, sandboxed=ws.sandboxed)
        files = {} if ws.kernel_uid is None else \
            sandbox.identity(ws.root / "kernel-id", ws.kernel_uid, name="learner", home=env["HOME"])
        layout = sandbox.Layout(writable=[folder], readable=[*sandbox.python_paths(), ws.socket_dir],
                                env=env, cwd=folder, uid=ws.kernel_uid, files=files)
        kernel = runner.Kernel(folder=folder, env=env, uid=ws.kernel_uid, log=ws.root / "kernel.log",
                               wrap=lambda argv: ws.wrap(argv, layout))
        # Hidden inputs are in the probes, which run only after the learner's cells that they need.
        probes = tests.probes()
        needs = {q.id: q.needs for q in exercise.questions}
        def stop() -> None:  # over a cap: end the kernel and its queries, keep the database to score
            ws.kill_kernel()
            server.disconnect_learner()

        with workspace.Watch(ws, stop=stop):
            run = runner.execute(nb, probes=probes, kernel=kernel, cell_timeout=cell_timeout,
                                 notebook_timeout=timeout, needs=needs)
        scored = time.monotonic()
        _score(sub, tests, run, server.grader_url(statement_timeout=cell_timeout), nb=nb)
        sub.timings = {"execute": round(run.seconds, 2), "score": round(time.monotonic() - scored, 2)}
    usage = ws.cgroup.usage() if ws.cgroup else {}
    if ws.stopped:
        sub.status, sub.reason = "over_limit", f"stopped because {ws.stopped}; {sub.reason}".rstrip("; ")
    elif usage.get("oom_kills"):
        sub.status = "over_limit"
        cap = f"{ws.caps.memory / limits.GiB:g} GB"
        sub.reason = f"a process went past the {cap} memory cap and was killed; {sub.reason}".rstrip("; ")


def _sandbox_report(ws: workspace.Workspace) -> dict[str, Any]:
    caps = ws.caps
    if ws.cgroup is not None:
        ws.peak.update(ws.cgroup.usage())
    return {
        "isolation": "bubblewrap" if ws.sandboxed else "none (--trust-submissions)",
        "limits": ws.enforcement,
        "caps": {"memory_bytes": caps.memory, "disk_bytes": caps.disk, "tasks": caps.processes,
                 "cpu_seconds": caps.cpu_seconds},
        "used": {k: round(v, 2) if isinstance(v, float) else v for k, v in sorted(ws.peak.items())},
        "stopped": ws.stopped,
    }


def reference_embedder():
    """Return the embedder scorers compare with: local, cached in a file only the grader writes."""
    from .._embed_cache import CachedEmbedder
    from ..embed import get_embedder

    return CachedEmbedder(get_embedder("local", cache=False, quiet=True),
                          path=settings().cache_dir / "grader-reference.sqlite")


def _score(sub: Submission, tests: hidden.HiddenTests, run: runner.Execution, url: str,
           nb: nbformat.NotebookNode | None = None) -> None:
    exercise = tests.exercise
    embedder = reference_embedder()
    sub.status = "graded" if run.status == "ok" else run.status
    sub.reason = run.detail
    sub.execution = {k: v for k, v in asdict(run).items() if k not in ("probes", "early")}
    try:
        conn = db.connect(url)
    except db.CourseDatabaseError as exc:  # the notebook changed its role's password, for one
        sub.reason = f"could not connect to the submission's database after it ran: {exc}"
        sub.questions = [_question_record(q, blocked(q, sub.reason), None) for q in exercise.questions]
        return
    with conn:
        sub.reproducibility = {
            "postgres": db.server_version(conn), "pgvector": db.pgvector_version(conn),
            "embedder": f"{embedder.name} ({embedder.dim} dims)", "package": __version__,
            "tests_hash": tests.tests_hash,
        }
        ctx = Context(conn, embedder)
        for q in exercise.questions:
            inputs = tests.inputs[q.id]
            probe = run.probes.get(q.id)
            outcome = _score_probe(q, inputs, probe, run, ctx)
            early = run.early.get(q.id)
            if early is not None and early.after_cell:
                first = _score_probe(q, inputs, early, run, ctx)
                if first.points > outcome.points:
                    # The function was right where it was defined; a later cell broke it.
                    broke = culprits.later_cell_that_broke(nb, early.after_cell, q.needs) if nb is not None \
                        else f"a cell after cell {early.after_cell} changed something it uses"
                    outcome = replace(first, feedback=(
                        f"{first.feedback} (scored right after cell {early.after_cell}, where it is "
                        f"defined; at the end of the notebook it scored {outcome.points:g}: {broke})"))
            sub.questions.append(_question_record(q, outcome, probe))
    sub.score = round(sum(q["points"] for q in sub.questions), 2)


def _question_record(q, outcome: Outcome, probe: runner.Probe | None) -> dict[str, Any]:
    return {"id": q.id, "title": q.title, "points": max(0.0, min(float(outcome.points), q.points)),
            "max_points": q.points, "passed": bool(outcome.passed), "feedback": outcome.feedback,
            "parts": [{"name": p.name, "points": p.points, "max_points": p.max_points, "text": p.text,
                       "hint": p.hint} for p in outcome.parts],
            "seconds": round(probe.seconds, 2) if probe else 0.0}


def _score_probe(q, inputs: Any, probe: runner.Probe | None, run: runner.Execution, ctx: Context) -> Outcome:
    # Without data from the kernel (it died or hung) a question may still be scored on what the
    # database holds; anything that needs the learner's functions fails.
    error = probe.error if probe else (run.detail or "the notebook stopped before this question")
    data = probe.data if probe and probe.error is None else {"error": error}
    try:
        outcome = q.score(data, ctx, inputs)
    except Exception as exc:  # noqa: BLE001 - scorers should not raise; if one does, say so
        outcome = blocked(q, f"could not score: {type(exc).__name__}: {exc}")
    ctx.conn.rollback()
    return outcome


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
        want = sub.max if sub.learner.startswith("solution-") else 0.0
        problem = ""
        if sub.status != "graded":
            problem = f"status {sub.status}: {sub.reason}"
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
    p.add_argument("--gradescope", action="store_true", help="also write Gradescope results.json")
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

