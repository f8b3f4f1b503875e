"""Exercise 2, an index benchmark: bench_items, exact_top_k, recall_at_k and the sweep `results`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .scoring import (
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

TABLE = "bench_items"
ROWS, DIM = 10_000, 1536
TOL = 1e-5
# Queries are drawn in the learner's kernel from these seeds, and again here for the reference.
PUBLIC_TRUTH = ((101, 10), (102, 10), (103, 5))
HIDDEN_TRUTH = ((201, 10), (202, 3), (203, 10))
QUERY_SETUP = ("import numpy as np\n"
               "query = lambda seed: np.random.default_rng(seed).random(1536, dtype=np.float32)")
# (found, truth, k): order must not matter, only the first k of each list count, divide by k.
PUBLIC_RECALL = (([1, 2, 3, 4], [1, 2, 3, 4], 4), ([3, 2, 1, 9], [1, 2, 3, 4], 4),
                 ([9, 8, 1, 2, 3], [1, 2, 3, 4, 5], 3), ([5, 6], [5, 6, 7, 8], 4))
HIDDEN_RECALL = (([7, 8, 9], [9, 8, 7], 3), ([4, 1, 0, 2], [0, 1, 2, 3], 4),
                 ([10, 11, 1, 2], [1, 2, 10, 11], 2), ([3], [3, 4, 5, 6, 7], 5), ([1, 2], [3, 4], 2))
KEYS = ("index", "param", "value", "p50_ms", "recall")
SWEEPS = (("ivfflat", "probes"), ("hnsw", "ef_search"))
TREND_TOL = 0.05  # HNSW recall is not strictly monotone in ef_search for a handful of queries


def probe_table(hidden: bool) -> str:
    return "__pvc_result__ = {}"


def score_table(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("bench.table", 2, lambda: _score_table(ctx))


def _score_table(ctx: Context) -> Outcome:
    problem = table_problem(ctx.conn, TABLE, ("id", "embedding"))
    if problem:
        return grade("bench.table", 2, [problem], "")
    kind = column_type(ctx.conn, TABLE, "embedding")
    rows, nulls = ctx.conn.execute(f"SELECT count(*), count(*) - count(embedding) FROM {TABLE}").fetchone()
    results: list[str | None] = [
        None if kind == f"vector({DIM})" else f"embedding is {kind}; the benchmark uses vector({DIM})",
        None if rows == ROWS else f"{TABLE} has {rows} rows; the benchmark needs {ROWS:,}",
        None if nulls == 0 else f"{nulls} rows have no vector",
    ]
    if all(r is None for r in results):
        _, matrix = fetch_vectors(ctx.conn, TABLE)
        distinct = len({row.tobytes() for row in matrix})
        same = "every row holds the same vector: draw a new random vector for each row"
        results.append(None if distinct == rows else same if distinct == 1
                       else f"only {distinct:,} distinct vectors in {rows:,} rows: draw each row separately")
    return grade("bench.table", 2, results, f"{ROWS:,} distinct random vector({DIM}) rows")


def probe_truth(hidden: bool) -> str:
    cases = HIDDEN_TRUTH if hidden else PUBLIC_TRUTH
    return build_probe("exact_top_k", [f"query({seed}), {k}" for seed, k in cases], setup=QUERY_SETUP)


def score_truth(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("bench.truth", 3, lambda: _score_truth(data, ctx, hidden))


def _score_truth(data: Any, ctx: Context, hidden: bool) -> Outcome:
    problem = call_problem(data, "exact_top_k") or not_started(data, "exact_top_k") or \
        table_problem(ctx.conn, TABLE, ("id", "embedding"))
    if problem:
        return grade("bench.truth", 3, [problem], "")
    ids, matrix = fetch_vectors(ctx.conn, TABLE)
    cases = HIDDEN_TRUTH if hidden else PUBLIC_TRUTH
    results = []
    for call, (seed, k) in zip(data["calls"], cases, strict=True):
        query = np.random.default_rng(seed).random(DIM, dtype=np.float32).astype(np.float64)
        results.append(_one_truth(call, ids, matrix, query, k))
    return grade("bench.truth", 3, results, "exact_top_k matches an exact search in numpy")


def _one_truth(call: dict, ids: np.ndarray, matrix: np.ndarray, query: np.ndarray, k: int) -> str | None:
    if "error" in call:
        return error_feedback("exact_top_k", call["error"])
    got = call["value"]
    if not isinstance(got, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in got):
        return f"exact_top_k should return a list of ids (ints); got {str(got)[:60]}"
    if len(got) != k:
        return f"expected {k} ids for k={k}, got {len(got)}: use k in LIMIT"
    index = {int(i): n for n, i in enumerate(ids)}
    if any(i not in index for i in got):
        return f"id {next(i for i in got if i not in index)} is not in {TABLE}"
    dist = cosine_distances(matrix, query)
    mine = dist[[index[i] for i in got]]
    best = dist[[index[int(i)] for i in ranked(ids, dist)[:k]]]
    if np.allclose(np.sort(mine), best, atol=TOL):
        if np.any(np.diff(mine) < -TOL):
            return "the right ids, but not nearest first: order by distance"
        return None
    l2_best = set(ranked(ids, np.linalg.norm(matrix - query, axis=1))[:k].tolist())
    if set(got) == l2_best:
        return "these are the nearest ids by L2 distance (<->); the benchmark uses cosine distance (<=>)"
    if set(got) == set(ranked(ids, -dist)[:k].tolist()):
        return "these are the farthest vectors: nearest first means ascending distance (did you add DESC?)"
    hits = int(np.sum(mine <= best[-1] + TOL))
    if hits:
        return (f"only {hits} of your {k} ids are true nearest neighbours: is an index answering the "
                "query? Ground truth needs an exact scan (SET LOCAL enable_indexscan = off) or numpy")
    return f"none of your {k} ids is among the {k} nearest by cosine distance"


def _recall(found: list[int], truth: list[int], k: int) -> float:
    return len(set(found[:k]) & set(truth[:k])) / k


def probe_recall(hidden: bool) -> str:
    return build_probe("recall_at_k", [repr(c)[1:-1] for c in (HIDDEN_RECALL if hidden else PUBLIC_RECALL)])


def score_recall(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("bench.recall", 2, lambda: _score_recall(data, hidden))


def _score_recall(data: Any, hidden: bool) -> Outcome:
    problem = call_problem(data, "recall_at_k")
    if problem:
        return grade("bench.recall", 2, [problem], "")
    results = []
    cases = HIDDEN_RECALL if hidden else PUBLIC_RECALL
    for call, (found, truth, k) in zip(data["calls"], cases, strict=True):
        if "error" in call:
            results.append(error_feedback("recall_at_k", call["error"]))
            continue
        got, want = call["value"], _recall(found, truth, k)
        case = f"recall_at_k({found}, {truth}, k={k})"
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            results.append(f"{case} should return a float, got {str(got)[:40]}")
        elif abs(got - want) <= 1e-9:
            results.append(None)
        elif abs(got - sum(a == b for a, b in zip(found[:k], truth[:k], strict=False)) / k) <= 1e-9:
            results.append(f"{case} = {got:g}: recall counts shared ids whatever their position; "
                           "compare sets of ids, not the lists element by element")
        elif abs(got - len(set(found) & set(truth)) / k) <= 1e-9 or \
                abs(got - len(set(found) & set(truth)) / max(len(truth), 1)) <= 1e-9:
            results.append(f"{case} = {got:g}: only the first k ids of each list count")
        elif len(found) and abs(got - len(set(found[:k]) & set(truth[:k])) / len(found[:k])) <= 1e-9:
            results.append(f"{case} = {got:g}: divide by k, not by the number of ids found")
        else:
            results.append(f"{case} = {got:g} is not the share of the true top k that was found")
    return grade("bench.recall", 2, results, "recall_at_k counts shared ids in the top k, divided by k")


def probe_sweep(hidden: bool) -> str:
    return build_probe("results", call=False)


def score_sweep(data: Any, ctx: Context, hidden: bool) -> Outcome:
    return safe_score("bench.sweep", 3, lambda: _score_sweep(data))


def _score_sweep(data: Any) -> Outcome:
    problem = call_problem(data, "results")
    rows = data.get("value") if not problem else None
    if not problem and (not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows)):
        problem = "results should be a non-empty list of dicts, one per measurement"
    if not problem:
        missing = [k for r in rows for k in KEYS if k not in r]
        if missing:
            problem = f"a row of results has no {missing[0]!r}; each row needs {', '.join(KEYS)}"
    if problem:
        return grade("bench.sweep", 3, [problem], "")
    for r in rows:
        if not all(isinstance(r[key], (int, float)) and not isinstance(r[key], bool)
                   for key in ("p50_ms", "recall")):
            return grade("bench.sweep", 3, [f"p50_ms and recall should be numbers; got {str(r)[:80]}"], "")
        if not (0 <= r["recall"] <= 1) or r["p50_ms"] <= 0:
            return grade("bench.sweep", 3, [f"recall must lie in [0, 1] and p50_ms be positive: {r}"], "")
    exact = [r for r in rows if r["index"] == "none"]
    results = [None if exact and all(abs(r["recall"] - 1) < 1e-9 for r in exact) else
               "no row with index 'none'" if not exact else
               f"recall without an index is {exact[0]['recall']:g}, but an exact scan finds exactly the "
               "ground truth (1.0): compare ids, not distances, and use the ground truth's distance"]
    results += [_trend(rows, kind, param) for kind, param in SWEEPS]
    return grade("bench.sweep", 3, results,
                 "exact search has recall 1.0, and recall grows with probes and ef_search")


def _trend(rows: list[dict], kind: str, param: str) -> str | None:
    sweep = sorted((r["value"], r["recall"]) for r in rows if r["index"] == kind and r["param"] == param
                   and isinstance(r["value"], (int, float)))
    if len({v for v, _ in sweep}) < 3:
        return f"sweep at least 3 values of {param} for {kind} (rows with index={kind!r}, param={param!r})"
    recalls = [rec for _, rec in sweep]
    drops = [(a, b) for (a, ra), (b, rb) in zip(sweep, sweep[1:], strict=False) if rb < ra - TREND_TOL]
    if drops:
        low, high = drops[0]
        return f"{kind} recall falls from {param}={low} to {high}: is {param} set for each run?"
    if min(recalls) >= 1 - 1e-9 and sweep[0][0] <= (2 if param == "probes" else 10):
        return (f"{kind} recall is 1.0 even at {param}={sweep[0][0]}: Postgres probably scanned exactly; "
                f"set {param} with SET LOCAL in the query's transaction; EXPLAIN shows if the index is used")
    if max(recalls) <= 0:
        return f"{kind} recall is 0 everywhere: compare ids, not distances"
    if recalls[-1] - recalls[0] < 1e-9 and recalls[0] < 0.99:
        return (f"{kind} recall does not change with {param}: is {param} set in the same transaction "
                "as the query (SET LOCAL needs one)?")
    return None


EXERCISE = Exercise(
    name="02_index_benchmark",
    title="Benchmark IVFFlat and HNSW",
    questions=(
        Question("bench.table", f"{TABLE}: 10,000 random vectors", 2, probe_table, score_table),
        Question("bench.truth", "exact_top_k(query, k): exact ground truth", 3, probe_truth, score_truth,
                 ("exact_top_k",)),
        Question("bench.recall", "recall_at_k(found, truth, k)", 2, probe_recall, score_recall,
                 ("recall_at_k",)),
        Question("bench.sweep", "results: the recall/latency sweep", 3, probe_sweep, score_sweep,
                 ("results",)),
    ),
    timeout=600,
)
