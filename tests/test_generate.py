"""The exercise notebooks are generated from the solution masters, and run without the answers."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from pgvec_course import cli
from pgvec_course.authoring.generate import MarkerError, generate, strip_solution, student_notebook

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def test_exercises_are_up_to_date_with_the_masters(capsys):
    assert cli.main(["generate", "--check", "--root", str(ROOT)]) == 0
    assert capsys.readouterr().out == "exercises/ is up to date with solutions/\n"
    assert [p.name for p in EXERCISES] == [
        "01_knowledge_base.ipynb",
        "02_index_benchmark.ipynb",
        "03_hybrid_search.ipynb",
    ]


def test_a_modified_master_makes_the_check_fail_until_regenerated(tmp_path, capsys):
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions")
    shutil.copytree(ROOT / "exercises", tmp_path / "exercises")
    master = tmp_path / "solutions" / "01_knowledge_base.ipynb"
    nb = nbformat.read(master, as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, master)
    (tmp_path / "exercises" / "99_stray.ipynb").write_text("{}")

    assert cli.main(["generate", "--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"out of date: {tmp_path}/exercises/01_knowledge_base.ipynb\n"
        f"out of date: {tmp_path}/exercises/99_stray.ipynb\n"
        "run 'pgvec-course generate' and commit exercises/\n"
    )
    assert cli.main(["generate", "--root", str(tmp_path)]) == 0
    assert generate(tmp_path, check=True) == []
    assert not (tmp_path / "exercises" / "99_stray.ipynb").exists()


def test_generate_outside_the_repository_says_where_to_run_it(tmp_path, capsys):
    assert cli.main(["generate", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: no master notebooks in {tmp_path}/solutions: run this from the "
        "course repository's top folder, or pass --root\n"
    )


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_exercises_hold_no_solution_hidden_cell_or_output(path):
    nb = nbformat.read(path, as_version=4)
    text = nbformat.writes(nb)
    for marker in ("### BEGIN SOLUTION", "### END SOLUTION", "### HIDDEN", "BEGIN HIDDEN", "self_test"):
        assert marker not in text
    assert nb.metadata["pgvec_course"] == {"exercise": path.stem, "generated": True,
                                           "source": f"solutions/{path.name}"}
    assert nb.cells[0].source == ("*This notebook is yours: replace each `# TODO` and `NotImplementedError` "
                                  "with your code, and run the check cell after each task.*")
    assert nb.cells[2].source == "import pgvec_course as pvc\nconn = pvc.connect()"
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"
    )
    master = nbformat.read(ROOT / "solutions" / path.name, as_version=4)
    hidden = [c for c in master.cells if c.source.startswith("### HIDDEN")]
    assert len(hidden) == 1 and len(nb.cells) == len(master.cells) - len(hidden) + 1


def test_strip_solution_placeholders():
    source = (
        'def ask(q):\n    """Doc."""\n    ### BEGIN SOLUTION (Write ask(): embed it)\n    return 1\n'
        "    ### END SOLUTION\n\nask('x')"
    )
    assert strip_solution(source) == (
        'def ask(q):\n    """Doc."""\n    raise NotImplementedError(\'Write ask(): embed it\')\n\nask(\'x\')'
    )
    assert strip_solution("### BEGIN SOLUTION (load the table)\nx = 1\n### END SOLUTION\nprint(x)") == (
        "# TODO: load the table\npass\nprint(x)"
    )
    assert strip_solution("a = 1\n### BEGIN HIDDEN\nsecret = 2\n### END HIDDEN\nb = 3") == "a = 1\nb = 3"
    assert strip_solution("Read it.\n### BEGIN SOLUTION\nThe answer.\n### END SOLUTION", markdown=True) == (
        "Read it.\n*Write your answer here.*"
    )
    with pytest.raises(MarkerError, match="a ### BEGIN SOLUTION block is never closed"):
        strip_solution("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(MarkerError, match="cell, line 1: unexpected '### END SOLUTION'"):
        strip_solution("### END SOLUTION")


def test_cells_marked_hidden_in_metadata_are_dropped():
    master = nbformat.v4.new_notebook()
    master.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("secret = 2")]
    master.cells[1].metadata["pgvec_course"] = {"hidden": True}
    nb = student_notebook(master, "solutions/09_demo.ipynb")
    assert [c.source for c in nb.cells[1:]] == ["x = 1"]


@pytest.fixture(scope="module")
def exercise_db_url(make_database):
    """A fresh database of this run's own, so no table left by the solution notebooks answers a check."""
    return make_database(f"pgvec_exercises_{os.getpid()}").url


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_generated_exercises_run_and_every_check_says_not_yet(path, exercise_db_url, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    class CurrentEnv(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = super().get_kernel_spec(kernel_name)
            spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            return spec

    monkeypatch.setenv("DATABASE_URL", exercise_db_url)
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnv())
    NotebookClient(
        nb, km=km, timeout=300, allow_errors=True, resources={"metadata": {"path": str(ROOT / "exercises")}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "the kernel stopped before the last cell"
    # Run All in JupyterLab stops at the first error: an untouched exercise must have none.
    errors = [(c.source[:60], o.get("ename")) for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    checks = [c for c in code if c.source.startswith("pvc.check(")]
    assert checks
    for cell in checks:
        shown = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
        assert shown.startswith("✘ not yet "), (cell.source, shown)
        assert not any(o.output_type == "error" for o in cell.outputs)


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.stem)
def test_provided_cells_after_learner_code_bind_no_names(path):
    """A provided cell that rebinds a name (`with conn.cursor() as cur:`) can break a learner's function."""
    import ast

    from pgvec_course.grading.culprits import bound_at_top_level

    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first = next(n for n, source in enumerate(code) if "# TODO" in source or "NotImplementedError" in source)
    for source in code[first:]:
        if "# TODO" in source or "NotImplementedError" in source:
            continue  # the learner's own cells
        defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
        assert bound_at_top_level(source) <= defined, source
