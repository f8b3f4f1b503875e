"""The knowledge base's passages and labelled queries are well formed (no database needed)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest

from pgvec_course.corpus import LabeledQuery, Passage, categories, load_passages, load_queries

REQUIRED_CATEGORIES = {
    "machine-learning",
    "databases",
    "infrastructure",
    "python",
    "search",
    "cooking",
    "astronomy",
}

# A sentence ends at a run of '.', '!' or '?' that does not follow whitespace or another
# such mark, optionally followed by closing quotes or brackets, then whitespace or the end
# of the text. So "3.5" and "(WHERE ...)" or the jsonb operator "?" do not end a sentence.
SENTENCE_END = re.compile(r"(?<![\s.!?])[.!?]+[\"')\]]*(?=\s|$)")
STRIP = "?,.!\"'"  # dropped from both ends of each query word before matching


def sentences(text: str) -> int:
    """Return how many sentence endings `text` has, by the rule above."""
    return len(SENTENCE_END.findall(text))


def query_words(query: str) -> list[str]:
    """Return the query's whitespace-separated words, lowercased and stripped of STRIP."""
    return [w.strip(STRIP) for w in query.lower().split() if w.strip(STRIP)]


def haystack(p: Passage) -> str:
    return f"{p.title} {p.content}".lower()


@pytest.fixture(scope="module")
def passages() -> dict[int, Passage]:
    return {p.id: p for p in load_passages()}


@pytest.fixture(scope="module")
def queries() -> list[LabeledQuery]:
    return load_queries()


def test_sentence_rule():
    assert sentences("One. Two? Three!") == 3
    assert sentences("Pi is 3.14 and e.g is not an end. Use ON CONFLICT ... DO NOTHING.") == 2
    assert sentences('Type "stop." Then wait (a while.) Done') == 2
    assert sentences("The ? operator and ! prefix are not endings.") == 1


def test_passage_ids_are_unique_and_contiguous(passages):
    assert sorted(passages) == list(range(1, len(passages) + 1))
    assert [p.id for p in load_passages()] == sorted(passages)


def test_query_ids_are_unique_and_contiguous(queries):
    assert [q.id for q in queries] == list(range(1, len(queries) + 1))


def test_enough_passages_in_enough_categories(passages):
    counts = Counter(p.category for p in passages.values())
    assert len(passages) >= 200
    assert REQUIRED_CATEGORIES <= set(counts)
    assert len(counts) >= 7
    assert all(n >= 20 for n in counts.values()), counts
    assert categories() == sorted(counts)


def test_passages_are_short_and_complete(passages):
    titles = [p.title for p in passages.values()]
    assert len(set(titles)) == len(titles), "titles are unique"
    for p in passages.values():
        assert p.title.strip() == p.title and p.title, p.id
        assert 2 <= sentences(p.content) <= 6, (p.id, sentences(p.content))
        assert SENTENCE_END.search(p.content[-3:]), f"passage {p.id} ends mid-sentence"


def test_relevant_ids_exist(passages, queries):
    for q in queries:
        assert isinstance(q.relevant, tuple)
        assert 1 <= len(q.relevant) <= 3, q.id
        assert len(set(q.relevant)) == len(q.relevant), q.id
        assert set(q.relevant) <= set(passages), q.id


def test_enough_queries_of_each_kind(queries):
    counts = Counter(q.kind for q in queries)
    assert set(counts) == {"keyword", "conceptual"}
    assert counts["keyword"] >= 30 and counts["conceptual"] >= 30
    assert len({q.query for q in queries}) == len(queries), "queries are unique"


def test_keyword_queries_words_all_appear_in_their_passages(passages):
    for q in load_queries("keyword"):
        for pid in q.relevant:
            missing = [w for w in query_words(q.query) if w not in haystack(passages[pid])]
            assert not missing, f"query {q.id} {q.query!r}: {missing} not in passage {pid}"


def test_conceptual_queries_are_paraphrases(passages):
    # By the same rule, no conceptual query is spelled out word for word in its passages.
    for q in load_queries("conceptual"):
        for pid in q.relevant:
            assert any(w not in haystack(passages[pid]) for w in query_words(q.query)), q.id


@pytest.mark.parametrize(
    ("query", "title", "identifier"),
    [
        ("SQLSTATE 40P01", "Deadlocks between transactions", "SQLSTATE 40P01, deadlock_detected"),
        ("hnsw.ef_search", "Tuning HNSW search quality", "SET hnsw.ef_search = 100"),
        ("CrashLoopBackOff", "Pods that keep crashing at start-up", "CrashLoopBackOff"),
        ("NGC 224", "The Andromeda Galaxy", "NGC 224"),
        ("PYTHONHASHSEED", "Hash randomization of strings", "PYTHONHASHSEED=0"),
    ],
)
def test_spot_check_identifiers(passages, query, title, identifier):
    (q,) = [q for q in load_queries("keyword") if q.query == query]
    (pid,) = q.relevant
    assert passages[pid].title == title
    assert identifier in passages[pid].content
    others = [p.id for p in passages.values() if p.id != pid and query.lower() in haystack(p)]
    assert others == [], f"{query!r} should pin down one passage"


def test_filters(passages):
    cooking = load_passages("cooking")
    assert cooking and {p.category for p in cooking} == {"cooking"}
    assert sum(len(load_passages(c)) for c in categories()) == len(passages)
    assert {q.kind for q in load_queries("conceptual")} == {"conceptual"}
    assert len(load_queries("keyword")) + len(load_queries("conceptual")) == len(load_queries())


def test_bad_filters_name_the_valid_values():
    with pytest.raises(ValueError) as exc:
        load_passages("cookery")
    assert str(exc.value) == (
        "unknown category 'cookery'; valid categories: "
        "astronomy, cooking, databases, infrastructure, machine-learning, python, search"
    )
    with pytest.raises(ValueError) as exc:
        load_queries("fuzzy")
    assert str(exc.value) == "unknown query kind 'fuzzy'; valid kinds: keyword, conceptual"


def test_records_are_frozen():
    p, q = load_passages()[0], load_queries()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.title = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.relevant = ()  # type: ignore[misc]
    load_passages().clear()  # callers get their own list
    assert len(load_passages()) >= 200
