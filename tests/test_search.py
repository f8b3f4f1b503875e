"""Nearest-neighbour search, filtered search with HNSW, EXPLAIN and hybrid search on the real server."""

from __future__ import annotations

import numpy as np
import pytest

from pgvec_course.index import create_index
from pgvec_course.search import Result, Results, explain, hybrid_search, search, search_by_vector
from pgvec_course.store import copy_vectors, create_documents_table


def _random_documents(conn, n, dim, *, seed=0, categories=None):
    """Fill a documents table with random vectors; return them (row i has id i + 1)."""
    create_documents_table(conn, dim=dim)
    # Vectors first, text afterwards: relax NOT NULL so copy_vectors can load vectors alone.
    conn.execute("ALTER TABLE documents ALTER COLUMN title DROP NOT NULL, ALTER COLUMN content DROP NOT NULL")
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    copy_vectors(conn, "documents", vectors)
    cats = categories if categories is not None else ["a" if i % 2 else "b" for i in range(n)]
    conn.execute(
        "UPDATE documents d SET title = 'doc ' || d.id, content = 'text of ' || d.id, category = c.cat "
        "FROM unnest(%s::text[]) WITH ORDINALITY AS c(cat, i) WHERE d.id = c.i",
        (cats,),
    )
    conn.execute("VACUUM ANALYZE documents")
    return vectors


def _numpy_distances(vectors, q, metric):
    if metric == "cosine":
        return 1 - vectors @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
    if metric == "l2":
        return np.linalg.norm(vectors - q, axis=1)
    return -(vectors @ q)  # <#> is the negative inner product


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_search_equals_numpy(conn, metric):
    vectors = _random_documents(conn, 500, 24, seed=1)
    q = np.random.default_rng(99).standard_normal(24).astype(np.float32)
    results = search_by_vector(conn, q, k=10, metric=metric)
    expected = _numpy_distances(vectors.astype(np.float64), q.astype(np.float64), metric)
    order = np.argsort(expected)[:10]
    assert results.ids() == [int(i) + 1 for i in order]
    assert np.allclose([r.distance for r in results], expected[order], atol=1e-5, rtol=0)
    first = results[0]
    assert (first.title, first.content, first.category) == (f"doc {first.id}", f"text of {first.id}",
                                                            "a" if (first.id - 1) % 2 else "b")  # fmt: skip


def test_category_filter_and_k(conn):
    vectors = _random_documents(conn, 300, 8, seed=2)
    q = vectors[0]
    results = search_by_vector(conn, q, k=7, category="b", metric="l2")
    expected = _numpy_distances(vectors.astype(np.float64), q.astype(np.float64), "l2")
    in_b = [i for i in np.argsort(expected) if i % 2 == 0][:7]
    assert results.ids() == [int(i) + 1 for i in in_b]
    assert {r.category for r in results} == {"b"}
    assert results[0].distance == 0.0


def test_bad_arguments_are_explained(conn):
    with pytest.raises(ValueError) as err:
        search_by_vector(conn, [1, 2], metric="dot")
    assert str(err.value) == "unknown metric 'dot'; use 'cosine' (<=>), 'l2' (<->) or 'ip' (<#>)"
    with pytest.raises(ValueError) as err:
        search_by_vector(conn, [1, 2], k=0)
    assert str(err.value) == "k must be a positive integer, not 0"
    with pytest.raises(ValueError) as err:
        search_by_vector(conn, [1, 2], iterative_scan="on")
    assert str(err.value) == "iterative_scan must be 'off', 'relaxed_order' or 'strict_order', not 'on'"


def test_results_render_as_text_and_html():
    results = Results([Result(3, "Soup & <bread>", "x " * 60, "cooking", distance=0.12345)])
    assert results.ids() == [3]
    assert str(results).splitlines()[0].split() == ["id", "title", "category", "distance", "content"]
    assert str(results).splitlines()[1].startswith("3   Soup & <bread>  cooking   0.1235    x x x")
    assert repr(results).startswith("Results (1 rows, by distance)\nid")
    html = results._repr_html_()
    assert '<td style="text-align:left">Soup &amp; &lt;bread&gt;</td>' in html and "<th>distance</th>" in html
    assert "<td>0.1235</td>" in html  # numbers keep Jupyter's right alignment
    assert html.count("<tr>") == 2
    assert str(Results([], value="score")) == "(no results)"


