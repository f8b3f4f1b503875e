"""Exercise 1, a knowledge base: the kb_passages table and ask(question) -> top 3 (id, distance)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .scoring import (
    as_pairs,
    build_probe,
    call_problem,
    column_type,
    cosine_distances,
    error_feedback,
    fetch_vectors,
    grade,
    not_started,
    ranked,
    safe_score,
    table_problem,
)
from .spec import Context, Exercise, Outcome, Question

TABLE = "kb_passages"
COLUMNS = ("id", "title", "content", "category", "embedding")
TOP = 3
TOL = 1e-4
MIN_ROWS = 50

PUBLIC = ("How do I stop duplicate rows from being inserted?",
          "Which index makes nearest-neighbour search fast?",
          "What makes bread dough rise?")
HIDDEN = ("How far away are the nearest stars?",
          "Why is my Python loop so slow?",
          "How can I roll back a bad deployment?")


def _table(conn) -> str | None:
    return table_problem(conn, TABLE, COLUMNS)


def probe_table(hidden: bool) -> str:
    return "__pvc_result__ = {}"


def score_table(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("kb.table", 4, lambda: _score_table(ctx, hidden))


def _score_table(ctx: Context, hidden: bool) -> Outcome:
    from ..corpus import load_passages

    conn, dim = ctx.conn, ctx.embedder.dim
    problem = _table(conn)
    if problem:
        return grade("kb.table", 4, [problem], "")
    kind = column_type(conn, TABLE, "embedding")
    if kind != f"vector({dim})":
        return grade("kb.table", 4, [f"embedding is {kind}, but the embedder ({ctx.embedder.name}) makes "
                                     f"{dim}-dimensional vectors: declare it vector({dim})"], "")
    rows, nulls, distinct = conn.execute(
        f"SELECT count(*), count(*) - count(embedding), count(DISTINCT embedding) FROM {TABLE}").fetchone()
    corpus = {p.content for p in load_passages()}
    contents = [r[0] for r in conn.execute(f"SELECT content FROM {TABLE}")]
    from_corpus = sum(c in corpus for c in contents)
    results: list[str | None] = [
        None if rows >= MIN_ROWS else f"{TABLE} has {rows} rows; load at least {MIN_ROWS} passages",
        None if from_corpus >= MIN_ROWS else
        f"only {from_corpus} rows hold a course-corpus passage's content; load them with pvc.load_passages()",
        None if nulls == 0 else f"{nulls} rows have no embedding: embed every passage before inserting it",
        None if distinct == rows - nulls or rows == 0 else (
            "every row has the same embedding: did you embed one text for all rows?" if distinct == 1 else
            f"only {distinct} distinct embeddings for {rows - nulls} rows: load each passage once, "
            "with its own embedding"),
        _embeddings_match(ctx, hidden),
    ]
    return grade("kb.table", 4, results,
                 f"{rows} passages with vector({dim}) embeddings of their content")


def _embeddings_match(ctx: Context, hidden: bool) -> str | None:
    ids, matrix = fetch_vectors(ctx.conn, TABLE)
    if len(ids) == 0:
        return "no embeddings to compare"
    # Public checks look at the first rows; the grader samples others.
    pick = np.random.default_rng(7).choice(len(ids), size=min(8, len(ids)), replace=False) if hidden \
        else np.arange(min(5, len(ids)))
    by_id = dict(ctx.conn.execute(f"SELECT id, content FROM {TABLE} WHERE id = ANY(%s)",
                                  ([int(i) for i in ids[pick]],)).fetchall())
    expected = ctx.embedder.embed([by_id[int(i)] for i in ids[pick]])
    for row, vec in zip(pick, expected, strict=True):
        if cosine_distances(matrix[row:row + 1], vec)[0] > 1e-3:
            return (f"the embedding of passage {int(ids[row])} is not the embedder's vector of its content: "
                    "embed the content column with pvc.get_embedder(), one vector per passage, same order")
    return None


def probe_ask(hidden: bool) -> str:
    return build_probe("ask", [repr(q) for q in (HIDDEN if hidden else PUBLIC)])


def score_ask(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("kb.ask", 6, lambda: _score_ask(data, ctx, hidden))


def _score_ask(data: Any, ctx: Context, hidden: bool) -> Outcome:
    problem = call_problem(data, "ask") or not_started(data, "ask") or _table(ctx.conn)
    if problem:
        return grade("kb.ask", 6, [problem], "")
    ids, matrix = fetch_vectors(ctx.conn, TABLE)
    questions = HIDDEN if hidden else PUBLIC
    vectors = ctx.embedder.embed(list(questions))
    results = [_one_answer(call, ids, matrix, q) for call, q in zip(data["calls"], vectors, strict=True)]
    return grade("kb.ask", 6, results,
                 f"the {TOP} nearest passages and cosine distances match for {len(questions)} questions")


def _one_answer(call: dict, ids: np.ndarray, matrix: np.ndarray, query: np.ndarray) -> str | None:
    if "error" in call:
        return error_feedback("ask", call["error"])
    pairs, problem = as_pairs(call["value"], "ask()")
    if problem:
        return problem
    if len(pairs) != TOP:
        more = ": did you forget LIMIT?" if len(pairs) > TOP else ""
        return f"expected {TOP} results, got {len(pairs)}{more}"
    got_ids = [p[0] for p in pairs]
    got = np.array([p[1] for p in pairs])
    if len(set(got_ids)) != TOP:
        return f"the same passage appears twice in {got_ids}"
    index = {int(i): n for n, i in enumerate(ids)}
    unknown = [i for i in got_ids if i not in index]
    if unknown:
        return f"id {unknown[0]} is not in {TABLE} (ids come from its id column)"
    dist = cosine_distances(matrix, query)
    rows = matrix[[index[i] for i in got_ids]]
    true = dist[[index[i] for i in got_ids]]
    if not np.allclose(got, true, atol=TOL):
        l2 = np.linalg.norm(rows - query, axis=1)
        for values, what in ((l2, "L2 distances (<->)"), (-(rows @ query), "negative inner products (<#>)"),
                             (1 - true, "cosine similarities (1 - distance)")):
            if np.allclose(got, values, atol=TOL):
                return f"these look like {what}, not cosine distances (<=>)"
        return (f"passage {got_ids[0]} is reported at distance {got[0]:.4f}, but its cosine distance to "
                f"the question is {true[0]:.4f}")
    steps = np.diff(got)
    if np.any(steps < -TOL):
        if np.all(steps <= TOL):
            return "distances are descending: nearest first means ascending order (did you add DESC?)"
        return "distances are not ascending: did you forget ORDER BY?"
    best = dist[[index[int(i)] for i in ranked(ids, dist)[:TOP]]]
    if not np.allclose(np.sort(got), best, atol=TOL):
        return f"these are not the {TOP} nearest passages: did you forget ORDER BY the cosine distance?"
    return None


EXERCISE = Exercise(
    name="01_knowledge_base",
    title="Build a knowledge base",
    questions=(
        Question("kb.table", f"{TABLE}: passages with embeddings", 4, probe_table, score_table),
        Question("kb.ask", "ask(question): the 3 nearest passages", 6, probe_ask, score_ask, ("ask",)),
    ),
    timeout=300,
)
