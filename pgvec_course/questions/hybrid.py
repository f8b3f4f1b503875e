"""Exercise 3, hybrid search: kb_passages.tsv, weighted_hybrid, rrf_hybrid and their evaluation."""

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
COLUMNS = ("id", "title", "content", "category", "embedding", "tsv")
DOC = "to_tsvector('english', title || ' ' || content)"
CANDIDATES = 50  # per leg, for reciprocal rank fusion
EVAL_K = 5
METHODS, KINDS, METRICS = ("semantic", "weighted", "rrf"), ("keyword", "conceptual"), ("recall@5", "mrr")
PUBLIC_WEIGHTED = (("SQLSTATE 23505", 5, 0.7),
                   ("how can a database find text with a similar meaning", 5, 0.7),
                   ("HNSW ef_search", 3, 0.4))
HIDDEN_WEIGHTED = (("ON CONFLICT upsert", 5, 0.6), ("a star that exploded", 4, 0.8),
                   ("python GIL threads", 5, 0.3))
PUBLIC_RRF = (("SQLSTATE 40P01", 5, 60), ("why is my query not using the index", 5, 60),
              ("ivfflat probes", 4, 20))
HIDDEN_RRF = (("sourdough starter", 5, 60), ("kubernetes pod restarts", 3, 10),
              ("the planet closest to the sun", 5, 30))


def text_ranks(conn, texts: list[str]) -> list[dict[int, float]]:
    """Return, per query text, ts_rank of every matching passage (computed from title and content)."""
    rows = conn.execute(
        # MATERIALIZED: each passage's tsvector is computed once, not once per query.
        f"WITH d AS MATERIALIZED (SELECT id, {DOC} AS doc FROM {TABLE}), "
        "q AS MATERIALIZED (SELECT n, plainto_tsquery('english', text) AS query "
        "                   FROM unnest(%s::text[]) WITH ORDINALITY AS u(text, n)) "
        "SELECT q.n, d.id, ts_rank(d.doc, q.query) FROM d, q WHERE d.doc @@ q.query",
        (list(texts),)).fetchall()
    ranks: list[dict[int, float]] = [{} for _ in texts]
    for n, pid, rank in rows:
        ranks[n - 1][int(pid)] = float(rank)
    return ranks


def weighted_scores(ids, dist, text: dict[int, float], k: int, w: float) -> dict[int, float]:
    """Return the tutorial's blend for its candidates: the 2k nearest, w*(1-d) + (1-w)*ts_rank."""
    index = {int(i): n for n, i in enumerate(ids)}
    return {int(i): w * (1 - dist[index[int(i)]]) + (1 - w) * text.get(int(i), 0.0)
            for i in ranked(ids, dist)[:2 * k]}


def rrf_scores(ids, dist, text: dict[int, float], rrf_k: int, *, first: int = 1) -> dict[int, float]:
    """Return reciprocal-rank-fusion scores: each leg's top CANDIDATES ranked from `first`."""
    semantic = [int(i) for i in ranked(ids, dist)[:CANDIDATES]]
    keyword = sorted(text, key=lambda i: (-text[i], i))[:CANDIDATES]
    scores: dict[int, float] = {}
    for leg in (semantic, keyword):
        for rank, pid in enumerate(leg, start=first):
            scores[pid] = scores.get(pid, 0.0) + 1.0 / (rrf_k + rank)
    return scores


def top(scores: dict[int, float], k: int) -> list[int]:
    """Return the k best ids, highest score first, ties to the smaller id."""
    return sorted(scores, key=lambda i: (-scores[i], i))[:k]


def probe_table(hidden: bool) -> str:
    return "__pvc_result__ = {}"


def score_table(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("hybrid.table", 2, lambda: _score_table(ctx))


def _score_table(ctx: Context) -> Outcome:
    from ..corpus import load_passages

    conn = ctx.conn
    problem = table_problem(conn, TABLE, COLUMNS)
    if problem:
        return grade("hybrid.table", 2, [problem], "")
    corpus = {p.id: p.content for p in load_passages()}
    have = dict(conn.execute(f"SELECT id, content FROM {TABLE} WHERE embedding IS NOT NULL").fetchall())
    missing = [i for i in corpus if have.get(i) != corpus[i]]
    generated = conn.execute("SELECT attgenerated FROM pg_attribute WHERE attrelid = %s::regclass "
                             "AND attname = 'tsv'", (TABLE,)).fetchone()[0]
    wrong_tsv = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE tsv IS DISTINCT FROM {DOC}").fetchone()[0]
    gin = conn.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = "
        "c.relam JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND am.amname = 'gin' AND a.attname = 'tsv'", (TABLE,)).fetchone()[0]
    kind = column_type(conn, TABLE, "embedding")
    results = [
        None if not missing else
        f"{len(missing)} of the {len(corpus)} corpus passages are missing (or have another id or no "
        "embedding), "
        f"for example id {missing[0]}: load every pvc.load_passages() passage under its own id",
        None if kind == f"vector({ctx.embedder.dim})" else
        f"embedding is {kind}, not vector({ctx.embedder.dim})",
        None if generated == "s" and wrong_tsv == 0 else
        f"tsv should be a generated column: GENERATED ALWAYS AS ({DOC}) STORED" if generated != "s" else
        f"{wrong_tsv} rows have a tsv other than {DOC}",
        None if gin else "there is no GIN index on tsv: CREATE INDEX ... USING gin (tsv)",
    ]
    return grade("hybrid.table", 2, results, "all passages, a generated tsv column and a GIN index on it")


