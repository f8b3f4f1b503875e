"""A function that was right where it was defined keeps its points, and the cell that broke it is named."""

from __future__ import annotations

from pathlib import Path

import nbformat

from pgvec_course.grading import grader, hidden, runner
from pgvec_course.grading.culprits import bound_at_top_level, globals_read, later_cell_that_broke
from pgvec_course.questions import get_exercise

ROOT = Path(__file__).resolve().parents[1]
DEFINE = """def exact_top_k(query, k=10):
    cur.execute("SELECT id FROM bench_items ORDER BY embedding <=> %s LIMIT %s", (query, k))
    rows = cur.fetchall()
    return [r[0] for r in rows]
"""
PROVIDED = """with conn.cursor() as cur:
    cur.execute("SELECT 1")
"""


def test_globals_read_and_names_bound():
    assert globals_read(DEFINE, "exact_top_k") == {"cur"}
    assert globals_read("def f(a, *b, c, **d):\n    return a, b, c, d, np.x\n", "f") == {"np"}
    assert bound_at_top_level(PROVIDED) == {"cur"}
    assert bound_at_top_level("import numpy as np\nfor i, v in enumerate(x):\n    y = v\n"
                              "def g():\n    hidden = 1\n") == {"np", "i", "v", "y", "g"}
    assert bound_at_top_level("def broken(:") == set()


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_the_later_cell_that_rebinds_a_global_is_named():
    nb = _notebook("cur = conn.cursor()", DEFINE, "print('unrelated')", PROVIDED)
    assert later_cell_that_broke(nb, 3, ["exact_top_k"]) == (
        "cell 5 rebinds `cur`, which exact_top_k() uses: give one of them another name")
    assert later_cell_that_broke(nb, 5, ["exact_top_k"]) == "a cell after cell 5 changed something it uses"


def test_scoring_keeps_the_better_of_the_early_and_the_final_probe(test_db_url):
    exercise = get_exercise("02_index_benchmark")
    question = exercise.question("bench.recall")
    # The hidden recall_at_k inputs, answered right.
    tests = hidden.load(exercise, ROOT / "solutions" / "hidden")
    right = {"calls": [{"value": len(set(f[:k]) & set(t[:k])) / k}
                       for f, t, k in tests.inputs["bench.recall"]]}
    closed = {"calls": [{"error": "InterfaceError: the cursor is closed"}] * 5}
    run = runner.Execution(
        probes={"bench.recall": runner.Probe(data=closed)},
        early={"bench.recall": runner.Probe(data=right, after_cell=3)},
    )
    nb = _notebook("cur = conn.cursor()", "def recall_at_k(found, truth, k):\n    return cur.x\n", PROVIDED)
    sub = grader.Submission(learner="ada", path="ada.ipynb")
    single = type(exercise)(exercise.name, exercise.title, (question,), exercise.timeout)
    only_recall = hidden.HiddenTests(single, tests.inputs, tests.path, tests.source)
    grader._score(sub, only_recall, run, test_db_url, nb=nb)
    [result] = sub.questions
    assert result["points"] == question.points
    assert result["feedback"].endswith(
        "(scored right after cell 3, where it is defined; at the end of the notebook it scored 0: "
        "cell 4 rebinds `cur`, which recall_at_k() uses: give one of them another name)")
