"""The course's knowledge base: passages to search, labelled queries to grade the search, a table of both."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["KINDS", "LabeledQuery", "Passage", "categories", "create_corpus_table", "load_passages",
           "load_queries"]

KINDS = ("keyword", "conceptual")


@dataclass(frozen=True)
class Passage:
    """One short text to search: `id` (1..N), `title`, `content` and a `category` slug."""

    id: int
    title: str
    content: str
    category: str


@dataclass(frozen=True)
class LabeledQuery:
    """A question with the ids of the passages that answer it, of kind keyword or conceptual."""

    id: int
    query: str
    relevant: tuple[int, ...]
    kind: str


def _read(name: str) -> list[dict]:
    text = resources.files("pgvec_course").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=1)
def _passages() -> tuple[Passage, ...]:
    return tuple(Passage(**row) for row in _read("passages.jsonl"))


@lru_cache(maxsize=1)
def _queries() -> tuple[LabeledQuery, ...]:
    return tuple(
        LabeledQuery(row["id"], row["query"], tuple(row["relevant"]), row["kind"])
        for row in _read("queries.jsonl")
    )


def categories() -> list[str]:
    """Return the passages' category slugs, sorted."""
    return sorted({p.category for p in _passages()})


def load_passages(category: str | None = None) -> list[Passage]:
    """Return the passages in id order, only those of `category` when given."""
    if category is None:
        return list(_passages())
    valid = categories()
    if category not in valid:
        raise ValueError(f"unknown category {category!r}; valid categories: {', '.join(valid)}")
    return [p for p in _passages() if p.category == category]


def load_queries(kind: str | None = None) -> list[LabeledQuery]:
    """Return the labelled queries in id order, only those of `kind` when given."""
    if kind is None:
        return list(_queries())
    if kind not in KINDS:
        raise ValueError(f"unknown query kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return [q for q in _queries() if q.kind == kind]


def create_corpus_table(conn, table: str, *, fulltext: bool = False, embedder=None) -> int:
    """Create `table` afresh holding every passage (with its id) and its embedding; return the row count.

    A lesson's set-up in one call, safe to run again and from two notebooks at once: the table is
    dropped, created and loaded in one transaction under `store.table_lock`, so another notebook
    running the same set-up waits its turn, and no session ever sees the table missing, empty or
    half loaded. `fulltext=True` adds the generated `tsv` column and its GIN index.
    """
    from .store import _embedder, create_documents_table, document_text, insert_documents, table_lock

    embedder = _embedder(embedder)
    passages = load_passages()
    # Embed before taking any lock (the course's own vectors ship with the package; another
    # embedder may take a while): the cache then serves the load below.
    embedder.embed([document_text(p.title, p.content) for p in passages])
    with conn.transaction():
        table_lock(conn, table)
        create_documents_table(conn, table=table, dim=embedder.dim, fulltext=fulltext, drop=True)
        return insert_documents(conn, passages, table=table, embedder=embedder, progress=False)