def _args(cases) -> list[str]:
    return [", ".join(repr(v) for v in case) for case in cases]


def probe_weighted(hidden: bool) -> str:
    return build_probe("weighted_hybrid", _args(HIDDEN_WEIGHTED if hidden else PUBLIC_WEIGHTED))


def probe_rrf(hidden: bool) -> str:
    return build_probe("rrf_hybrid", _args(HIDDEN_RRF if hidden else PUBLIC_RRF))


def score_weighted(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("hybrid.weighted", 4, lambda: _score_fusion(data, ctx, hidden, "weighted"))


def score_rrf(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("hybrid.rrf", 4, lambda: _score_fusion(data, ctx, hidden, "rrf"))


def _score_fusion(data: Any, ctx: Context, hidden: bool, method: str) -> Outcome:
    qid, name = f"hybrid.{method}", f"{method}_hybrid" if method == "rrf" else "weighted_hybrid"
    problem = call_problem(data, name) or not_started(data, name) or table_problem(ctx.conn, TABLE, COLUMNS)
    if problem:
        return grade(qid, 4, [problem], "")
    cases = {"weighted": HIDDEN_WEIGHTED if hidden else PUBLIC_WEIGHTED,
             "rrf": HIDDEN_RRF if hidden else PUBLIC_RRF}[method]
    ids, matrix = fetch_vectors(ctx.conn, TABLE)
    vectors = ctx.embedder.embed([c[0] for c in cases])
    texts = text_ranks(ctx.conn, [c[0] for c in cases])
    results = []
    for call, (_, k, param), vec, text in zip(data["calls"], cases, vectors, texts, strict=True):
        if "error" in call:
            results.append(error_feedback(name, call["error"]))
            continue
        dist = cosine_distances(matrix, vec)
        if method == "weighted":
            true = weighted_scores(ids, dist, text, k, param)
            alternatives = [(weighted_scores(ids, dist, text, k, 1 - param),
                             "the scores match the weights swapped: semantic_weight multiplies the semantic "
                             "similarity, 1 - semantic_weight the text rank"),
                            (weighted_scores(ids, dist, {}, k, param),
                             "the text rank is missing from the scores: add (1 - semantic_weight) * ts_rank")]
            tol, outside = 1e-4, "not among the 2 * k nearest passages, the tutorial blend's only candidates"
        else:
            true = rrf_scores(ids, dist, text, param)
            alternatives = [(rrf_scores(ids, dist, text, param, first=0),
                             "the scores match 0-based ranks: the best row of each leg has rank 1"),
                            (rrf_scores(ids, dist, {}, param), "only the semantic leg counts in your scores: "
                             "add 1 / (rrf_k + rank) from the full-text leg"),
                            (rrf_scores(ids, dist, text, 60), "your scores ignore rrf_k: use the argument")]
            tol, outside = 1e-6, f"in neither leg's top {CANDIDATES}"
        results.append(_one_fusion(call, k, true, alternatives, tol, outside, name))
    ok = {"weighted": "the tutorial's weighted blend, best first",
          "rrf": "reciprocal rank fusion, best first"}
    return grade(qid, 4, results, ok[method] + f", matches for {len(cases)} queries")


def _one_fusion(call: dict, k: int, true: dict[int, float], alternatives: list, tol: float, outside: str,
                name: str) -> str | None:
    pairs, problem = as_pairs(call["value"], f"{name}()")
    if problem:
        return problem
    if len(pairs) != min(k, len(true)):
        more = ": did you forget LIMIT k?" if len(pairs) > k else ""
        return f"expected {min(k, len(true))} results for k={k}, got {len(pairs)}{more}"
    got_ids, got = [p[0] for p in pairs], np.array([p[1] for p in pairs])
    if len(set(got_ids)) != len(got_ids):
        return f"a passage appears twice in {got_ids}: add up its scores from both legs (GROUP BY id)"
    for scores, hint in alternatives:
        if all(i in scores and abs(scores[i] - s) <= tol for i, s in pairs) and \
                not all(i in true and abs(true[i] - s) <= tol for i, s in pairs):
            return hint
    for pid, score in pairs:
        if pid not in true:
            return f"passage {pid} is {outside}"
        if abs(true[pid] - score) > tol:
            return f"the score of passage {pid} ({score:.6f}) does not follow the formula in the contract"
    steps = np.diff(got)
    if np.any(steps > tol):
        return "scores are ascending: best first means ORDER BY score DESC" if np.all(steps >= -tol) \
            else "scores are not in descending order: ORDER BY the combined score, best first"
    best = np.array([true[i] for i in top(true, k)])
    if not np.allclose(np.sort(got)[::-1], best, atol=tol):
        return f"these are not the {k} best-scored passages: rank all candidates before the LIMIT"
    return None


def probe_eval(hidden: bool) -> str:
    return build_probe("evaluation", call=False)


def score_eval(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("hybrid.eval", 3, lambda: _score_eval(data, ctx))


def reference_evaluation(ctx: Context) -> dict[str, dict[str, dict[str, float]]]:
    """Return recall@5 and MRR@5 per method and query kind, computed from the learner's table."""
    from ..corpus import load_queries

    queries = load_queries()
    ids, matrix = fetch_vectors(ctx.conn, TABLE)
    vectors = ctx.embedder.embed([q.query for q in queries])
    texts = text_ranks(ctx.conn, [q.query for q in queries])
    sums = {m: {kind: {metric: [] for metric in METRICS} for kind in KINDS} for m in METHODS}
    for q, vec, text in zip(queries, vectors, texts, strict=True):
        dist = cosine_distances(matrix, vec)
        found = {"semantic": [int(i) for i in ranked(ids, dist)[:EVAL_K]],
                 "weighted": top(weighted_scores(ids, dist, text, EVAL_K, 0.7), EVAL_K),
                 "rrf": top(rrf_scores(ids, dist, text, 60), EVAL_K)}
        for method, got in found.items():
            hits = [n for n, pid in enumerate(got, start=1) if pid in q.relevant]
            sums[method][q.kind]["recall@5"].append(len(hits) / len(q.relevant))
            sums[method][q.kind]["mrr"].append(1 / hits[0] if hits else 0.0)
    return {m: {kind: {metric: float(np.mean(v)) for metric, v in by.items()} for kind, by in d.items()}
            for m, d in sums.items()}


def _score_eval(data: Any, ctx: Context) -> Outcome:
    problem = call_problem(data, "evaluation")
    got = data.get("value") if not problem else None
    if not problem and not isinstance(got, dict):
        problem = "evaluation should be a dict: evaluation[method][kind][metric]"
    if problem:
        return grade("hybrid.eval", 3, [problem], "")
    want = reference_evaluation(ctx)
    results = []
    for method in METHODS:
        result = None
        for kind in KINDS:
            for metric in METRICS:
                value = (got.get(method) or {}).get(kind, {}) if isinstance(got.get(method), dict) else {}
                value = value.get(metric) if isinstance(value, dict) else None
                if result is None and not isinstance(value, (int, float)):
                    result = f"evaluation[{method!r}][{kind!r}][{metric!r}] is missing (or not a number)"
                elif result is None and abs(value - want[method][kind][metric]) > 0.02:
                    result = (f"evaluation[{method!r}][{kind!r}][{metric!r}] = {value:.3f} differs from the "
                              f"value computed from your table (see the contract)")
        results.append(result)
    return grade("hybrid.eval", 3, results,
                 f"recall@{EVAL_K} and MRR per query kind match for semantic, weighted and RRF search")


EXERCISE = Exercise(
    name="03_hybrid_search",
    title="A hybrid search pipeline",
    questions=(
        Question("hybrid.table", f"{TABLE}.tsv: generated tsvector with a GIN index", 2, probe_table,
                 score_table),
        Question("hybrid.weighted", "weighted_hybrid(query, k, semantic_weight)", 4, probe_weighted,
                 score_weighted, ("weighted_hybrid",)),
        Question("hybrid.rrf", "rrf_hybrid(query, k, rrf_k)", 4, probe_rrf, score_rrf, ("rrf_hybrid",)),
        Question("hybrid.eval", "evaluation: recall@5 and MRR per query kind", 3, probe_eval, score_eval,
                 ("evaluation",)),
    ),
    timeout=300,
)
