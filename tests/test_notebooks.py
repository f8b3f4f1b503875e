"""The committed notebooks: run, stamped, error-free, and together they teach the whole syllabus."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

import pgvec_course
from pgvec_course import notebooks, practice

ROOT = Path(__file__).resolve().parents[1]

LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))
FIRST_CELL = ["import pgvec_course as pvc", "conn = pvc.connect()"]

# Every topic of the syllabus (issue 6 and the source tutorial) -> a pattern that some lesson's
# cells (code or prose) must match. Case-insensitive, multi-line.
TOPICS = {
    "CREATE EXTENSION": r"CREATE EXTENSION( IF NOT EXISTS)? vector",
    "extversion": r"extversion",
    "vector(n) column": r"\bvector\(\d+\)",
    "ALTER TABLE ... ADD COLUMN embedding": r"ALTER TABLE \w+\s+ADD COLUMN (IF NOT EXISTS )?embedding",
    "single insert": r"INSERT INTO \w+\s*\(.*\)\s*VALUES",
    "batch insert": r"executemany|insert_documents",
    "COPY": r"COPY \w+.*FROM STDIN",
    "cosine distance <=>": r"<=>",
    "L2 distance <->": r"<->",
    "inner product <#>": r"<#>",
    "normalised vectors": r"normali[sz]ed",
    "ORDER BY ... LIMIT": r"ORDER BY [^;]*<=>[^;]*\s+LIMIT",
    "WHERE filter": r"WHERE\s+\w*\.?category\s*=",
    "JOIN": r"\bJOIN\b",
    "transaction": r"conn\.transaction\(\)",
    "rollback": r"roll(ed )?back",
    "iterative scan": r"hnsw\.iterative_scan",
    "ivfflat": r"USING ivfflat",
    "lists": r"lists\s*=",
    "probes": r"ivfflat\.probes",
    "hnsw": r"USING hnsw",
    "m / ef_construction": r"\bm\s*=\s*\d+.*ef_construction",
    "ef_search": r"hnsw\.ef_search",
    "maintenance_work_mem": r"maintenance_work_mem",
    "EXPLAIN": r"\bEXPLAIN\b",
    "index not used for 1 - distance": r"1 - \(embedding <=>",
    "tsvector": r"\btsvector\b",
    "GIN": r"USING gin",
    "ts_rank": r"ts_rank",
    "plainto_tsquery": r"plainto_tsquery",
    "reciprocal rank fusion": r"reciprocal rank fusion",
    "halfvec": r"\bhalfvec\b",
    "binary quantization": r"binary_quantize",
    "ChromaDB": r"chromadb",
    "quick reference": r"quick reference",
    "docker compose": r"docker compose",
    "pgvec-course doctor": r"pgvec-course doctor",
    # issue 13: the install routes, the tools learners already use, production habits, answers, practice
    "apt with the PGDG repository": r"apt\.postgresql\.org\.sh[\s\S]*postgresql-18-pgvector",
    "Homebrew": r"brew install pgvector",
    "docker run": r"docker run .*pgvector/pgvector:pg18",
    "psycopg2 register_vector": r"from pgvector\.psycopg2 import register_vector",
    "execute_values": r"psycopg2\.extras\.execute_values\(",
    "SQLAlchemy Vector type": r"from pgvector\.sqlalchemy import Vector",
    "SQLAlchemy HNSW Index": r"Index\([^)]*postgresql_using=\"hnsw\"",
    "ORM query ordered by distance": r"\.order_by\(distance\)\.limit\(",
    "Alembic autogenerate": r"\"revision\", \"--autogenerate\"",
    "autogenerate's missing import": r"import pgvector\.sqlalchemy",
    "pg_dump / pg_restore": r"run_tool\(\"pg_dump\"[\s\S]*run_tool\(\"pg_restore\"",
    "the pg_dump -t extension trap": r"type \"public\.vector\" does not exist",
    "pg_dump --extension": r"--extension=vector",
    "upsert": r"ON CONFLICT \(\w+\) DO UPDATE",
    "stale embedding trigger": r"BEFORE UPDATE OF title, content",
    "resumable backfill": r"WHERE embedding IS NULL[^\n]*FOR UPDATE SKIP LOCKED",
    "HNSW vacuuming": r"REINDEX INDEX CONCURRENTLY",
    "CREATE INDEX CONCURRENTLY": r"CREATE INDEX CONCURRENTLY",
    "build progress": r"pg_stat_progress_create_index",
    "max_parallel_maintenance_workers": r"max_parallel_maintenance_workers",
    "partial HNSW index": r"USING hnsw \(embedding vector_cosine_ops\)\s+WHERE category =",
    "JSONB metadata filter": r"metadata @> %\(filter\)s",
    "distance threshold": r"WHERE distance < %\(max\)s",
    "re-sort a relaxed scan by distance + 0": r"ORDER BY distance \+ 0",
    "websearch_to_tsquery": r"websearch_to_tsquery",
    "ts_rank normalization": r"ts_rank\(to_tsvector\('english', doc\), q, 2\)",
    "retrieval-augmented answer": r"pvc\.build_prompt\([\s\S]*pvc\.ask_llm\(",
    "Chroma documents= and query_texts=": r"documents=[\s\S]*query_texts=\[",
}


def _sources(nb: nbformat.NotebookNode, kind: str | None = None) -> str:
    return "\n".join(c.source for c in nb.cells if kind is None or c.cell_type == kind)


@pytest.fixture(scope="module")
def lesson_text() -> str:
    return "\n".join(_sources(nbformat.read(path, as_version=4)) for path in LESSONS)


def test_the_thirteen_lessons_exist():
    names = [path.stem for path in LESSONS]
    assert names == [
        "01_why_postgres", "02_storing_embeddings", "03_distance_operators", "04_nearest_neighbours",
        "05_indexing", "06_hybrid_search", "07_beyond_the_basics", "08_alternatives_chromadb",
        "09_tools_you_already_use", "10_fresh_embeddings", "11_production_indexes", "12_rag_answers",
        "13_quick_reference",
    ]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_lesson_has_one_to_three_practice_checks(path):
    code = _sources(nbformat.read(path, as_version=4), "code")
    tasks = re.findall(r"pvc\.check\(\"([\w.]+)\"", code)
    assert 1 <= len(tasks) <= 3, f"{path.name}: {len(tasks)} practice cells"
    assert all(t in practice.TASKS for t in tasks), tasks


def test_every_practice_task_is_used_in_one_lesson():
    used = [t for path in LESSONS for t in re.findall(r"pvc\.check\(\"([\w.]+)\"",
                                                       _sources(nbformat.read(path, as_version=4), "code"))]
    assert sorted(used) == sorted(practice.TASKS)


# A vector type with a number in a lesson's code cell is a dimension someone typed; it is wrong for the
# other embedder. Size types from the embedder (vector({embedder.dim})) or a named constant. (Exercise
# 2's contract is the tutorial's 10,000 x 1536 random vectors, whatever the embedder; the solutions are
# proven with both embedders by tests/test_either_embedder.py.)
TYPED_DIMENSION = re.compile(r"\b(?:vector|halfvec|bit|sparsevec)\(\d+\)", re.I)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_no_code_cell_types_a_dimension(path):
    nb = nbformat.read(path, as_version=4)
    typed = [(i, m) for i, c in enumerate(nb.cells, 1) if c.cell_type == "code"
             for m in TYPED_DIMENSION.findall(c.source)]
    assert typed == [], f"{path.name}: dimensions typed into code cells (cell, type): {typed}"


@pytest.mark.parametrize("path", LESSONS + SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_notebook_is_run_stamped_and_error_free(path):
    assert notebooks.check(path) == []


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_exercise_notebooks_hold_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells, 1)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert dirty == [], f"{path.name}: cells {dirty} hold outputs; regenerate the exercise"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_opens_with_the_standard_cell_and_ends_with_a_recap(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    lines = [ln for ln in first_code.source.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[:2] == FIRST_CELL
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # A clean-up code cell may follow the recap; the last words a learner reads are the recap.
    last_prose = [c for c in nb.cells if c.cell_type == "markdown"][-1]
    assert re.search(r"^#+ .*recap", last_prose.source, re.I | re.M), "the last prose has no Recap heading"


@pytest.mark.parametrize("topic", list(TOPICS))
def test_every_topic_is_taught(topic, lesson_text):
    assert re.search(TOPICS[topic], lesson_text, re.I | re.M), f"no lesson covers {topic!r}"


# -- each lesson owns its tables ----------------------------------------------------------
# A lesson's tables and indexes are named `<topic>_...`, the topic being the first word of its file
# name after the number (06_hybrid_search.ipynb -> hybrid_docs), so that any lessons can run side by
# side, in any order, without touching each other's tables.

# pvc functions that read or write a table -> the position of the table among their arguments.
TABLE_ARG = {
    "create_documents_table": None, "create_corpus_table": 1, "insert_document": None,
    "insert_documents": None, "copy_vectors": 1, "search": None, "search_by_vector": None,
    "keyword_search": None, "hybrid_search": None, "create_index": None, "drop_indexes": 1,
    "load_vectors": None, "check_distinct": 1, "run_benchmark": None, "IndexTuner": None,
    "SearchBox": None,
}
CREATES = re.compile(r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s*(?:\(|AS\b)"
                     r"|\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\s+ON\b",
                     re.I)


def topic(path: Path) -> str:
    return path.stem.split("_")[1]


def _code(path: Path) -> list[str]:
    # Shell escapes (!cmd) and magics (%cmd) are not Python.
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    return ["\n".join(ln for ln in cell.splitlines() if not ln.lstrip().startswith(("!", "%")))
            for cell in cells]


def lesson_tables(path: Path) -> tuple[set[str], list[str]]:
    """Return the tables a lesson creates or passes to pvc, and the pvc calls that name no table."""
    trees = [ast.parse(cell) for cell in _code(path)]
    names = {t.id: n.value.value for tree in trees for n in ast.walk(tree) if isinstance(n, ast.Assign)
             and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str) for t in n.targets
             if isinstance(t, ast.Name)}  # fmt: skip
    tables = {name for cell in _code(path) for pair in CREATES.findall(cell) for name in pair if name}
    missing = []
    for node in (n for tree in trees for n in ast.walk(tree)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "pvc"
                and node.func.attr in TABLE_ARG):
            continue
        position = TABLE_ARG[node.func.attr]
        given = next((k.value for k in node.keywords if k.arg == "table"), None)
        if given is None and position is not None and len(node.args) > position:
            given = node.args[position]
        if isinstance(given, ast.Name) and given.id in names:
            tables.add(names[given.id])
        elif isinstance(given, ast.Constant) and isinstance(given.value, str):
            tables.add(given.value)
        else:
            missing.append(f"line {node.lineno}: pvc.{node.func.attr}(...)")
    return tables, missing


def test_lesson_topics_are_distinct():
    topics = [topic(path) for path in LESSONS]
    assert len(set(topics)) == len(topics), f"two lessons' file names start with the same word: {topics}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_each_lesson_names_its_own_tables_after_its_topic(path):
    tables, missing = lesson_tables(path)
    assert missing == [], f"these calls use the default table, which lessons share; pass table=: {missing}"
    foreign = sorted(t for t in tables if not t.startswith(topic(path) + "_"))
    assert foreign == [], f"name this lesson's tables and indexes {topic(path)}_...: {foreign}"


def test_the_table_rule_sees_sql_and_calls(tmp_path):
    nb = notebooks.build('# %%\nDOCS = "hybrid_docs"\npvc.create_corpus_table(conn, DOCS)\n'
                         'conn.execute("CREATE TABLE IF NOT EXISTS hybrid_x (id int)")\n'
                         'conn.execute("CREATE INDEX ON hybrid_x (id)")\n'
                         'conn.execute("CREATE INDEX documents_idx ON documents (id)")\n'
                         'print("CREATE INDEX failed: too big")\n'
                         'pvc.search(conn, "q", k=3)\n!echo shell\n'
                         'pvc.SearchBox(conn, table="hybrid_docs")')
    path = tmp_path / "06_hybrid_sample.ipynb"
    nbformat.write(nb, path)
    assert lesson_tables(path) == ({"hybrid_docs", "hybrid_x", "documents_idx"}, ["line 7: pvc.search(...)"])


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_nbval_markers_are_tags_not_comments(path):
    nb = nbformat.read(path, as_version=4)
    comments = [n for n, c in enumerate(nb.cells, 1) if re.search(r"^\s*#\s*NBVAL_", c.source, re.M)]
    assert comments == [], f"cells {comments} mark nbval in a comment; run the notebook tool to make it a tag"
    tagged = [c for c in nb.cells if notebooks.CHECK_OUTPUT in c.metadata.get("tags", [])]
    assert all(c.cell_type == "code" and c.outputs for c in tagged)


# Reprs of objects a learner should never have to read: a psycopg cursor returned by the last
# conn.execute(...) of a cell, and Decimal values (round in Python, or cast to float in SQL).
NOISE = re.compile(r"<psycopg\.\w+ |Decimal\('")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_outputs_hold_no_raw_reprs(path):
    nb = nbformat.read(path, as_version=4)
    noisy = [n for n, c in enumerate(nb.cells, 1) for out in c.get("outputs", [])
             if NOISE.search(str(out.get("data", {}).get("text/plain", "")) + str(out.get("text", "")))]
    assert noisy == [], f"cells {noisy} show a cursor or Decimal repr"


# pvc.check grades an exercise task, so the exercises are where it is used (every one of them); lessons
# use it for their practice cells (tested above).
EXERCISE_HELPERS = {"check"}


@pytest.mark.parametrize("name", sorted(set(pgvec_course.__all__) - EXERCISE_HELPERS))
def test_every_public_helper_is_used_in_a_lesson(name):
    code = "\n".join(_sources(nbformat.read(path, as_version=4), "code") for path in LESSONS)
    assert re.search(rf"\bpvc\.{name}\b", code), f"no lesson uses pvc.{name}"


@pytest.mark.parametrize("name", sorted(EXERCISE_HELPERS))
def test_exercise_helpers_are_used_in_every_exercise(name):
    exercises = sorted((ROOT / "exercises").glob("*.ipynb"))
    assert len(exercises) == 3
    for path in exercises:
        code = _sources(nbformat.read(path, as_version=4), "code")
        assert re.search(rf"\bpvc\.{name}\(", code), f"{path.name} never calls pvc.{name}"


# -- the tool itself ------------------------------------------------------------------

SAMPLE = """# %% [markdown]
# A sample