def test_explain_shows_that_only_the_operator_form_uses_the_index(conn):
    # With ~2000 rows the planner picks the HNSW index on its own (no enable_seqscan tricks),
    # but only when ORDER BY is the bare operator: 1 - (a <=> b) hides it from the index.
    vectors = _random_documents(conn, 2000, 32, seed=3)
    info = create_index(conn, "hnsw", metric="cosine")
    q = vectors[5]
    good = explain(conn, "SELECT id FROM documents ORDER BY embedding <=> %s LIMIT 5", (q,))
    assert good.uses_index and good.index_names == good.vector_indexes == [info.name]
    assert f"Index Scan using {info.name} on documents" in good.text
    bad = explain(conn, "SELECT id FROM documents ORDER BY 1 - (embedding <=> %s) DESC LIMIT 5", (q,))
    assert not bad.uses_index and bad.index_names == []
    assert "Seq Scan on documents" in bad.text and "Sort" in bad.text
    analyzed = explain(conn, "SELECT id FROM documents ORDER BY embedding <=> %s LIMIT 5", (q,), analyze=True)
    assert analyzed.uses_index and "actual time=" in analyzed.text
    assert "uses vector index" in good._repr_html_() and str(bad) == bad.text


def test_explain_names_btree_indexes_without_calling_them_vector_indexes(conn):
    _random_documents(conn, 2000, 4)
    plan = explain(conn, "SELECT title FROM documents WHERE id = %s", (5,))
    assert plan.index_names == ["documents_pkey"] and not plan.uses_index


def test_filtered_hnsw_search_returns_k_rows_with_iterative_scan(conn):
    # 5,000 rows, 2% in category "rare": HNSW's ef_search=40 candidates hold about one
    # "rare" row, so without an iterative scan the filter leaves fewer than k rows.
    n, k = 5000, 10
    cats = ["rare" if i % 50 == 0 else "common" for i in range(n)]
    vectors = _random_documents(conn, n, 64, seed=4, categories=cats)
    create_index(conn, "hnsw", metric="l2", m=8, ef_construction=32)  # a quick build will do
    q = np.random.default_rng(5).standard_normal(64).astype(np.float32)
    sql = ("SELECT id FROM documents WHERE category = %s ORDER BY embedding <-> %s LIMIT 10")
    assert explain(conn, sql, ("rare", q)).uses_index
    off = search_by_vector(conn, q, k=k, metric="l2", category="rare", iterative_scan="off")
    assert len(off) < k
    on = search_by_vector(conn, q, k=k, metric="l2", category="rare")
    assert len(on) == k and {r.category for r in on} == {"rare"}
    distances = [r.distance for r in on]
    assert distances == sorted(distances)  # re-sorted after relaxed_order
    exact = np.linalg.norm(vectors.astype(np.float64) - q, axis=1)
    assert np.allclose(distances, exact[[i - 1 for i in on.ids()]], atol=1e-5)
    # The setting lasted for that query only.
    assert conn.execute("SELECT current_setting('hnsw.iterative_scan')").fetchone()[0] == "off"


def test_search_embeds_the_query_with_the_embedder(conn, tiny_embedder):
    from pgvec_course.store import insert_documents

    create_documents_table(conn, embedder=tiny_embedder)
    docs = [
        {"title": "Cats", "content": "cats purr and sleep", "category": "pets"},
        {"title": "Stars", "content": "stars burn hydrogen", "category": "space"},
        {"title": "Dogs", "content": "dogs bark and fetch", "category": "pets"},
    ]
    insert_documents(conn, docs, embedder=tiny_embedder, progress=False)
    results = search(conn, "Stars stars burn hydrogen", k=2, embedder=tiny_embedder)
    assert results.ids()[0] == 2 and results[0].distance == pytest.approx(0.0, abs=1e-6)
    assert search(conn, "stars", k=5, category="pets", embedder=tiny_embedder).ids() in ([1, 3], [3, 1])


# -- hybrid search -----------------------------------------------------------------

HYBRID_DOCS = [
    dict(title="Transformers", content="attention layers let a model weigh every token", category="ml"),
    dict(title="Attention span", content="children keep attention longer with short tasks", category="edu"),
    dict(title="Postgres indexes", content="a btree index speeds up equality lookups", category="db"),
    dict(title="HNSW graphs", content="layered graphs find nearest neighbours quickly", category="db"),
    dict(title="Sourdough", content="a starter of flour and water leavens bread", category="cooking"),
    dict(title="Model training", content="gradient descent updates weights of a model", category="ml"),
    dict(title="Token limits", content="long prompts are cut at the context window limit", category="ml"),
]

