"""Exercise 1, a knowledge base: kb_passages on a topic of the learner's choice, and ask(question).

The references never come from the learner's stored vectors: every row's content is embedded again
with the reference embedder, and `ask` is judged against exact search over those vectors. The
grader's questions are derived from the learner's own passages (see solutions/hidden/), so they
make sense whatever the topic; the inline check asks the public questions below.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import numpy as np

from .probes import build_probe, literal_args, table_probe
from .scoring import (
    PartResults,
    as_pairs,
    blocked,
    call_problem,
    committed,
    error_feedback,
    full,
    not_started,
    safe_score,
    score_parts,
    share_found,
)
from .spec import Context, Exercise, Outcome, Part, Question
from .tables import (
    MAX_TEXT,
    column_type,
    cosine_distances,
    embedding_hint,
    nearest_set,
    ranked,
    row_matches,
    table_problem,
    verified_rows,
)

TABLE = "kb_passages"
COLUMNS = ("id", "title", "content", "category", "embedding")
TOP = 3
TOL = 1e-4
TIES = 2 * TOP  # passages equally near a question beyond which its answer proves nothing
MIN_ROWS, MAX_ROWS = 50, 1000
PUBLIC = ("How do I stop duplicate rows from being inserted?",
          "Which index makes nearest-neighbour search fast?",
          "What makes bread dough rise?")
# Run in the kernel and in the grader, which must derive the same questions; texts cut as tables.py does.
ROWS_SQL = (f"SELECT id::int8, left(coalesce(title::text, ''), {MAX_TEXT}), "
            f"left(coalesce(content::text, ''), {MAX_TEXT}) FROM {TABLE} ORDER BY id LIMIT {MAX_ROWS}")


def probe_table(inputs: Any, *, grading: bool = False) -> str:
    return table_probe(grading=grading)


def score_table(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(TABLE_Q, lambda: _score_table(data, ctx))


def _score_table(data: Any, ctx: Context) -> Outcome:
    conn, dim = ctx.conn, ctx.embedder.dim
    problem = table_problem(conn, TABLE, COLUMNS, data)
    if problem:
        return blocked(TABLE_Q, problem)
    result: PartResults = full("structure", "rows", "embeddings")
    result["committed"] = committed(data)
    kind = column_type(conn, TABLE, "embedding")
    if kind != f"vector({dim})":
        hint = (f"embedding is {kind}, but the embedder ({ctx.embedder.name}) makes {dim}-dimensional "
                f"vectors: declare it vector({dim})")
        result["structure"] = result["embeddings"] = (0.0, hint)
    rows, nulls, empty, distinct = conn.execute(
        f"SELECT count(*), count(*) - count(embedding), count(*) FILTER (WHERE coalesce(content, '') = ''), "
        f"count(DISTINCT content) FROM {TABLE}").fetchone()
    if rows == 0:
        result["committed"] = (0.0, f"{TABLE} is empty: nothing was stored")
    if rows < MIN_ROWS:
        result["rows"] = (rows / MIN_ROWS, f"{TABLE} has {rows} rows; load at least {MIN_ROWS} passages")
    elif rows > MAX_ROWS:
        result["rows"] = (0.5, f"{TABLE} has {rows:,} rows; keep it to at most {MAX_ROWS:,} passages")
    elif nulls or empty:
        result["rows"] = (1 - (nulls + empty) / rows,
                          f"{nulls + empty} rows have no embedding or no content: store every passage "
                          "with its text and its vector")
    elif distinct < rows:
        result["rows"] = (distinct / rows, f"{rows - distinct} rows repeat another row's content: store each "
                                           "passage once")
    if result["structure"][0] and rows:
        verified = verified_rows(ctx, TABLE, limit=MAX_ROWS)
        matches = row_matches(verified)
        hint = embedding_hint(ctx, verified, matches)
        result["embeddings"] = (float(matches.mean()), hint) if hint else (1.0, None)
    return score_parts(TABLE_Q, [result], f"{rows} passages with vector({dim}) embeddings of their content")


def probe_ask(inputs: Any, *, grading: bool = False) -> str:
    if not callable(inputs):
        return build_probe("ask", literal_args((q,) for q in inputs))
    # Questions derived from the learner's passages: computed in the kernel from the table, and
    # again by the scorer, which only accepts answers to the questions it derived itself.
    derive = textwrap.dedent(inspect.getsource(inputs))
    setup = f'''{derive}
rows = globals().get("__pvc_rows__")
try:
    if rows is None:
        import psycopg
        from pgvec_course.db import database_url
        with psycopg.connect(database_url(), autocommit=True) as c:
            rows = c.execute({ROWS_SQL!r}).fetchall()
    out["inputs"] = [str(q) for q in {inputs.__name__}([tuple(r) for r in rows])]
except Exception:  # no table yet: the scorer says so
    out["inputs"] = []
'''
    return build_probe("ask", '[(q,) for q in out["inputs"]]', setup=setup)


def questions_for(ctx: Context, inputs: Any) -> list[str]:
    """Return the questions `ask` is judged on: the public ones, or those derived from the table."""
    if not callable(inputs):
        return list(inputs)
    rows = ctx.conn.execute(ROWS_SQL).fetchall()
    return [str(q) for q in inputs([tuple(r) for r in rows])]


def score_ask(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(ASK_Q, lambda: _score_ask(data, ctx, inputs))


def _score_ask(data: Any, ctx: Context, inputs: Any) -> Outcome:
    problem = call_problem(data, "ask") or not_started(data, "ask") or table_problem(ctx.conn, TABLE, COLUMNS)
    if problem:
        return blocked(ASK_Q, problem)
    questions = questions_for(ctx, inputs)
    if not questions:
        return blocked(ASK_Q, f"{TABLE} holds no passage to ask about")
    # Derived questions come back with the answers; a probe result without them answered nothing.
    asked = data.get("inputs", []) if callable(inputs) else questions
    rows = verified_rows(ctx, TABLE, limit=MAX_ROWS)
    vectors = ctx.embedder.embed(questions)
    calls = data["calls"] + [{"error": "no answer"}] * (len(questions) - len(data["calls"]))
    results = []
    for n, (call, question, vector) in enumerate(zip(calls, questions, vectors, strict=False)):
        if n >= len(asked) or asked[n] != question:
            hint = ("ask() was not called with the question derived from kb_passages: did a later cell "
                    "change the table?")
            results.append({"nearest": (0.0, hint), "distances": (0.0, hint)})
        else:
            results.append(_one_answer(call, rows, vector))
    ok = f"the {TOP} nearest passages and cosine distances match for {len(questions)} questions"
    return score_parts(ASK_Q, results, ok)


def _one_answer(call: dict, rows, query: np.ndarray) -> PartResults:
    if "error" in call:
        hint = error_feedback("ask", call["error"])
        return {"nearest": (0.0, hint), "distances": (0.0, hint)}
    pairs, problem = as_pairs(call["value"], "ask()")
    if problem:
        return {"nearest": (0.0, problem), "distances": (0.0, problem)}
    got_ids, got = [p[0] for p in pairs], np.array([p[1] for p in pairs])
    index = {int(i): n for n, i in enumerate(rows.ids)}
    reference = cosine_distances(rows.reference, query)
    result = full("nearest", "distances")
    near = nearest_set(rows.ids, reference, TOP)
    share = share_found(got_ids, near, TOP)
    if len(near) > TIES:  # copies of one text: any 3 of them would be "the nearest"
        result["nearest"] = (0.0, f"{len(near)} passages are equally near this question, copies of one "
                                  "text: store each passage once, so that the nearest ones can be told apart")
    elif share < 1:
        result["nearest"] = (share, _nearest_hint(got_ids, got, rows, reference, query, index))
    known = [i for i in got_ids if i in index]
    if len(known) < len(got_ids) or not got_ids:
        result["distances"] = (0.0, result["nearest"][1] or "ask() returned no passage")
        return result
    stored = rows.stored[[index[i] for i in got_ids]]
    true = cosine_distances(stored, query)
    if not np.allclose(got, true, atol=TOL):
        result["distances"] = (0.0, _unit_hint(got, true, stored, query, got_ids))
    elif np.any(np.diff(got) < -TOL):
        result["distances"] = (0.0, "distances are descending: nearest first means ascending order "
                                    "(did you add DESC?)" if np.all(np.diff(got) <= TOL) else
                                    "distances are not ascending: did you forget ORDER BY?")
    return result


def _nearest_hint(got_ids: list[int], got, rows, reference, query, index: dict[int, int]) -> str:
    if len(got_ids) > TOP:
        return f"expected {TOP} results, got {len(got_ids)}: did you forget LIMIT?"
    if len(got_ids) < TOP:
        return (f"expected {TOP} results, got {len(got_ids)}: does a WHERE clause (a distance threshold?) "
                "drop passages?")
    if len(set(got_ids)) < len(got_ids):
        return f"the same passage appears twice in {got_ids}"
    unknown = [i for i in got_ids if i not in index]
    if unknown:
        return f"id {unknown[0]} is not in {TABLE} (ids come from its id column)"
    if set(got_ids) == {int(i) for i in ranked(rows.ids, -reference)[:TOP]}:
        stored = cosine_distances(rows.stored[[index[i] for i in got_ids]], query)
        if np.allclose(got, 1 - stored, atol=TOL):
            return ("these are the farthest passages: ordering by a similarity (1 - distance) puts the least "
                    "similar first; order by the cosine distance")
        return "these are the farthest passages: nearest first means ascending distance (did you add DESC?)"
    stored = np.nan_to_num(cosine_distances(np.nan_to_num(rows.stored), query), nan=2.0)
    if set(got_ids) <= nearest_set(rows.ids, stored, TOP):
        return ("these are the nearest by the vectors stored in kb_passages, but those are not the "
                "embedder's vectors of the content (see kb.table), so the answers are not the right passages")
    return f"these are not the {TOP} nearest passages: did you forget ORDER BY the cosine distance (<=>)?"


def _unit_hint(got, true, stored, query, got_ids: list[int]) -> str:
    l2 = np.linalg.norm(stored - query, axis=1)
    for values, what in ((l2, "L2 distances (<->)"), (-(stored @ query), "negative inner products (<#>)"),
                         (1 - true, "cosine similarities (1 - distance)")):
        if np.allclose(got, values, atol=TOL):
            return f"these look like {what}, not cosine distances (<=>)"
    return (f"passage {got_ids[0]} is reported at distance {got[0]:.4f}, but its cosine distance to the "
            f"question is {true[0]:.4f}")


TABLE_Q = Question(
    "kb.table", f"{TABLE}: your passages with embeddings", (
        Part("structure", 0.5, f"{TABLE} has the contract's columns, with vector(D) for the embedder's D"),
        Part("rows", 1, f"{MIN_ROWS} to {MAX_ROWS:,} passages, each with its content and an embedding"),
        Part("embeddings", 1.5, "each row's embedding is the embedder's vector of its content (every row "
                                "is embedded again and compared)"),
        Part("committed", 1, "the rows were committed, so they outlive your session"),
    ), probe_table, score_table,
    mistakes=("titles embedded", "one vector in every row", "another embedding model", "never committed"))
ASK_Q = Question(
    "kb.ask", "ask(question): the 3 nearest passages", (
        Part("nearest", 4, "the 3 passages nearest to the question, by exact search over the content's "
                           "embeddings"),
        Part("distances", 2, "each with its cosine distance (<=>), nearest first"),
    ), probe_ask, score_ask, ("ask",), public=PUBLIC,
    mistakes=("L2 distances", "similarities", "LIMIT 5", "DESC", "no ORDER BY", "titles embedded"))

EXERCISE = Exercise(name="01_knowledge_base", title="Build a knowledge base", questions=(TABLE_Q, ASK_Q),
                    timeout=300)
