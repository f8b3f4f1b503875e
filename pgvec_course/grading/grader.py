"""Grade one notebook: its sandbox, kernel and database server, the probes, and the scores.

The batch around it (`pgvec-course grade` and `validate`) is in batch.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nbformat

from .. import __version__, db
from ..config import settings
from ..isolation import databases, limits, sandbox, workspace
from ..questions import EXERCISES, Context, Exercise, Outcome, get_exercise
from ..questions.scoring import blocked
from . import culprits, hidden, runner

MAX_NOTEBOOK_BYTES = 64 * 2**20  # the grader reruns the code; outputs are all that make one bigger
# Environment variables a trusted (unsandboxed) kernel never inherits: API keys, other databases.
_SCRUB = ("OPENAI_", "PG", "DATABASE_URL", "JPY_", "JUPYTER_")


@dataclass
class Options:
    """How to grade: `exercise` overrides the notebooks' metadata; None timeouts use the exercise's.

    `sandboxed=False` (`--trust-submissions`) runs kernels without bubblewrap, as the grader's user;
    with `own_uid` too, as an unused uid instead (a root grader in a container that cannot run
    bubblewrap: Gradescope's). `public_checks` also scores the notebook's own checks (public
    inputs) of questions graded on hidden inputs, apart from the score (`Submission.public`).
    """

    exercise: str | None = None
    timeout: int | None = None
    cell_timeout: int | None = None
    caps: limits.Caps = field(default_factory=limits.Caps)
    sandboxed: bool = True
    hidden: Path | None = None  # folder of the hidden tests (default: hidden.default_folder())
    own_uid: bool = False
    public_checks: bool = False


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
    public: list[dict[str, Any]] = field(default_factory=list)  # Options.public_checks: not in the score


def _load(sub: Submission, path: Path, options: Options) -> tuple[nbformat.NotebookNode, Exercise] | None:
    if path.is_symlink():  # to the instructor's solutions, say: never read through it
        sub.status, sub.reason = "not_gradable", (f"{path.name} is a symbolic link to another file on this "
                                                  "machine, not a notebook; submit the notebook itself")
        return None
    if path.is_dir():
        sub.status, sub.reason = "not_gradable", f"{path.name} holds several notebooks; keep one per learner"
        return None
    with suppress(OSError):
        if (size := path.stat().st_size) > MAX_NOTEBOOK_BYTES:  # read whole into the grader, no cap on it
            sub.status, sub.reason = "not_gradable", (
                f"the notebook is {size / 2**20:.0f} MB, more than the {MAX_NOTEBOOK_BYTES // 2**20} MB the "
                "grader reads: clear its outputs (Edit > Clear Outputs of All Cells), save, and submit again")
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


def kernel_env(url: str, folder: Path, *, sandboxed: bool, own_uid: bool = False) -> dict[str, str]:
    """Return the environment of a submission's kernel: its own database, offline, no secrets.

    In the sandbox, or as a uid of its own, it starts empty; a trusted kernel gets the grader's, scrubbed.
    """
    if sandboxed or own_uid:
        path = [str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        # Without the sandbox's private home, the kernel's own folder is the one place it may write.
        env = {"PATH": os.pathsep.join(path),
               "HOME": sandbox.Layout().home if sandboxed else str(folder), "USER": "learner",
               "LOGNAME": "learner", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
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
        space = workspace.workspace(caps=options.caps, sandboxed=options.sandboxed, own_uid=options.own_uid)
        with space as ws:
            try:
                _run_and_score(sub, nb, tests, ws, seed, timeout=timeout, cell_timeout=cell_timeout,
                               public=options.public_checks)
            finally:
                ws.kill()
            sub.sandbox = _sandbox_report(ws)
    except Exception as exc:  # noqa: BLE001 - one submission's failure must not stop the batch
        sub.status, sub.reason = "error", f"the grader failed: {type(exc).__name__}: {exc}"[:500]
    sub.timings["total"] = round(time.monotonic() - started, 2)
    return sub


def _run_and_score(sub: Submission, nb: nbformat.NotebookNode, tests: hidden.HiddenTests,
                   ws: workspace.Workspace, seed: Path | None, *, timeout: int, cell_timeout: int,
                   public: bool = False) -> None:
    exercise = tests.exercise
    folder = ws.kernel_dir
    if seed is not None:  # a copy per kernel: one submission cannot poison another's cache
        (folder / ".cache").mkdir()
        shutil.copyfile(seed, folder / ".cache" / "embeddings.sqlite")
        if ws.kernel_uid is not None:
            for item in (folder / ".cache", folder / ".cache" / "embeddings.sqlite"):
                os.chown(item, ws.kernel_uid, ws.kernel_uid)
    with databases.submission_database(ws, statement_timeout=cell_timeout) as server:
        env = kernel_env(server.url, folder, sandboxed=ws.sandboxed, own_uid=ws.kernel_uid is not None)
        files = {} if ws.kernel_uid is None else \
            sandbox.identity(ws.root / "kernel-id", ws.kernel_uid, name="learner", home=env["HOME"])
        layout = sandbox.Layout(writable=[folder], readable=[*sandbox.python_paths(), ws.socket_dir],
                                env=env, cwd=folder, uid=ws.kernel_uid, files=files)
        kernel = runner.Kernel(folder=folder, env=env, uid=ws.kernel_uid, log=ws.root / "kernel.log",
                               wrap=lambda argv: ws.wrap(argv, layout))
        # Hidden inputs are in the probes, which run only after the learner's cells that they need.
        probes = tests.probes() | (public_probes(tests) if public else {})
        needs = {q.id: q.needs for q in exercise.questions}
        def stop() -> None:  # over a cap: end the kernel and its queries, keep the database to score
            ws.kill_kernel()
            server.disconnect_learner()

        with workspace.Watch(ws, stop=stop):
            run = runner.execute(nb, probes=probes, kernel=kernel, cell_timeout=cell_timeout,
                                 notebook_timeout=timeout, needs=needs)
        scored = time.monotonic()
        server.disconnect_learner()  # a query left running (statement_timeout = 0) must not hold locks
        shadows = server.set_aside_shadows()
        _score(sub, tests, run, server.grader_url(statement_timeout=cell_timeout), nb=nb)
        if shadows:
            sub.reason = "; ".join(filter(None, [sub.reason, (
                "set aside before scoring, as they share a name with PostgreSQL's own and the grader's "
                "queries would have called them: " + ", ".join(shadows))[:500]]))
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
        "isolation": "bubblewrap" if ws.sandboxed else "its own uid, no bubblewrap (the container is the "
                     "sandbox)" if ws.kernel_uid is not None else "none (--trust-submissions)",
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
        for q in exercise.questions:  # the notebook's own checks, when asked for: not in the score
            probe = run.probes.get(PUBLIC.format(q.id))
            if probe is not None:
                sub.public.append(_question_record(q, _score_probe(q, q.public, probe, run, ctx), probe))
    sub.score = round(sum(q["points"] for q in sub.questions), 2)


PUBLIC = "{}:public"  # the probe of a question's public check, beside its graded one


def public_probes(tests: hidden.HiddenTests) -> dict[str, str]:
    """Return the probes of the public checks of questions whose graded inputs are hidden."""
    return {PUBLIC.format(q.id): q.probe(q.public, grading=True) for q in tests.exercise.questions
            if q.public is not None and tests.inputs[q.id] is not None}


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
