"""Retrieval metrics against values worked out by hand, and the evaluate() table."""

from __future__ import annotations

import math

import pytest

from pgvec_course.metrics import evaluate, mrr, ndcg_at_k, precision_at_k, recall_at_k
from pgvec_course.search import Result

RETRIEVED = [3, 1, 4, 5, 9]  # best first
RELEVANT = {1, 5, 7}  # 7 is never retrieved


def test_recall_and_precision_by_hand():
    # top 3 = [3, 1, 4]: one hit (1) of 3 relevant, in 3 places
    assert recall_at_k(RETRIEVED, RELEVANT, 3) == 1 / 3
    assert precision_at_k(RETRIEVED, RELEVANT, 3) == 1 / 3
    # top 5 adds 5: two hits of 3 relevant, in 5 places
    assert recall_at_k(RETRIEVED, RELEVANT, 5) == 2 / 3
    assert precision_at_k(RETRIEVED, RELEVANT, 5) == 2 / 5
    # k beyond what came back: precision still divides by k
    assert precision_at_k(RETRIEVED, RELEVANT, 10) == 2 / 10
    assert recall_at_k([], RELEVANT, 3) == 0.0


def test_mrr_by_hand():
    assert mrr(RETRIEVED, RELEVANT) == 1 / 2  # first hit (1) at rank 2
    assert mrr(RETRIEVED, RELEVANT, 1) == 0.0  # not within the top 1
    assert mrr([5, 1], RELEVANT) == 1.0
    assert mrr([8, 8, 8, 1], RELEVANT) == 1 / 2  # a repeated id counts once


def test_ndcg_by_hand():
    # @3: hit at rank 2 -> DCG = 1/log2(3) = 0.6309297535714575
    #     ideal: 3 relevant in ranks 1..3 -> 1/log2(2) + 1/log2(3) + 1/log2(4) = 1 + 0.6309... + 0.5
    assert ndcg_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(0.6309297535714575 / 2.1309297535714575)
    assert ndcg_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx(0.29608, abs=1e-5)
    # @5: hits at ranks 2 and 4 -> 1/log2(3) + 1/log2(5) = 0.6309297535714575 + 0.43067655807339306
    #     ideal is still the 3 relevant in ranks 1..3 = 2.1309297535714575
    assert ndcg_at_k(RETRIEVED, RELEVANT, 5) == pytest.approx(1.0616063116448506 / 2.1309297535714575)
    assert ndcg_at_k(RETRIEVED, RELEVANT, 5) == pytest.approx(0.49819, abs=1e-5)
    # @1 with one relevant at rank 1 is perfect; ideal is capped by k
    assert ndcg_at_k([5, 3], RELEVANT, 1) == 1.0
    assert ndcg_at_k([1, 5, 7], RELEVANT, 3) == 1.0
    assert math.isclose(ndcg_at_k([9, 7], {7}, 2), 1 / math.log2(3))


def test_metrics_accept_results_and_refuse_bad_input():
    results = [Result(3, "t", "c", None, distance=0.1), Result(1, "t", "c", None, distance=0.2)]
    assert recall_at_k(results, RELEVANT, 2) == 1 / 3
    with pytest.raises(ValueError) as err:
        recall_at_k(RETRIEVED, [], 3)
    assert str(err.value) == "a query needs at least one relevant id; drop unlabelled queries first"
    with pytest.raises(ValueError) as err:
        ndcg_at_k(RETRIEVED, RELEVANT, 0)
    assert str(err.value) == "k must be a positive integer, not 0"


QUERIES = [
    {"query": "alpha", "relevant": (1,), "kind": "keyword"},
    {"query": "beta", "relevant": (2, 3), "kind": "keyword"},
    {"query": "gamma", "relevant": (4,), "kind": "conceptual"},
]
ANSWERS = {
    "perfect": {"alpha": [1, 9], "beta": [2, 3], "gamma": [4]},
    "late": {"alpha": [9, 8, 1], "beta": [3, 9], "gamma": [7]},
}


def test_evaluate_splits_means_by_kind():
    table = evaluate({name: answers.__getitem__ for name, answers in ANSWERS.items()}, QUERIES, k=3)
    assert [(s.method, s.kind, s.n) for s in table] == [
        ("perfect", "conceptual", 1), ("perfect", "keyword", 2), ("perfect", "all", 3),
        ("late", "conceptual", 1), ("late", "keyword", 2), ("late", "all", 3),
    ]  # fmt: skip
    assert all((s.recall, s.mrr, s.ndcg) == (1.0, 1.0, 1.0) for s in table[:3])
    late = table.get("late", "keyword")
    # alpha: hit at rank 3 -> recall 1, RR 1/3, nDCG (1/log2 4) / 1 = 0.5
    # beta: 3 at rank 1 of {2, 3} -> recall 1/2, RR 1, nDCG 1 / (1 + 1/log2 3)
    assert late.recall == pytest.approx((1 + 0.5) / 2)
    assert late.mrr == pytest.approx((1 / 3 + 1) / 2)
    assert late.ndcg == pytest.approx((0.5 + 1 / (1 + 1 / math.log2(3))) / 2)
    assert table.get("late", "conceptual").recall == 0.0
    assert table.get("late").recall == pytest.approx((1 + 0.5 + 0) / 3)


def test_evaluate_renders_as_text_and_html():
    table = evaluate({"perfect": ANSWERS["perfect"].__getitem__}, QUERIES[:1], k=2)
    assert str(table).splitlines() == [
        "method   kind     recall@2    MRR  nDCG@2  n",
        "perfect  keyword     1.000  1.000   1.000  1",
        "perfect  all         1.000  1.000   1.000  1",
    ]
    html = table._repr_html_()
    assert html.startswith("<table><thead><tr><th>method</th><th>kind</th><th>recall@2</th>")
    assert html.count("<tr>") == 3
    with pytest.raises(ValueError, match="^no queries to evaluate"):
        evaluate({"x": list}, [], k=3)


def test_evaluate_takes_the_corpus_labelled_queries():
    from pgvec_course.corpus import load_queries

    queries = load_queries()[:6]
    answers = {q.query: list(q.relevant) for q in queries}
    table = evaluate({"oracle": answers.__getitem__, "nothing": lambda text: []}, queries, k=5)
    assert {s.kind for s in table} == {q.kind for q in queries} | {"all"}
    assert (table.get("oracle").recall, table.get("oracle").n) == (
        sum(min(len(q.relevant), 5) / len(q.relevant) for q in queries) / 6, 6
    )
    assert table.get("oracle").mrr == 1.0 and table.get("nothing").ndcg == 0.0