# The tutorial's hybrid query, run as written there (psycopg 3 takes the same %s placeholders).
TUTORIAL_HYBRID_SQL = """
    WITH semantic AS (
        SELECT id, title, content,
               1 - (embedding <=> %s::vector) AS semantic_score
        FROM documents
        ORDER BY embedding <=> %s::vector
        LIMIT %s
    ),
    fulltext AS (
        SELECT id,
               ts_rank(tsv, plainto_tsquery('english', %s)) AS text_score
        FROM documents
        WHERE tsv @@ plainto_tsquery('english', %s)
    )
    SELECT s.id, s.title, s.content,
           (%s * s.semantic_score +
            %s * COALESCE(f.text_score, 0)) AS combined_score
    FROM semantic s
    LEFT JOIN fulltext f ON s.id = f.id
    ORDER BY combined_score DESC
    LIMIT %s
"""


def _hybrid_table(conn, embedder, docs=HYBRID_DOCS):
    from pgvec_course.store import insert_documents

    create_documents_table(conn, embedder=embedder, fulltext=True)
    insert_documents(conn, docs, embedder=embedder, progress=False)


@pytest.mark.parametrize("weight", [0.7, 0.3])
def test_weighted_hybrid_equals_the_tutorial_sql(conn, tiny_embedder, weight):
    _hybrid_table(conn, tiny_embedder)
    query, limit = "attention model token", 3
    q = tiny_embedder.embed_one(query)
    expected = conn.execute(
        TUTORIAL_HYBRID_SQL, (q, q, limit * 2, query, query, weight, 1 - weight, limit)
    ).fetchall()
    results = hybrid_search(
        conn, query, k=limit, method="weighted", semantic_weight=weight, embedder=tiny_embedder
    )
    assert [(r.id, r.title, r.content, r.score) for r in results] == expected  # scores exactly equal
    assert len(expected) == 3
    # Document 1 holds all three words, so the text half of the blend is exercised too.
    assert conn.execute("SELECT array_agg(id) FROM documents WHERE tsv @@ plainto_tsquery('english', %s)",
                        (query,)).fetchone()[0] == [1]  # fmt: skip


def _legs(conn, q, text, candidates):
    vector = search_by_vector(conn, q, k=candidates).ids()
    fulltext = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM documents WHERE tsv @@ plainto_tsquery('english', %s) "
            "ORDER BY ts_rank(tsv, plainto_tsquery('english', %s)) DESC, id LIMIT %s",
            (text, text, candidates),
        )
    ]
    return vector, fulltext


def _python_rrf(legs, rrf_k):
    scores: dict[int, float] = {}
    for ranking in legs:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1 / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


@pytest.mark.parametrize(("candidates", "rrf_k"), [(50, 60), (3, 60), (4, 1)])
def test_rrf_equals_an_independent_python_computation(conn, tiny_embedder, candidates, rrf_k):
    _hybrid_table(conn, tiny_embedder)
    text = "model"  # plainto_tsquery ANDs its words; "model" matches documents 1 and 6
    vector, fulltext = _legs(conn, tiny_embedder.embed_one(text), text, candidates)
    assert sorted(fulltext) == [1, 6]
    expected = _python_rrf([vector, fulltext], rrf_k)[:5]
    results = hybrid_search(conn, text, k=5, rrf_k=rrf_k, candidates=candidates, embedder=tiny_embedder)
    assert results.ids() == [doc_id for doc_id, _ in expected]
    assert [r.score for r in results] == pytest.approx([score for _, score in expected], abs=1e-12)


class _FixedEmbedder:
    """Embeds every text as the same vector: the test decides what is semantically near."""

    name, dim = "fixed-test-embedder", 2

    def embed_one(self, text):
        return np.array([1.0, 0.0], dtype=np.float32)


def test_a_keyword_only_match_can_win_with_rrf_but_never_appears_when_weighted(conn):
    create_documents_table(conn, dim=2, fulltext=True)
    rows = [("Error E4711", "what error code E4711 means", [-1.0, 0.0])]  # far from the query vector
    rows += [(f"Near {i}", f"unrelated text {i}", [1.0, 0.1 * i]) for i in range(1, 8)]
    for title, content, vector in rows:
        conn.execute("INSERT INTO documents (title, content, embedding) VALUES (%s, %s, %s)",
                     (title, content, np.array(vector)))  # fmt: skip
    fixed = _FixedEmbedder()
    rrf = hybrid_search(conn, "E4711", k=3, candidates=5, embedder=fixed)
    # Rank 1 in the text leg ties rank 1 in the vector leg (1/61 each); the smaller id wins.
    assert rrf.ids() == [1, 2, 3]
    assert [r.score for r in rrf] == pytest.approx([1 / 61, 1 / 61, 1 / 62])
    weighted = hybrid_search(conn, "E4711", k=3, method="weighted", embedder=fixed)
    assert 1 not in weighted.ids()  # outside the 2k semantic candidates, so never scored


