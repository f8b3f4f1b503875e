"""The batch autograder: exact scores for realistic wrong answers, reports, validate."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The grader's own password-only server, apart from the learner's and the tests' trust-auth one.
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402
from pgvec_course.grading import batch, grader, report  # noqa: E402
from pgvec_course.isolation import sandbox  # noqa: E402

# Scores do not depend on the sandbox: without bubblewrap (never in CI, where test_sandbox and the
# hostile batch insist on it) these tests grade trusted rather than fail.
SANDBOX = [] if sandbox.support().ok or os.environ.get("CI") == "true" else ["--trust-submissions"]

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"

# Knowledge base fixtures (kb/): total, kb.table, kb.ask.
EXPECTED = {
    "correct": (10, 4, 6),
    "correct-2": (10, 4, 6),  # the same notebook again: grading is reproducible
    "descending": (4, 4, 0),
    "distance_threshold": (9.33, 4, 5.33),
    "embeds_titles": (7.17, 2.5, 4.67),
    "fixed_question": (4.33, 4, 0.33),
    "l2_distance": (8, 4, 4),
    "later_cell_breaks_ask": (10, 4, 6),
    "limit_5": (8.4, 4, 4.4),
    "never_ran_ask": (4, 4, 0),
    "no_order_by": (4.33, 4, 0.33),
    "only_30_passages": (9.6, 3.6, 6),
    "own_topic": (10, 4, 6),
    "psycopg2_no_commit": (9, 3, 6),
    "psycopg2_tutorial": (10, 4, 6),
    "returns_dicts": (4, 4, 0),
    "returns_ids_only": (4, 4, 0),
    "same_vector_everywhere": (4.86, 2.53, 2.33),
    "similarity_not_distance": (4, 4, 0),
    "similarity_right_ids": (8, 4, 4),
    "wrong_dimension": (0, 0, 0),
}
# Issue 12's kinds of problem: what it is, the score before (today's grader, measured on the same
# learner code in the templates of the time), the score now, and the range a fair instructor gives.
FAIR = {
    # too harsh
    "global_cursor": ("a provided cell closed the cursor exact_top_k uses", 7, 10, (10, 10)),
    "later_cell_breaks_ask": ("a later cell closed the cursor ask uses", 4, 10, (9, 10)),
    "l2_distance": ("the right passages, as L2 distances", 4, 8, (7, 9)),
    "similarity_right_ids": ("the right passages, as similarities", 4, 8, (7, 9)),
    "rrf_zero_based": ("RRF with 0-based ranks", 9, 11.5, (10.5, 12.5)),
    "eval_precision_not_recall": ("precision computed for recall@5", 10, 11.5, (10.5, 12)),
    "psycopg2_no_commit": ("psycopg2, never committed", 0, 9, (6, 9)),
    "own_topic": ("passages on a topic of the learner's choice", 9.2, 10, (10, 10)),
    "psycopg2_tutorial": ("the tutorial's psycopg2 style", 10, 10, (10, 10)),
    # too lenient
    "same_vector_everywhere": ("one vector stored in every row", 8.4, 4.86, (2, 5.5)),
    "embeds_titles": ("titles embedded instead of content", 9.2, 7.17, (5, 8)),
    "only_79_passages": ("79 of the 276 passages exercise 3 needs", 12.5, 7.14, (5, 9)),
    "typed_in_results": ("sweep typed in, no index built", 10, 7.5, (6.5, 7.5)),
    "indexscan_off_leaks": ("SET enable_indexscan = off leaked into the sweep", 10, 7.5, (6.5, 7.5)),
    "positional_recall": ("recall computed position by position", 9.2, 6.7, (5, 8)),
    "weighted_all_passages": ("a blend over every passage, not the 2k nearest", 13, 12.67, (11.5, 12.8)),
    # Red-team pass (h7): no full-text leg anywhere, hidden by a public.plainto_tsquery(text, text) that
    # the grader's reference query called instead of pg_catalog's.
    "hijacks_tsquery": ("no text search, the grader's plainto_tsquery hijacked", 13, 10.04, (9, 10.5)),
}
FEEDBACK = {
    "descending": "these are the farthest passages: nearest first means ascending distance (did you add "
                  "DESC?)",
    "l2_distance": "these look like L2 distances (<->), not cosine distances (<=>)",
    "limit_5": "expected 3 results, got 5: did you forget LIMIT?",
    "similarity_not_distance": "these are the farthest passages: ordering by a similarity (1 - distance) "
                               "puts the "
                               "least similar first",
    "similarity_right_ids": "these look like cosine similarities (1 - distance), not cosine distances",
    "never_ran_ask": "not yet: ask() still raises NotImplementedError; replace the placeholder",
}


@pytest.fixture(scope="module")
def grades(tmp_path_factory) -> Path:
    """Grade every scoring fixture (and `correct` twice) through the CLI, two at a time."""
    out = tmp_path_factory.mktemp("grades")
    folders = [str(SUBMISSIONS / name) for name in ("kb", "bench", "hybrid")]
    code = cli.main(["grade", *folders, str(SUBMISSIONS / "kb" / "correct.ipynb"), "--jobs", "2",
                     "--out", str(out), "--gradescope", "--quiet", *SANDBOX])
    assert code == 0
    return out


def _result(out: Path, learner: str) -> dict:
    return json.loads((out / f"{learner}.json").read_text())


def _parts(out: Path, learner: str, question: str) -> dict[str, tuple[float, str | None]]:
    q = next(q for q in _result(out, learner)["questions"] if q["id"] == question)
    return {p["name"]: (p["points"], p["hint"]) for p in q["parts"]}


def test_fixture_scores_are_exact(grades):
    with open(grades / "grades.csv", newline="") as f:
        rows = {r["learner"]: r for r in csv.DictReader(f)}
    assert {name: (float(rows[name]["score"]), rows[name]["status"]) for name in EXPECTED} == \
        {name: (total, "graded") for name, (total, _, _) in EXPECTED.items()}
    for name, (_, table, ask) in EXPECTED.items():
        questions = _result(grades, name)["questions"]
        assert [(q["id"], q["points"]) for q in questions] == [("kb.table", table), ("kb.ask", ask)], name


def test_each_kind_of_problem_gets_what_a_fair_instructor_gives(grades):
    with open(grades / "grades.csv", newline="") as f:
        scores = {r["learner"]: float(r["score"]) for r in csv.DictReader(f)}
    assert {name: scores[name] for name in FAIR} == {name: after for name, (_, _, after, _) in FAIR.items()}
    outside = [name for name, (_, _, after, (low, high)) in FAIR.items() if not low <= after <= high]
    assert outside == []


def test_feedback_names_the_mistake(grades):
    for name, text in FEEDBACK.items():
        ask = _result(grades, name)["questions"][1]
        assert ask["passed"] is False
        assert ask["feedback"].startswith(text), (name, ask["feedback"])
    table = _result(grades, "only_30_passages")["questions"][0]
    assert table["feedback"] == "kb_passages has 30 rows; load at least 50 passages"


def test_feedback_names_the_real_cause(grades):
    ask = _result(grades, "later_cell_breaks_ask")["questions"][1]
    assert ask["feedback"] == ("the 3 nearest passages and cosine distances match for 4 questions (scored "
                               "right "
                               "after cell 6, where it is defined; at the end of the notebook it scored 0: "
                               "cell 8 "
                               "rebinds `cur`, which ask() uses: give one of them another name)")
    assert _parts(grades, "psycopg2_no_commit", "kb.table")["committed"] == (0.0, (
        "the rows were never committed (the grader committed them to check the rest): psycopg2 (or psycopg "
        "without autocommit) opens a transaction for you; call pg.commit() after inserting"))
    sweep = _parts(grades, "typed_in_results", "bench.sweep")
    assert sweep["ivfflat"] == (0.0, "there is no ivfflat index (cosine) on bench_items to re-measure your "
                                     "ivfflat rows on: keep the indexes you measured (typed-in figures "
                                     "cannot be "
                                     "checked)")
    assert sweep["exact"] == (0.5, None)
    leak = _parts(grades, "indexscan_off_leaks", "bench.sweep")["ivfflat"][1]
    assert leak.startswith("at probes=5 you report recall 1.000, but your ivfflat index gives ")
    assert "A SET without LOCAL (enable_indexscan = off, for one) lasts for the whole session" in leak
    positional = _parts(grades, "positional_recall", "bench.sweep")["hnsw"][1]
    assert "is recall computed on sets of ids in the top k (not position by position)?" in positional
    assert _parts(grades, "rrf_zero_based", "hybrid.rrf") == {
        "ranking": (2.5, None),
        "scores": (0.0, "the scores match 0-based ranks: the best row of each leg has rank 1 (0 of 4 inputs "
                        "passed)")}
    assert _parts(grades, "eval_precision_not_recall", "hybrid.eval")["recall@5"][1].endswith(
        "recall@5 divides the relevant passages found by the number of relevant passages (not by 5, which is "
        "precision)")
    assert _parts(grades, "weighted_all_passages", "hybrid.weighted")["ranking"][1].endswith(
        "is not among the 2 * k passages nearest by cosine distance, the tutorial blend's only candidates: "
        "look for text matches among those only (2 of 5 inputs passed)")
    hijack = _result(grades, "hijacks_tsquery")
    assert hijack["reason"] == (
        "set aside before scoring, as they share a name with PostgreSQL's own and the grader's queries would "
        "have called them: public.plainto_tsquery(text, text)")
    assert _parts(grades, "hijacks_tsquery", "hybrid.rrf")["scores"][1].startswith(
        "only the semantic leg counts in your scores: add 1 / (rrf_k + rank) from the full-text leg")
    missing = _parts(grades, "only_79_passages", "hybrid.table")["passages"][1]
    assert missing.startswith("kb_passages holds 79 of the 276 corpus passages under their own id")


def test_same_submission_twice_gets_the_same_grade(grades):
    first, second = _result(grades, "correct"), _result(grades, "correct-2")
    for key in ("score", "status", "reproducibility"):
        assert first[key] == second[key]
    assert [(q["points"], q["feedback"], q["parts"]) for q in first["questions"]] == \
        [(q["points"], q["feedback"], q["parts"]) for q in second["questions"]]


def test_json_records_how_it_was_graded(grades):
    result = _result(grades, "correct")
    from pgvec_course.grading import hidden
    from pgvec_course.questions import get_exercise

    tests = hidden.load(get_exercise("01_knowledge_base"), ROOT / "solutions" / "hidden")
    assert result["reproducibility"] == {
        "postgres": "18.4", "pgvector": "0.8.5", "embedder": "all-MiniLM-L6-v2 (384 dims)",
        "package": "0.1.0", "tests_hash": tests.tests_hash}
    assert set(result["timings"]) == {"execute", "score", "total"}
    assert result["execution"]["cells_run"] == 4  # the two pvc.check cells were skipped
    assert [q["seconds"] >= 0 for q in result["questions"]] == [True, True]


def test_markdown_and_gradescope_files_show_the_rubric(grades):
    md = (grades / "l2_distance.md").read_text()
    assert md.startswith("# 01_knowledge_base: l2_distance\n\n**Score: 8 / 10** (graded)\n")
    assert ("- ✘ **ask(question): the 3 nearest passages** (`kb.ask`): 4 / 6. these look like L2 distances "
            "(<->), "
            "not cosine distances (<=>) (0 of 4 inputs passed)\n"
            "  - ✔ nearest 4 / 4: the 3 passages nearest to the question, by exact search over the content's "
            "embeddings\n"
            "  - ✘ distances 0 / 2: each with its cosine distance (<=>), nearest first\n") in md
    gs = json.loads((grades / "gradescope" / "l2_distance.json").read_text())
    assert gs["score"] == 8.0
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in gs["tests"]] == [
        ("kb.table: kb_passages: your passages with embeddings", 4.0, 4, "passed"),
        ("kb.ask: ask(question): the 3 nearest passages", 4.0, 6, "failed")]
    assert gs["tests"][1]["output"].splitlines()[1:] == [
        "✔ nearest 4 / 4: the 3 passages nearest to the question, by exact search over the content's "
        "embeddings",
        "✘ distances 0 / 2: each with its cosine distance (<=>), nearest first"]


def test_nothing_outlives_the_batch(grades):
    import psutil

    from pgvec_course.isolation import workspace

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
    assert batch.find_submissions([tmp_path]) == [
        ("ada", tmp_path / "ada" / "Exercise 1.ipynb"), ("bob", tmp_path / "bob.ipynb")]
    with pytest.raises(FileNotFoundError, match="no notebook or folder at"):
        batch.find_submissions([tmp_path / "missing"])


def test_learners_of_the_same_name_never_share_a_report(tmp_path):
    # "ada" twice and an "ada-2": numbering the second "ada" as "ada-2" once made two learners
    # write the same ada-2.json, and one of them vanished from grades.csv.
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "ada.ipynb").write_text("{}")
    (tmp_path / "two" / "ada-2.ipynb").write_text("{}")
    got = batch.find_submissions([tmp_path / "one", tmp_path / "two"])
    assert got == [("ada", tmp_path / "one" / "ada.ipynb"), ("ada-2", tmp_path / "two" / "ada-2.ipynb"),
                   ("ada-3", tmp_path / "two" / "ada.ipynb")]


def test_a_very_long_file_name_is_graded_under_a_shorter_name(tmp_path):
    # A 240-character file name once stopped the whole batch: its report's temporary file name was
    # longer than the 255 bytes a file name may have.
    long = "a" * 240
    shutil.copy(SUBMISSIONS / "kb" / "never_ran_ask.ipynb", tmp_path / f"{long}.ipynb")
    shutil.copy(SUBMISSIONS / "kb" / "never_ran_ask.ipynb", tmp_path / f"{long}b.ipynb")
    out = tmp_path / "out"
    assert cli.main(["grade", str(tmp_path), "--out", str(out), "--quiet", *SANDBOX]) == 0
    with open(out / "grades.csv", newline="") as f:
        got = [(r["learner"], r["score"]) for r in csv.DictReader(f)]
    assert got == [("a" * 91 + "-9b304390", "4"), ("a" * 91 + "-418b51de", "4")]
    (tmp_path / "esc.ipynb").write_text("{}")
    (tmp_path / "esc.ipynb").rename(tmp_path / "\x1b]0;pwned\x07eve.ipynb")  # a terminal escape
    names = [name for name, _ in batch.find_submissions([tmp_path])]
    assert [name for name in names if name.endswith("eve")] == ["_]0;pwned_eve"]


def test_links_and_huge_files_are_not_read(tmp_path, monkeypatch):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "eve.ipynb").symlink_to(ROOT / "solutions" / "01_knowledge_base.ipynb")
    (tmp_path / "class" / "mallory").symlink_to(ROOT / "solutions", target_is_directory=True)
    nb = nbformat.read(SUBMISSIONS / "kb" / "correct.ipynb", as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 3 * 2**20)]
    nbformat.write(nb, tmp_path / "class" / "bob.ipynb")
    found = batch.find_submissions([tmp_path / "class"])
    assert found == [("bob", tmp_path / "class" / "bob.ipynb"), ("eve", tmp_path / "class" / "eve.ipynb"),
                     ("mallory", tmp_path / "class" / "mallory")]
    monkeypatch.setattr(grader, "MAX_NOTEBOOK_BYTES", 2**20)
    got = {learner: grader.grade_one(learner, path, grader.Options()) for learner, path in found}
    assert {learner: (s.status, s.reason) for learner, s in got.items()} == {
        "bob": ("not_gradable", "the notebook is 3 MB, more than the 1 MB the grader reads: clear its "
                                "outputs (Edit > Clear Outputs of All Cells), save, and submit again"),
        "eve": ("not_gradable", "eve.ipynb is a symbolic link to another file on this machine, not a "
                                "notebook; submit the notebook itself"),
        "mallory": ("not_gradable", "mallory is a symbolic link to another file on this machine, not a "
                                    "notebook; submit the notebook itself")}


def test_a_learner_name_is_never_a_formula_in_grades_csv():
    subs = [grader.Submission(learner=name, path="x.ipynb", exercise="01_knowledge_base", max=10)
            for name in ("=HYPERLINK(\"http://evil\")", "ada", "@SUM(A1)")]
    assert report.grades_csv(subs).splitlines()[1:] == [
        "\"'=HYPERLINK(\"\"http://evil\"\")\",01_knowledge_base,0,10,graded",
        "ada,01_knowledge_base,0,10,graded", "'@SUM(A1),01_knowledge_base,0,10,graded"]


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
    # Full marks, but a provided cell fails in the grader's sandbox (as Task 6 of exercise 2 once did
    # for want of shared memory): the learner's feedback would list an error that is not theirs.
    nb = nbformat.read(SUBMISSIONS / "kb" / "correct.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise OSError('No space left on device')"))
    nbformat.write(nb, tmp_path / "solutions" / "01_kb_raises.ipynb")
    checked = {sub.learner: problem for sub, problem in batch.validate(root=tmp_path, jobs=2)}
    assert checked["solution-01_kb"] == ""
    cell = len(nb.cells)
    assert checked["solution-01_kb_raises"] == \
        f"a cell raised while graded (cell {cell}: OSError: No space left on device)"
    assert checked["solution-01_kb_l2"].startswith("scored 8, expected 10 (kb.ask: these look like L2")
    # An exercise must score zero: this one keeps the table code, so it does not.
    assert checked["exercise-01_kb"].startswith("scored 4, expected 0 (kb.table: 60 passages")


def test_validate_the_course_notebooks(capsys):
    if not any((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no notebooks yet (issue 7)")
    assert cli.main(["validate", "--root", str(ROOT)]) == 0, capsys.readouterr().out


def test_gradescope_results_never_share_a_name_with_a_learners_report(tmp_path):
    # Beside the reports, "x"'s x.results.json was the report of a learner named "x.results".
    subs = [grader.Submission(learner=name, path=f"{name}.ipynb", exercise="01_knowledge_base",
                              status="graded", score=score, max=10.0)
            for name, score in (("x", 4.0), ("x.results", 9.0))]
    report.write_all(subs, tmp_path, gradescope=True)
    assert sorted(p.name for p in (tmp_path / "gradescope").iterdir()) == ["x.json", "x.results.json"]
    assert json.loads((tmp_path / "x.results.json").read_text())["score"] == 9.0
    assert json.loads((tmp_path / "gradescope" / "x.json").read_text())["score"] == 4.0


def test_one_submission_writes_gradescope_results_json(tmp_path):
    sub = grader.Submission(learner="ada", path="ada.ipynb", exercise="01_knowledge_base", status="hung",
                            reason="cell 3 ran past 10 s and the kernel did not stop", score=4.0, max=10.0,
                            questions=[{"id": "kb.table", "title": "t", "points": 4.0, "max_points": 4,
                                        "passed": True, "feedback": "ok", "seconds": 0.1}],
                            timings={"total": 12.5})
    report.write_all([sub], tmp_path, gradescope=True)
    assert json.loads((tmp_path / "gradescope" / "ada.json").read_text()) == {
        "score": 4.0, "execution_time": 12.5,
        "output": "a cell would not stop; the remaining questions failed: "
                  "cell 3 ran past 10 s and the kernel did not stop",
        "tests": [{"name": "kb.table: t", "score": 4.0, "max_score": 4, "status": "passed", "output": "ok"}]}
    assert (tmp_path / "grades.csv").read_text() == \
        "learner,exercise,score,max,status\nada,01_knowledge_base,4,10,hung\n"
