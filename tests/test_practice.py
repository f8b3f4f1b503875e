"""The lessons' practice tasks: pvc.check says right to a right answer and names the mistake otherwise."""

from __future__ import annotations

import numpy as np
import pytest

import pgvec_course as pvc
from pgvec_course.corpus import load_passages
from pgvec_course.embed import get_embedder
from pgvec_course.practice import TASKS, Feedback
from pgvec_course.questions.spec import EXERCISES
from pgvec_course.store import create_documents_table, insert_documents

PASSAGES = [p for p in load_passages() if p.id <= 20 or 120 <= p.id <= 160 or 200 <= p.id <= 230
            or 245 <= p.id <= 265]  # fmt: skip


def check(task, *objs, conn):
    result = pvc.check(task, *objs, conn=conn)
    assert isinstance(result, Feedback)
    return result


def right(result):
    assert result.passed, str(result)
    return result.text


def hint(result):
    assert not result.passed, str(result)
    return result.text


def corpus_table(conn, table, *, fulltext=False):
    create_documents_table(conn, table=table, fulltext=fulltext)
    insert_documents(conn, PASSAGES, table=table, progress=False)


def test_practice_ids_never_shadow_a_graded_question():
    graded = {q.id for e in EXERCISES.values() for q in e.questions}
    assert graded.isdisjoint(TASKS)
    assert {t.split(".")[0] for t in TASKS} == {
        "why",
        "storing",
        "distance",
        "nearest",
        "indexing",
        "hybrid",
        "beyond",
        "alternatives",
        "tools",
        "fresh",
        "production",
        "rag",
        "quick",
    }


def test_feedback_renders_as_text_and_html():
    ok = Feedback("why.distance", True, "5: right")
    assert str(ok) == "✔ right (why.distance, practice): 5: right"
    assert "✘ not yet" in Feedback("x", False, "a <b>").__str__()
    assert "a &lt;b&gt;" in Feedback("x", False, "a <b>")._repr_html_()


def test_untouched_and_missing_answers_are_explained(conn):
    assert (
        hint(check("why.distance", None, conn=conn))
        == "`distance` is still None: replace None with your answer"
    )
    assert (
        hint(pvc.check("storing.dims", conn=conn)) == "no `dims` is defined yet: run the cell that defines it"
    )
    assert (
        hint(check("why.distance", 1, 2, conn=conn))
        == "pvc.check('why.distance', ...) takes distance; got 2 objects"
    )


def test_why(conn):
    assert right(check("why.distance", 5.0, conn=conn)).startswith("5: the straight-line distance")
    assert hint(check("why.distance", 25, conn=conn)).startswith("25 is the squared distance")
    cosine = conn.execute("SELECT '[1,2,3]'::vector <=> '[4,6,3]'::vector").fetchone()[0]
    assert hint(check("why.distance", cosine, conn=conn)).startswith("that is the cosine distance")
    assert hint(check("why.distance", "5", conn=conn)) == "distance should be a number, not str '5'"


def test_storing(conn):
    dim = get_embedder(quiet=True).dim
    assert right(check("storing.dims", dim, conn=conn)).endswith(f"declare vector({dim})")
    other = 1536 if dim == 384 else 384
    assert hint(check("storing.dims", other, conn=conn)).startswith(f"{other} is ")
    create_documents_table(conn, table="storing_docs")

    def store(title, content):
        vector = get_embedder(quiet=True).embed_one(f"{title}\n{content}")
        return conn.execute(
            "INSERT INTO storing_docs (title, content, embedding) VALUES (%s, %s, %s) RETURNING id",
            (title, content, vector),
        ).fetchone()[0]

    def store_content_only(title, content):
        vector = get_embedder(quiet=True).embed_one(content)
        return conn.execute(
            "INSERT INTO storing_docs (title, content, embedding) VALUES (%s, %s, %s) RETURNING id",
            (title, content, vector),
        ).fetchone()[0]

    assert right(check("storing.store", store, conn=conn)).endswith("(and deleted again)")
    assert hint(check("storing.store", store_content_only, conn=conn)).startswith("the embedding is not that")
    assert hint(check("storing.store", lambda t, c: None, conn=conn)) == (
        "store() returned None: write its body (in place of ...) and return the result"
    )
    assert hint(check("storing.store", lambda t, c: "7", conn=conn)).startswith("store() should return")
    assert conn.execute("SELECT count(*) FROM storing_docs").fetchone()[0] == 0


