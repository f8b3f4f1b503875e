"""Practice for lessons 5-8: indexes and their plans, hybrid search, smaller vectors, Chroma."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import Context, NotYet, Task, call
from .basics import exact_top

__all__ = ["TASKS"]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NotYet(f"{what} should be a whole number, not {value!r:.40}")
    return int(value)


# -- lesson 5 ------------------------------------------------------------------------------

def _indexing_ef_search(ctx: Context, ef_search: Any) -> str:
    value = _int(ef_search, "ef_search")
    if value == 40:
        raise NotYet("40 is the default, and an HNSW scan returns at most ef_search rows")
    if value < 100:
        raise NotYet(f"with ef_search = {value} the scan keeps only {value} candidates, fewer than LIMIT 100")
    if value > 100:
        raise NotYet(f"{value} works, but it is not the smallest: each candidate kept costs time")
    return "100: a search keeps ef_search candidates, so it must be at least LIMIT"


def _indexing_plan(ctx: Context, query: Any) -> str:
    if not isinstance(query, str) or "%(q)s" not in query:
        raise NotYet("query should be SQL text that takes the question's vector as %(q)s")
    dims = ctx.conn.execute("SELECT vector_dims(embedding) FROM indexing_vectors LIMIT 1").fetchone()
    if dims is None:
        raise NotYet("indexing_vectors is empty: run the lesson's cells first")
    q = np.random.default_rng(5).standard_normal(dims[0]).astype(np.float32)
    from ..search import explain

    with ctx.conn.transaction():
        plan = explain(ctx.conn, query, {"q": q})
        got = ctx.conn.execute(query, {"q": q}).fetchall()
        want = ctx.conn.execute("SELECT id, embedding <=> %(q)s FROM indexing_vectors "
                                "ORDER BY embedding <=> %(q)s LIMIT 10", {"q": q}).fetchall()
    if not plan.uses_index:
        raise NotYet("the plan does not use the HNSW index: order by the distance itself, ascending "
                     "(keep 1 - distance in the SELECT list only)")
    if [row[0] for row in got] != [row[0] for row in want] or len(got[0]) < 2:
        raise NotYet("the index is used, but return id and similarity for the 10 nearest rows")
    if not all(math.isclose(g[1], 1 - w[1], abs_tol=1e-6) for g, w in zip(got, want, strict=True)):
        raise NotYet("the second column should be the similarity, 1 - (embedding <=> %(q)s)")
    return f"served by {', '.join(plan.vector_indexes)}, with the similarity still shown"


# -- lesson 6 ------------------------------------------------------------------------------

def _hybrid_rrf(ctx: Context, rrf: Any) -> str:
    cases = [(([1],), 1 / 61), (([1, 3],), 1 / 61 + 1 / 63), (([2, 5],), 1 / 62 + 1 / 65)]
    for (ranks,), want in cases:
        got = call(rrf, "rrf", ranks)
        if isinstance(got, bool) or not isinstance(got, (int, float, np.floating)):
            raise NotYet(f"rrf({ranks}) should return a number, not {got!r:.40}")
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        if math.isclose(got, sum(1 / (61 + r) for r in ranks), rel_tol=1e-9):
            raise NotYet("that treats ranks as 0-based; the best row has rank 1 and earns 1 / (60 + 1)")
        if math.isclose(got, sum(1 / r for r in ranks), rel_tol=1e-9):
            raise NotYet("add the constant: each list gives 1 / (60 + rank)")
        raise NotYet(f"rrf({ranks}) should be {want:.6f}, got {got:.6f}: the sum of 1 / (60 + rank)")
    return "the sum of 1 / (60 + rank) over the lists, ranks from 1"


def _hybrid_any_word(ctx: Context, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise NotYet("text should be the search text you would pass to websearch_to_tsquery")
    parsed = ctx.conn.execute("SELECT websearch_to_tsquery('english', %s)::text", (text,)).fetchone()[0]
    lexemes = sorted(part.strip(" '()") for part in parsed.replace("&", "|").split("|"))
    if lexemes != ["deadlock", "detect", "retri"]:
        raise NotYet(f"it parses to {parsed!r}: use the three words deadlock, detected, retry")
    if "&" in parsed:
        raise NotYet(f"it parses to {parsed!r}: plain words are ANDed; put `or` between them")
    return f"{parsed}: a passage with any one of the words matches"


# -- lesson 7 ------------------------------------------------------------------------------

def _beyond_halfvec_bytes(ctx: Context, halfvec_bytes: Any) -> str:
    for dim in (3, 384, 1536, 3072):
        got = call(halfvec_bytes, "halfvec_bytes", dim)
        want = ctx.conn.execute("SELECT pg_column_size(array_fill(0.5::real, ARRAY[%s])::halfvec)",
                                (dim,)).fetchone()[0]
        if got == want:
            continue
        if got == 2 * dim:
            raise NotYet(f"{got} for {dim} dims counts the values only; a halfvec also has a small header")
        if got == 4 * dim + 8:
            raise NotYet("that is a vector's size: halfvec stores 2 bytes per value")
        raise NotYet(f"halfvec_bytes({dim}) should be {want} (pg_column_size says so), not {got!r:.20}")
    return "2 bytes per value plus an 8-byte header, as pg_column_size reports"


def _beyond_bits(ctx: Context, bits: Any) -> str:
    want = ctx.conn.execute("SELECT binary_quantize('[0.3, -1, 0, 2]'::vector)::text").fetchone()[0]
    if str(bits).strip() != want:
        raise NotYet("one bit per value: 1 where the value is positive, 0 otherwise (zero counts as 0)")
    return f"{want}: only the signs survive"


# -- lesson 8 ------------------------------------------------------------------------------

def _alternatives_chroma_top(ctx: Context, chroma_top: Any) -> str:
    for question in ("How do I make an upsert instead of failing on a duplicate key?", "why stars twinkle"):
        got = call(chroma_top, "chroma_top", question, 5)
        try:
            ids = [int(i) for i in got]
        except (TypeError, ValueError):
            raise NotYet(f"chroma_top() should return the ids Chroma found, not {got!r:.60}") from None
        want = [i for i, _, _ in exact_top(ctx, "alternatives_docs", ctx.embedder.embed_one(question), 5)]
        if ids != want:
            raise NotYet(f"for {question!r} pgvector's exact top 5 is {want}, Chroma gave {ids}: query with "
                         "query_texts=[question] on a collection using pvc.ChromaEmbeddingFunction()")
    return "Chroma embedded the question itself and found pgvector's top 5"


TASKS = (
    Task("indexing.ef_search", ("ef_search",), _indexing_ef_search),
    Task("indexing.plan", ("query",), _indexing_plan),
    Task("hybrid.rrf_score", ("rrf",), _hybrid_rrf),
    Task("hybrid.any_word", ("text",), _hybrid_any_word),
    Task("beyond.halfvec_bytes", ("halfvec_bytes",), _beyond_halfvec_bytes),
    Task("beyond.bits", ("bits",), _beyond_bits),
    Task("alternatives.chroma_top", ("chroma_top",), _alternatives_chroma_top),
)
