("""The learners' copy of the course: installable, its checks work, and it holds no solutions or hidden "
 "tests.""")

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from psycopg.conninfo import make_conninfo

from pgvec_course import cli, db
from pgvec_course.authoring.release import ReleaseError, leaks, release, secrets

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ROOT / "solutions" / "hidden"
MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION.*$\n?", re.M)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "course"
    assert cli.main(["release", str(out), "--root", str(ROOT)]) == 0
    return out


@pytest.fixture(scope="module")
def installed(released, tmp_path_factory) -> Path:
    """The released package installed from its own pyproject, as pip would for a learner."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(released)], check=True, cwd=site)
    return site


def test_the_copy_holds_the_course_and_no_solutions(released):
    assert sorted(p.name for p in released.iterdir()) == [
        ".gitignore", "Makefile", "README.md", "docker-compose.yml", "exercises", "lessons", "pgvec_course",
        "pyproject.toml"]
    assert sorted(p.name for p in (released / "exercises").iterdir()) == [
        "01_knowledge_base.ipynb", "02_index_benchmark.ipynb", "03_hybrid_search.ipynb"]
    files = [p for p in released.rglob("*") if p.is_file()]
    assert not [p for p in files if {"solutions", "hidden", "tests", "__pycache__"} & set(p.parts)]
    text = "\n".join(p.read_text(errors="ignore") for p in files)
    wanted = secrets(HIDDEN)
    assert {"reference_evaluation", "questions_from_passages", "what is GELU", "error SQLSTATE 40001",
            "Which passage explains the basics for a beginner?"} <= wanted
    assert [s for s in wanted if s in text] == []
    exercises = "\n".join(p.read_text() for p in (released / "exercises").iterdir())
    assert "### BEGIN SOLUTION" not in exercises and "### HIDDEN" not in exercises


def test_the_installed_copy_has_no_answer_key(installed, tmp_path):
    code = """
import pgvec_course
from pgvec_course.questions import hybrid, index_benchmark, knowledge_base, get_exercise
from pgvec_course.grading import hidden
print(pgvec_course.__file__)
print([n for m in (knowledge_base, index_benchmark, hybrid) for n in vars(m)
       if n.startswith("HIDDEN") or n in ("reference_evaluation", "questions_from_passages")])
try:
    hidden.load(get_exercise("01_knowledge_base"))
except hidden.HiddenTestsError as exc:
    print(exc)
"""
    env = {k: v for k, v in os.environ.items() if k != "PGVEC_HIDDEN_DIR"}
    env.update(PYTHONPATH=str(installed), HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == str(installed / "pgvec_course" / "__init__.py")
    assert out[1] == "[]"
    assert out[2] == (f"no hidden tests for 01_knowledge_base in {tmp_path}/.pgvec-course/solutions/hidden: "
                      "grade "
                      "from the course repository (its solutions/hidden/ folder), or pass --hidden DIR (or "
                      "set "
                      "PGVEC_HIDDEN_DIR) to the folder that holds them")


def test_release_refuses_what_would_lose_data_or_leak(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli.main(["release", str(tmp_path / "busy"), "--root", str(ROOT)]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path}/busy is not empty: choose a new folder (nothing "
                                       "was "
                                       "written)\n")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(ReleaseError, match="is inside the course repository"):
        release(ROOT / "build-release", root=ROOT)
    (tmp_path / "copy" / "lessons").mkdir(parents=True)
    (tmp_path / "copy" / "lessons" / "extra.md").write_text("Try rrf_hybrid('what is GELU', 4, 20).")
    (tmp_path / "copy" / "solutions" / "hidden").mkdir(parents=True)
    (tmp_path / "copy" / "solutions" / "hidden" / "x.py").write_text("")
    assert leaks(tmp_path / "copy", HIDDEN) == ["solutions/hidden/x.py: a hidden-tests file",
                                                "lessons/extra.md: 'what is GELU'"]


@pytest.fixture(scope="module")
def fresh_db_url():
    """A database of this test's own, so no table left by another notebook answers a check."""
    name = f"pgvec_release_{os.getpid()}"
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield make_conninfo(db.database_url(), dbname=name)
    with db.connect() as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def solved(released: Path, name: str) -> nbformat.NotebookNode:
    """Return the released exercise with each task done the way its master does it."""
    nb = nbformat.read(released / "exercises" / f"{name}.ipynb", as_version=4)
    master = {c.id: c for c in nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4).cells}
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.id in master:
            cell.source = MARKER.sub("", master[cell.id].source)
    return nb


def run(nb: nbformat.NotebookNode, *, cwd: Path, env: dict[str, str]) -> list[str]:
    """Execute a notebook in a kernel of this Python with `env`; return each check cell's first line."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec(kernel_name)
            spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            spec.env = env
            return spec

    nb.cells.insert(0, nbformat.v4.new_code_cell("import pgvec_course\nprint(pgvec_course.__file__)"))
    km = KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())
    where = {"metadata": {"path": str(cwd)}}
    NotebookClient(nb, km=km, timeout=300, allow_errors=True, resources=where).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [o.get("ename") for c in code for o in c.outputs if o.output_type == "error"] == []
    shown = ["".join(o.get("data", {}).get("text/plain", "") for o in c.outputs)
             for c in code if c.source.startswith("pvc.check(")]
    return ["".join(o.get("text", "") for o in code[0].outputs).strip()] + [s.splitlines()[0] for s in shown]


@pytest.mark.parametrize("name", ["01_knowledge_base", "03_hybrid_search"])
def test_released_exercises_run_their_public_checks(name, released, installed, fresh_db_url):
    env = {k: v for k, v in os.environ.items() if k not in ("PGVEC_HIDDEN_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(installed), DATABASE_URL=fresh_db_url, PGVEC_CACHE_DIR=str(ROOT / ".cache"))
    lines = run(solved(released, name), cwd=released / "exercises", env=env)
    assert lines[0] == str(installed / "pgvec_course" / "__init__.py")
    assert lines[1:] and all(line.startswith("✔ passed") for line in lines[1:]), lines
