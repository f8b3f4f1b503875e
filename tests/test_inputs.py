"""Every typical mistake a question lists is told apart from the reference by its inputs or its scorer.

For questions with inputs, the mistaken variant is computed on the actual public and hidden inputs
and must give a different answer from the reference on at least one of them. For mistakes that
live in the database (a table, a sweep), the mistaken table is built and the scorer must dock the
part that says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
from conftest import TEST_DB

import pgvec_course as pvc
from pgvec_course.grading import hidden
from pgvec_course.grading.checks import check
from pgvec_course.questions import EXERCISES, Context, fusion, get_exercise, hybrid
from pgvec_course.questions.tables import cosine_distances, ranked

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ROOT / "solutions" / "hidden"
TOL = 1e-4
IVFFLAT = "ivfflat (embedding vector_cosine_ops)"


def inputs(question_id: str) -> list:
    exercise = next(e for e in EXERCISES.values() if any(q.id == question_id for q in e.questions))
    question = exercise.question(question_id)
    return [question.public, hidden.load(exercise, HIDDEN).inputs[question_id]]


def differs(a: list, b: list) -> bool:
    """Return whether two answers [(id, number)] or [id] differ in ids, order or numbers."""
    if len(a) != len(b):
        return True
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            if x[0] != y[0] or abs(x[1] - y[1]) > TOL:
                return True
        elif x != y:
            return True
    return False


@pytest.fixture(scope="module")
def embedder():
    return pvc.get_embedder(quiet=True)


@pytest.fixture(scope="module")
def corpus(embedder):
    passages = pvc.load_passages()
    return {"ids": np.array([p.id for p in passages]), "titles": [p.title for p in passages],
            "contents": [p.content for p in passages], "rows": [(p.id, p.title, p.content) for p in passages],
            "vectors": embedder.embed([p.content for p in passages]),
            "title_vectors": embedder.embed([p.title for p in passages])}


# --- answers computed with and without each mistake ---------------------------------------------------


def ask_answers(corpus, embedder, mistake: str | None) -> list:
    questions = list(inputs("kb.ask")[0]) + list(inputs("kb.ask")[1](corpus["rows"]))
    out = []
    for q in embedder.embed(questions):
        vectors = corpus["title_vectors"] if mistake == "titles embedded" else corpus["vectors"]
        dist = cosine_distances(vectors, q)
        order = list(ranked(corpus["ids"], dist))
        if mistake == "DESC":
            order = order[::-1]
        elif mistake == "no ORDER BY":
            order = sorted(order)
        chosen = [int(i) for i in order[:5 if mistake == "LIMIT 5" else 3]]
        rows = [int(np.flatnonzero(corpus["ids"] == i)[0]) for i in chosen]
        if mistake == "L2 distances":
            numbers = np.linalg.norm(vectors[rows] - q, axis=1)
        else:
            numbers = 1 - dist[rows] if mistake == "similarities" else dist[rows]
        out.append([(i, float(n)) for i, n in zip(chosen, numbers, strict=True)])
    return out


def fusion_answers(conn, corpus, embedder, question_id: str, mistake: str | None) -> list:
    cases = [c for group in inputs(question_id) for c in group]
    texts = [c[0] for c in cases]
    doc = "to_tsvector('english', content)" if mistake == "tsv of content only" else fusion.DOC
    ranks = fusion.text_ranks(conn, corpus["ids"], corpus["titles"], corpus["contents"], texts, doc=doc)
    ids, out = corpus["ids"], []
    for (_, k, param), vec, (text, text_all) in zip(cases, embedder.embed(texts), ranks, strict=True):
        dist = cosine_distances(corpus["vectors"], vec)
        if question_id == "hybrid.weighted":
            scores = _weighted(ids, dist, text, text_all, k, param, mistake)
        else:
            scores = _rrf(ids, dist, text, k, param, mistake)
        out.append([(i, scores[i]) for i in fusion.top(scores, k)])
    return out


def _weighted(ids, dist, text, text_all, k, w, mistake):
    window = fusion.weighted_scores(ids, dist, text, k, w)
    if mistake == "every passage a candidate":
        return fusion.blend(ids, dist, text, w)
    if mistake == "weights swapped":
        return fusion.weighted_scores(ids, dist, text, k, 1 - w)
    if mistake == "no text rank":
        return fusion.weighted_scores(ids, dist, {}, k, w)
    if mistake == "ts_rank of non-matches":
        return {i: s for i, s in fusion.blend(ids, dist, text_all, w).items() if i in window}
    return window


def _rrf(ids, dist, text, k, rrf_k, mistake):
    if mistake == "0-based ranks":
        return fusion.rrf_scores(ids, dist, text, rrf_k, first=0)
    if mistake == "rrf_k ignored":
        return fusion.rrf_scores(ids, dist, text, 60)
    if mistake == "semantic leg only":
        return fusion.rrf_scores(ids, dist, {}, rrf_k)
    if mistake == "k candidates per leg":
        return fusion.rrf_scores(ids, dist, text, rrf_k, candidates=k)
    return fusion.rrf_scores(ids, dist, text, rrf_k)


def truth_answers(bench, mistake: str | None) -> list:
    data, conn = bench
    out = []
    for group in inputs("bench.truth"):
        for seed, k in group:
            query = np.random.default_rng(seed).random(1536, dtype=np.float32)
            if mistake == "an index answers":
                with conn.transaction():
                    conn.execute("SET LOCAL ivfflat.probes = 1")
                    out.append([r[0] for r in conn.execute(
                        "SELECT id FROM bench_items ORDER BY embedding <=> %s LIMIT %s", (query, k))])
                continue
            dist = np.linalg.norm(data - query, axis=1) if mistake == "L2 distance" else \
                cosine_distances(data, query)
            order = np.lexsort((np.arange(1, len(data) + 1), dist)) + 1
            out.append((order[::-1] if mistake == "DESC" else order)[:k].tolist())
    return out


def recall_answers(mistake: str | None) -> list:
    formulas = {
        None: lambda f, t, k: len(set(f[:k]) & set(t[:k])) / k,
        "position by position": lambda f, t, k: sum(a == b for a, b in zip(f[:k], t[:k], strict=False)) / k,
        "whole lists": lambda f, t, k: len(set(f) & set(t)) / k,
        "divided by the number found": lambda f, t, k: len(set(f[:k]) & set(t[:k])) / max(len(f[:k]), 1),
    }
    return [[round(formulas[mistake](*case), 9)] for group in inputs("bench.recall") for case in group]


def eval_answers(conn, embedder, mistake: str | None) -> list:
    found = _reference_found(conn, embedder)
    queries = pvc.load_queries()
    values = []
    for lists in found.values():
        for q, got in zip(queries, lists, strict=True):
            hits = [n for n, pid in enumerate(got[:5], start=1) if pid in q.relevant]
            recall = len(hits) / (5 if mistake == "precision for recall" else len(q.relevant))
            mrr = (1 / hits[-1] if mistake == "MRR of the last hit" else 1 / hits[0]) if hits else 0.0
            values.append([round(recall, 9), round(mrr, 9)])
    return values


def _reference_found(conn, embedder) -> dict:
    ctx = Context(conn, embedder)
    queries = pvc.load_queries()
    rows, vectors, ranks = hybrid.references(ctx, [q.query for q in queries])
    found = {"semantic": [], "weighted": [], "rrf": []}
    for vector, (text, _) in zip(vectors, ranks, strict=True):
        dist = cosine_distances(rows.reference, vector)
        found["semantic"].append([int(i) for i in ranked(rows.ids, dist)[:5]])
        found["weighted"].append(fusion.top(fusion.weighted_scores(rows.ids, dist, text, 5, 0.7), 5))
        found["rrf"].append(fusion.top(fusion.rrf_scores(rows.ids, dist, text, 60), 5))
    return found


@pytest.fixture(scope="module")
def bench(test_db_url):
    """The template's 10,000 x 1536 vectors, in numpy and in a table with an IVFFlat index."""
    from pgvec_course import db

    rng = np.random.default_rng(42)
    data = rng.random((10_000, 1536), dtype=np.float32)
    with db.connect(test_db_url, dbname=TEST_DB) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS inputs_bench")
        conn.execute("SET search_path = inputs_bench, public")
        conn.execute("DROP TABLE IF EXISTS bench_items")
        conn.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, embedding vector(1536))")
        with conn.cursor() as cur, cur.copy("COPY bench_items FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "vector"])
            for i, v in enumerate(data, start=1):
                copy.write_row((i, v))
        conn.execute(f"CREATE INDEX ON bench_items USING {IVFFLAT} WITH (lists = 100)")
        yield data.astype(np.float64), conn
        conn.execute("DROP SCHEMA inputs_bench CASCADE")


ANSWERS = {
    "kb.ask": lambda env, m: ask_answers(env["corpus"], env["embedder"], m),
    "bench.truth": lambda env, m: truth_answers(env["bench"](), m),
    "bench.recall": lambda env, m: recall_answers(m),
    "hybrid.weighted": lambda env, m: fusion_answers(env["conn"], env["corpus"], env["embedder"],
                                                     "hybrid.weighted", m),
    "hybrid.rrf": lambda env, m: fusion_answers(env["conn"], env["corpus"], env["embedder"], "hybrid.rrf", m),
    "hybrid.eval": lambda env, m: eval_answers(env["conn"], env["embedder"], m),
}
QUESTIONS = [q for e in EXERCISES.values() for q in e.questions]
WITH_INPUTS = [(q.id, m) for q in QUESTIONS if q.id in ANSWERS for m in q.mistakes]


@pytest.mark.parametrize(("question_id", "mistake"), WITH_INPUTS, ids=[f"{q}:{m}" for q, m in WITH_INPUTS])
def test_the_inputs_tell_each_listed_mistake_from_the_reference(question_id, mistake, conn, corpus, embedder,
                                                                 request):
    env = {"corpus": corpus, "embedder": embedder, "conn": conn,
           "bench": lambda: request.getfixturevalue("bench")}
    right, wrong = ANSWERS[question_id](env, None), ANSWERS[question_id](env, mistake)
    assert any(differs(w, r) for w, r in zip(wrong, right, strict=True)), (question_id, mistake)


def test_the_window_mistake_is_caught_by_most_hidden_weighted_inputs(conn, corpus, embedder):
    right = fusion_answers(conn, corpus, embedder, "hybrid.weighted", None)
    wrong = fusion_answers(conn, corpus, embedder, "hybrid.weighted", "every passage a candidate")
    public = len(inputs("hybrid.weighted")[0])
    separated = [differs(w, r) for w, r in zip(wrong, right, strict=True)]
    assert separated[public:] == [True, True, False, False, True]


# --- mistakes the scorers find in the database ---------------------------------------------------------


def make_kb(conn, embedder, passages, *, vectors=None):
    conn.execute(f"CREATE TABLE kb_passages (id integer PRIMARY KEY, title text, content text, "
                 f"category text, embedding vector({embedder.dim}))")
    vectors = embedder.embed([p.content for p in passages]) if vectors is None else vectors
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO kb_passages VALUES (%s, %s, %s, %s, %s)",
                        [(p.id, p.title, p.content, p.category, v)
                         for p, v in zip(passages, vectors, strict=True)])