def test_distance(conn):
    def cosine(a, b):
        return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    assert right(check("distance.cosine", cosine, conn=conn)).startswith("matches the server's <=>")
    similarity = check("distance.cosine", lambda a, b: 1 - cosine(a, b), conn=conn)
    assert hint(similarity) == "that is the cosine *similarity*; the distance is 1 minus it"
    assert hint(check("distance.cosine", lambda a, b: 1 - a @ b, conn=conn)).startswith("right only for unit")
    assert hint(check("distance.cosine", lambda a, b: 1 / 0, conn=conn)).startswith(
        "cosine_distance(array([3., 4., 0.]), array([1., 2., 2.])) raised ZeroDivisionError"
    )
    assert right(check("distance.same_ranking", {"<=>", "<->", "<#>"}, conn=conn)).startswith(
        "for unit vectors"
    )
    assert hint(check("distance.same_ranking", ["<=>"], conn=conn)).startswith("more of them agree")
    assert hint(check("distance.same_ranking", "<=>", conn=conn)).startswith("give a set")


def test_nearest(conn):
    corpus_table(conn, "nearest_docs")
    embedder = get_embedder(quiet=True)

    def titles(question, k, order="ASC"):
        return [
            r[0]
            for r in conn.execute(
                f"SELECT title FROM nearest_docs ORDER BY embedding <=> %s {order} LIMIT %s",
                (embedder.embed_one(question), k),
            )
        ]

    def in_category(question, category, k, filtered=True):
        where = "WHERE category = %(c)s" if filtered else ""
        return [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM nearest_docs {where} ORDER BY embedding <=> %(q)s LIMIT %(k)s",
                {"q": embedder.embed_one(question), "c": category, "k": k},
            )
        ]

    assert right(check("nearest.titles", titles, conn=conn)) == "the right titles, nearest first"
    assert hint(check("nearest.titles", lambda q, k: titles(q, k, "DESC"), conn=conn)).startswith(
        "those are the farthest"
    )
    assert hint(check("nearest.titles", lambda q, k: titles(q, 5), conn=conn)) == (
        "asked for 3 titles, got 5: LIMIT %s with k"
    )
    assert right(check("nearest.in_category", in_category, conn=conn)).startswith(
        "filtered and ordered right"
    )
    unfiltered = check("nearest.in_category", lambda q, c, k: in_category(q, c, k, False), conn=conn)
    assert hint(unfiltered).endswith("filter first: WHERE category = %s")


def test_indexing(conn):
    assert right(check("indexing.ef_search", 100, conn=conn)).startswith("100:")
    assert hint(check("indexing.ef_search", 40, conn=conn)).startswith("40 is the default")
    assert hint(check("indexing.ef_search", 200, conn=conn)).startswith(
        "200 works, but it is not the smallest"
    )
    conn.execute("CREATE TABLE indexing_vectors (id int PRIMARY KEY, embedding vector(16))")
    pvc.copy_vectors(
        conn, "indexing_vectors", np.random.default_rng(0).standard_normal((2000, 16)), list(range(1, 2001))
    )
    conn.execute("CREATE INDEX ON indexing_vectors USING hnsw (embedding vector_cosine_ops)")
    conn.execute("ANALYZE indexing_vectors")
    good = (
        "SELECT id, 1 - (embedding <=> %(q)s) AS similarity FROM indexing_vectors "
        "ORDER BY embedding <=> %(q)s LIMIT 10"
    )
    assert right(check("indexing.plan", good, conn=conn)).startswith(
        "served by indexing_vectors_embedding_idx"
    )
    bad = (
        "SELECT id, 1 - (embedding <=> %(q)s) AS similarity FROM indexing_vectors "
        "ORDER BY similarity DESC LIMIT 10"
    )
    assert hint(check("indexing.plan", bad, conn=conn)).startswith("the plan does not use the HNSW index")


