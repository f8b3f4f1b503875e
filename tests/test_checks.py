"""The exercises' checks: right answers pass, typical mistakes earn partial credit with a useful hint."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

import pgvec_course as pvc
from pgvec_course.grading.checks import check
from pgvec_course.questions import EXERCISES, Context, get_exercise, spec
from pgvec_course.questions.scoring import blocked, score_parts


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


def make_ask(conn, embedder, *, select="embedding <=> %(q)s", order="ORDER BY embedding <=> %(q)s", limit=3):
    def ask(question):
        rows = conn.execute(
            f"SELECT id, {select} AS distance FROM kb_passages {order} LIMIT {limit}",
            {"q": embedder.embed_one(question)},
        ).fetchall()
        return [(pid, float(d)) for pid, d in rows]

    return ask


def parts(outcome) -> dict[str, float]:
    return {p.name: p.points for p in outcome.parts}


def test_every_exercise_is_registered_with_distinct_question_ids_and_rubrics():
    assert list(EXERCISES) == ["01_knowledge_base", "02_index_benchmark", "03_hybrid_search"]
    rubrics = {q.id: [(p.name, p.points) for p in q.rubric] for e in EXERCISES.values() for q in e.questions}
    assert rubrics == {
        "kb.table": [("structure", 0.5), ("rows", 1), ("embeddings", 1.5), ("committed", 1)],
        "kb.ask": [("nearest", 4), ("distances", 2)],
        "bench.table": [("structure", 0.5), ("rows", 0.5), ("distinct", 0.5), ("committed", 0.5)],
        "bench.truth": [("nearest", 2.5), ("order", 0.5)],
        "bench.recall": [("value", 2)],
        "bench.sweep": [("exact", 0.5), ("ivfflat", 1.25), ("hnsw", 1.25)],
        "hybrid.table": [("passages", 0.5), ("embeddings", 0.5), ("tsv", 0.5), ("gin", 0.25),
                         ("committed", 0.25)],
        "hybrid.weighted": [("ranking", 2.5), ("scores", 1.5)],
        "hybrid.rrf": [("ranking", 2.5), ("scores", 1.5)],
        "hybrid.eval": [("recall@5", 1.5), ("mrr", 1.5)],
    }
    assert [e.max_points for e in EXERCISES.values()] == [10, 10, 13]
    assert len(spec.tests_hash(get_exercise("01_knowledge_base"))) == 16
    assert spec.tests_hash(get_exercise("01_knowledge_base"), b"hidden") != \
        spec.tests_hash(get_exercise("01_knowledge_base"))


def test_no_hidden_input_or_reference_is_in_the_package():
    import pgvec_course.questions.hybrid as hybrid
    import pgvec_course.questions.index_benchmark as bench
    import pgvec_course.questions.knowledge_base as kb

    for module in (kb, bench, hybrid):
        assert not [n for n in vars(module) if n.startswith("HIDDEN") or n == "reference_evaluation"]


def test_parts_add_up_with_a_hint_per_part_and_inputs_counted():
    question = get_exercise("01_knowledge_base").question("kb.ask")
    out = score_parts(question, [{"nearest": (1.0, None), "distances": (0.0, "wrong unit")},
                                 {"nearest": (0.5, "only some"), "distances": (1.0, None)}], "fine")
    assert (out.points, out.passed, out.feedback) == (4.0, False, "only some (1 of 2 inputs passed)")
    assert [(p.name, p.points, p.hint) for p in out.parts] == [
        ("nearest", 3.0, "only some (1 of 2 inputs passed)"), ("distances", 1.0, "wrong unit (1 of 2 inputs "
                                                                                 "passed)")]
    assert str(out).splitlines() == [
        "✘ not yet kb.ask (4/6 points): only some (1 of 2 inputs passed)",
        "    ✘ nearest 3/4: the 3 passages nearest to the question, by exact search over the content's "
        "embeddings",
        "    ✘ distances 1/2: each with its cosine distance (<=>), nearest first"]
    assert "<li>✘ nearest 3/4: the 3 passages nearest" in out._repr_html_()
    stopped = blocked(question, "no table")
    assert (stopped.points, stopped.feedback) == (0, "no table")
    assert [p.hint for p in stopped.parts] == ["no table"] * 2


def test_unknown_question_and_extra_objects_explain_instead_of_raising():
    out = check("kb.nope")
    assert not out.passed and out.feedback.startswith("unknown question 'kb.nope'; known: kb.table, kb.ask")
    out = check("kb.ask", len, len)
    assert out.feedback == "pvc.check('kb.ask', ...) takes ask; got 2 objects"


# --- exercise 1 -------------------------------------------------------------------------------


def test_kb_reference_passes(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    table = check("kb.table", conn=conn)
    assert (table.passed, table.points, table.feedback) == (True, 4, "60 passages with vector(384) "
                                                                     "embeddings of "
                                                                    "their content")
    out = check("kb.ask", make_ask(conn, embedder), conn=conn)
    assert (out.passed, out.points, out.max_points) == (True, 6, 6)
    assert out.feedback == "the 3 nearest passages and cosine distances match for 3 questions"
    assert str(out).startswith("✔ passed kb.ask (6/6 points)")


def test_kb_takes_any_topic(conn, embedder):
    topic = [pvc.corpus.Passage(id=n, title=f"Recipe {n}", content=f"Step {n}: whisk {n} eggs with {n * 10} "
                                f"grams of flour and bake for {n + 5} minutes.", category="baking")
             for n in range(1, 56)]
    make_kb(conn, embedder, topic)
    assert check("kb.table", conn=conn).points == 4
    assert check("kb.ask", make_ask(conn, embedder), conn=conn).points == 6


def test_kb_ask_right_passages_in_the_wrong_unit_earn_most_points(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, select="embedding <-> %(q)s"), conn=conn)
    assert (out.passed, out.points, parts(out)) == (False, 4, {"nearest": 4, "distances": 0})
    assert out.feedback == ("these look like L2 distances (<->), not cosine distances (<=>) (0 of 3 inputs "
                            "passed)")
    out = check("kb.ask", make_ask(conn, embedder, select="1 - (embedding <=> %(q)s)"), conn=conn)
    assert (out.points, out.feedback) == (4, "these look like cosine similarities (1 - distance), not cosine "
                                             "distances (<=>) (0 of 3 inputs passed)")


def test_kb_ask_limit_and_order_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])
    out = check("kb.ask", make_ask(conn, embedder, limit=5), conn=conn)
    assert (out.points, out.feedback) == (4.4, "expected 3 results, got 5: did you forget LIMIT? (0 of 3 "
                                               "inputs "
                                               "passed)")
    out = check("kb.ask", make_ask(conn, embedder, order="ORDER BY embedding <=> %(q)s DESC"), conn=conn)
    assert (out.points, out.feedback) == (0, "these are the farthest passages: nearest first means ascending "
                                             "distance (did you add DESC?) (0 of 3 inputs passed)")
    assert [p.hint for p in out.parts][1] == ("distances are descending: nearest first means ascending order "
                                              "(did you add DESC?) (0 of 3 inputs passed)")
    out = check("kb.ask", make_ask(conn, embedder, select="1 - (embedding <=> %(q)s)", order="ORDER BY "
                                                                                             "distance"),
                conn=conn)
    assert (out.points, out.feedback) == (0, "these are the farthest passages: ordering by a similarity "
                                             "(1 - distance) puts the least similar first; order by the "
                                             "cosine "
                                             "distance (0 of 3 inputs passed)")
    out = check("kb.ask", make_ask(conn, embedder, order=""), conn=conn)
    assert out.feedback.startswith("these are not the 3 nearest passages: did you forget ORDER BY the cosine "
                                   "distance (<=>)?")
    assert out.points < 3


def test_kb_ask_placeholder_and_wrong_type_explain(conn, embedder, passages):
    make_kb(conn, embedder, passages[:60])

    def placeholder(question):
        raise NotImplementedError("Write ask()")

    out = check("kb.ask", placeholder, conn=conn)
    assert out.feedback == ("not yet: ask() still raises NotImplementedError; replace the placeholder with "
                            "your code")
    assert str(out).splitlines()[0] == ("✘ not yet kb.ask (0/6 points): ask() still raises "
                                        "NotImplementedError; "
                                        "replace the placeholder with your code")
    out = check("kb.ask", lambda q: "passage 1", conn=conn)
    assert out.feedback.startswith("ask() should return a list of (id, number) tuples, not str")
    assert check("kb.ask", conn=conn).feedback == ("not yet: no `ask` is defined; run the cell that defines "
                                                   "it first")


def test_kb_table_is_verified_row_by_row(conn, embedder, passages):
    assert check("kb.table", conn=conn).feedback == ("there is no table kb_passages: run the cell that "
                                                     "creates it")
    make_kb(conn, embedder, passages[:60], text=lambda p: p.title)
    out = check("kb.table", conn=conn)
    assert (out.points, parts(out), out.feedback) == (
        2.5, {"structure": 0.5, "rows": 1, "embeddings": 0, "committed": 1},
        "the embeddings are of the titles, not of the content: embed the content column")
    # A broken table cannot make ask look right: the reference is the content, embedded again.
    ask = check("kb.ask", make_ask(conn, embedder), conn=conn)
    assert ask.parts[0].hint.startswith("these are the nearest by the vectors stored in kb_passages, but "
                                        "those "
                                        "are not the embedder's vectors of the content (see kb.table)")
    conn.execute("UPDATE kb_passages SET embedding = (SELECT embedding FROM kb_passages WHERE id = 1)")
    out = check("kb.table", conn=conn)
    assert (out.points, out.feedback) == (2.5, "every row has the same embedding: embed each passage's own "
                                               "content, one vector per row")
    conn.execute("DROP TABLE kb_passages")
    conn.execute("CREATE TABLE kb_passages (id int, title text, content text, category text, embedding "
                 "vector(1536))")
    out = check("kb.table", conn=conn)
    assert (out.points, out.feedback) == (0, "embedding is vector(1536), but the embedder "
                                             "(all-MiniLM-L6-v2) makes "
                                             "384-dimensional vectors: declare it vector(384)")


def test_kb_table_names_rows_never_committed(conn, embedder, passages, test_db_url):
    from pgvec_course import db

    with psycopg.connect(db.database_url(), dbname=conn.info.dbname) as pg:  # no autocommit, like psycopg2
        pg.execute("CREATE TABLE kb_never_committed (id int)")
        out = check("kb.table", conn=conn, pg=pg)
        assert out.feedback == ("there is no committed table kb_passages: the rows were never committed (an "
                                "open "
                                "transaction on `pg`); call pg.commit() after creating and filling it")
        make_kb(conn, embedder, passages[:60])
        out = check("kb.table", conn=conn, pg=pg)
        assert (out.points, out.feedback) == (3, "the rows were never committed: psycopg2 (or psycopg "
                                                 "without "
                                                 "autocommit) opens a transaction for you; call pg.commit() "
                                                 "after "
                                                 "inserting")
        # An inline check only reports: the learner's transaction is still open.
        assert pg.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_kb_hidden_questions_come_from_the_learners_passages(conn, embedder, passages):
    from pathlib import Path

    from pgvec_course.grading import hidden
    from pgvec_course.questions import knowledge_base as kb

    tests = hidden.load(get_exercise("01_knowledge_base"), Path(__file__).parents[1] / "solutions" / "hidden")
    derive = tests.inputs["kb.ask"]
    make_kb(conn, embedder, passages[:60])
    questions = kb.questions_for(Context(conn, embedder), derive)
    assert len(questions) == 4 and questions[-1] == "Which passage explains the basics for a beginner?"
    assert questions[2].startswith("What should I know about ")
    assert questions == derive([(p.id, p.title, p.content) for p in passages[:60]])
    # The probe derives them in the kernel too, and the scorer accepts only answers to its own questions.
    ask = make_ask(conn, embedder)
    namespace = {"ask": ask, "__pvc_rows__": [(p.id, p.title, p.content) for p in passages[:60]]}
    exec(compile(kb.probe_ask(derive, grading=True), "<probe>", "exec"), namespace)
    data = namespace["__pvc_result__"]
    assert data["inputs"] == questions
    assert kb.score_ask(data, Context(conn, embedder), derive).points == 6
    data["inputs"][0] = "something else"
    out = kb.score_ask(data, Context(conn, embedder), derive)
    assert (out.points, out.feedback) == (4.5, "ask() was not called with the question derived from "
                                               "kb_passages: "
                                               "did a later cell change the table? (3 of 4 inputs passed)")


def test_kb_grader_reads_and_embeds_at_most_max_text_of_a_huge_passage(conn, embedder, passages):
    from pathlib import Path

    from pgvec_course.grading import hidden
    from pgvec_course.questions import knowledge_base as kb
    from pgvec_course.questions.tables import MAX_TEXT

    # 4 MB passages compress to a few kB in the table, but a grader that embedded them whole spent
    # minutes and gigabytes outside the submission's caps (hostile/huge_passages.ipynb).
    make_kb(conn, embedder, passages[:60])
    conn.execute("INSERT INTO kb_passages SELECT 100000 + g, 'lorem ' || repeat('x', 100000), "
                 "g || repeat(' lorem ipsum dolor sit amet', 150000), 'junk', "
                 "(SELECT embedding FROM kb_passages ORDER BY id LIMIT 1) FROM generate_series(1, 5) g")
    seen: list[int] = []

    class Recording:
        name, dim = embedder.name, embedder.dim

        def embed(self, texts):
            texts = list(texts)
            seen.extend(len(t) for t in texts)
            return embedder.embed(texts)

    ctx = Context(conn, Recording())
    table = kb.score_table({}, ctx, None)
    assert (table.points, table.feedback.split(":")[0]) == (
        3.88, "5 of 65 rows' embeddings are not all-MiniLM-L6-v2's vector of their content "
              "(passage 100001, for one)")
    derive = hidden.load(get_exercise("01_knowledge_base"), Path(__file__).parents[1] / "solutions/hidden")
    questions = kb.questions_for(ctx, derive.inputs["kb.ask"])
    assert max(len(q) for q in questions) <= MAX_TEXT + 100
    kb.score_ask({"calls": [], "inputs": questions}, ctx, derive.inputs["kb.ask"])
    assert len(seen) > 65 and max(seen) == MAX_TEXT


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
    assert (out.points, out.feedback) == (1.5, "every row holds the same vector: draw a new random vector "
                                               "for "
                                               "each row")
    conn.execute("DELETE FROM bench_items WHERE id > 100")
    assert check("bench.table", conn=conn).feedback == "bench_items has 100 rows; the benchmark needs 10,000"


def test_bench_truth_reference_and_mistakes(conn):
    load_bench(conn, np.random.default_rng(2).random((2_000, 1536), dtype=np.float32))
    out = check("bench.truth", exact(conn), conn=conn)
    assert (out.passed, out.feedback) == (True, "exact_top_k matches an exact search in numpy")
    out = check("bench.truth", exact(conn, operator="<->"), conn=conn)
    assert out.feedback == ("these are the nearest ids by L2 distance (<->); the benchmark uses cosine "
                            "distance "
                            "(<=>) (0 of 3 inputs passed)")
    assert 0 < out.points < 3  # L2 and cosine share some neighbours: partial credit
    out = check("bench.truth", exact(conn, direction="DESC"), conn=conn)
    assert (out.points, out.feedback) == (0, "these are the farthest vectors: nearest first means ascending "
                                             "distance (did you add DESC?) (0 of 3 inputs passed)")
    out = check("bench.truth", lambda q, k: exact(conn)(q, k)[:-1] + [1], conn=conn)
    assert out.feedback.startswith("only 9 of your 10 ids are true nearest neighbours: is an index answering")
    assert out.points == 2.67  # 9 of 10, 9 of 10 and 4 of 5 ids right: (0.9 + 0.9 + 0.8) / 3 of 2.5, + order


def test_bench_recall_reference_and_mistakes():
    def right(found, truth, k):
        return len(set(found[:k]) & set(truth[:k])) / k

    def positional(found, truth, k):
        return sum(a == b for a, b in zip(found[:k], truth[:k], strict=False)) / k

    def untruncated(found, truth, k):
        return len(set(found) & set(truth)) / k

    def by_found(found, truth, k):
        return len(set(found[:k]) & set(truth[:k])) / len(found[:k])

    assert check("bench.recall", right).passed
    assert check("bench.recall", positional).feedback == (
        "recall_at_k([3, 2, 1, 9], [1, 2, 3, 4], k=4) = 0.25: recall counts shared ids whatever their "
        "position; compare sets of ids, not the lists element by element (2 of 4 inputs passed)")
    assert check("bench.recall", untruncated).feedback == (
        "recall_at_k([9, 8, 1, 2, 3], [1, 2, 3, 4, 5], k=3) = 1: only the first k ids of each list count "
        "(3 of 4 inputs passed)")
    out = check("bench.recall", by_found)
    assert (out.points, out.feedback) == (1.5, "recall_at_k([5, 6], [5, 6, 7, 8], k=4) = 1: divide by k, "
                                               "not by "
                                               "the number of ids found (3 of 4 inputs passed)")


def test_bench_sweep_needs_rows_it_can_re_measure(conn):
    out = check("bench.sweep", [{"index": "none"}], conn=conn)
    assert out.feedback == ("a row of results has no 'param'; each row needs index, param, value, p50_ms, "
                            "recall")
    rows = [{"index": "none", "param": None, "value": None, "p50_ms": 40.0, "recall": 0.0}]
    rows += [{"index": "ivfflat", "param": "probes", "value": v, "p50_ms": 1.0, "recall": 0.5}
             for v in (1, 5)]
    out = check("bench.sweep", rows, conn=conn)
    assert (out.points, [p.hint for p in out.parts]) == (0, [
        "recall without an index is 0, but an exact scan finds exactly the ground truth (1.0): compare ids, "
        "not "
        "distances",
        "there is no table bench_items: run the cell that creates it: the sweep is re-measured on your "
        "table and "
        "indexes",
        "there is no table bench_items: run the cell that creates it: the sweep is re-measured on your "
        "table and "
        "indexes"])
    load_bench(conn, np.random.default_rng(4).random((500, 1536), dtype=np.float32))
    out = check("bench.sweep", rows, conn=conn)
    assert [p.hint for p in out.parts][1:] == [
        "sweep at least 3 values of probes for ivfflat (rows with index='ivfflat', param='probes')",
        "sweep at least 3 values of ef_search for hnsw (rows with index='hnsw', param='ef_search')"]
    # Every setting is measured again by the grader, whose time no cap bounds: 26 are too many.
    many = rows + [{"index": "hnsw", "param": "ef_search", "value": v, "p50_ms": 1.0, "recall": 0.9}
                   for v in range(10, 270, 10)]
    assert [p.hint for p in check("bench.sweep", many, conn=conn).parts][2] == (
        "26 values of ef_search for hnsw: report at most 25, the grader measures each of them again")


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


def semantic_of(conn, embedder):
    def semantic(query, k=5):
        return make_ask(conn, embedder, limit=k)(query)

    return semantic


def test_hybrid_reference_passes(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    assert check("hybrid.table", conn=conn).feedback == ("all passages, a generated tsv column and a GIN "
                                                         "index on it")
    out = check("hybrid.weighted", weighted(conn, embedder), conn=conn)
    assert (out.passed, out.feedback) == (True, "the tutorial's weighted blend, best first, matches for 4 "
                                                "queries")
    out = check("hybrid.rrf", rrf(conn, embedder), conn=conn)
    assert (out.passed, out.feedback) == (True, "reciprocal rank fusion, best first, matches for 3 queries")


def test_hybrid_weighted_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    out = check("hybrid.weighted", weighted(conn, embedder, sem="(1 - %(w)s)", txt="%(w)s"), conn=conn)
    assert out.feedback == ("the scores match the weights swapped: semantic_weight multiplies the semantic "
                            "similarity, 1 - semantic_weight the text rank (0 of 4 inputs passed)")
    assert parts(out)["scores"] == 0 and 0 < out.points < 4
    out = check("hybrid.weighted", weighted(conn, embedder, direction="ASC"), conn=conn)
    assert out.parts[1].hint == ("scores are ascending: best first means ORDER BY score DESC (0 of 4 inputs "
                                 "passed)")


def test_hybrid_rrf_off_by_one_rank_keeps_the_ranking_points(conn, embedder, passages):
    make_kb(conn, embedder, passages, fulltext=True)
    out = check("hybrid.rrf", rrf(conn, embedder, shift="- 1"), conn=conn)
    assert (out.points, parts(out), out.feedback) == (
        2.5, {"ranking": 2.5, "scores": 0}, "the scores match 0-based ranks: the best row of each leg has "
                                            "rank 1 "
                                            "(0 of 3 inputs passed)")

    def fixed_k(query, k=5, rrf_k=60):
        return rrf(conn, embedder)(query, k, 60)

    out = check("hybrid.rrf", fixed_k, conn=conn)
    assert out.feedback == "your scores ignore rrf_k: use the argument (2 of 3 inputs passed)"


def test_hybrid_table_mistakes(conn, embedder, passages):
    make_kb(conn, embedder, passages)
    conn.execute("ALTER TABLE kb_passages ADD COLUMN tsv tsvector")
    conn.execute("UPDATE kb_passages SET tsv = to_tsvector('english', title || ' ' || content)")
    out = check("hybrid.table", conn=conn)
    assert (out.points, out.feedback) == (1.25, "tsv should be a generated column: GENERATED ALWAYS AS "
                                                "(to_tsvector('english', title || ' ' || content)) STORED")
    assert out.parts[3].hint == "there is no GIN index on tsv: CREATE INDEX ... USING gin (tsv)"


def test_hybrid_functions_on_a_partial_table_earn_half(conn, embedder, passages):
    make_kb(conn, embedder, passages[:79], fulltext=True)
    table = check("hybrid.table", conn=conn)
    assert table.feedback == ("kb_passages holds 79 of the 276 corpus passages under their own id (passage "
                              "80 is "
                              "missing): load every pvc.load_passages() passage, and nothing else")
    # The public queries' answers lie mostly among the first 79 passages; where they do not, an answer
    # right for the learner's own passages (re-embedded) earns half.
    out = check("hybrid.weighted", weighted(conn, embedder), conn=conn)
    assert (out.points, parts(out), out.feedback) == (
        3.69, {"ranking": 2.19, "scores": 1.5}, "right for the passages in your table, but not for the whole "
                                                "corpus the contract asks for (see hybrid.table) (3 of 4 "
                                                "inputs "
                                                "passed)")
    out = check("hybrid.rrf", rrf(conn, embedder), conn=conn)
    assert (out.points, parts(out)) == (3.33, {"ranking": 2.08, "scores": 1.25})


def test_hybrid_eval_inline_follows_the_learners_functions(conn, embedder, passages):
    from pgvec_course.questions import hybrid

    make_kb(conn, embedder, passages, fulltext=True)
    functions = {"semantic": semantic_of(conn, embedder), "weighted_hybrid": weighted(conn, embedder),
                 "rrf_hybrid": rrf(conn, embedder)}
    namespace = dict(functions)
    exec(compile(hybrid.probe_eval(None), "<probe>", "exec"), namespace)
    own = hybrid.metrics(namespace["__pvc_result__"]["found"])
    out = check("hybrid.eval", own, conn=conn, **functions)
    assert (out.passed, out.points) == (True, 3)
    wrong = {m: {k: dict(v) for k, v in d.items()} for m, d in own.items()}
    wrong["rrf"]["keyword"]["recall@5"] -= 0.1
    value = wrong["rrf"]["keyword"]["recall@5"]
    out = check("hybrid.eval", wrong, conn=conn, **functions)
    assert (out.points, parts(out), out.feedback) == (
        2.75, {"recall@5": 1.25, "mrr": 1.5},
        f"evaluation['rrf']['keyword']['recall@5'] = {value:.3f}, expected {value + 0.1:.3f}: recall@5 "
        "divides "
        "the relevant passages found by the number of relevant passages (not by 5, which is precision)")
    del functions["semantic"]
    out = check("hybrid.eval", own, conn=conn, semantic=None, **functions)
    assert out.feedback == ("evaluation['semantic']['keyword']['recall@5'] cannot be checked: semantic() is "
                            "not "
                            "defined (the check recomputes your evaluation from your functions)")
