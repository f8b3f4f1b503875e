"""Full-text search and hybrid search: the tutorial's weighted blend and reciprocal rank fusion."""

from __future__ import annotations

import psycopg
from psycopg import sql

from .search import Result, Results, _check_k, _embedder, _with_scan_mode

__all__ = ["keyword_search", "hybrid_search"]

_KEYWORD = """SELECT id, title, content, category, ts_rank(tsv, query) AS score
FROM {table}, (SELECT {tsquery} AS query) AS q
WHERE tsv @@ query{where}
ORDER BY score DESC, id
LIMIT %(k)s"""

# How the search text becomes a tsquery: every word must match (the tutorial's plainto_tsquery),
# any word may match (the same words joined with OR), or web-search syntax ("quoted phrases",
# or, -word) with websearch_to_tsquery.
MATCH = {
    "all": "plainto_tsquery('english', %(text)s)",
    "any": "replace(plainto_tsquery('english', %(text)s)::text, ' & ', ' | ')::tsquery",
    "websearch": "websearch_to_tsquery('english', %(text)s)",
}


def _tsquery(match: str) -> sql.SQL:
    if match not in MATCH:
        raise ValueError(f"unknown match {match!r}; use 'all' (every word), 'any' or 'websearch'")
    return sql.SQL(MATCH[match])


def keyword_search(
    conn: psycopg.Connection,
    query_text: str,
    k: int = 5,
    *,
    table: str = "documents",
    category: str | None = None,
    match: str = "all",
) -> Results:
    """Return the k best full-text matches by ts_rank, best first.

    `match="all"` needs every word (plainto_tsquery('english', ...)), "any" one of them,
    "websearch" reads web-search syntax (websearch_to_tsquery).
    """
    _check_k(k)
    query = sql.SQL(_KEYWORD).format(table=sql.Identifier(table), where=_category_filter(category, "AND"),
                                     tsquery=_tsquery(match))
    rows = _run_fulltext(conn, query, {"text": query_text, "k": k, "category": category}, table)
    return Results([Result(*row[:4], score=row[4]) for row in rows], value="score")


def _category_filter(category: str | None, keyword: str) -> sql.Composable:
    return sql.SQL(f" {keyword} category = %(category)s") if category is not None else sql.SQL("")


def _run_fulltext(conn: psycopg.Connection, query: sql.Composable, params: dict, table: str) -> list:
    try:
        return conn.execute(query, params).fetchall()
    except psycopg.errors.UndefinedColumn as exc:
        if '"tsv"' not in str(exc):
            raise
        raise ValueError(
            f"table {table} has no tsv column for full-text search; recreate it with "
            f"create_documents_table(conn, fulltext=True, drop=True) and load the documents again"
        ) from None


# The tutorial's blend: the 2k semantic candidates, each scored 1 - cosine distance plus
# ts_rank when the text matches (0 otherwise), weighted, best first.
_WEIGHTED = """WITH semantic AS (
    SELECT id, title, content, category, 1 - (embedding <=> %(q)s) AS semantic_score
    FROM {table}{where}
    ORDER BY embedding <=> %(q)s
    LIMIT %(candidates)s
),
fulltext AS (
    SELECT id, ts_rank(tsv, query) AS text_score
    FROM {table}, (SELECT {tsquery} AS query) AS q
    WHERE tsv @@ query{and_where}
)
SELECT s.id, s.title, s.content, s.category,
       %(w)s * s.semantic_score + %(w_text)s * COALESCE(f.text_score, 0) AS score
FROM semantic s LEFT JOIN fulltext f ON f.id = s.id
ORDER BY score DESC, s.id
LIMIT %(k)s"""

# Reciprocal rank fusion: each leg ranks its own top candidates (1-based), a document
# scores the sum of 1 / (rrf_k + rank) over the legs it appears in.
_RRF = """WITH vector_leg AS (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS rank
    FROM (SELECT id, embedding <=> %(q)s AS distance FROM {table}{where}
          ORDER BY embedding <=> %(q)s LIMIT %(candidates)s) AS nearest
),
text_leg AS (
    SELECT id, row_number() OVER (ORDER BY text_score DESC, id) AS rank
    FROM (SELECT id, ts_rank(tsv, query) AS text_score
          FROM {table}, (SELECT {tsquery} AS query) AS q
          WHERE tsv @@ query{and_where}
          ORDER BY text_score DESC, id LIMIT %(candidates)s) AS matches
),
fused AS (
    SELECT id, sum(1.0::float8 / (%(rrf_k)s + rank)) AS score
    FROM (SELECT id, rank FROM vector_leg UNION ALL SELECT id, rank FROM text_leg) AS legs
    GROUP BY id
)
SELECT d.id, d.title, d.content, d.category, f.score
FROM fused f JOIN {table} d ON d.id = f.id
ORDER BY f.score DESC, f.id
LIMIT %(k)s"""


def hybrid_search(
    conn: psycopg.Connection,
    query_text: str,
    k: int = 5,
    *,
    table: str = "documents",
    method: str = "rrf",
    semantic_weight: float = 0.7,
    rrf_k: int = 60,
    candidates: int | None = None,
    category: str | None = None,
    embedder=None,
    match: str = "all",
) -> Results:
    """Combine vector search with Postgres full-text search and return the k best, best first.

    `method="weighted"` is the tutorial's blend: the top `candidates` (default 2k) by cosine
    distance, scored semantic_weight * (1 - distance) + (1 - semantic_weight) * ts_rank over
    plainto_tsquery('english', query_text); a text-only match can never appear.
    `method="rrf"` is reciprocal rank fusion: the vector leg (top `candidates` by <=>,
    default 50) and the full-text leg (top `candidates` by ts_rank among rows whose tsv
    matches) each rank their rows 1, 2, 3, ... (ties by id); a row scores
    sum(1 / (rrf_k + rank)) over the legs it appears in, so a keyword-only match can win.
    Ties in the final score go to the smaller id. `category` filters both legs. `match` turns the
    text into a tsquery as keyword_search() does. Needs the `tsv` column
    (create_documents_table(conn, fulltext=True)).
    """
    _check_k(k)
    if method not in ("rrf", "weighted"):
        raise ValueError(f"unknown method {method!r}; use 'rrf' or 'weighted'")
    _tsquery(match)  # a bad `match` fails before the query is embedded
    if not 0 <= semantic_weight <= 1:
        raise ValueError(f"semantic_weight must be between 0 and 1, not {semantic_weight!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 0:
        raise ValueError(f"rrf_k must be a non-negative integer, not {rrf_k!r}")
    if candidates is None:
        candidates = 2 * k if method == "weighted" else 50
    elif isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive integer, not {candidates!r}")
    params = {
        "q": _embedder(embedder).embed_one(query_text),
        "text": query_text,
        "candidates": candidates,
        "k": k,
        "w": float(semantic_weight),
        "w_text": 1 - float(semantic_weight),
        "rrf_k": rrf_k,
        "category": category,
    }
    template = _WEIGHTED if method == "weighted" else _RRF
    query = sql.SQL(template).format(
        tsquery=_tsquery(match),
        table=sql.Identifier(table),
        where=_category_filter(category, "WHERE"),
        and_where=_category_filter(category, "AND"),
    )
    if category is None:
        rows = _run_fulltext(conn, query, params, table)
    else:
        # As in search_by_vector: a filtered vector leg needs an iterative scan to fill up.
        rows = _with_scan_mode(conn, "strict_order", query, params)
    return Results([Result(*row[:4], score=row[4]) for row in rows], value="score")