def test_hybrid(conn):
    assert right(
        check("hybrid.rrf_score", lambda ranks: sum(1 / (60 + r) for r in ranks), conn=conn)
    ).startswith("the sum of 1 / (60 + rank)")
    zero_based = check("hybrid.rrf_score", lambda ranks: sum(1 / (61 + r) for r in ranks), conn=conn)
    assert hint(zero_based).startswith("that treats ranks as 0-based")
    assert right(check("hybrid.any_word", "deadlock or detected or retry", conn=conn)) == (
        "'deadlock' | 'detect' | 'retri': a passage with any one of the words matches"
    )
    assert hint(check("hybrid.any_word", "deadlock detected retry", conn=conn)) == (
        "it parses to \"'deadlock' & 'detect' & 'retri'\": plain words are ANDed; put `or` between them"
    )


def test_beyond(conn):
    assert right(check("beyond.halfvec_bytes", lambda dim: 2 * dim + 8, conn=conn)).startswith(
        "2 bytes per value"
    )
    assert hint(check("beyond.halfvec_bytes", lambda dim: 2 * dim, conn=conn)).startswith(
        "6 for 3 dims counts"
    )
    assert right(check("beyond.bits", "1001", conn=conn)) == "1001: only the signs survive"
    assert hint(check("beyond.bits", "1011", conn=conn)).startswith("one bit per value")


def test_alternatives(conn):
    chromadb = pytest.importorskip(
        "chromadb", reason="ChromaDB is the 'chroma' extra: pip install -e .[chroma]"
    )
    from chromadb.config import Settings

    corpus_table(conn, "alternatives_docs")
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection(
        "practice",
        embedding_function=pvc.ChromaEmbeddingFunction(),
        configuration={"hnsw": {"space": "cosine"}},
    )
    collection.add(ids=[str(p.id) for p in PASSAGES], documents=[f"{p.title}\n{p.content}" for p in PASSAGES])

    def chroma_top(question, k):
        return collection.query(query_texts=[question], n_results=k)["ids"][0]

    assert right(check("alternatives.chroma_top", chroma_top, conn=conn)).startswith("Chroma embedded")
    assert hint(check("alternatives.chroma_top", lambda q, k: chroma_top(q, k)[::-1], conn=conn)).startswith(
        "for 'How do I make an upsert"
    )


def test_tools(conn):
    from pgvector.sqlalchemy import Vector
    from sqlalchemy import Column, Integer, MetaData, Table, Text, select

    corpus_table(conn, "tools_notes")
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    notes = Table(
        "tools_notes",
        MetaData(schema=schema),
        Column("id", Integer, primary_key=True),
        Column("title", Text),
        Column("embedding", Vector(get_embedder(quiet=True).dim)),
    )
    q = get_embedder(quiet=True).embed_one("How do I make an upsert instead of failing on a duplicate key?")
    good = select(notes.c.id).order_by(notes.c.embedding.l2_distance(q)).limit(3)
    assert right(check("tools.l2_statement", good, conn=conn)).startswith("ordered by <->")
    cosine = select(notes.c.id).order_by(notes.c.embedding.cosine_distance(q)).limit(3)
    assert hint(check("tools.l2_statement", cosine, conn=conn)).startswith("order by the L2 distance")
    assert hint(
        check(
            "tools.l2_statement",
            select(notes.c.id).order_by(notes.c.embedding.l2_distance(q)).limit(5),
            conn=conn,
        )
    ).startswith("expected the ids")
    assert right(check("tools.dump_option", "--extension=vector", conn=conn)).startswith(
        "the dump then carries"
    )
    assert right(check("tools.dump_option", "-e vector", conn=conn))
    assert hint(check("tools.dump_option", "--schema=public", conn=conn)).startswith(
        "the extension is not a schema"
    )


