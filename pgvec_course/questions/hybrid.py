"""Exercise 3, hybrid search: kb_passages.tsv, weighted_hybrid, rrf_hybrid and their evaluation.

References come from the course corpus (fusion.py), so a table missing passages or holding wrong
vectors cannot grade itself. The inline check compares `evaluation` with what the learner's own
functions return; the grader compares it with the instructor's reference (hidden tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from psycopg import sql

from . import fusion
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
    column_type,
    corpus_reference,
    cosine_distances,
    row_matches,
    table_problem,
    text_column,
    verified_rows,
)

TABLE = "kb_passages"
COLUMNS = ("id", "title", "content", "category", "embedding", "tsv")
EVAL_K = 5
METHODS, KINDS, METRICS = ("semantic", "weighted", "rrf"), ("keyword", "conceptual"), ("recall@5", "mrr")
PUBLIC_WEIGHTED = (("SQLSTATE 23505", 5, 0.7),
                   ("how can a database find text with a similar meaning", 5, 0.7),
                   ("HNSW ef_search", 3, 0.4),
                   ("python", 3, 0.1))
PUBLIC_RRF = (("SQLSTATE 40P01", 5, 60), ("why is my query not using the index", 5, 60),
              ("ivfflat probes", 4, 20))


def probe_table(inputs: Any, *, grading: bool = False) -> str:
    return table_probe(grading=grading)


def score_table(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(TABLE_Q, lambda: _score_table(data, ctx))


def _score_table(data: Any, ctx: Context) -> Outcome:
    conn = ctx.conn
    problem = table_problem(conn, TABLE, COLUMNS, data)
    if problem:
        return blocked(TABLE_Q, problem)
    result: PartResults = full("passages", "embeddings", "tsv", "gin")
    result["committed"] = committed(data)
    corpus = corpus_reference(ctx)
    wanted = dict(zip(corpus.ids.tolist(), corpus.contents, strict=True))
    # Only the corpus's ids, texts cut short: the grader never reads a huge table into memory.
    count = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    have = dict(conn.execute(sql.SQL("SELECT id::int8, {} FROM {} WHERE id::int8 = ANY(%s::int8[])").format(
        text_column("content"), sql.Identifier(TABLE)), (list(wanted),)).fetchall())
    if not count:
        result["committed"] = (0.0, f"{TABLE} is empty: nothing was stored")
    absent = [i for i, c in wanted.items() if have.get(i) != c]
    present = len(wanted) - len(absent)
    if absent or count > len(wanted):
        result["passages"] = (present / max(len(wanted), count),
                              f"{TABLE} holds {present} of the {len(wanted)} corpus passages under their own "
                              "id" + (f" (passage {absent[0]} is missing)" if absent else "")
                              + (f" and {count - present} other rows" if count > present else "")
                              + ": load every pvc.load_passages() passage, and nothing else")
    kind = column_type(conn, TABLE, "embedding")
    if kind != f"vector({ctx.embedder.dim})":
        result["embeddings"] = (0.0, f"embedding is {kind}, not vector({ctx.embedder.dim})")
    elif count:
        matches = row_matches(verified_rows(ctx, TABLE, limit=2 * len(corpus.ids)))
        if not matches.all():
            wrong_rows = int((~matches).sum())
            result["embeddings"] = (float(matches.mean()), f"{wrong_rows} rows' embeddings are not the "
                                    "embedder's vector of their content: embed the content column")
    generated = conn.execute("SELECT attgenerated FROM pg_attribute WHERE attrelid = %s::regclass "
                             "AND attname = 'tsv'", (TABLE,)).fetchone()[0]
    wrong = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE tsv IS DISTINCT FROM {fusion.DOC}").fetchone()
    wrong = wrong[0]
    if generated != "s":
        result["tsv"] = (0.0, f"tsv should be a generated column: GENERATED ALWAYS AS ({fusion.DOC}) STORED")
    elif wrong:
        result["tsv"] = (0.0, f"{wrong} rows have a tsv other than {fusion.DOC}")
    gin = conn.execute(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = "
        "c.relam JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND am.amname = 'gin' AND a.attname = 'tsv'", (TABLE,)).fetchone()[0]
    if not gin:
        result["gin"] = (0.0, "there is no GIN index on tsv: CREATE INDEX ... USING gin (tsv)")
    return score_parts(TABLE_Q, [result], "all passages, a generated tsv column and a GIN index on it")


def probe_weighted(inputs: Any, *, grading: bool = False) -> str:
    return build_probe("weighted_hybrid", literal_args(inputs))


def probe_rrf(inputs: Any, *, grading: bool = False) -> str:
    return build_probe("rrf_hybrid", literal_args(inputs))


def score_weighted(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(WEIGHTED_Q, lambda: _score_fusion(data, ctx, inputs, WEIGHTED_Q))


def score_rrf(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(RRF_Q, lambda: _score_fusion(data, ctx, inputs, RRF_Q))


def references(ctx: Context, texts: list[str], rows=None) -> tuple[Any, Any, list]:
    """Return the rows (default: the corpus), the reference vectors of `texts` and their text ranks."""
    rows = rows if rows is not None else corpus_reference(ctx)
    ranks = fusion.text_ranks(ctx.conn, rows.ids, rows.titles, rows.contents, texts)
    return rows, ctx.embedder.embed(texts), ranks


def _own_rows(ctx: Context):
    """Return the learner's rows with re-embedded vectors when they are not the corpus, else None."""
    corpus = corpus_reference(ctx)
    own = verified_rows(ctx, TABLE, limit=2 * len(corpus.ids))
    same = np.array_equal(own.ids, corpus.ids) and own.contents == corpus.contents
    return None if same or len(own.ids) == 0 else own


