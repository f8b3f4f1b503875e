"""Hostile and broken submissions, graded in one sandboxed --jobs 2 batch next to a correct one.

Every attack of issue 11 is a notebook in tests/fixtures/submissions/hostile (make_submissions.py).
The correct notebook keeps full marks, no attacker gets a point it did not earn with its own work,
nothing of the batch outlives it, no file appears on the host, no network connection reaches a
listener, and grades.csv is the same a while after the grader exited.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("DATABASE_URL"):
    os.environ["PGVEC_GRADER_DATA_DIR"] = str(ROOT / ".pgdata-grader-test")

from pgvec_course import cli  # noqa: E402
from pgvec_course.isolation import limits, sandbox, workspace  # noqa: E402

SUBMISSIONS = ROOT / "tests" / "fixtures" / "submissions"
PWNED = Path("/tmp/pvc_pwned")  # what the COPY ... TO PROGRAM in drop_others tries to create
# Where an attack that got out would leave its files (pvc_hostile_*).
HOST_PLACES = (Path("/tmp"), Path("/dev/shm"), Path("/var/tmp"), ROOT / "pgvec_course", Path.home())
LISTENER = Path(f"/tmp/pvc-listener-{os.getpid()}.sock")  # per run: two worktrees may test at once
NOT_YET = "not yet: ask() still raises NotImplementedError"
TAMPERED = "checking ask failed: the grader's answer channel was tampered with"

# learner -> (status, score, kb.ask feedback starts with). A notebook whose kernel dies, hangs or
# goes over a cap in a cell after `ask` keeps the points `ask` earned right after the cell that
# defines it; the forgers' ask raises NotImplementedError, so only their table (4) is earned.
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
    "monkeypatch": ("graded", 8, "these look like L2 distances"),  # the right passages: most of ask's points
    "not_json": ("not_gradable", 0, None),
    "os_exit": ("kernel_died", 10, "the 3 nearest passages"),
    "pg_sleep": ("graded", 10, "the 3 nearest passages"),
    "prints_50mb": ("graded", 10, "the 3 nearest passages"),
    "segfault": ("kernel_died", 10, "the 3 nearest passages"),
    "syntax_error": ("graded", 0, "not yet: no `ask` is defined"),
    "wrong_return_type": ("graded", 4, "ask() should return a list of (id, number) tuples, not str"),
    # Issue 11's attacks.
    "steals_secrets": ("graded", 10, "the 3 nearest passages"),
    "tampers_with_neighbour": ("graded", 10, "the 3 nearest passages"),
    "daemon_and_spinner": ("graded", 10, "the 3 nearest passages"),
    "forges_post_run_cell": ("graded", 4, NOT_YET),
    "forges_pre_run_cell": ("graded", 4, NOT_YET),
    "forges_stdout": ("graded", 4, NOT_YET),
    # A patched exec slips forged data past the channel; it does not answer the questions the grader
    # derived from the table itself, so it earns nothing.
    "forges_builtins": ("graded", 4, "ask() was not called with the question derived from kb_passages"),
    "forges_audit_hook": ("graded", 4, TAMPERED),
    "probes_network": ("graded", 10, "the 3 nearest passages"),
    "children_allocate": ("over_limit", 10, "the 3 nearest passages"),
    "work_mem_sort": ("over_limit", 10, "the 3 nearest passages"),
    "big_file_outside": ("over_limit", 10, "the 3 nearest passages"),
    "big_table": ("over_limit", 10, "the 3 nearest passages"),
    "steers_grader": ("graded", 10, "the 3 nearest passages"),  # the grader's session is its own
    "answer_key": ("graded", 4, NOT_YET),  # neither the package nor the sandbox holds hidden tests
    "wal_growth": ("graded", 10, "the 3 nearest passages"),
    # Red-team pass (h7): 20 passages of 4 MB cost the grader 6 s and 700 MB to score before it read
    # 20,000 characters of each; they earn what their wrong vectors and 19 copies earn, no more.
    "huge_passages": ("graded", 8.38, "20 passages are equally near this question, copies of one text"),
    "deep_source": ("graded", 10, "the 3 nearest passages"),  # was status error: RecursionError
    # A symbolic link to the instructor's solution master, in the class's folder: it scored 10/10.
    "links_to_solution": ("not_gradable", 0, None),
    "deep_folders": ("over_limit", 10, "the 3 nearest passages"),  # was status error, and a leftover folder
    "one_passage_50_times": ("graded", 5.02, "50 passages are equally near this question, copies of one"),
}


class Listener:
    """A TCP port on 127.0.0.1 and a Unix socket in /tmp that count who connects to them."""

    def __init__(self) -> None:
        LISTENER.unlink(missing_ok=True)
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(str(LISTENER))
        os.chmod(LISTENER, 0o777)
        self.unix.listen()
        self.connections: list[str] = []
        for server in (self.tcp, self.unix):
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.connections.append(str(server.getsockname()))
            conn.close()

    def close(self) -> None:
        self.tcp.close()
        self.unix.close()
        LISTENER.unlink(missing_ok=True)


def _host_files() -> list[str]:
    return sorted(str(p) for place in HOST_PLACES for p in place.glob("pvc_hostile_*"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    if not sandbox.support().ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must grade the hostile batch in the real sandbox: {sandbox.support().detail}")
        pytest.skip(sandbox.support().detail)
    out = tmp_path_factory.mktemp("hostile")
    PWNED.unlink(missing_ok=True)
    assert _host_files() == []
    listener = Listener()
    try:
        code = cli.main(["grade", str(SUBMISSIONS / "kb" / "correct.ipynb"), str(SUBMISSIONS / "hostile"),
                         "--jobs", "2", "--timeout", "30", "--cell-timeout", "10", "--memory", "1G",
                         "--disk", "512M", "--out", str(out), "--quiet"])
        finished = hashlib.sha256((out / "grades.csv").read_bytes()).hexdigest()
        time.sleep(6)  # the daemon would strike 3 s after its notebook ended
        later = hashlib.sha256((out / "grades.csv").read_bytes()).hexdigest()
    finally:
        listener.close()
    assert code == 0
    return {"out": out, "grades_unchanged": finished == later, "connections": listener.connections}


def _result(out: Path, learner: str) -> dict:
    return json.loads((out / f"{learner}.json").read_text())


def test_every_submission_gets_its_own_grade(hostile):
    with open(hostile["out"] / "grades.csv", newline="") as f:
        got = {r["learner"]: (r["status"], float(r["score"])) for r in csv.DictReader(f)}
    assert got == {name: (status, score) for name, (status, score, _) in EXPECTED.items()}
    for name, (_, _, feedback) in EXPECTED.items():
        questions = _result(hostile["out"], name)["questions"]
        if feedback is not None:
            assert questions[1]["feedback"].startswith(feedback), (name, questions[1]["feedback"])


def test_broken_files_are_reported_not_raised(hostile):
    result = _result(hostile["out"], "not_json")
    assert result["reason"] == "not a valid notebook (Notebook does not appear to be JSON: " \
                               "'{\"cells\": [ this is not JSON')"
    errors = _result(hostile["out"], "syntax_error")["execution"]["errors"]
    assert errors[0].startswith("cell 3: SyntaxError:")


def test_timeouts_are_recorded(hostile):
    assert _result(hostile["out"], "infinite_loop")["execution"]["errors"] == ["cell 8: stopped after 10 s"]
    assert _result(hostile["out"], "pg_sleep")["execution"]["timed_out_cells"] == [8]
    assert _result(hostile["out"], "ignores_interrupt")["reason"] == \
        "cell 8 ran past 10 s and the kernel did not stop"


def test_memory_is_capped(hostile):
    assert _result(hostile["out"], "memory_hog")["execution"]["errors"] == ["cell 8: MemoryError: "]


def test_printing_50_mb_is_truncated(hostile):
    assert (hostile["out"] / "prints_50mb.json").stat().st_size < 10_000
    assert (hostile["out"] / "prints_50mb.md").stat().st_size < 10_000


def test_nothing_outlives_the_batch(hostile):
    import psutil

    mine = f"{workspace.PREFIX}{os.getpid()}-"
    left = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert [c for c in left if mine in c or "pvc-hostile-" in c] == []  # daemon and CPU spinner too
    assert [e.name for e in workspace.SHM.glob(mine + "*")] == []  # folders, servers' files and WAL
    pattern = f"{limits.PREFIX}{os.getpid()}-*"
    groups = [g for mount in limits._mounts().values() for g in mount.rglob(pattern)]
    assert groups == []
    assert hostile["grades_unchanged"] is True


def test_nothing_reached_the_host(hostile):
    assert not PWNED.exists()
    assert _host_files() == []
    assert hostile["connections"] == []


def test_caps_stopped_the_greedy_ones(hostile):
    out = hostile["out"]
    assert _result(out, "big_table")["reason"].startswith(
        "stopped because its files and database grew past the 512 MB disk cap")
    for name in ("children_allocate", "work_mem_sort"):
        box = _result(out, name)["sandbox"]
        assert box["used"]["oom_kills"] >= 1 and box["used"]["memory_peak"] <= 2**30, (name, box)
        reason = _result(out, name)["reason"]
        assert reason.startswith("a process went past the 1 GB memory cap and was killed"), (name, reason)
    assert _result(out, "correct")["sandbox"]["used"]["oom_kills"] == 0


def test_forgeries_are_caught_or_worthless(hostile):
    out = hostile["out"]
    assert _result(out, "forges_audit_hook")["questions"][1]["feedback"] == (
        "checking ask failed: the grader's answer channel was tampered with: its nonce was printed")
