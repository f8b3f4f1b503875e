"""How long does grading take? 20 knowledge-base submissions with --jobs 1 and 2, against plain execution.

    .venv/bin/python benchmarks/grade_speed.py [--n 20]

The submissions are the test fixtures (tests/fixtures/submissions/kb), cycled to n. The baseline
runs each notebook once in a fresh kernel against an existing database, as `jupyter nbconvert
--execute` would: what grading adds is a database and role per submission, the probes and the
scoring. Uses the grader's own server (PGVEC_GRADER_DATA_DIR), never a learner's data.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pgvec_course.grading import databases, grader, runner

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
    """Execute each notebook in a fresh kernel, no grading; return the seconds of each."""
    admin = databases.admin_url()
    seconds = []
    with databases.submission_database(admin) as box:
        for _, path in subs:
            work = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
            (work / ".cache").mkdir()
            shutil.copyfile(seed, work / ".cache" / "embeddings.sqlite")
            nb = nbformat.read(path, as_version=4)
            if skip_checks:  # as the grader does
                nb.cells = [c for c in nb.cells if not runner.is_check_cell(c.source)]
            started = time.perf_counter()
            NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=120).execute(
                cwd=str(work), env=grader.kernel_env(box.url, work))
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(work, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pvc-bench-subs-"))
    subs = make_submissions(args.n, folder)
    databases.prepare(databases.admin_url())
    seed = grader.seed_cache()

    plain = plain_execution(subs, seed)
    bare = plain_execution(subs, seed, skip_checks=True)
    rows = [("plain execution (no grading), 1 at a time", sum(plain), sum(plain) / len(plain), None),
            ("same, without the pvc.check cells", sum(bare), sum(bare) / len(bare), None)]
    per_sub: dict[int, list[float]] = {}
    for jobs in (1, 2):
        started = time.perf_counter()
        results = grader.grade_batch(subs, options=grader.Options(timeout=120), jobs=jobs, progress=False)
        wall = time.perf_counter() - started
        assert all(r.status == "graded" for r in results), [(r.learner, r.status) for r in results]
        per_sub[jobs] = [r.timings["total"] for r in results]
        mean = sum(per_sub[jobs]) / len(subs)
        rows.append((f"pgvec-course grade --jobs {jobs}", wall, wall / len(subs), mean))
    shutil.rmtree(folder, ignore_errors=True)

    base = sum(plain) / len(plain)
    print(f"\n{args.n} knowledge-base submissions ({len(set(p.stem for p in FIXTURES.glob('*.ipynb')))} "
          "distinct fixtures, cycled)\n")
    print(f"{'mode':<44} {'wall s':>7} {'wall/sub s':>10} {'each sub s':>10} {'vs plain':>8}")
    for name, wall, per, each in rows:
        each = each if each is not None else per
        print(f"{name:<44} {wall:7.1f} {per:10.2f} {each:10.2f} {per / base:7.2f}x")
    print("\nThe grader skips pvc.check cells (they do not count), so it can beat plain execution.")
    print(f"grading overhead per submission (--jobs 1, own time minus plain execution without checks): "
          f"{sum(per_sub[1]) / len(subs) - sum(bare) / len(bare):+.2f} s; slowest graded submission "
          f"{max(per_sub[1]):.1f} s (--jobs 1), {max(per_sub[2]):.1f} s (--jobs 2)")


if __name__ == "__main__":
    main()