def _score_fusion(data: Any, ctx: Context, inputs: Any, question: Question) -> Outcome:
    name = question.needs[0]
    problem = call_problem(data, name) or not_started(data, name)
    if problem:
        return blocked(question, problem)
    texts = [case[0] for case in inputs]
    # The corpus earns full credit. Answers right only for the learner's own (incomplete or extra)
    # passages, with their content embedded again, earn half: the logic is right, the data is not.
    tables = [(1.0, references(ctx, texts))]
    own = _own_rows(ctx) if table_problem(ctx.conn, TABLE, ("id", "title", "content")) is None else None
    if own is not None:
        tables.append((0.5, references(ctx, texts, own)))
    results = []
    for n, (call, (_, k, param)) in enumerate(zip(data["calls"], inputs, strict=True)):
        if "error" in call:
            hint = error_feedback(name, call["error"])
            results.append({"ranking": (0.0, hint), "scores": (0.0, hint)})
            continue
        best: PartResults | None = None
        for weight, (rows, vectors, ranks) in tables:
            result = _judge(call, name, k, param, rows, vectors[n], ranks[n], question is WEIGHTED_Q)
            if weight < 1:
                partly = ("right for the passages in your table, but not for the whole corpus the contract "
                          "asks for (see hybrid.table)")
                result = {part: (share * weight, partly if share else hint)
                          for part, (share, hint) in result.items()}
            if best is None:
                best = result
            else:
                best = {part: max(best[part], result[part], key=lambda r: r[0]) for part in best}
        results.append(best)
    ok = {"hybrid.weighted": "the tutorial's weighted blend, best first",
          "hybrid.rrf": "reciprocal rank fusion, best first"}[question.id]
    return score_parts(question, results, f"{ok}, matches for {len(inputs)} queries")


def _judge(call: dict, name: str, k: int, param: float, rows, vec, ranks, weighted: bool) -> PartResults:
    """Judge one answer against references computed from `rows`."""
    text, text_all = ranks
    dist = cosine_distances(rows.reference, vec)
    ids = rows.ids
    if weighted:
        true, tol = fusion.weighted_scores(ids, dist, text, k, param), 1e-4
        formula = fusion.blend(ids, dist, text, param)
        alternatives = [
            (fusion.blend(ids, dist, text, 1 - param), "the scores match the weights swapped: "
             "semantic_weight multiplies the semantic similarity, 1 - semantic_weight the text rank"),
            (fusion.blend(ids, dist, {}, param), "the text rank is missing from the scores: add "
             "(1 - semantic_weight) * ts_rank"),
            (fusion.blend(ids, dist, text_all, param), "ts_rank counts for passages that do not match "
             "the query: take the text rank only where tsv @@ the query, 0 elsewhere")]
    else:
        true, tol = fusion.rrf_scores(ids, dist, text, param), 1e-6
        formula = true
        alternatives = [
            (fusion.rrf_scores(ids, dist, text, param, first=0), "the scores match 0-based ranks: the "
             "best row of each leg has rank 1"),
            (fusion.rrf_scores(ids, dist, {}, param), "only the semantic leg counts in your scores: add "
             "1 / (rrf_k + rank) from the full-text leg"),
            (fusion.rrf_scores(ids, dist, text, 60), "your scores ignore rrf_k: use the argument"),
            (fusion.rrf_scores(ids, dist, text, param, candidates=k), f"each leg should rank its top "
             f"{fusion.CANDIDATES} passages, not only k")]
    return _one_fusion(call, name, k, true, formula, alternatives, tol, weighted)


