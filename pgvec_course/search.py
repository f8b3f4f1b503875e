"""Nearest-neighbour, filtered and hybrid search, and EXPLAIN to see whether an index is used."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

__all__ = [
    "Result", "Results", "Plan", "search", "search_by_vector", "keyword_search", "hybrid_search", "explain",
]

OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
ITERATIVE_SCAN = {True: "relaxed_order", False: "off", "off": "off", "relaxed_order": "relaxed_order",
                  "strict_order": "strict_order"}  # fmt: skip
_PREVIEW = 80  # characters of content shown per row in tables


@dataclass(frozen=True)
class Result:
    """One search hit; `distance` for nearest-neighbour search (lower is nearer), `score` for hybrid."""

    id: int
    title: str | None
    content: str | None
    category: str | None
    distance: float | None = None
    score: float | None = None


class Results(list):
    """A list of Result, best first, that prints as a table (and as an HTML table in Jupyter)."""

    def __init__(self, items: Sequence[Result] = (), *, value: str = "distance") -> None:
        super().__init__(items)
        self.value = value  # which field ranks the rows: "distance" or "score"

    def ids(self) -> list[int]:
        """Return the ids of the results, best first."""
        return [r.id for r in self]

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (str(r.id), r.title or "", r.category or "", f"{getattr(r, self.value):.4f}", _preview(r.content))
            for r in self
        ]

    def __str__(self) -> str:
        header = ("id", "title", "category", self.value, "content")
        rows = [header, *self._rows()]
        widths = [min(max(len(row[i]) for row in rows), 40 if i == 1 else 200) for i in range(5)]
        lines = ["  ".join(cell[:w].ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]  # fmt: skip
        return "\n".join(lines) if self else "(no results)"

    def __repr__(self) -> str:
        return f"Results ({len(self)} rows, by {self.value})\n{self}"

    def _repr_html_(self) -> str:
        # Jupyter right-aligns table cells by default, which makes prose hard to read.
        left = ' style="text-align:left"'
        aligns = ("", left, left, "", left)
        head = "".join(f"<th{a}>{h}</th>" for a, h in zip(aligns, ("id", "title", "category", self.value,
                                                                       "content"), strict=True))
        cells = ("".join(f"<td{a}>{html.escape(cell)}</td>" for a, cell in zip(aligns, row, strict=True))
                 for row in self._rows())  # fmt: skip
        body = "".join(f"<tr>{row}</tr>" for row in cells)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _preview(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _operator(metric: str) -> sql.SQL:
    if metric not in OPERATORS:
        raise ValueError(f"unknown metric {metric!r}; use 'cosine' (<=>), 'l2' (<->) or 'ip' (<#>)")
    return sql.SQL(OPERATORS[metric])


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")


def _embedder(embedder):
    if embedder is not None:
        return embedder
    from .embed import get_embedder

    return get_embedder(quiet=True)


_NEAREST = """SELECT id, title, content, category, embedding {op} %(q)s AS distance
FROM {table}{where}
ORDER BY embedding {op} %(q)s
LIMIT %(k)s"""
_RESORTED = "WITH nearest AS MATERIALIZED (\n{}\n)\nSELECT * FROM nearest ORDER BY distance, id"


def search_by_vector(
    conn: psycopg.Connection,
    vector: Any,
    k: int = 5,
    *,
    table: str = "documents",
    metric: str = "cosine",
    category: str | None = None,
    iterative_scan: str | bool | None = None,
) -> Results:
    """Return the k rows nearest to a vector, nearest first, with the operator's raw distance.

    With a `category` filter, pgvector 0.8's iterative index scan is switched on for this
    query (`relaxed_order`, re-sorted afterwards) so an HNSW or IVFFlat index still yields k
    rows; pass `iterative_scan="off"` to see what happens without it.
    """
    _check_k(k)
    op = _operator(metric)
    if iterative_scan not in (None, *ITERATIVE_SCAN):
        raise ValueError(
            f"iterative_scan must be 'off', 'relaxed_order' or 'strict_order', not {iterative_scan!r}"
        )
    params = {"q": np.asarray(vector, dtype=np.float32), "k": k, "category": category}
    where = sql.SQL("\nWHERE category = %(category)s") if category is not None else sql.SQL("")
    query = sql.SQL(_NEAREST).format(op=op, table=sql.Identifier(table), where=where)
    mode = ITERATIVE_SCAN.get(iterative_scan) if iterative_scan is not None else None
    if category is not None and mode is None:
        mode = "relaxed_order"
    if mode is None:
        rows = conn.execute(query, params).fetchall()
    else:
        # relaxed_order may return rows slightly out of order: pgvector advises a materialized
        # CTE ordered again outside it. SET LOCAL keeps the setting to this transaction.
        query = sql.SQL(_RESORTED).format(query)
        rows = _with_scan_mode(conn, mode, query, params)
    return Results([Result(*row) for row in rows], value="distance")


# set_config(name, value, true) is SET LOCAL, and unlike SET it takes parameters.
_SET_SCAN = "set_config('hnsw.iterative_scan', %s, true), set_config('ivfflat.iterative_scan', %s, true)"


def _with_scan_mode(conn: psycopg.Connection, mode: str, query: sql.Composable, params: dict) -> list:
    ivf_mode = "off" if mode == "off" else "relaxed_order"  # IVFFlat has no strict_order
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        before = conn.execute(
            "SELECT current_setting('hnsw.iterative_scan', true), "
            f"current_setting('ivfflat.iterative_scan', true), {_SET_SCAN}",
            (mode, ivf_mode),
        ).fetchone()
        rows = conn.execute(query, params).fetchall()
        if nested and None not in before[:2]:
            # In a caller's transaction SET LOCAL would outlive this call: put the old values back.
            conn.execute(f"SELECT {_SET_SCAN}", before[:2])
    return rows


def search(
    conn: psycopg.Connection,
    query_text: str,
    k: int = 5,
    *,
    table: str = "documents",
    metric: str = "cosine",
    category: str | None = None,
    embedder=None,
    iterative_scan: str | bool | None = None,
) -> Results:
    """Embed a query and return the k nearest documents, nearest first."""
    vector = _embedder(embedder).embed_one(query_text)
    return search_by_vector(
        conn, vector, k, table=table, metric=metric, category=category, iterative_scan=iterative_scan
    )


_KEYWORD = """SELECT id, title, content, category, ts_rank(tsv, query) AS score
FROM {table}, plainto_tsquery('english', %(text)s) AS query
WHERE tsv @@ query{where}
ORDER BY score DESC, id
LIMIT %(k)s"""


def keyword_search(
    conn: psycopg.Connection,
    query_text: str,
    k: int = 5,
    *,
    table: str = "documents",
    category: str | None = None,
) -> Results:
    """Return the k best full-text matches (ts_rank over plainto_tsquery('english', ...)), best first."""
    _check_k(k)
    query = sql.SQL(_KEYWORD).format(table=sql.Identifier(table), where=_category_filter(category, "AND"))
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


# -- EXPLAIN -----------------------------------------------------------------------

_INDEX_IN_PLAN = re.compile(
    r'(?:Index(?: Only)? Scan(?: Backward)? using|Bitmap Index Scan on) ("(?:[^"]|"")+"|\S+)'
)


@dataclass(frozen=True)
class Plan:
    """A query plan: its text, the indexes it reads, and whether one is a vector (HNSW/IVFFlat) index."""

    text: str
    index_names: list[str] = field(default_factory=list)
    vector_indexes: list[str] = field(default_factory=list)

    @property
    def uses_index(self) -> bool:
        """Whether the plan reads an HNSW or IVFFlat index."""
        return bool(self.vector_indexes)

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        verdict = (
            f"uses vector index {', '.join(self.vector_indexes)}"
            if self.uses_index
            else "no vector index used (exact scan)"
        )
        return f"<p><b>{html.escape(verdict)}</b></p><pre>{html.escape(self.text)}</pre>"


def explain(
    conn: psycopg.Connection, query: str | sql.Composable, params: Any = None, *, analyze: bool = False
) -> Plan:
    """Run EXPLAIN (or EXPLAIN ANALYZE, which executes the query) and report which indexes the plan uses."""
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN ")
    body = sql.SQL(query) if isinstance(query, str) else query
    lines = [row[0] for row in conn.execute(prefix + body, params).fetchall()]
    text = "\n".join(lines)
    names = []
    for match in _INDEX_IN_PLAN.finditer(text):
        name = match.group(1)
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name
        if name not in names:
            names.append(name)
    vector = []
    if names:
        found = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_am a ON a.oid = c.relam "
            "WHERE c.relname = ANY(%s) AND a.amname IN ('hnsw', 'ivfflat') AND pg_table_is_visible(c.oid)",
            (names,),
        ).fetchall()
        vector = [name for name in names if (name,) in found]
    return Plan(text, names, vector)


# -- hybrid search -----------------------------------------------------------------

# The tutorial's blend: the 2k semantic candidates, each scored 1 - cosine distance plus
# ts_rank when the text matches (0 otherwise), weighted, best first.
_WEIGHTED = """WITH semantic AS (
    SELECT id, title, content, category, 1 - (embedding <=> %(q)s) AS semantic_score
    FROM {table}{where}
    ORDER BY embedding <=> %(q)s
    LIMIT %(candidates)s
),
fulltext AS (
    SELECT id, ts_rank(tsv, plainto_tsquery('english', %(text)s)) AS text_score
    FROM {table}
    WHERE tsv @@ plainto_tsquery('english', %(text)s){and_where}
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
          FROM {table}, plainto_tsquery('english', %(text)s) AS query
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
) -> Results:
    """Combine vector search with Postgres full-text search and return the k best, best first.

    `method="weighted"` is the tutorial's blend: the top `candidates` (default 2k) by cosine
    distance, scored semantic_weight * (1 - distance) + (1 - semantic_weight) * ts_rank over
    plainto_tsquery('english', query_text); a text-only match can never appear.
    `method="rrf"` is reciprocal rank fusion: the vector leg (top `candidates` by <=>,
    default 50) and the full-text leg (top `candidates` by ts_rank among rows whose tsv
    matches) each rank their rows 1, 2, 3, ... (ties by id); a row scores
    sum(1 / (rrf_k + rank)) over the legs it appears in, so a keyword-only match can win.
    Ties in the final score go to the smaller id. `category` filters both legs. Needs the `tsv` column
    (create_documents_table(conn, fulltext=True)).
    """
    _check_k(k)
    if method not in ("rrf", "weighted"):
        raise ValueError(f"unknown method {method!r}; use 'rrf' or 'weighted'")
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
