"""Hostile and broken submissions, graded in one batch next to a correct one that must not notice."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"
PWNED = Path("/tmp/pvc_pwned")  # what the COPY ... TO PROGRAM in drop_others tries to create

# learner -> (status, score, kb.ask feedback starts with). A notebook whose kernel dies or hangs in
# a cell after `ask` keeps the points `ask` earned right after the cell that defines it.
EXPECTED = {
    "correct": ("graded", 10, "the 3 nearest passages"),
    "ask_never_returns": ("graded", 4, "checking ask failed: your code did not finish within 10 s"),
    "drop_others": ("graded", 10, "the 3 nearest passages"),
    "edited_checks": ("graded", 10, "the 3 nearest passages"),
    "empty": ("graded", 0, "not yet: no `ask` is defined"),
    "exit_in_ask": ("kernel_died", 4, "checking ask failed: the kernel died while running your code"),
    "ignores_interrupt": ("hung", 10, "the 3 nearest passages"),
    "infinite_loop": ("graded", 10, "the 3 nearest passages"),
    "locks_grader_out": ("graded", 0, "could not connect to the submission's database after it ran"),
    "memory_hog": ("graded", 10, "the 3 nearest passages"),
    "monkeypatch": ("graded", 4, "these look like L2 distances"),
    "not_json": ("not_gradable", 0, None),
    "os_exit": ("kernel_died", 10, "the 3 nearest passages"),
    "pg_sleep": ("graded", 10, "the 3 nearest passages"),
    "prints_50mb": ("graded", 10, "the 3 nearest passages"),
    "segfault": ("kernel_died", 10, "the 3 nearest passages"),
    "syntax_error": ("graded", 0, "not yet: no `ask` is defined"),
    "wrong_return_type": ("graded", 4, "ask() should return a list of (id, number) tuples, not str"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    PWNED.unlink(missing_ok=True)
    code = cli.main(["grade", str(SUBMISSIONS / "kb" / "correct.ipynb"), str(SUBMISSIONS / "hostile"),
                     "--jobs", "2", "--timeout", "30", "--cell-timeout", "10", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _result(out: Path, learner: str) -> dict:
    return json.loads((out / f"{learner}.json").read_text())


def test_every_submission_gets_its_own_grade(hostile):
    with open(hostile / "grades.csv", newline="") as f:
        got = {r["learner"]: (r["status"], float(r["score"])) for r in csv.DictReader(f)}
    assert got == {name: (status, score) for name, (status, score, _) in EXPECTED.items()}
    for name, (_, _, feedback) in EXPECTED.items():
        questions = _result(hostile, name)["questions"]
        if feedback is not None:
            assert questions[1]["feedback"].startswith(feedback), (name, questions[1]["feedback"])


def test_broken_files_are_reported_not_raised(hostile):
    result = _result(hostile, "not_json")
    assert result["reason"] == "not a valid notebook (Notebook does not appear to be JSON: " \
                               "'{\"cells\": [ this is not JSON')"
    assert _result(hostile, "syntax_error")["execution"]["errors"][0].startswith("cell 3: SyntaxError:")


def test_timeouts_are_recorded(hostile):
    assert _result(hostile, "infinite_loop")["execution"]["errors"] == ["cell 8: stopped after 10 s"]
    assert _result(hostile, "pg_sleep")["execution"]["timed_out_cells"] == [8]
    assert _result(hostile, "ignores_interrupt")["reason"] == \
        "cell 8 ran past 10 s and the kernel did not stop"


def test_memory_is_capped(hostile):
    assert _result(hostile, "memory_hog")["execution"]["errors"] == ["cell 8: MemoryError: "]


def test_printing_50_mb_is_truncated(hostile):
    assert (hostile / "prints_50mb.json").stat().st_size < 10_000
    assert (hostile / "prints_50mb.md").stat().st_size < 10_000


def test_nothing_is_left_behind(hostile):
    import psutil

    from pgvec_course.grading import workspace

    assert not PWNED.exists()
    mine = f"{workspace.PREFIX}{os.getpid()}-"
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if mine in " ".join(p.info["cmdline"] or [])]
    assert left == []
