"""The batch autograder: exact scores for realistic wrong answers, reports, validate."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The grader's own password-only server, apart from the learner's and the tests' trust-auth one.
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402
from pgvec_course.grading import grader, report  # noqa: E402

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"

# Knowledge base: kb.table is worth 4 (5 checks), kb.ask 6 (3 hidden questions).
EXPECTED = {
    "correct": (10, 4, 6),
    "correct-2": (10, 4, 6),  # the same notebook again: grading is reproducible
    "descending": (4, 4, 0),
    "distance_threshold": (6, 4, 2),
    "embeds_titles": (9.2, 3.2, 6),
    "fixed_question": (4, 4, 0),
    "l2_distance": (4, 4, 0),
    "limit_5": (4, 4, 0),
    "never_ran_ask": (4, 4, 0),
    "no_order_by": (4, 4, 0),
    "only_30_passages": (8.4, 2.4, 6),
    "returns_dicts": (4, 4, 0),
    "returns_ids_only": (4, 4, 0),
    "same_vector_everywhere": (8.4, 2.4, 6),
    "similarity_not_distance": (4, 4, 0),
    "wrong_dimension": (0, 0, 0),
}
FEEDBACK = {
    "descending": "distances are descending: nearest first means ascending order (did you add DESC?)",
    "l2_distance": "these look like L2 distances (<->), not cosine distances (<=>)",
    "limit_5": "expected 3 results, got 5: did you forget LIMIT?",
    "similarity_not_distance": "these look like cosine similarities (1 - distance), not cosine distances",
    "never_ran_ask": "not yet: ask() still raises NotImplementedError; replace the placeholder",
}


@pytest.fixture(scope="module")
def kb_grades(tmp_path_factory) -> Path:
    """Grade every knowledge-base fixture (and `correct` twice) through the CLI, two at a time."""
    out = tmp_path_factory.mktemp("grades")
    code = cli.main(["grade", str(SUBMISSIONS / "kb"), str(SUBMISSIONS / "kb" / "correct.ipynb"),
                     "--jobs", "2", "--out", str(out), "--timeout", "120", "--gradescope", "--quiet"])
    assert code == 0
    return out


def _result(out: Path, learner: str) -> dict:
    return json.loads((out / f"{learner}.json").read_text())


def test_fixture_scores_are_exact(kb_grades):
    with open(kb_grades / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {r["learner"]: (float(r["score"]), r["max"], r["status"], r["exercise"]) for r in rows}
    assert got == {name: (total, "10", "graded", "01_knowledge_base")
                   for name, (total, _, _) in EXPECTED.items()}
    for name, (_, table, ask) in EXPECTED.items():
        questions = _result(kb_grades, name)["questions"]
        assert [(q["id"], q["points"]) for q in questions] == [("kb.table", table), ("kb.ask", ask)], name


def test_feedback_names_the_mistake(kb_grades):
    for name, text in FEEDBACK.items():
        ask = _result(kb_grades, name)["questions"][1]
        assert ask["passed"] is False
        assert ask["feedback"].startswith(text), (name, ask["feedback"])
    table = _result(kb_grades, "only_30_passages")["questions"][0]
    assert table["feedback"] == "kb_passages has 30 rows; load at least 50 passages (3 of 5 inputs passed)"


def test_same_submission_twice_gets_the_same_grade(kb_grades):
    first, second = _result(kb_grades, "correct"), _result(kb_grades, "correct-2")
    for key in ("score", "status", "reproducibility"):
        assert first[key] == second[key]
    assert [(q["points"], q["feedback"]) for q in first["questions"]] == \
        [(q["points"], q["feedback"]) for q in second["questions"]]


def test_json_records_how_it_was_graded(kb_grades):
    result = _result(kb_grades, "correct")
    from pgvec_course.questions import get_exercise, tests_hash

    assert result["reproducibility"] == {
        "postgres": "18.4", "pgvector": "0.8.5", "embedder": "all-MiniLM-L6-v2 (384 dims)",
        "package": "0.1.0", "tests_hash": tests_hash(get_exercise("01_knowledge_base"))}
    assert set(result["timings"]) == {"execute", "score", "total"}
    assert result["execution"]["cells_run"] == 4  # the two pvc.check cells were skipped
    assert [q["seconds"] >= 0 for q in result["questions"]] == [True, True]


def test_markdown_and_gradescope_files(kb_grades):
    md = (kb_grades / "l2_distance.md").read_text()
    assert md.startswith("# 01_knowledge_base: l2_distance\n\n**Score: 4 / 10** (graded)\n")
    assert "- ✘ **ask(question): the 3 nearest passages** (`kb.ask`): 0 / 6. these look like L2" in md
    gs = json.loads((kb_grades / "l2_distance.results.json").read_text())
    assert gs["score"] == 4.0
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in gs["tests"]] == [
        ("kb.table: kb_passages: passages with embeddings", 4.0, 4, "passed"),
        ("kb.ask: ask(question): the 3 nearest passages", 0.0, 6, "failed")]


def test_nothing_outlives_the_batch(kb_grades):
    import psutil

    from pgvec_course.grading import workspace

    # Every process of a submission names its workspace (pgvec-course-<grader pid>-...) on its command line.
    mine = f"{workspace.PREFIX}{os.getpid()}-"
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if mine in " ".join(p.info["cmdline"] or [])]
    assert left == []
    assert [p for p in (workspace.SHM, Path(tempfile.gettempdir())) for e in p.glob(mine + "*")] == []


def test_find_submissions_reads_files_and_learner_folders(tmp_path):
    (tmp_path / "ada").mkdir()
    shutil.copy(SUBMISSIONS / "kb" / "correct.ipynb", tmp_path / "ada" / "Exercise 1.ipynb")
    shutil.copy(SUBMISSIONS / "kb" / "limit_5.ipynb", tmp_path / "bob.ipynb")
    (tmp_path / "notes.txt").write_text("not a notebook")
    assert grader.find_submissions([tmp_path]) == [
        ("ada", tmp_path / "ada" / "Exercise 1.ipynb"), ("bob", tmp_path / "bob.ipynb")]
    with pytest.raises(FileNotFoundError, match="no notebook or folder at"):
        grader.find_submissions([tmp_path / "missing"])


def test_a_notebook_without_an_exercise_is_not_gradable(tmp_path):
    nb = json.loads((SUBMISSIONS / "kb" / "correct.ipynb").read_text())
    del nb["metadata"]["pgvec_course"]
    (tmp_path / "anon.ipynb").write_text(json.dumps(nb))
    sub = grader.grade_one("anon", tmp_path / "anon.ipynb", grader.Options())
    assert sub.status == "not_gradable"
    assert sub.reason == "the notebook names no exercise; pass --exercise NAME"
    assert report.summary([sub]).splitlines()[2] == "anon     -         0/0    not_gradable  0.0"


def test_validate_flags_a_solution_that_loses_points(tmp_path):
    for folder, name, source in (("solutions", "01_kb", "correct"), ("solutions", "01_kb_l2", "l2_distance"),
                                 ("exercises", "01_kb", "never_ran_ask")):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(SUBMISSIONS / "kb" / f"{source}.ipynb", tmp_path / folder / f"{name}.ipynb")
    checked = {sub.learner: problem for sub, problem in grader.validate(root=tmp_path, jobs=2)}
    assert checked["solution-01_kb"] == ""
    assert checked["solution-01_kb_l2"].startswith("scored 4, expected 10 (kb.ask: these look like L2")
    # An exercise must score zero: this one keeps the table code, so it does not.
    assert checked["exercise-01_kb"].startswith("scored 4, expected 0 (kb.table: 60 passages")


def test_validate_the_course_notebooks(capsys):
    if not any((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no notebooks yet (issue 7)")
    assert cli.main(["validate", "--root", str(ROOT)]) == 0, capsys.readouterr().out


def test_one_submission_writes_gradescope_results_json(tmp_path):
    sub = grader.Submission(learner="ada", path="ada.ipynb", exercise="01_knowledge_base", status="hung",
                            reason="cell 3 ran past 10 s and the kernel did not stop", score=4.0, max=10.0,
                            questions=[{"id": "kb.table", "title": "t", "points": 4.0, "max_points": 4,
                                        "passed": True, "feedback": "ok", "seconds": 0.1}],
                            timings={"total": 12.5})
    report.write_all([sub], tmp_path, gradescope=True)
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "score": 4.0, "execution_time": 12.5,
        "output": "a cell would not stop; the remaining questions failed: "
                  "cell 3 ran past 10 s and the kernel did not stop",
        "tests": [{"name": "kb.table: t", "score": 4.0, "max_score": 4, "status": "passed", "output": "ok"}]}
    assert (tmp_path / "grades.csv").read_text() == \
        "learner,exercise,score,max,status\nada,01_knowledge_base,4,10,hung\n"
