"""The gradebook on disk: written as each learner finishes, locked against a second grader, resumable."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402
from pgvec_course.grading import grader, report  # noqa: E402
from pgvec_course.isolation import sandbox, workspace  # noqa: E402

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"
# Without bubblewrap (never in CI) grade trusted: the gradebook does not depend on the sandbox.
SANDBOX = [] if sandbox.support().ok or os.environ.get("CI") == "true" else ["--trust-submissions"]


def _sub(learner: str, score: float) -> grader.Submission:
    return grader.Submission(learner=learner, path=f"{learner}.ipynb", exercise="01_knowledge_base",
                             score=score, max=10.0)


def test_each_learner_is_written_as_they_finish(tmp_path):
    with report.Gradebook(tmp_path, learners=["ada", "bob", "cy"]) as book:
        book.add(_sub("bob", 4))
        assert (tmp_path / "grades.csv").read_text() == \
            "learner,exercise,score,max,status\nbob,01_knowledge_base,4,10,graded\n"
        book.add(_sub("ada", 10))
        assert (tmp_path / "grades.csv").read_text() == ("learner,exercise,score,max,status\n"
                                                         "ada,01_knowledge_base,10,10,graded\n"
                                                         "bob,01_knowledge_base,4,10,graded\n")
        assert book.has("ada", Path("ada.ipynb")) and not book.has("ada", Path("elsewhere.ipynb"))
        assert not book.has("cy", Path("cy.ipynb"))
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".grading.lock", "ada.json", "ada.md", "bob.json", "bob.md", "grades.csv"]
    assert not (tmp_path / ".grading.lock").exists()


def test_a_second_grader_on_the_same_out_is_refused(tmp_path, capsys):
    with report.Gradebook(tmp_path, learners=["ada"]):
        with pytest.raises(report.GradebookBusy) as busy:
            report.Gradebook(tmp_path, learners=["ada"])
        assert str(busy.value) == (f"another grader (pid {os.getpid()} on {os.uname().nodename}) is writing "
                                   f"to {tmp_path}; wait for it to finish, or pass another --out")
        correct = str(SUBMISSIONS / "kb" / "correct.ipynb")
        code = cli.main(["grade", correct, "--out", str(tmp_path), "--quiet", *SANDBOX])
        assert code == 1
        assert capsys.readouterr().err.startswith("error: another grader (pid ")


def test_a_killed_graders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from pgvec_course.grading import report; "
        f"book = report.Gradebook(Path({str(tmp_path)!r}), learners=[]); print('locked', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(report.GradebookBusy):
        report.Gradebook(tmp_path, learners=[])
    holder.kill()
    holder.wait()
    with report.Gradebook(tmp_path, learners=[]):
        assert (tmp_path / ".grading.lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"


def _rows(out: Path) -> dict[str, str]:
    with open(out / "grades.csv", newline="") as f:
        return {r["learner"]: r["score"] for r in csv.DictReader(f)}


def test_kill_9_mid_batch_then_resume_finishes_it(tmp_path):
    if not sandbox.support().ok and os.environ.get("CI") != "true":
        pytest.skip(sandbox.support().detail)
    class_dir, out = tmp_path / "class", tmp_path / "grades"
    class_dir.mkdir()
    names = ["correct", "l2_distance", "limit_5", "descending", "no_order_by", "only_30_passages"]
    for name in names:
        shutil.copy(SUBMISSIONS / "kb" / f"{name}.ipynb", class_dir)
    command = [sys.executable, "-m", "pgvec_course.cli", "grade", str(class_dir), "--out", str(out)]
    grading = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not ((out / "grades.csv").exists() and len(_rows(out)) >= 2):
        assert time.monotonic() < deadline and grading.poll() is None, "the grader ended before it was killed"
        time.sleep(0.2)
    os.killpg(grading.pid, signal.SIGKILL)
    grading.wait()
    graded = _rows(out)
    assert 2 <= len(graded) < len(names)  # whole rows only: grades.csv is replaced, never half-written
    kept = {name: (out / f"{name}.json").read_text() for name in graded}
    dead = f"{workspace.PREFIX}{grading.pid}-"
    code = cli.main(["grade", str(class_dir), "--out", str(out), "--resume", "--quiet"])
    assert code == 0
    assert _rows(out) == {"correct": "10", "descending": "4", "l2_distance": "8", "limit_5": "8.4",
                          "no_order_by": "4.33", "only_30_passages": "9.6"}
    assert {name: (out / f"{name}.json").read_text() for name in graded} == kept  # not graded twice
    assert [e.name for e in workspace.SHM.glob(dead + "*")] == []  # the killed run's leftovers are gone
    assert json.loads((out / "correct.json").read_text())["status"] == "graded"