HOSTILE = "'; DROP TABLE documents; -- 100% \"quoted\" OR 1=1 $1 %s %(q)s {table} \\"


@pytest.mark.parametrize("call", ["search", "weighted", "rrf"])
def test_hostile_query_text_is_just_text(conn, tiny_embedder, call):
    quotes = dict(title="Quotes", content=HOSTILE, category=HOSTILE)
    _hybrid_table(conn, tiny_embedder, [*HYBRID_DOCS, quotes])
    if call == "search":
        results = search(conn, HOSTILE, k=3, embedder=tiny_embedder, category=HOSTILE)
    else:
        results = hybrid_search(conn, HOSTILE, k=3, method=call, embedder=tiny_embedder)
    assert results.ids()[0] == 8 and results[0].content == HOSTILE
    assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 8


def test_hybrid_arguments_and_missing_tsv_are_explained(conn, tiny_embedder):
    create_documents_table(conn, embedder=tiny_embedder)
    cases = [
        (dict(method="sum"), "unknown method 'sum'; use 'rrf' or 'weighted'"),
        (dict(semantic_weight=1.5), "semantic_weight must be between 0 and 1, not 1.5"),
        (dict(rrf_k=-1), "rrf_k must be a non-negative integer, not -1"),
        (dict(candidates=0), "candidates must be a positive integer, not 0"),
        (dict(), "table documents has no tsv column for full-text search; recreate it with "
                 "create_documents_table(conn, fulltext=True, drop=True) and load the documents again"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            hybrid_search(conn, "x", embedder=tiny_embedder, **kwargs)
        assert str(err.value) == message


def test_end_to_end_with_the_real_local_embedder(conn):
    from pgvec_course.embed import get_embedder
    from pgvec_course.store import insert_document, insert_documents

    embedder = get_embedder("local", quiet=True)
    assert create_documents_table(conn, embedder=embedder, fulltext=True) == 384
    insert_documents(conn, HYBRID_DOCS, embedder=embedder, progress=False)
    new_id = insert_document(conn, "Pasta", "boil the noodles in salted water until tender", "cooking",
                             embedder=embedder)  # fmt: skip
    assert new_id == 8
    assert search(conn, "how do I cook spaghetti?", k=1, embedder=embedder).ids() == [8]
    assert search(conn, "baking a loaf", k=1, category="cooking", embedder=embedder).ids() == [5]
    assert hybrid_search(conn, "btree index", k=1, embedder=embedder).ids() == [3]
    assert hybrid_search(conn, "btree index", k=1, method="weighted", embedder=embedder).ids() == [3]


def test_keyword_search_ranks_full_text_matches_and_filters(conn, tiny_embedder):
    from pgvec_course.search import keyword_search

    _hybrid_table(conn, tiny_embedder)
    expected = conn.execute(
        "SELECT id, ts_rank(tsv, plainto_tsquery('english', 'attention')) FROM documents "
        "WHERE tsv @@ plainto_tsquery('english', 'attention') ORDER BY 2 DESC, id").fetchall()
    results = keyword_search(conn, "attention", k=5)
    assert [(r.id, r.score) for r in results] == expected
    assert results.ids() == [2, 1] and results.value == "score"  # the shorter text ranks higher
    assert keyword_search(conn, "attention", k=5, category="edu").ids() == [2]
    assert keyword_search(conn, "quasar", k=5) == []


def test_hybrid_category_filters_both_legs(conn, tiny_embedder):
    _hybrid_table(conn, tiny_embedder)
    for method in ("rrf", "weighted"):
        results = hybrid_search(conn, "model", k=5, method=method, category="ml", embedder=tiny_embedder)
        assert sorted(results.ids()) == [1, 6, 7]
        assert {r.category for r in results} == {"ml"}
    unfiltered = hybrid_search(conn, "model", k=10, embedder=tiny_embedder)
    ml_only = [r.id for r in unfiltered if r.category == "ml"]
    # With the filter applied inside both legs, RRF ranks the ml rows in the same order.
    assert hybrid_search(conn, "model", k=3, category="ml", embedder=tiny_embedder).ids() == ml_only


def test_public_names_stay_functions_whatever_is_imported_first():
    import importlib
    import types

    import pgvec_course as pvc

    for module in ("search", "widgets", "store", "index", "metrics", "bench", "embed", "corpus"):
        importlib.import_module(f"pgvec_course.{module}")
    for name in pvc.__all__:
        assert not isinstance(getattr(pvc, name), types.ModuleType), name
    assert pvc.search.__module__ == "pgvec_course.search" and callable(pvc.search)
