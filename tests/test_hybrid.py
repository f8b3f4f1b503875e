"""Full-text and hybrid search on the real server: the tutorial's blend, RRF, hostile text."""

from __future__ import annotations

import numpy as np
import pytest

from pgvec_course.hybrid import hybrid_search, keyword_search
from pgvec_course.search import search, search_by_vector
from pgvec_course.store import create_documents_table

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


def test_match_all_any_or_web_search_syntax(conn, tiny_embedder):
    _hybrid_table(conn, tiny_embedder)
    # Every word: no passage has both; any word: both passages, ranked by ts_rank, ties by id.
    assert keyword_search(conn, "attention bread", k=5).ids() == []
    by_hand = [r[0] for r in conn.execute(
        "SELECT id FROM documents, to_tsquery('english', 'attention | bread') AS q WHERE tsv @@ q "
        "ORDER BY ts_rank(tsv, q) DESC, id")]
    assert keyword_search(conn, "attention bread", k=5, match="any").ids() == by_hand == [2, 1, 5]
    assert keyword_search(conn, "attention -children", k=5, match="websearch").ids() == [1]
    assert keyword_search(conn, '"weigh every token"', k=5, match="websearch").ids() == [1]
    assert keyword_search(conn, "bread or graphs", k=5, match="websearch").ids() == [4, 5]
    # The same tsquery drives the keyword leg of both hybrid methods.
    rrf_all = hybrid_search(conn, "attention bread", k=7, method="rrf", embedder=tiny_embedder)
    rrf_any = hybrid_search(conn, "attention bread", k=7, method="rrf", embedder=tiny_embedder, match="any")
    assert rrf_all.ids() != rrf_any.ids()
    # With "all" the keyword leg is empty; with "any" passage 2 tops it and gains 1 / (60 + 1).
    semantic_only, with_any = ({r.id: r.score for r in rs} for rs in (rrf_all, rrf_any))
    assert with_any[2] == pytest.approx(semantic_only[2] + 1 / 61)
    with pytest.raises(ValueError) as err:
        keyword_search(conn, "x", match="some")
    assert str(err.value) == "unknown match 'some'; use 'all' (every word), 'any' or 'websearch'"
    with pytest.raises(ValueError):
        hybrid_search(conn, "x", match="phrase", embedder=tiny_embedder)
