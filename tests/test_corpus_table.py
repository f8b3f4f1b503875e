"""create_corpus_table: a lesson's set-up, complete, repeatable, and safe from two processes at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from psycopg.conninfo import make_conninfo

from pgvec_course.corpus import create_corpus_table, load_passages

# Each process waits for the same start time, then sets up its table `rounds` times, reading
# the row count after every set-up; it prints the counts, or the error it hit.
SETUP = textwrap.dedent("""
    import sys, time
    import pgvec_course as pvc

    url, table, start, rounds = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    conn = pvc.connect(url)
    pvc.get_embedder(quiet=True)                  # load the model before the race, not during it
    time.sleep(max(0.0, start - time.time()))
    counts = []
    for _ in range(rounds):
        pvc.create_corpus_table(conn, table, fulltext=True)
        counts.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    print(counts)
""")


def _url(conn) -> str:
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    # info.dsn leaves the password out; servers reached through DATABASE_URL may ask for one.
    return make_conninfo(conn.info.dsn, password=conn.info.password,
                         options=f"-c search_path={schema},public")


def test_corpus_table_holds_every_passage_with_its_id_and_embedding(conn):
    assert create_corpus_table(conn, "hybrid_docs", fulltext=True) == 276
    passages = load_passages()
    rows = conn.execute("SELECT id, title, category, vector_dims(embedding) FROM hybrid_docs ORDER BY id")
    assert rows.fetchall() == [(p.id, p.title, p.category, 384) for p in passages]
    assert conn.execute("SELECT count(*) FROM hybrid_docs WHERE tsv @@ to_tsquery('sqlstate & 23505')"
                        ).fetchone()[0] == 1  # fmt: skip


def test_corpus_table_can_be_set_up_again_after_a_lesson_changed_it(conn):
    create_corpus_table(conn, "nearest_docs")
    conn.execute("ALTER TABLE nearest_docs ADD COLUMN source_id int")
    conn.execute("INSERT INTO nearest_docs (title, content) VALUES ('extra', 'row')")
    assert create_corpus_table(conn, "nearest_docs") == 276
    assert conn.execute("SELECT count(*), max(id) FROM nearest_docs").fetchone() == (276, 276)
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'nearest_docs'::regclass AND attnum > 0")]
    assert "source_id" not in columns  # a fresh table, as the lesson expects on Run All


def test_two_processes_set_up_lesson_tables_at_once(conn):
    url = _url(conn)
    start = time.time() + 4  # both processes have imported the package and loaded the model by then
    runs = [("hybrid_docs", 3), ("hybrid_docs", 3), ("nearest_docs", 3)]  # the same lesson twice, and another
    procs = [
        subprocess.Popen([sys.executable, "-c", SETUP, url, table, str(start), str(rounds)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for table, rounds in runs
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "[276, 276, 276]", (out, err[-2000:])
    for table in ("hybrid_docs", "nearest_docs"):
        assert conn.execute(f"SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {table}"
                            ).fetchone() == (276, 276, 1, 276)  # fmt: skip
