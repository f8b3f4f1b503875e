"""Grading a class: 200 submissions with --jobs 1 and --jobs 2, and what a class of 1,000 costs on Gradescope.

    .venv/bin/python benchmarks/class_scale.py [--n 200] [--sample 3]      (as root, like CI)

The class is built from the test fixtures (tests/fixtures/submissions/kb): 40% right (correct, own
topic, psycopg2 style, a later cell that breaks ask), 25% partly right (L2 distances, LIMIT 5, a
distance threshold, titles embedded, ...), 25% wrong (DESC, no ORDER BY, ask never run, the wrong
dimension, ...) and 10% slow (a correct notebook with a cell that burns 8 s of CPU).

Part 1 grades the class as an instructor would on this machine (`grade`, sandboxed), one at a
time and two at a time: submissions per minute, the peak memory of a submission (its kernel,
children and database server, from its cgroup) and of the grader, and the slowest submission.

Part 2 is Gradescope, which grades each submission alone in a fresh container with half a virtual
CPU and 768 MB by default. A sample of each kind goes through the autograder's run_autograder (a
kernel as its own uid, as in Gradescope's container), first unconstrained, then in a cgroup capped
like that container: a CFS quota of 50 ms per 100 ms (what Docker's --cpus=0.5 sets) and 768 MB.
The capped wall time is the seconds per submission there; the uncapped run checks the estimate
"CPU seconds / 0.5, plus the seconds nothing ran" against it; a third run, uncapped, in bubblewrap,
says what the sandbox would cost where a container allows it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

from pgvec_course.authoring import gradescope
from pgvec_course.grading import batch, grader
from pgvec_course.isolation import limits, sandbox

REPO = Path(__file__).resolve().parents[1]
KB = REPO / "tests" / "fixtures" / "submissions" / "kb"
KINDS = {  # kind -> (share of the class, fixtures)
    "right": (0.40, ["correct", "own_topic", "psycopg2_tutorial", "later_cell_breaks_ask"]),
    "partial": (0.25, ["distance_threshold", "embeds_titles", "l2_distance", "limit_5", "only_30_passages",
                       "psycopg2_no_commit", "similarity_right_ids"]),
    "wrong": (0.25, ["descending", "fixed_question", "never_ran_ask", "no_order_by", "returns_dicts",
                     "same_vector_everywhere", "similarity_not_distance", "wrong_dimension"]),
    "slow": (0.10, ["correct"]),
}
BURN = "import time\nstarted = time.process_time()\nwhile time.process_time() - started < 8:\n    pass"
GS_CPU, GS_MEMORY = 0.5, 768 * 2**20  # Gradescope's default container


def make_class(n: int, folder: Path) -> list[tuple[str, Path, str]]:
    """Write n notebooks into `folder`, each kind in its share; return (learner, path, kind) triples."""
    subs = []
    for kind, (share, names) in KINDS.items():
        for i in range(round(n * share)):
            nb = nbformat.read(KB / f"{names[i % len(names)]}.ipynb", as_version=4)
            if kind == "slow":
                nb.cells.append(nbformat.v4.new_code_cell(BURN))
            learner = f"{kind}{i:03d}-{names[i % len(names)]}"
            nbformat.write(nb, folder / f"{learner}.ipynb")
            subs.append((learner, folder / f"{learner}.ipynb", kind))
    return subs


class Load:
    """Sample the machine's 1-minute load average every 5 s while a part runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._done.wait(5):
                return

    def __str__(self) -> str:
        mean, top = statistics.mean(self.samples), max(self.samples)
        return f"load {mean:.1f} (max {top:.1f}) on {os.cpu_count()} cores"


def grade_class(subs: list[tuple[str, Path, str]], jobs: int) -> dict:
    """Grade the class `jobs` at a time, sandboxed; return the figures."""
    kinds = {learner: kind for learner, _, kind in subs}
    with Load() as load:
        started = time.perf_counter()
        results = batch.grade_batch([(learner, path) for learner, path, _ in subs],
                                     options=grader.Options(timeout=120), jobs=jobs, progress=False)
        wall = time.perf_counter() - started
    bad = [(r.learner, r.status, r.reason) for r in results if r.status != "graded"]
    assert not bad, bad
    slowest = max(results, key=lambda r: r.timings["total"])
    used = [r.sandbox.get("used", {}) for r in results]
    return {"jobs": jobs, "wall": wall, "per_minute": 60 * len(subs) / wall, "load": str(load),
            "memory": max(u.get("memory_peak", 0) for u in used),
            "slowest": (slowest.learner, kinds[slowest.learner], slowest.timings["total"]),
            "mean": {k: statistics.mean(r.score for r in results if kinds[r.learner] == k) for k in KINDS},
            "grader_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _reach_python(argv: list[str], root: Path) -> list[str]:
    # As tests/test_gradescope.py does: a Python under /root (pyenv) is out of reach of a kernel's
    # uid; show it through an open tmpfs on /root in a private mount namespace (Gradescope's is /usr/bin).
    python = Path(os.path.realpath(sys._base_executable))
    closed = [p for p in reversed(python.parents) if not os.stat(p).st_mode & 0o001]
    if not closed:
        return argv
    top, save = closed[0], root / ".python"
    save.mkdir(exist_ok=True)
    script = ('set -e; mount --bind "$1" "$3"; mount -t tmpfs -o mode=0755 tmpfs "$2"; mkdir "$1"; '
              'mount --bind "$3" "$1"; shift 3; exec "$@"')
    child = top / python.relative_to(top).parts[0]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(child), str(top),
            str(save), *argv]