def failing_parts(outcome) -> set[str]:
    return {p.name for p in outcome.parts if not p.passed}


def hashed(texts, dim):
    """Another embedding model: a bag of hashed words, normalised."""
    import hashlib

    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1
        out[row] /= np.linalg.norm(out[row]) or 1
    return out


def kb_table_mistake(conn, embedder, mistake):
    passages = pvc.load_passages()[:60]
    vectors = {"titles embedded": lambda: embedder.embed([p.title for p in passages]),
               "one vector in every row": lambda: np.stack([embedder.embed_one(passages[0].content)] * 60),
               "another embedding model": lambda: hashed([p.content for p in passages], embedder.dim),
               }.get(mistake, lambda: None)()
    make_kb(conn, embedder, passages, vectors=vectors)
    if mistake != "never committed":
        return failing_parts(check("kb.table", conn=conn))
    from pgvec_course import db

    with psycopg.connect(db.database_url(), dbname=conn.info.dbname) as pg:  # no autocommit, as psycopg2
        pg.execute("CREATE TEMP TABLE scratch (x int)")
        pg.execute("INSERT INTO scratch VALUES (1)")
        return failing_parts(check("kb.table", conn=conn, pg=pg))


def hybrid_table_mistake(conn, embedder, mistake):
    passages = pvc.load_passages()
    make_kb(conn, embedder, passages[:79] if mistake == "missing passages" else passages)
    if mistake == "tsv not generated":
        conn.execute("ALTER TABLE kb_passages ADD COLUMN tsv tsvector")
        conn.execute(f"UPDATE kb_passages SET tsv = {fusion.DOC}")
    else:
        conn.execute(f"ALTER TABLE kb_passages ADD COLUMN tsv tsvector "
                     f"GENERATED ALWAYS AS ({fusion.DOC}) STORED")
    conn.execute("CREATE INDEX ON kb_passages USING gin (tsv)")
    return failing_parts(check("hybrid.table", conn=conn))


