"""The exercises' checks: the reference solutions pass, typical mistakes fail with a useful hint."""

from __future__ import annotations

import numpy as np
import pytest

import pgvec_course as pvc
from pgvec_course.grading.checks import check
from pgvec_course.questions import EXERCISES, find_question, get_exercise, spec


@pytest.fixture(scope="module")
def embedder():
    return pvc.get_embedder(quiet=True)


@pytest.fixture(scope="module")
def passages():
    return pvc.load_passages()


def make_kb(conn, embedder, passages, *, text=lambda p: p.content, dim=None, fulltext=False):
    conn.execute(
        f"CREATE TABLE kb_passages (id integer PRIMARY KEY, title text, content text, "
        f"category text, embedding vector({dim or embedder.dim}))"
    )
    vectors = embedder.embed([text(p) for p in passages])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO kb_passages VALUES (%s, %s, %s, %s, %s)",
            [(p.id, p.title, p.content, p.category, v) for p, v in zip(passages, vectors, strict=True)],
        )
    if fulltext:
        conn.execute(
            "ALTER TABLE kb_passages ADD COLUMN tsv tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', title || ' ' || content)) STORED"
        )
        conn.execute("CREATE INDEX ON kb_passages USING gin (tsv)")


def make_ask(conn, embedder, *, operator="<=>", order="ORDER BY distance", limit=3):
    def ask(question):
        rows = conn.execute(
            f"SELECT id, embedding {operator} %s AS distance FROM kb_passages {order} LIMIT {limit}",
            (embedder.embed_one(question),),
        ).fetchall()
        return [(pid, float(d)) for pid, d in rows]

    return ask


def test_every_exercise_is_registered_with_distinct_question_ids():
    assert list(EXERCISES) == ["01_knowledge_base", "02_index_benchmark", "03_hybrid_search"]
    ids = [q.id for e in EXERCISES.values() for q in e.questions]
    assert ids == [
        "kb.table",
        "kb.ask",
        "bench.table",
        "bench.truth",
        "bench.recall",
        "bench.sweep",
        "hybrid.table",
        "hybrid.weighted",
        "hybrid.rrf",
        "hybrid.eval",
    ]
    assert [e.max_points for e in EXERCISES.values()] == [10, 10, 13]
    assert len(spec.tests_hash(get_exercise("01_knowledge_base"))) == 16


def test_hidden_inputs_differ_from_public_ones():
    for q in ("kb.ask", "bench.truth", "bench.recall", "hybrid.weighted", "hybrid.rrf"):
        question = find_question(q)[1]
        assert question.probe(True) != question.probe(False), q


def test_unknown_question_and_extra_objects_explain_instead_of_raising():
    out = check("kb.nope")
    assert not out.passed and out.feedback.startswith("unknown question 'kb.nope'; known: kb.table, kb.ask")
    out = check("kb.ask", len, len)
    assert out.feedback == "pvc.check('kb.ask', ...) takes ask; got 2 objects"


# --- exercise 1 -------------------------------------------------------------------------------


def test_kb_reference_passes(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    table = check("kb.table", conn=conn)
    assert (table.passed, table.points, table.feedback) == (
        True,
        4,
        "60 passages with vector(384) embeddings of their content",
    )
    out = check("kb.ask", make_ask(conn, embedder), conn=conn)
    assert (out.passed, out.points, out.max_points) == (True, 6, 6)
    assert out.feedback == "the 3 nearest passages and cosine distances match for 3 questions"
    assert str(out).startswith("✔ passed kb.ask (6/6 points)")


def test_kb_ask_with_l2_distances_fails(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, operator="<->"), conn=conn)
    assert (out.passed, out.points) == (False, 0)
    assert (
        out.feedback
        == "these look like L2 distances (<->), not cosine distances (<=>) (0 of 3 inputs passed)"
    )


def test_kb_ask_without_the_right_limit_fails(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, limit=5), conn=conn)
    assert out.feedback == "expected 3 results, got 5: did you forget LIMIT? (0 of 3 inputs passed)"


def test_kb_ask_descending_fails(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, order="ORDER BY distance DESC"), conn=conn)
    assert out.feedback == (
        "distances are descending: nearest first means ascending order (did you add DESC?) "
        "(0 of 3 inputs passed)"
    )


def test_kb_ask_without_order_by_fails(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, order=""), conn=conn)
    assert not out.passed
    assert out.feedback.rsplit(" (", 1)[0] in (
        "distances are not ascending: did you forget ORDER BY?",
        "distances are descending: nearest first means ascending order (did you add DESC?)",
        "these are not the 3 nearest passages: did you forget ORDER BY the cosine distance?",
    )
    # Rows in insertion order are ids 1, 2, 3: never the nearest for all three questions.
    assert out.points < 6