def _one_fusion(call: dict, name: str, k: int, true: dict[int, float], formula: dict[int, float],
                alternatives: list, tol: float, weighted: bool) -> PartResults:
    pairs, problem = as_pairs(call["value"], f"{name}()")
    if problem:
        return {"ranking": (0.0, problem), "scores": (0.0, problem)}
    got_ids, got = [p[0] for p in pairs], np.array([p[1] for p in pairs])
    result = full("ranking", "scores")
    alt = next((hint for scores, hint in alternatives
                if pairs and all(i in scores and abs(scores[i] - s) <= tol for i, s in pairs)
                and not all(i in formula and abs(formula[i] - s) <= tol for i, s in pairs)), None)
    share = share_found(got_ids, fusion.best_set(true, k, tol), min(k, len(true)))
    if len(set(got_ids)) < len(got_ids):
        share = 0.0
    if share < 1:
        outside = [i for i in got_ids if i not in true]
        if len(pairs) != min(k, len(true)):
            hint = (f"expected {min(k, len(true))} results for k={k}, got {len(pairs)}"
                    + (": did you forget LIMIT k?" if len(pairs) > k else ""))
        elif len(set(got_ids)) < len(got_ids):
            hint = f"a passage appears twice in {got_ids}: add up its scores from both legs (GROUP BY id)"
        elif alt:
            hint = alt
        elif outside and weighted:
            hint = (f"passage {outside[0]} is not among the 2 * k passages nearest by cosine distance, the "
                    "tutorial blend's only candidates: look for text matches among those only")
        elif outside:
            hint = f"passage {outside[0]} is in neither leg's top {fusion.CANDIDATES}"
        else:
            hint = f"these are not the {k} best-scored passages: rank all candidates before the LIMIT"
        result["ranking"] = (share, hint)
    wrong = [(i, s) for i, s in pairs if i not in formula or abs(formula[i] - s) > tol]
    if wrong:
        pid, score = wrong[0]
        result["scores"] = (0.0, alt or (f"passage {pid} is in neither leg's top {fusion.CANDIDATES}"
                                         if pid not in formula else
                                         f"the score of passage {pid} ({score:.6f}) does not follow the "
                                         "formula in the contract"))
    elif np.any(np.diff(got) > tol):
        result["scores"] = (0.0, "scores are ascending: best first means ORDER BY score DESC"
                            if np.all(np.diff(got) >= -tol) else
                            "scores are not in descending order: ORDER BY the combined score, best first")
    return result


_EVAL_SETUP = f'''
from pgvec_course.corpus import load_queries
found = {{}}
for method, name, extra in (("semantic", "semantic", ()), ("weighted", "weighted_hybrid", (0.7,)),
                            ("rrf", "rrf_hybrid", (60,))):
    fn = globals().get(name)
    if not callable(fn):
        found[method] = {{"missing": name}}
        continue
    lists = []
    for q in load_queries():
        try:
            lists.append([int(r[0]) for r in list(fn(q.query, {EVAL_K}, *extra))[:10]])
        except Exception as e:
            lists = {{"error": (type(e).__name__ + ": " + str(e))[:300]}}
            break
    found[method] = lists
out["found"] = found
'''


def probe_eval(inputs: Any, *, grading: bool = False) -> str:
    return build_probe("evaluation", call=False, setup=_EVAL_SETUP)


def score_eval(data: Any, ctx: Context, inputs: Any) -> Outcome:
    return safe_score(EVAL_Q, lambda: _score_eval(data, ctx, inputs))


