"""Nearest-neighbour and filtered search, and EXPLAIN to see whether an index is used."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

__all__ = ["Result", "Results", "Plan", "search", "search_by_vector", "explain"]

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
        # Jupyter right-aligns table cells by default, which makes prose hard to read; inside a
        # widget (SearchBox) no notebook style applies at all, so the cells carry their own padding.
        left, right = ' style="text-align:left;padding:2px 8px"', ' style="text-align:right;padding:2px 8px"'
        aligns = (right, left, left, right, left)
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
# `distance + 0`, not `distance`: Postgres 17+ knows the CTE's rows came out ordered by distance,
# plans an Incremental Sort that trusts that order, and so would keep relaxed_order's swaps.
_RESORTED = "WITH nearest AS MATERIALIZED (\n{}\n)\nSELECT * FROM nearest ORDER BY distance + 0, id"


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
        # CTE ordered again outside it (by `distance + 0`, see _RESORTED). SET LOCAL keeps the
        # setting to this transaction.
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
