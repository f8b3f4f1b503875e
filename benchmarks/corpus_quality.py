"""How well do pure vector search and pure full-text search answer the course's labelled queries?

    .venv/bin/python benchmarks/corpus_quality.py [--k 3] [--embed content] [--misses]

Vector search is exact: the local embedder's vectors of title + content (or content), ranked by
cosine similarity in NumPy. Full-text search runs in Postgres on a temporary table:
`tsv @@ plainto_tsquery('english', q)` ranked by `ts_rank(tsv, q) DESC, id`. Prints
recall@k and MRR (over the top k) for each method, split by query kind. The
corpus is built so that vector search wins on conceptual queries and full-text
search wins on keyword queries; `--misses` lists the queries each method misses.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from pgvec_course.corpus import KINDS, LabeledQuery, Passage, load_passages, load_queries
from pgvec_course.store import document_text as course_text


def document_text(p: Passage, what: str = "title+content") -> str:
    """Return the text to embed for a passage: its content, or title and content (the default)."""
    if what == "content":
        return p.content
    return course_text(p.title, p.content)


def vector_rankings(
    passages: list[Passage], queries: list[LabeledQuery], k: int, what: str = "title+content"
) -> list[list[int]]:
    """Return the ids of the k passages nearest each query by cosine similarity."""
    from pgvec_course.embed import get_embedder

    embedder = get_embedder("local", quiet=True)
    docs = embedder.embed([document_text(p, what) for p in passages])
    qs = embedder.embed([q.query for q in queries])
    scores = qs @ docs.T  # unit vectors: the dot product is the cosine similarity
    ids = np.array([p.id for p in passages])
    # Sort by score descending, ties by id, like the SQL below.
    return [[int(ids[j]) for j in np.lexsort((ids, -row))[:k]] for row in scores]


def fulltext_rankings(passages: list[Passage], queries: list[LabeledQuery], k: int) -> list[list[int]]:
    """Return the ids of the top k passages for each query by Postgres full-text search."""
    from pgvec_course.db import connect

    with connect() as conn:
        conn.execute(
            "CREATE TEMP TABLE corpus_fts (id int PRIMARY KEY, title text, content text, tsv tsvector)"
        )
        with conn.cursor().copy("COPY corpus_fts (id, title, content) FROM STDIN") as copy:
            for p in passages:
                copy.write_row((p.id, p.title, p.content))
        conn.execute("UPDATE corpus_fts SET tsv = to_tsvector('english', title || ' ' || content)")
        sql = (
            "SELECT id FROM corpus_fts, plainto_tsquery('english', %s) q WHERE tsv @@ q "
            "ORDER BY ts_rank(tsv, q) DESC, id LIMIT %s"
        )
        return [[row[0] for row in conn.execute(sql, (q.query, k))] for q in queries]


def recall(ranked: list[int], relevant: tuple[int, ...]) -> float:
    """Return the share of the relevant ids found in `ranked`."""
    return len(set(ranked) & set(relevant)) / len(relevant)


def reciprocal_rank(ranked: list[int], relevant: tuple[int, ...]) -> float:
    """Return 1 / the rank of the first relevant id in `ranked`, or 0 if there is none."""
    return next((1 / i for i, pid in enumerate(ranked, 1) if pid in relevant), 0.0)


def main() -> None:
    """Print the quality table, and the misses when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=3, help="results per query (default 3)")
    parser.add_argument("--embed", choices=["title+content", "content"], default="title+content",
                        help="what is embedded for each passage (default title+content)")  # fmt: skip
    parser.add_argument("--misses", action="store_true", help="list the queries each method misses")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # platformdirs and tqdm chatter in a bare terminal

    passages, queries = load_passages(), load_queries()
    runs = {
        "vector": vector_rankings(passages, queries, args.k, args.embed),
        "full-text": fulltext_rankings(passages, queries, args.k),
    }
    counts = {kind: sum(q.kind == kind for q in queries) for kind in KINDS}
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    print(f"{len(passages)} passages, {len(queries)} queries ({kinds}); top {args.k}; embedded {args.embed}")
    print()
    header = f"{'method':<10} {'kind':<11} {f'recall@{args.k}':>9} {'MRR':>6}"
    print(header)
    print("-" * len(header))
    for method, ranked in runs.items():
        for kind in (*KINDS, "all"):
            pairs = [(r, q) for r, q in zip(ranked, queries, strict=True) if kind in ("all", q.kind)]
            rec = np.mean([recall(r, q.relevant) for r, q in pairs])
            mrr = np.mean([reciprocal_rank(r, q.relevant) for r, q in pairs])
            print(f"{method:<10} {kind:<11} {rec:>9.3f} {mrr:>6.3f}")
    if args.misses:
        titles = {p.id: p.title for p in passages}
        for method, ranked in runs.items():
            print(f"\n{method} misses (no relevant passage in the top {args.k}):")
            for r, q in zip(ranked, queries, strict=True):
                if not set(r) & set(q.relevant):
                    got = "; ".join(titles[i] for i in r) or "nothing"
                    print(f"  [{q.kind}] {q.query!r} -> {got}")


if __name__ == "__main__":
    main()