def test_fresh(conn):
    embedder = get_embedder(quiet=True)
    conn.execute(
        f"CREATE TABLE fresh_docs (id serial PRIMARY KEY, slug text UNIQUE NOT NULL, title text, "
        f"content text, embedding vector({embedder.dim}))"
    )

    def upsert(slug, title, content, update_embedding=True):
        tail = ", embedding = EXCLUDED.embedding" if update_embedding else ""
        conn.execute(
            "INSERT INTO fresh_docs (slug, title, content, embedding) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (slug) DO UPDATE SET title = EXCLUDED.title, content = EXCLUDED.content{tail}",
            (slug, title, content, embedder.embed_one(f"{title}\n{content}")),
        )

    def plain_insert(slug, title, content):
        conn.execute(
            "INSERT INTO fresh_docs (slug, title, content) VALUES (%s || random(), %s, %s)",
            (slug, title, content),
        )

    assert right(check("fresh.upsert", upsert, conn=conn)) == "one row, the new text and its new embedding"
    stale = check("fresh.upsert", lambda s, t, c: upsert(s, t, c, update_embedding=False), conn=conn)
    assert hint(stale) == "the embedding is not that of the new text: embed the title and content you upsert"
    assert hint(check("fresh.upsert", plain_insert, conn=conn)).startswith(
        "upsert() stored no row with that slug"
    )
    assert hint(check("fresh.upsert", lambda s, t, c: None, conn=conn)).startswith("upsert() stored no row")
    assert (
        conn.execute("SELECT count(*) FROM fresh_docs WHERE slug LIKE 'practice-upsert%'").fetchone()[0] == 2
    )


def test_production(conn):
    dim = get_embedder(quiet=True).dim
    conn.execute(
        f"CREATE TABLE production_items (id int PRIMARY KEY, category text, embedding vector({dim}))"
    )
    pvc.copy_vectors(
        conn, "production_items", np.random.default_rng(2).standard_normal((3000, dim)), list(range(1, 3001))
    )
    conn.execute("UPDATE production_items SET category = CASE WHEN id % 3 = 0 THEN 'support' ELSE 'blog' END")
    conn.execute(
        "CREATE INDEX production_items_blog ON production_items USING hnsw (embedding vector_cosine_ops) "
        "WHERE category = 'blog'"
    )
    assert hint(check("production.partial_index", "production_items_blog", conn=conn)) == (
        "its WHERE is (category = 'blog'::text); the queries to serve filter on category = 'support'"
    )
    conn.execute(
        "CREATE INDEX production_items_support ON production_items USING hnsw "
        "(embedding vector_cosine_ops) WHERE category = 'support'"
    )
    conn.execute("ANALYZE production_items")
    assert right(check("production.partial_index", "production_items_support", conn=conn)).startswith(
        "production_items_support serves category = 'support' queries"
    )
    assert hint(check("production.partial_index", "nope", conn=conn)) == (
        "there is no index 'nope': run your CREATE INDEX first"
    )


def test_rag(conn):
    import re

    def citations(text, n):
        seen = []
        for m in re.finditer(r"\[(\d+)\]", text):
            if 1 <= int(m.group(1)) <= n and int(m.group(1)) not in seen:
                seen.append(int(m.group(1)))
        return seen

    assert right(check("rag.citations", citations, conn=conn)).startswith(
        "passage numbers in first-cited order"
    )
    everything = check("rag.citations", lambda t, n: [int(x) for x in re.findall(r"\[(\d+)\]", t)], conn=conn)
    assert hint(everything).endswith("each number once, in the order first cited")


def test_quick(conn):
    corpus_table(conn, "quick_docs")
    embedder = get_embedder(quiet=True)

    def top_ids(question, k):
        return [
            r[0]
            for r in conn.execute(
                "SELECT id FROM quick_docs ORDER BY embedding <=> %s LIMIT %s",
                (embedder.embed_one(question), k),
            )
        ]

    assert right(check("quick.top_ids", top_ids, conn=conn)).startswith("embed, ORDER BY")
    assert hint(check("quick.top_ids", lambda q, k: top_ids(q, k)[1:], conn=conn)).startswith("for 'how do I")
