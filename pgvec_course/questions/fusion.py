"""Hybrid search's references in numpy: text ranks, the tutorial's weighted blend, reciprocal rank fusion.

Exercise 3's scorers compute every reference here from the course corpus (vectors from the
reference embedder, `ts_rank` from Postgres over the corpus texts), never from the learner's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from .tables import ranked

DOC = "to_tsvector('english', title || ' ' || content)"
CANDIDATES = 50  # per leg, for reciprocal rank fusion


def text_ranks(conn: psycopg.Connection, ids: Sequence[int], titles: Sequence[str], contents: Sequence[str],
               texts: Sequence[str], *, doc: str = DOC) -> list[tuple[dict[int, float], dict[int, float]]]:
    """Return, per query text, ({id: ts_rank} of matching docs, {id: ts_rank} of every doc)."""
    rows = conn.execute(
        # MATERIALIZED: each document's tsvector is computed once, not once per query.
        f"WITH d AS MATERIALIZED (SELECT id, {doc} AS doc FROM unnest(%s::int8[], %s::text[], %s::text[]) "
        "                        AS u(id, title, content)), "
        "q AS MATERIALIZED (SELECT n, plainto_tsquery('english', text) AS query "
        "                   FROM unnest(%s::text[]) WITH ORDINALITY AS u(text, n)) "
        "SELECT q.n, d.id, ts_rank(d.doc, q.query), d.doc @@ q.query FROM d, q",
        ([int(i) for i in ids], list(titles), list(contents), list(texts))).fetchall()
    out: list[tuple[dict[int, float], dict[int, float]]] = [({}, {}) for _ in texts]
    for n, pid, rank, match in rows:
        out[n - 1][1][int(pid)] = float(rank)
        if match:
            out[n - 1][0][int(pid)] = float(rank)
    return out


def blend(ids: Any, dist: Any, text: dict[int, float], w: float) -> dict[int, float]:
    """Return every passage's blended score w * (1 - distance) + (1 - w) * text rank."""
    return {int(i): w * (1 - d) + (1 - w) * text.get(int(i), 0.0) for i, d in zip(ids, dist, strict=True)}


def weighted_scores(ids: Any, dist: Any, text: dict[int, float], k: int, w: float) -> dict[int, float]:
    """Return the tutorial's blend for its candidates only: the 2k passages nearest by cosine distance."""
    scores = blend(ids, dist, text, w)
    return {int(i): scores[int(i)] for i in ranked(ids, dist)[:2 * k]}


def rrf_scores(ids: Any, dist: Any, text: dict[int, float], rrf_k: int, *, first: int = 1,
               candidates: int = CANDIDATES) -> dict[int, float]:
    """Return reciprocal-rank-fusion scores: each leg's top `candidates` ranked from `first`."""
    semantic = [int(i) for i in ranked(ids, dist)[:candidates]]
    keyword = sorted(text, key=lambda i: (-text[i], i))[:candidates]
    scores: dict[int, float] = {}
    for leg in (semantic, keyword):
        for rank, pid in enumerate(leg, start=first):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
    return scores


def top(scores: dict[int, float], k: int) -> list[int]:
    """Return the k best ids, highest score first, ties to the smaller id."""
    return sorted(scores, key=lambda i: (-scores[i], i))[:k]


def best_set(scores: dict[int, float], k: int, tol: float) -> set[int]:
    """Return every id scoring within `tol` of the k-th best: the right top k, ties included."""
    if not scores:
        return set()
    bound = scores[top(scores, k)[-1]] - tol
    return {i for i, s in scores.items() if s >= bound}