def bench_table_mistake(conn, mistake):
    conn.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, embedding vector(1536))")
    one = np.random.default_rng(3).random(1536, dtype=np.float32)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench_items VALUES (%s, %s)", [(i, one) for i in range(1, 101)])
    return failing_parts(check("bench.table", conn=conn))


def sweep_mistake(conn, mistake):
    """Build a small benchmark with both indexes; score a sweep measured with the mistake."""
    from pgvec_course.questions.index_benchmark import default_queries

    data = np.random.default_rng(5).random((2_000, 1536), dtype=np.float32)
    conn.execute("CREATE TABLE bench_items (id integer PRIMARY KEY, embedding vector(1536))")
    with conn.cursor() as cur, cur.copy("COPY bench_items FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "vector"])
        for i, v in enumerate(data, start=1):
            copy.write_row((i, v))
    queries = default_queries()[:10]
    norm = data / np.linalg.norm(data, axis=1, keepdims=True)
    truth = [(np.argsort(-(norm @ (q / np.linalg.norm(q))), kind="stable")[:10] + 1).tolist()
             for q in queries]
    conn.execute(f"CREATE INDEX bench_ivfflat ON bench_items USING {IVFFLAT} WITH (lists = 40)")
    conn.execute("CREATE INDEX bench_hnsw ON bench_items USING hnsw (embedding vector_cosine_ops) "
                 "WITH (m = 8, ef_construction = 16)")
    rows = [{"index": "none", "param": None, "value": None, "p50_ms": 5.0, "recall": 1.0}]
    for kind, other, param, values in (("ivfflat", "bench_hnsw", "probes", (1, 3, 10)),
                                       ("hnsw", "bench_ivfflat", "ef_search", (10, 20, 40))):
        for value in values:
            recalls = []
            for q, t in zip(queries, truth, strict=True):
                # Each index measured alone: the other is dropped in a transaction that is rolled back.
                with conn.transaction(force_rollback=True):
                    conn.execute(f"DROP INDEX {other}")
                    conn.execute("SELECT set_config(%s, %s, true)", (f"{kind}.{param}", str(value)))
                    if mistake == "a session-wide SET":
                        conn.execute("SET LOCAL enable_indexscan = off")
                    found = [r[0] for r in conn.execute(
                        "SELECT id FROM bench_items ORDER BY embedding <=> %s LIMIT 10", (q,))]
                share = (sum(a == b for a, b in zip(found, t, strict=False)) if mistake == "positional recall"
                         else len(set(found) & set(t))) / 10
                recalls.append(share)
            rows.append({"index": kind, "param": param, "value": value, "p50_ms": 1.0,
                         "recall": float(np.mean(recalls))})
    if mistake == "typed-in figures":
        conn.execute("DROP INDEX bench_ivfflat")
        conn.execute("DROP INDEX bench_hnsw")
    right = check("bench.sweep", rows, conn=conn, queries=queries.astype(np.float32))
    return failing_parts(right) if mistake else right


IN_DATABASE = {
    "kb.table": lambda env, m: kb_table_mistake(env["conn"], env["embedder"], m),
    "hybrid.table": lambda env, m: hybrid_table_mistake(env["conn"], env["embedder"], m),
    "bench.table": lambda env, m: bench_table_mistake(env["conn"], m),
    "bench.sweep": lambda env, m: sweep_mistake(env["conn"], m),
}
EXPECTED_PART = {"titles embedded": "embeddings", "one vector in every row": "embeddings",
                 "another embedding model": "embeddings", "never committed": "committed",
                 "missing passages": "passages", "tsv not generated": "tsv"}
IN_DB = [(q.id, m) for q in QUESTIONS if q.id in IN_DATABASE for m in q.mistakes]


def test_every_listed_mistake_is_tested_here():
    listed = {(q.id, m) for e in EXERCISES.values() for q in e.questions for m in q.mistakes}
    assert listed == set(WITH_INPUTS) | set(IN_DB)
    assert all(q.mistakes for e in EXERCISES.values() for q in e.questions)


@pytest.mark.parametrize(("question_id", "mistake"), IN_DB, ids=[f"{q}:{m}" for q, m in IN_DB])
def test_the_scorer_finds_each_listed_mistake_in_the_database(question_id, mistake, conn, embedder):
    failing = IN_DATABASE[question_id]({"conn": conn, "embedder": embedder}, mistake)
    if question_id == "bench.sweep":
        assert failing == {"ivfflat", "hnsw"}, mistake
    elif question_id == "bench.table":
        assert failing == {"rows", "distinct"}  # 100 rows of one vector
    else:
        assert EXPECTED_PART[mistake] in failing, (mistake, failing)


def test_a_right_sweep_on_the_same_benchmark_passes(conn):
    outcome = sweep_mistake(conn, None)
    assert (outcome.passed, outcome.points) == (True, 3), str(outcome)


def test_hidden_inputs_differ_from_public_ones():
    for exercise in EXERCISES.values():
        tests = hidden.load(get_exercise(exercise.name), HIDDEN)
        for q in exercise.questions:
            if q.public is not None:
                assert tests.inputs[q.id] != q.public, q.id
