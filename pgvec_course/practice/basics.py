"""Practice for lessons 1-4: the vector type, storing embeddings, distance operators, nearest neighbours."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from . import Context, NotYet, Task, call

__all__ = ["TASKS", "exact_top"]


def _cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise NotYet(f"{what} should be a number, not {type(value).__name__} {value!r:.40}")
    return float(value)


def _rollback_if_failed(ctx: Context) -> None:
    if ctx.conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        ctx.conn.rollback()


def exact_top(ctx: Context, table: str, vector: Any, k: int, *, category: str | None = None) -> list[tuple]:
    """Return (id, title, cosine distance) of the k nearest rows, exactly (ties to the smaller id)."""
    where = sql.SQL(" WHERE category = %s") if category is not None else sql.SQL("")
    query = sql.SQL("SELECT id, title, embedding FROM {}{} ORDER BY id").format(sql.Identifier(table), where)
    try:
        rows = ctx.conn.execute(query, (category,) if category is not None else None).fetchall()
    except Exception as exc:  # noqa: BLE001 - a missing table is a hint, not a crash
        _rollback_if_failed(ctx)
        raise NotYet(f"cannot read {table} ({type(exc).__name__}): run the lesson's set-up cells first"
                     ) from None
    ids = np.array([r[0] for r in rows])
    matrix = np.stack([r[2].to_numpy() for r in rows]).astype(np.float64)
    q = np.asarray(vector, dtype=np.float64)
    dist = 1 - matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q))
    order = np.lexsort((ids, dist))[:k]
    return [(int(ids[i]), rows[i][1], float(dist[i])) for i in order]


# -- lesson 1 ------------------------------------------------------------------------------

def _why_distance(ctx: Context, distance: Any) -> str:
    value = _number(distance, "distance")
    right = ctx.conn.execute("SELECT '[1,2,3]'::vector <-> '[4,6,3]'::vector").fetchone()[0]
    if math.isclose(value, right, abs_tol=1e-6):
        return f"{value:g}: the straight-line distance, the square root of 3² + 4² + 0²"
    if math.isclose(value, right**2, abs_tol=1e-6):
        raise NotYet(f"{value:g} is the squared distance; <-> returns the distance itself (its square root)")
    cosine = ctx.conn.execute("SELECT '[1,2,3]'::vector <=> '[4,6,3]'::vector").fetchone()[0]
    if math.isclose(value, cosine, abs_tol=1e-6):
        raise NotYet("that is the cosine distance (<=>); the L2 distance is the <-> operator")
    raise NotYet(f"{value:g} is not it; ask the server: SELECT '[1,2,3]'::vector <-> '[4,6,3]'::vector")


# -- lesson 2 ------------------------------------------------------------------------------

def _storing_dims(ctx: Context, dims: Any) -> str:
    value = _number(dims, "dims")
    if value != ctx.embedder.dim:
        other = {384: "the local model's", 1536: "OpenAI's text-embedding-3-small"}.get(int(value))
        hint = f"{int(value)} is {other} size, not the embedder's in use" if other else "ask the embedder"
        raise NotYet(f"{hint}: read it from the embedder (embedder.dim) rather than typing it")
    return f"{ctx.embedder.name} makes {int(value)}-dimensional vectors: declare vector({int(value)})"


def _storing_store(ctx: Context, store: Any) -> str:
    title, content = "Practice row", "A row stored by the practice check; it is deleted again."
    new_id = call(store, "store", title, content)
    if isinstance(new_id, (tuple, list)) and len(new_id) == 1:
        new_id = new_id[0]
    if isinstance(new_id, bool) or not isinstance(new_id, int):
        raise NotYet(f"store() should return the new row's id (an int: RETURNING id), not {new_id!r:.40}")
    try:
        row = ctx.conn.execute("SELECT title, content, embedding FROM storing_docs WHERE id = %s",
                               (new_id,)).fetchone()
        if row is None:
            raise NotYet(f"no row {new_id} in storing_docs: insert into that table (and commit, if your "
                         "connection is not in autocommit mode)")
        if (row[0], row[1]) != (title, content):
            raise NotYet("the row's title and content are not the ones store() was given")
        if row[2] is None:
            raise NotYet("the row has no embedding: pass the vector as the fourth parameter")
        want = ctx.embedder.embed_one(f"{title}\n{content}")
        if _cosine(row[2].to_numpy(), want) < 0.999:
            raise NotYet("the embedding is not that of the title and content: embed f'{title}\\n{content}'")
        return f"row {new_id} stored with the embedding of its title and content (and deleted again)"
    finally:
        ctx.conn.execute("DELETE FROM storing_docs WHERE id = %s", (new_id,))


# -- lesson 3 ------------------------------------------------------------------------------

def _distance_cosine(ctx: Context, cosine_distance: Any) -> str:
    rng = np.random.default_rng(3)
    pairs = [(np.array([3.0, 4.0, 0.0]), np.array([1.0, 2.0, 2.0]))]
    pairs += [(rng.standard_normal(8) * rng.uniform(0.5, 3), rng.standard_normal(8)) for _ in range(4)]
    for a, b in pairs:
        got = _number(call(cosine_distance, "cosine_distance", a, b), "cosine_distance(a, b)")
        want = ctx.conn.execute("SELECT %s::vector <=> %s::vector", (a.tolist(), b.tolist())).fetchone()[0]
        if math.isclose(got, want, abs_tol=1e-5):
            continue
        if math.isclose(got, 1 - want, abs_tol=1e-5):
            raise NotYet("that is the cosine *similarity*; the distance is 1 minus it")
        if math.isclose(got, 1 - float(a @ b), abs_tol=1e-5):
            raise NotYet("right only for unit vectors: divide the dot product by both lengths")
        raise NotYet(f"for a={a.round(2).tolist()}, b={b.round(2).tolist()} the server's <=> gives "
                     f"{want:.4f}, yours {got:.4f}")
    return "matches the server's <=> on 5 pairs, including vectors of different lengths"


def _distance_same_ranking(ctx: Context, operators: Any) -> str:
    if isinstance(operators, str) or not isinstance(operators, (set, list, tuple, frozenset)):
        raise NotYet("give a set of operator strings, for example {'<=>'}")
    chosen = {str(op).strip() for op in operators}
    unknown = chosen - {"<=>", "<->", "<#>", "<+>"}
    if unknown:
        raise NotYet(f"{sorted(unknown)} is not one of pgvector's operators <=>, <->, <#>, <+>")
    if chosen == {"<=>", "<->", "<#>"}:
        return "for unit vectors all three are functions of the dot product, so they rank alike"
    if "<+>" in chosen:
        raise NotYet("L1 (<+>) is not a function of the dot product, even for unit vectors")
    raise NotYet("more of them agree: write each in terms of a·b when |a| = |b| = 1")


# -- lesson 4 ------------------------------------------------------------------------------

QUESTION = "How do I find out why my query is slow?"


def _nearest_titles(ctx: Context, nearest_titles: Any) -> str:
    for question, k in ((QUESTION, 5), ("keeping bread dough from sticking", 3)):
        got = call(nearest_titles, "nearest_titles", question, k)
        if not isinstance(got, list) or not all(isinstance(t, str) for t in got):
            raise NotYet(f"nearest_titles() should return a list of titles (str), not {got!r:.60}")
        ranked = exact_top(ctx, "nearest_docs", ctx.embedder.embed_one(question), 10**6)
        want = [title for _, title, _ in ranked[:k]]
        if got == want:
            continue
        if len(got) != k:
            raise NotYet(f"asked for {k} titles, got {len(got)}: LIMIT %s with k")
        if got and got[0] == ranked[-1][1]:
            raise NotYet("those are the farthest: sort ascending, smaller distance is nearer")
        raise NotYet(f"for {question!r} the nearest are {want}; order by embedding <=> the question's vector")
    return "the right titles, nearest first"


def _nearest_in(ctx: Context, nearest_in: Any) -> str:
    for question, category in ((QUESTION, "python"), ("a star's life", "cooking")):
        got = call(nearest_in, "nearest_in", question, category, 3)
        if not isinstance(got, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in got):
            raise NotYet(f"nearest_in() should return a list of ids (int), not {got!r:.60}")
        want = [i for i, _, _ in exact_top(ctx, "nearest_docs", ctx.embedder.embed_one(question), 3,
                                           category=category)]
        if got != want:
            vector = ctx.embedder.embed_one(question)
            everywhere = [i for i, _, _ in exact_top(ctx, "nearest_docs", vector, 3)]
            hint = "filter first: WHERE category = %s" if got == everywhere else f"expected ids {want}"
            raise NotYet(f"for {question!r} in {category!r}: {hint}")
    return "filtered and ordered right, even when the category is far from the question"


TASKS = (
    Task("why.distance", ("distance",), _why_distance),
    Task("storing.dims", ("dims",), _storing_dims),
    Task("storing.store", ("store",), _storing_store),
    Task("distance.cosine", ("cosine_distance",), _distance_cosine),
    Task("distance.same_ranking", ("operators",), _distance_same_ranking),
    Task("nearest.titles", ("nearest_titles",), _nearest_titles),
    Task("nearest.in_category", ("nearest_in",), _nearest_in),
)