def test_kb_ask_placeholder_and_wrong_type_explain(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])

    def placeholder(question):
        raise NotImplementedError("Write ask()")

    out = check("kb.ask", placeholder, conn=conn)
    assert out.feedback == (
        "not yet: ask() still raises NotImplementedError; replace the placeholder with your code"
    )
    assert str(out) == ("✘ not yet kb.ask (0/6 points): ask() still raises NotImplementedError; replace the "
                        "placeholder with your code")
    out = check("kb.ask", lambda q: "passage 1", conn=conn)
    assert out.feedback.startswith("ask() should return a list of (id, number) tuples, not str")
    out = check("kb.ask", conn=conn)
    assert out.feedback == "not yet: no `ask` is defined; run the cell that defines it first"


def test_kb_table_mistakes(conn, embedder, passages):
    assert (
        check("kb.table", conn=conn).feedback == "there is no table kb_passages: run the cell that creates it"
    )
    make_kb(conn, embedder, passages[:60], text=lambda p: p.title)
    out = check("kb.table", conn=conn)
    assert (out.points, out.feedback) == (
        3.2,
        (
            "the embedding of passage 1 is not the embedder's vector of its content: "
            "embed the content column "
            "with pvc.get_embedder(), one vector per passage, same order (4 of 5 inputs passed)"
        ),
    )
    conn.execute("DROP TABLE kb_passages")
    conn.execute(
        "CREATE TABLE kb_passages (id int, title text, content text, category text, embedding vector(1536))"
    )
    out = check("kb.table", conn=conn)
    assert out.feedback == (
        "embedding is vector(1536), but the embedder (all-MiniLM-L6-v2) makes 384-dimensional "
        "vectors: declare it vector(384)"
    )


# --- exercise 2 -------------------------------------------------------------------------------