def _mounts(controllers: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        if after.split()[:1] == ["cgroup"]:
            found |= {c: Path(before.split()[4]) for c in after.split()[2].split(",") if c in controllers}
    return found


class Container:
    """A cgroup capped like Gradescope's default container (or not capped at all): CPU and memory used."""

    def __init__(self, *, capped: bool) -> None:
        mounts, own = _mounts(("cpu", "cpuacct", "memory")), limits._own_paths()
        name = f"{limits.PREFIX}{os.getpid()}-gradescope"
        self.dirs = {c: mounts[c] / own.get(c, "/").lstrip("/") / name for c in ("cpu", "cpuacct", "memory")}
        for path in self.dirs.values():
            path.mkdir()
        if capped:
            (self.dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
            (self.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(100000 * GS_CPU)))
            (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(GS_MEMORY))
        self.needed = 0

    def prefix(self) -> list[str]:
        procs = [str(d / "cgroup.procs") for d in self.dirs.values()]
        return ["/bin/sh", "-c", 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; '
                                 'shift; exec "$@"', "sh", *procs, "--"]

    def watch(self, done: threading.Event) -> None:
        """Keep the peak of memory the processes need (anonymous + shared), page cache left out."""
        while not done.wait(0.2):
            lines = (self.dirs["memory"] / "memory.stat").read_text().splitlines()
            stat = dict(line.split() for line in lines)
            self.needed = max(self.needed, int(stat["total_rss"]) + int(stat["total_shmem"]))

    def usage(self) -> dict:
        mem = self.dirs["memory"]
        oom = (mem / "memory.oom_control").read_text()
        return {"cpu": int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9,
                "peak": int((mem / "memory.max_usage_in_bytes").read_text()), "needed": self.needed,
                "oom": int(oom.split("oom_kill ")[1].split()[0]) if "oom_kill " in oom else 0}

    def remove(self) -> None:
        limits.Cgroup({"cpu": self.dirs["cpu"], "x": self.dirs["cpuacct"], "y": self.dirs["memory"]}).remove()


def autograder_root() -> Path:
    """Lay out /autograder as setup.sh leaves it, with this checkout's virtualenv as its venv."""
    root = Path(tempfile.mkdtemp(prefix="pvc-gradescope-bench-"))
    root.chmod(0o755)
    (root / "source" / "hidden").mkdir(parents=True)
    shutil.copy(REPO / "solutions" / "hidden" / "01_knowledge_base.py", root / "source" / "hidden")
    (root / "source" / gradescope.CONFIG).write_text(json.dumps({"exercise": "01_knowledge_base",
                                                                   "isolation": "uid"}))
    (root / "source").chmod(0o700)
    (root / "pgvec-course").mkdir()
    (root / "pgvec-course" / "venv").symlink_to(Path(sys.prefix))
    (root / "run_autograder").write_text(gradescope.RUN_AUTOGRADER)
    (root / "run_autograder").chmod(0o755)
    env = {**os.environ, "PGVEC_GRADER_DATA_DIR": str(root / "pgvec-course" / "data"),
           "PGVEC_CACHE_DIR": str(root / "pgvec-course" / "cache")}
    setup = [sys.executable, "-m", "pgvec_course.authoring.gradescope", "setup", "--root", str(root)]
    subprocess.run(_reach_python(setup, root), check=True, env=env, stdout=subprocess.DEVNULL)
    return root


def on_gradescope(root: Path, path: Path, *, capped: bool, isolation: str = "uid") -> dict:
    """Run run_autograder on one notebook in a fresh container-like cgroup; return its figures."""
    for folder in ("submission", "results"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir()
    (root / "source" / gradescope.CONFIG).write_text(json.dumps({"exercise": "01_knowledge_base",
                                                                   "isolation": isolation}))
    shutil.copy(path, root / "submission" / path.name)
    box, done = Container(capped=capped), threading.Event()
    watcher = threading.Thread(target=box.watch, args=(done,), daemon=True)
    watcher.start()
    try:
        started = time.perf_counter()
        subprocess.run(box.prefix() + _reach_python([str(root / "run_autograder")], root), check=True,
                       env={**os.environ, "PGVEC_AUTOGRADER_ROOT": str(root)}, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
        data = json.loads((root / "results" / "results.json").read_text())
        isolation = data["extra_data"]["isolation"]
        return {"wall": wall, "score": data["score"], "isolation": isolation, **box.usage()}
    finally:
        done.set()
        box.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="submissions in the class (default 200)")
    parser.add_argument("--sample", type=int, default=3, help="submissions of each kind run as on Gradescope")
    args = parser.parse_args()
    if os.geteuid() != 0 or not sandbox.support().ok:
        raise SystemExit("run as root with bubblewrap (cgroups, a uid per kernel): like CI")
    folder = Path(tempfile.mkdtemp(prefix="pvc-class-"))
    subs = make_class(args.n, folder)
    batch.prepare(grader.Options())
    counts = [f"{sum(k == kind for *_, k in subs)} {kind}" for kind in KINDS]
    print(f"{len(subs)} submissions: " + ", ".join(counts))
    passes = [grade_class(subs, jobs) for jobs in (1, 2)]
    print(f"\n{'grade (sandboxed)':<18} {'wall s':>7} {'subs/min':>8} {'s/sub':>6} {'peak MB':>8} "
          f"{'grader MB':>9}  slowest submission                      machine")
    for p in passes:
        name, kind, seconds = p["slowest"]
        print(f"--jobs {p['jobs']:<11} {p['wall']:7.0f} {p['per_minute']:8.1f} {p['wall'] / len(subs):6.2f} "
              f"{p['memory'] / 2**20:8.0f} {p['grader_rss'] / 2**20:9.0f}  {name} ({kind}) {seconds:.1f} s"
              f"{'':<4}{p['load']}")
    print("mean score by kind: " + ", ".join(f"{k} {v:.2f}" for k, v in passes[0]["mean"].items())
          + f"; --jobs 2 is {passes[0]['wall'] / passes[1]['wall']:.2f}x --jobs 1")
    print("peak MB: the largest submission's kernel, children and database server (its cgroup); grader MB: "
          "the grader process, reference embedder included")

    root = autograder_root()
    rows = []
    try:
        with Load() as load:
            for kind in KINDS:
                for learner, path, _ in [s for s in subs if s[2] == kind][:args.sample]:
                    free = on_gradescope(root, path, capped=False)
                    capped = on_gradescope(root, path, capped=True)
                    boxed = on_gradescope(root, path, capped=False, isolation="bubblewrap")
                    assert "own uid" in free["isolation"] and boxed["isolation"] == "bubblewrap", boxed
                    rows.append((learner, kind, free, capped, boxed))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nrun_autograder, one submission per container ({load})")
    print(f"{'submission':<34} {'score':>5} {'free s':>7} {'CPU s':>6} {'estimate s':>10} "
          f"{'½ CPU s':>8} {'needs MB':>8} {'peak MB':>8} {'OOM':>3}")
    for learner, _, free, capped, _ in rows:
        estimate = free["cpu"] / GS_CPU + max(0.0, free["wall"] - free["cpu"])
        print(f"{learner:<34} {capped['score']:5g} {free['wall']:7.1f} {free['cpu']:6.1f} {estimate:10.1f} "
              f"{capped['wall']:8.1f} {capped['needed'] / 2**20:8.0f} {capped['peak'] / 2**20:8.0f} "
              f"{capped['oom']:3d}")
    print("free s / CPU s: wall and CPU seconds (every process) without a cap; estimate s = CPU s / 0.5 + "
          "the seconds nothing ran (free s - CPU s, when positive); ½ CPU s: measured under the quota")
    per_kind = {k: statistics.mean(r[3]["wall"] for r in rows if r[1] == k) for k in KINDS}
    uid, boxed = (statistics.mean(r[i]["wall"] for r in rows if r[1] != "slow") for i in (2, 4))
    print(f"Without a cap, the same notebooks (slow ones left out) take {uid:.1f} s as their own uid and "
          f"{boxed:.1f} s in bubblewrap ({boxed / uid:.2f}x), when the container allows it.")
    mean = sum(share * per_kind[k] for k, (share, _) in KINDS.items())
    local = 1000 / passes[1]["per_minute"]
    print(f"\nOn Gradescope's default container (½ vCPU, 768 MB) a submission of this mix takes {mean:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in per_kind.items())}), measured under that CPU quota "
          "on this machine.")
    print(f"A class of 1,000: each learner waits about {mean:.0f} s for feedback; {1000 * mean / 3600:.1f} "
          f"container-hours in all, run in parallel as Gradescope schedules them. Here, with --jobs 2: "
          f"{local:.0f} minutes for the 1,000.")
    capped = [r[3] for r in rows]
    print(f"Memory: at most {max(c['needed'] for c in capped) / 2**20:.0f} MB needed (anonymous + shared, "
          f"the workspace in /dev/shm included), {max(c['peak'] for c in capped) / 2**20:.0f} MB with page "
          f"cache, {sum(c['oom'] for c in capped)} OOM kills, against the 768 MB default.")


if __name__ == "__main__":
    main()
