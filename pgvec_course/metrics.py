"""Retrieval metrics over labelled queries: recall@k, precision@k, MRR, nDCG@k, and a comparison table."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._progress import progress_bar

__all__ = ["recall_at_k", "precision_at_k", "mrr", "ndcg_at_k", "evaluate", "Evaluation", "Score"]


def _top(retrieved: Iterable[Any], k: int | None) -> list[int]:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer, not {k!r}")
    ids: list[int] = []
    for item in retrieved:
        doc_id = getattr(item, "id", item)  # a Result or a plain id
        if doc_id not in ids:  # a repeated id counts once, at its best rank
            ids.append(doc_id)
    return ids if k is None else ids[:k]


def _relevant(relevant: Iterable[int]) -> set[int]:
    ids = set(relevant)
    if not ids:
        raise ValueError("a query needs at least one relevant id; drop unlabelled queries first")
    return ids


def recall_at_k(retrieved: Sequence[Any], relevant: Iterable[int], k: int) -> float:
    """Return the share of the relevant ids found in the top k."""
    relevant = _relevant(relevant)
    return len(set(_top(retrieved, k)) & relevant) / len(relevant)


def precision_at_k(retrieved: Sequence[Any], relevant: Iterable[int], k: int) -> float:
    """Return the share of the top k places taken by relevant ids (k places, even if fewer came back)."""
    relevant = _relevant(relevant)
    return len(set(_top(retrieved, k)) & relevant) / k


def mrr(retrieved: Sequence[Any], relevant: Iterable[int], k: int | None = None) -> float:
    """Return the reciprocal rank of the first relevant id (within the top k if given), or 0."""
    relevant = _relevant(relevant)
    for rank, doc_id in enumerate(_top(retrieved, k), start=1):
        if doc_id in relevant:
            return 1 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[Any], relevant: Iterable[int], k: int) -> float:
    """Return nDCG@k with binary relevance: sum of 1/log2(rank + 1) over hits, over the best possible."""
    relevant = _relevant(relevant)
    hits = [rank for rank, doc_id in enumerate(_top(retrieved, k), start=1) if doc_id in relevant]
    dcg = sum(1 / math.log2(rank + 1) for rank in hits)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


@dataclass(frozen=True)
class Score:
    """Mean metrics of one search method over the queries of one kind ("all" for every query)."""

    method: str
    kind: str
    n: int
    recall: float
    mrr: float
    ndcg: float


class Evaluation(list):
    """Scores per (method, kind), printable as a table and shown as an HTML table in Jupyter."""

    def __init__(self, scores: Iterable[Score] = (), *, k: int) -> None:
        super().__init__(scores)
        self.k = k

    def headers(self) -> list[str]:
        """Return the column names."""
        return ["method", "kind", f"recall@{self.k}", "MRR", f"nDCG@{self.k}", "n"]

    def rows(self) -> list[list[str]]:
        """Return the table's cells as text."""
        return [
            [s.method, s.kind, f"{s.recall:.3f}", f"{s.mrr:.3f}", f"{s.ndcg:.3f}", str(s.n)] for s in self
        ]

    def get(self, method: str, kind: str = "all") -> Score:
        """Return the score of one method on one kind of query."""
        for score in self:
            if (score.method, score.kind) == (method, kind):
                return score
        raise KeyError(f"no score for method {method!r} and kind {kind!r}")

    def __str__(self) -> str:
        table = [self.headers(), *self.rows()]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = []
        for row in table:
            cells = zip(row, widths, strict=True)
            # Names line up on the left, numbers on the right.
            lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers())
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in self.rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fields(query: Any) -> tuple[str, tuple[int, ...], str]:
    if isinstance(query, Mapping):
        return query["query"], tuple(query["relevant"]), query.get("kind", "all")
    return query.query, tuple(query.relevant), getattr(query, "kind", "all")


def evaluate(
    methods: Mapping[str, Callable[[str], Sequence[Any]]], queries: Iterable[Any], k: int = 3
) -> Evaluation:
    """Run every method on every labelled query and return mean recall@k, MRR@k and nDCG@k per kind.

    `methods` maps a name to a function from query text to ids (or Results), best first;
    `queries` are LabeledQuery objects or dicts with query, relevant and kind.
    Rows come per method: one per query kind (sorted), then "all".
    """
    _top([], k)  # validates k
    labelled = [_fields(query) for query in queries]
    if not labelled:
        raise ValueError("no queries to evaluate; pass labelled queries, e.g. load_queries()")
    scores = []
    # The methods run labelled queries one by one: a few seconds per method on the course corpus.
    with progress_bar(total=len(methods) * len(labelled), desc="Evaluating", unit="query") as bar:
        for name, method in methods.items():
            per_query = []
            for text, relevant, kind in labelled:
                retrieved = method(text)
                values = [metric(retrieved, relevant, k) for metric in (recall_at_k, mrr, ndcg_at_k)]
                per_query.append((kind, *values))
                bar.update(1)
            kinds = sorted({kind for kind, *_ in per_query} - {"all"})
            for kind in [*kinds, "all"]:
                chosen = [values for kind_, *values in per_query if kind in (kind_, "all")]
                means = [sum(column) / len(chosen) for column in zip(*chosen, strict=True)]
                scores.append(Score(name, kind, len(chosen), *means))
    return Evaluation(scores, k=k)