def load_bench(conn, data):
    conn.execute(f"CREATE TABLE bench_items (id integer PRIMARY KEY, embedding vector({data.shape[1]}))")
    with conn.cursor() as cur, cur.copy("COPY bench_items FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "vector"])
        for i, v in enumerate(data, start=1):
            copy.write_row((i, v))


def exact(conn, *, operator="<=>", direction=""):
    def exact_top_k(query, k=10):
        rows = conn.execute(
            f"SELECT id FROM bench_items ORDER BY embedding {operator} %s {direction}, id LIMIT %s",
            (query, k),
        ).fetchall()
        return [r[0] for r in rows]

    return exact_top_k


def test_bench_table_reference_and_mistakes(conn):
    load_bench(conn, np.random.default_rng(1).random((10_000, 1536), dtype=np.float32))
    out = check("bench.table", conn=conn)
    assert (out.passed, out.feedback) == (True, "10,000 distinct random vector(1536) rows")
    conn.execute("UPDATE bench_items SET embedding = (SELECT embedding FROM bench_items WHERE id = 1)")
    out = check("bench.table", conn=conn)
    assert (out.points, out.feedback) == (
        1.5,
        "every row holds the same vector: draw a new random vector for each row (3 of 4 inputs passed)",
    )
    conn.execute("DELETE FROM bench_items WHERE id > 100")
    assert check("bench.table", conn=conn).feedback == (
        "bench_items has 100 rows; the benchmark needs 10,000 (2 of 3 inputs passed)"
    )


def test_bench_truth_reference_and_mistakes(conn):
    load_bench(conn, np.random.default_rng(2).random((2_000, 1536), dtype=np.float32))
    out = check("bench.truth", exact(conn), conn=conn)
    assert (out.passed, out.feedback) == (True, "exact_top_k matches an exact search in numpy")
    out = check("bench.truth", exact(conn, operator="<->"), conn=conn)
    assert (out.points, out.feedback) == (
        0,
        "these are the nearest ids by L2 distance (<->); the benchmark "
        "uses cosine distance (<=>) (0 of 3 inputs passed)",
    )
    out = check("bench.truth", exact(conn, direction="DESC"), conn=conn)
    assert out.feedback == (
        "these are the farthest vectors: nearest first means ascending distance (did you "
        "add DESC?) (0 of 3 inputs passed)"
    )
    out = check("bench.truth", lambda q, k: exact(conn)(q, k)[:-1] + [1], conn=conn)
    assert out.feedback.startswith("only 9 of your 10 ids are true nearest neighbours: is an index answering")


def test_bench_recall_reference_and_mistakes():
    def right(found, truth, k):
        return len(set(found[:k]) & set(truth[:k])) / k

    def positional(found, truth, k):  # what comparing sorted distance lists element by element amounts to
        return sum(a == b for a, b in zip(found[:k], truth[:k], strict=False)) / k

    def untruncated(found, truth, k):
        return len(set(found) & set(truth)) / k

    def by_found(found, truth, k):
        return len(set(found[:k]) & set(truth[:k])) / len(found[:k])

    assert check("bench.recall", right).passed
    assert check("bench.recall", positional).feedback == (
        "recall_at_k([3, 2, 1, 9], [1, 2, 3, 4], k=4) = 0.25: recall counts shared ids whatever their "
        "position; compare sets of ids, not the lists element by element (2 of 4 inputs passed)"
    )
    assert check("bench.recall", untruncated).feedback == (
        "recall_at_k([9, 8, 1, 2, 3], [1, 2, 3, 4, 5], k=3) = 1: only the first k ids of each list count "
        "(3 of 4 inputs passed)"
    )
    out = check("bench.recall", by_found)
    assert (out.points, out.feedback) == (
        1.5,
        "recall_at_k([5, 6], [5, 6, 7, 8], k=4) = 1: divide by k, not by "
        "the number of ids found (3 of 4 inputs passed)",
    )


def sweep(none=1.0, ivf=(0.05, 0.2, 0.6), hnsw=(0.3, 0.6, 0.9)):
    rows = [{"index": "none", "param": None, "value": None, "p50_ms": 40.0, "recall": none}]
    rows += [
        {"index": "ivfflat", "param": "probes", "value": v, "p50_ms": 1.0 + v, "recall": r}
        for v, r in zip((1, 5, 20), ivf, strict=True)
    ]
    rows += [
        {"index": "hnsw", "param": "ef_search", "value": v, "p50_ms": 2.0 + v / 10, "recall": r}
        for v, r in zip((10, 40, 160), hnsw, strict=True)
    ]
    return rows


def test_bench_sweep_reference_and_mistakes():
    out = check("bench.sweep", sweep())
    assert (out.passed, out.feedback) == (
        True,
        "exact search has recall 1.0, and recall grows with probes and ef_search",
    )
    # Recall computed on distances: floats from the index never equal the exact ones.
    out = check("bench.sweep", sweep(none=0.0, ivf=(0, 0, 0), hnsw=(0, 0, 0)))
    assert (out.points, out.feedback) == (
        0,
        (
            "recall without an index is 0, but an exact scan finds exactly the ground truth (1.0): "
            "compare ids, "
            "not distances, and use the ground truth's distance (0 of 3 inputs passed)"
        ),
    )
    out = check("bench.sweep", sweep(ivf=(0.05, 0.05, 0.05)))
    assert out.feedback == (
        "ivfflat recall does not change with probes: is probes set in the same "
        "transaction as the query (SET LOCAL needs one)? (2 of 3 inputs passed)"
    )
    out = check("bench.sweep", sweep(hnsw=(1.0, 1.0, 1.0)))
    assert out.feedback.startswith(
        "hnsw recall is 1.0 even at ef_search=10: Postgres probably scanned exactly"
    )
    out = check("bench.sweep", sweep(hnsw=(0.9, 0.6, 0.3)))
    assert out.feedback == (
        "hnsw recall falls from ef_search=10 to 40: is ef_search set for each run? (2 of 3 inputs passed)"
    )
    assert check("bench.sweep", [{"index": "none"}]).feedback == (
        "a row of results has no 'param'; each row needs index, param, value, p50_ms, recall"
    )


# --- exercise 3 -------------------------------------------------------------------------------

WEIGHTED = """
    WITH nearest AS (SELECT id, 1 - (embedding <=> %(q)s) AS sim FROM kb_passages
                     ORDER BY embedding <=> %(q)s, id LIMIT %(n)s),
         matches AS (SELECT id, ts_rank(tsv, plainto_tsquery('english', %(text)s)) AS r FROM kb_passages
                     WHERE tsv @@ plainto_tsquery('english', %(text)s))
    SELECT n.id, {sem} * n.sim + {txt} * coalesce(m.r, 0) AS score
    FROM nearest n LEFT JOIN matches m USING (id) ORDER BY score {direction}, n.id LIMIT %(k)s"""

RRF = """
    WITH s AS (SELECT id, row_number() OVER (ORDER BY embedding <=> %(q)s, id) {shift} AS rank
               FROM kb_passages
               ORDER BY embedding <=> %(q)s, id LIMIT 50),
         t AS (SELECT id, row_number() OVER (ORDER BY ts_rank(tsv, query) DESC, id) {shift} AS rank
               FROM kb_passages, plainto_tsquery('english', %(text)s) query WHERE tsv @@ query
               ORDER BY rank LIMIT 50)
    SELECT id, sum(1.0::float8 / (%(rrf_k)s + rank)) AS score
    FROM (SELECT * FROM s UNION ALL SELECT * FROM t) l
    GROUP BY id ORDER BY score DESC, id LIMIT %(k)s"""


def weighted(conn, embedder, *, sem="%(w)s", txt="(1 - %(w)s)", direction="DESC"):
    def weighted_hybrid(query, k=5, semantic_weight=0.7):
        rows = conn.execute(
            WEIGHTED.format(sem=sem, txt=txt, direction=direction),
            {"q": embedder.embed_one(query), "text": query, "n": 2 * k, "k": k, "w": semantic_weight},
        ).fetchall()
        return [(i, float(s)) for i, s in rows]

    return weighted_hybrid


def rrf(conn, embedder, *, shift=""):
    def rrf_hybrid(query, k=5, rrf_k=60):
        rows = conn.execute(
            RRF.format(shift=shift), {"q": embedder.embed_one(query), "text": query, "k": k, "rrf_k": rrf_k}
        ).fetchall()
        return [(i, float(s)) for i, s in rows]

    return rrf_hybrid


def test_hybrid_reference_passes(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    assert (
        check("hybrid.table", conn=conn).feedback
        == "all passages, a generated tsv column and a GIN index on it"
    )
    out = check("hybrid.weighted", weighted(conn, embedder), conn=conn)
    assert (out.passed, out.feedback) == (
        True,
        "the tutorial's weighted blend, best first, matches for 3 queries",
    )
    out = check("hybrid.rrf", rrf(conn, embedder), conn=conn)
    assert (out.passed, out.feedback) == (True, "reciprocal rank fusion, best first, matches for 3 queries")


def test_hybrid_weighted_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    out = check("hybrid.weighted", weighted(conn, embedder, sem="(1 - %(w)s)", txt="%(w)s"), conn=conn)
    assert (out.points, out.feedback) == (
        0,
        (
            "the scores match the weights swapped: semantic_weight multiplies the semantic similarity, "
            "1 - semantic_weight the text rank (0 of 3 inputs passed)"
        ),
    )
    out = check("hybrid.weighted", weighted(conn, embedder, direction="ASC"), conn=conn)
    assert out.feedback == "scores are ascending: best first means ORDER BY score DESC (0 of 3 inputs passed)"


def test_hybrid_rrf_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    out = check("hybrid.rrf", rrf(conn, embedder, shift="- 1"), conn=conn)
    assert (out.points, out.feedback) == (
        0,
        ("the scores match 0-based ranks: the best row of each leg has rank 1 (0 of 3 inputs passed)"),
    )

    def fixed_k(query, k=5, rrf_k=60):
        return rrf(conn, embedder)(query, k, 60)

    out = check("hybrid.rrf", fixed_k, conn=conn)
    assert (out.points, out.feedback) == (
        2.67,
        "your scores ignore rrf_k: use the argument (2 of 3 inputs passed)",
    )


def test_hybrid_table_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages)
    conn.execute("ALTER TABLE kb_passages ADD COLUMN tsv tsvector")
    conn.execute("UPDATE kb_passages SET tsv = to_tsvector('english', title || ' ' || content)")
    out = check("hybrid.table", conn=conn)
    assert (out.points, out.feedback) == (
        1.0,
        (
            "tsv should be a generated column: GENERATED ALWAYS AS (to_tsvector('english', title || ' ' || "
            "content)) STORED (2 of 4 inputs passed)"
        ),
    )
    assert "there is no GIN index on tsv" not in out.feedback  # the first problem is shown


def test_hybrid_eval_reference_and_mistake(conn, embedder, passages):
    from pgvec_course.questions import Context
    from pgvec_course.questions.hybrid import reference_evaluation

    make_kb(conn, embedder, passages, fulltext=True)
    reference = reference_evaluation(Context(conn, embedder))
    out = check("hybrid.eval", reference, conn=conn)
    assert (out.passed, out.points) == (True, 3)
    # A common slip: MRR over the whole ranking is fine, but recall@5 on the top 10 is not.
    wrong = {m: {k: dict(v) for k, v in d.items()} for m, d in reference.items()}
    wrong["rrf"]["keyword"]["recall@5"] -= 0.1
    value = wrong["rrf"]["keyword"]["recall@5"]
    out = check("hybrid.eval", wrong, conn=conn)
    assert (out.points, out.feedback) == (
        2.0,
        (
            f"evaluation['rrf']['keyword']['recall@5'] = {value:.3f} differs from the value computed "
            "from your "
            "table (see the contract) (2 of 3 inputs passed)"
        ),
    )
    del wrong["weighted"]
    assert check("hybrid.eval", wrong, conn=conn).feedback.startswith(
        "evaluation['weighted']['keyword']['recall@5'] is missing (or not a number)"
    )