Some prose.
# %%
import os
print(os.path.basename(os.getcwd()), os.environ.get("PGVEC_EMBEDDER"))
# %%
{step}
"""


def _tool(capsys, *args: str) -> tuple[int, str, str]:
    code = notebooks.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_then_run_stamps_and_check_catches_an_edit(tmp_path, capsys):
    (tmp_path / "sample.txt").write_text(SAMPLE.format(step="6 * 7"))
    path = tmp_path / "nb" / "sample.ipynb"
    path.parent.mkdir()
    assert _tool(capsys, "build", str(tmp_path / "sample.txt"), str(path))[0] == 0
    assert notebooks.check(path) == [
        f"{path}: never run with the tool; run 'python -m pgvec_course.notebooks run {path}'"]

    code, out, err = _tool(capsys, "run", str(path))
    assert code == 0, err
    assert out.startswith(f"ran {path} in ")
    nb = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[1].outputs[0].text == "nb local\n"  # cwd is the notebook's folder; offline embedder
    assert nb.cells[2].outputs[0].data["text/plain"] == "42"
    assert nb.metadata.pgvec_course.source_hash == notebooks.source_hash(nb)
    assert _tool(capsys, "check", str(path)) == (0, "1 notebook(s) stamped and error-free\n", "")

    nb.cells[2].source = "6 * 8"
    nbformat.write(nb, path)
    assert _tool(capsys, "check", str(path)) == (1, "", (
        f"{path}: edited since it was last run (stale outputs); "
        f"run 'python -m pgvec_course.notebooks run {path}'\n"))


def test_run_refuses_to_save_a_notebook_with_an_error(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebooks.build(SAMPLE.format(step="1 / 0")), path)
    before = path.read_bytes()
    assert _tool(capsys, "run", str(path)) == (1, "", (
        f"error: {path}: cell 3 raised ZeroDivisionError: division by zero\n"
        "    cell starts: '1 / 0'\n"
        "notebook not saved; fix the cell and run it again\n"))
    assert path.read_bytes() == before


def test_nbval_comment_markers_become_cell_tags():
    nb = notebooks.build("# %%\n# NBVAL_CHECK_OUTPUT\nx = 1\n"
                         "# %%\ny = 2  # NBVAL_SKIP stays: not a marker line\n"
                         "# %%\n#NBVAL_IGNORE_OUTPUT\n# a comment\nz = 3")
    assert [(c.source, c.metadata.get("tags")) for c in nb.cells] == [
        ("x = 1", ["nbval-check-output"]),
        ("y = 2  # NBVAL_SKIP stays: not a marker line", None),
        ("# a comment\nz = 3", ["nbval-ignore-output"]),
    ]
    assert notebooks.tag_markers(nb) == 0  # nothing left to move


def test_run_drops_finished_progress_bars(tmp_path, capsys):
    path = tmp_path / "bar.ipynb"
    source = "# %%\nfrom tqdm.auto import tqdm\nfor i in tqdm(range(3), desc='steps'):\n    i\nprint('done')"
    nbformat.write(notebooks.build(source), path)
    assert _tool(capsys, "run", str(path))[0] == 0
    assert [out.output_type for out in nbformat.read(path, as_version=4).cells[0].outputs] == ["stream"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lessons_keep_no_frozen_progress_bar(path):
    nb = nbformat.read(path, as_version=4)
    assert notebooks.drop_progress_bars(nb) == 0, "run the lesson with the notebook tool again"


def test_a_dropped_progress_bar_takes_its_saved_widget_state_along():
    nb = notebooks.build("# %%\nx = 1")
    bar = {"text/plain": " 0%|          | 0/38 [00:00<?, ?text/s]", notebooks._WIDGET: {"model_id": "abc"}}
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data=bar)]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}}}
    assert notebooks.drop_progress_bars(nb) == 2
    assert (nb.cells[0].outputs, "widgets" in nb.metadata) == ([], False)


def test_the_stamp_covers_cell_types_and_sources_but_not_outputs():
    nb = notebooks.build("# %%\nx = 1\n# %% [markdown]\nx = 1")
    stamp = notebooks.source_hash(nb)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi")]
    assert notebooks.source_hash(nb) == stamp
    nb.cells[1].cell_type = "raw"
    assert notebooks.source_hash(nb) != stamp
