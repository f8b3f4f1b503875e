"""How long does grading take? 20 knowledge-base submissions, sandboxed and not, against plain execution.

    .venv/bin/python benchmarks/grade_speed.py [--n 20]

The submissions are the test fixtures (tests/fixtures/submissions/kb), cycled to n. The baseline
runs each notebook once in a fresh kernel against one running database server, as `jupyter
nbconvert --execute` would. `--trust-submissions` grading adds a database server per submission,
the probes and the scoring; the sandboxed run adds bubblewrap, the uid switch, the cgroup and the
watch. The two run interleaved, one submission at a time; their ratio is the sandbox's overhead
per submission (target: under 1.5x). Then the sandboxed batch with --jobs 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pgvec_course.grading import batch, grader, runner
from pgvec_course.isolation import databases, limits, sandbox, workspace

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "submissions" / "kb"


def make_submissions(n: int, folder: Path) -> list[tuple[str, Path]]:
    """Copy the fixtures into `folder`, cycling until there are n; return (learner, path) pairs."""
    sources = sorted(FIXTURES.glob("*.ipynb"))
    subs = []
    for i in range(n):
        path = folder / f"learner{i:02d}-{sources[i % len(sources)].stem}.ipynb"
        shutil.copy(sources[i % len(sources)], path)
        subs.append((path.stem, path))
    return subs


def plain_execution(subs: list[tuple[str, Path]], seed: Path, *, skip_checks: bool = False) -> list[float]:
    """Execute each notebook in a fresh kernel, no grading, one server for all; return the seconds of each."""
    seconds = []
    with workspace.workspace(caps=limits.Caps(), sandboxed=False) as ws, \
            databases.submission_database(ws) as server:
        for _, path in subs:
            work = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
            (work / ".cache").mkdir()
            shutil.copyfile(seed, work / ".cache" / "embeddings.sqlite")
            nb = nbformat.read(path, as_version=4)
            if skip_checks:  # as the grader does
                nb.cells = [c for c in nb.cells if not runner.is_check_cell(c.source)]
            started = time.perf_counter()
            NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=120).execute(
                cwd=str(work), env=grader.kernel_env(server.url, work, sandboxed=False))
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(work, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    if not sandbox.support().ok:
        raise SystemExit(f"cannot measure the sandbox: {sandbox.support().detail}")
    folder = Path(tempfile.mkdtemp(prefix="pvc-bench-subs-"))
    subs = make_submissions(args.n, folder)
    seed = batch.prepare(grader.Options())

    plain = plain_execution(subs, seed)
    bare = plain_execution(subs, seed, skip_checks=True)
    rows = [("plain execution (no grading), 1 at a time", sum(plain), sum(plain) / len(plain), None),
            ("same, without the pvc.check cells", sum(bare), sum(bare) / len(bare), None)]
    # Trusted and sandboxed, one submission at a time and interleaved, so a busy moment on a shared
    # machine weighs on both alike.
    each: dict[str, list[float]] = {"trusted": [], "sandboxed": []}
    for i, (learner, path) in enumerate(subs):
        modes = [("trusted", False), ("sandboxed", True)]
        for name, sandboxed in modes if i % 2 == 0 else modes[::-1]:
            result = grader.grade_one(learner, path, grader.Options(timeout=120, sandboxed=sandboxed), seed)
            assert result.status == "graded", (learner, result.status, result.reason)
            each[name].append(result.timings["total"])
    for name, label in (("trusted", "grade --trust-submissions --jobs 1"), ("sandboxed", "grade --jobs 1")):
        rows.append((label, sum(each[name]), sum(each[name]) / len(subs), None))
    started = time.perf_counter()
    results = batch.grade_batch(subs, options=grader.Options(timeout=120), jobs=2, progress=False)
    wall = time.perf_counter() - started
    assert all(r.status == "graded" for r in results), [(r.learner, r.status, r.reason) for r in results]
    each["jobs2"] = [r.timings["total"] for r in results]
    rows.append(("grade --jobs 2", wall, wall / len(subs), sum(each["jobs2"]) / len(subs)))
    shutil.rmtree(folder, ignore_errors=True)

    base = sum(plain) / len(plain)
    print(f"\n{args.n} knowledge-base submissions ({len(set(p.stem for p in FIXTURES.glob('*.ipynb')))} "
          "distinct fixtures, cycled)\n")
    print(f"{'mode':<44} {'wall s':>7} {'wall/sub s':>10} {'each sub s':>10} {'vs plain':>8}")
    for name, wall, per, own in rows:
        own = own if own is not None else per
        print(f"{name:<44} {wall:7.1f} {per:10.2f} {own:10.2f} {per / base:7.2f}x")
    trusted, boxed = (sum(each[k]) / len(subs) for k in ("trusted", "sandboxed"))
    print("\nThe grader skips pvc.check cells (they do not count), so it can beat plain execution.")
    print(f"sandbox overhead per submission (--jobs 1): {boxed:.2f} s sandboxed / {trusted:.2f} s trusted = "
          f"{boxed / trusted:.2f}x (target under 1.5x); slowest sandboxed submission "
          f"{max(each['sandboxed']):.1f} s (--jobs 1), {max(each['jobs2']):.1f} s (--jobs 2)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