def metrics(found: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Return recall@5 and MRR per method and kind from each method's top-5 lists (skipping failed ones)."""
    from ..corpus import load_queries

    queries = load_queries()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for method, lists in found.items():
        if not isinstance(lists, list) or len(lists) != len(queries):
            continue
        sums: dict[str, dict[str, list[float]]] = {kind: {m: [] for m in METRICS} for kind in KINDS}
        for q, got in zip(queries, lists, strict=True):
            hits = [n for n, pid in enumerate(got[:EVAL_K], start=1) if pid in q.relevant]
            sums[q.kind]["recall@5"].append(len(hits) / len(q.relevant))
            sums[q.kind]["mrr"].append(1 / hits[0] if hits else 0.0)
        out[method] = {kind: {m: float(np.mean(v)) for m, v in by.items()} for kind, by in sums.items()}
    return out


def _score_eval(data: Any, ctx: Context, inputs: Any) -> Outcome:
    problem = call_problem(data, "evaluation")
    got = data.get("value") if not problem else None
    if not problem and not isinstance(got, dict):
        problem = "evaluation should be a dict: evaluation[method][kind][metric]"
    if problem:
        return blocked(EVAL_Q, problem)
    found = data.get("found") or {}
    own = metrics(found)
    want = inputs(ctx) if callable(inputs) else own
    function = {"semantic": "semantic", "weighted": "weighted_hybrid", "rrf": "rrf_hybrid"}
    result: PartResults = {}
    for metric in METRICS:
        bad = []
        for method in METHODS:
            for kind in KINDS:
                value = got.get(method) if isinstance(got.get(method), dict) else {}
                value = value.get(kind) if isinstance(value.get(kind), dict) else {}
                value = value.get(metric)
                where = f"evaluation[{method!r}][{kind!r}][{metric!r}]"
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    bad.append(f"{where} is missing (or not a number)")
                elif method not in want:
                    why = found.get(method, {})
                    bad.append(f"{where} cannot be checked: {function[method]}() "
                               + (f"raised {why['error']}" if "error" in why else "is not defined")
                               + " (the check recomputes your evaluation from your functions)")
                elif abs(value - want[method][kind][metric]) > 0.02:
                    bad.append(_eval_hint(where, value, want[method][kind][metric], own, method, kind, metric,
                                          callable(inputs), function[method]))
        result[metric] = (1 - len(bad) / 6, bad[0] if bad else None)
    ok = ("recall@5 and MRR match the reference for semantic, weighted and RRF search" if callable(inputs)
          else "recall@5 and MRR follow from your functions' results (the grader compares them with the "
          "reference)")
    return score_parts(EVAL_Q, [result], ok)


def _eval_hint(where: str, value: float, want: float, own: dict, method: str, kind: str, metric: str,
               reference: bool, function: str) -> str:
    if reference and method in own and abs(value - own[method][kind][metric]) <= 0.02:
        return (f"{where} = {value:.3f} follows what your {function}() returns, but the reference gives "
                f"{want:.3f}: your table or {function}() is not the contract's (see their feedback)")
    if metric == "recall@5" and value < want:
        return (f"{where} = {value:.3f}, expected {want:.3f}: recall@5 divides the relevant passages found "
                "by the number of relevant passages (not by 5, which is precision)")
    return f"{where} = {value:.3f}, expected {want:.3f} (see the metric's definition in the contract)"


TABLE_Q = Question("hybrid.table", f"{TABLE}.tsv: generated tsvector with a GIN index", (
    Part("passages", 0.5, "every corpus passage under its own id, and nothing else"),
    Part("embeddings", 0.5, "each row's embedding is the embedder's vector of its content"),
    Part("tsv", 0.5, f"tsv is GENERATED ALWAYS AS ({fusion.DOC}) STORED"),
    Part("gin", 0.25, "a GIN index on tsv"),
    Part("committed", 0.25, "the rows were committed"),
), probe_table, score_table, mistakes=("missing passages", "tsv not generated"))
WEIGHTED_Q = Question("hybrid.weighted", "weighted_hybrid(query, k, semantic_weight)", (
    Part("ranking", 2.5, "the k best passages of the tutorial's blend (candidates: the 2k nearest)"),
    Part("scores", 1.5, "each with its blended score, best first"),
), probe_weighted, score_weighted, ("weighted_hybrid",), public=PUBLIC_WEIGHTED,
    mistakes=("every passage a candidate", "weights swapped", "no text rank", "ts_rank of non-matches",
              "tsv of content only"))
RRF_Q = Question("hybrid.rrf", "rrf_hybrid(query, k, rrf_k)", (
    Part("ranking", 2.5, "the k best passages by reciprocal rank fusion of both legs' top 50"),
    Part("scores", 1.5, "each with its fused score, best first"),
), probe_rrf, score_rrf, ("rrf_hybrid",), public=PUBLIC_RRF,
    mistakes=("0-based ranks", "rrf_k ignored", "semantic leg only", "k candidates per leg",
              "tsv of content only"))
EVAL_Q = Question("hybrid.eval", "evaluation: recall@5 and MRR per query kind", (
    Part("recall@5", 1.5, "recall@5 of the 3 methods for both kinds of query"),
    Part("mrr", 1.5, "MRR (first relevant passage in the top 5) of the 3 methods for both kinds"),
), probe_eval, score_eval, ("evaluation", "semantic", "weighted_hybrid", "rrf_hybrid"),
    mistakes=("precision for recall", "MRR of the last hit"))

EXERCISE = Exercise(name="03_hybrid_search", title="A hybrid search pipeline",
                    questions=(TABLE_Q, WEIGHTED_Q, RRF_Q, EVAL_Q), timeout=300)
