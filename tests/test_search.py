"""Nearest-neighbour search, filtered search with HNSW, EXPLAIN and hybrid search on the real server."""

from __future__ import annotations

import numpy as np
import pytest

from pgvec_course.index import create_index
from pgvec_course.search import Result, Results, explain, search, search_by_vector
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
    left, right = 'style="text-align:left;padding:2px 8px"', 'style="text-align:right;padding:2px 8px"'
    assert f'<td {left}>Soup &amp; &lt;bread&gt;</td>' in html and f"<th {right}>distance</th>" in html
    assert f"<td {right}>0.1235</td>" in html  # numbers right-aligned, text left, padded even in a widget
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


def test_public_names_stay_functions_whatever_is_imported_first():
    import importlib
    import types

    import pgvec_course as pvc

    for module in ("search", "hybrid", "widgets", "store", "index", "metrics", "bench", "embed", "corpus"):
        importlib.import_module(f"pgvec_course.{module}")
    for name in pvc.__all__:
        assert not isinstance(getattr(pvc, name), types.ModuleType), name
    assert pvc.search.__module__ == "pgvec_course.search" and callable(pvc.search)


def test_filtered_hnsw_search_at_k_100_comes_back_sorted(conn):
    # With k above ef_search (40) the iterative scan goes on past the first candidates, and
    # relaxed_order hands rows back slightly out of order. On Postgres 17+ the planner treats
    # a materialized CTE's `ORDER BY distance` as already sorted (Incremental Sort, presorted
    # key distance), so the re-sort must order by an expression: `distance + 0`.
    n, k = 5000, 100
    cats = ["rare" if i % 50 == 0 else "common" for i in range(n)]
    vectors = _random_documents(conn, n, 64, seed=4, categories=cats)
    create_index(conn, "hnsw", metric="l2", m=8, ef_construction=32)
    queries = np.random.default_rng(6).standard_normal((20, 64)).astype(np.float32)
    raw_unsorted = 0
    with conn.transaction():
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        for q in queries:
            rows = conn.execute(
                "SELECT embedding <-> %s AS d FROM documents WHERE category = 'common' "
                "ORDER BY embedding <-> %s LIMIT 100", (q, q)).fetchall()
            raw_unsorted += [d for (d,) in rows] != sorted(d for (d,) in rows)
    assert raw_unsorted > 0  # the scan itself does return rows out of order here
    unsorted = []
    for i, q in enumerate(queries):
        results = search_by_vector(conn, q, k=k, metric="l2", category="common")
        assert len(results) == k and {r.category for r in results} == {"common"}
        pairs = [(r.distance, r.id) for r in results]
        if pairs != sorted(pairs):
            unsorted.append(i)
    assert unsorted == []
    exact = np.linalg.norm(vectors.astype(np.float64) - queries[0], axis=1)
    first = search_by_vector(conn, queries[0], k=k, metric="l2", category="common")
    assert np.allclose([r.distance for r in first], exact[[i - 1 for i in first.ids()]], atol=1e-5)
