"""What does search_by_vector() cost on top of the SQL it runs? Median latency, side by side.

    .venv/bin/python benchmarks/search_overhead.py [--rows 10000] [--dim 384] [--queries 300]

Each case runs the package call and the same SQL written by hand, alternately, on the same
query vectors, in database pgvec_bench; it prints the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgvec_course.db import connect, database_url
from pgvec_course.index import create_index
from pgvec_course.search import search_by_vector
from pgvec_course.store import copy_vectors, create_documents_table

DB = "pgvec_bench"
TABLE = "search_overhead"
CATEGORIES = [f"c{i}" for i in range(10)]

PLAIN = """SELECT id, title, content, category, embedding <=> %(q)s AS distance
FROM search_overhead
ORDER BY embedding <=> %(q)s
LIMIT %(k)s"""
FILTERED = """WITH nearest AS MATERIALIZED (
SELECT id, title, content, category, embedding <=> %(q)s AS distance
FROM search_overhead
WHERE category = %(category)s
ORDER BY embedding <=> %(q)s
LIMIT %(k)s
)
SELECT * FROM nearest ORDER BY distance, id"""


def setup(conn, rows: int, dim: int) -> np.ndarray:
    create_documents_table(conn, table=TABLE, dim=dim, drop=True)
    conn.execute(sql.SQL("ALTER TABLE {} ALTER title DROP NOT NULL, ALTER content DROP NOT NULL").format(
        sql.Identifier(TABLE)))  # fmt: skip
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    copy_vectors(conn, TABLE, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    fill = "UPDATE {} SET title = 'doc ' || id, content = repeat('text ', 40), category = 'c' || id % 10"
    conn.execute(sql.SQL(fill).format(sql.Identifier(TABLE)))
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))
    queries = rng.standard_normal((400, dim)).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def raw_plain(conn, q, k):
    return conn.execute(PLAIN, {"q": q, "k": k}).fetchall()


def raw_filtered(conn, q, k, category):
    with conn.transaction():
        conn.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            "set_config('ivfflat.iterative_scan', 'relaxed_order', true)"
        )
        return conn.execute(FILTERED, {"q": q, "k": k, "category": category}).fetchall()


def measure(package, raw, queries) -> tuple[float, float]:
    """Return the median milliseconds of package(q) and raw(q), run alternately."""
    times: dict[str, list[float]] = {"package": [], "raw": []}
    for i, q in enumerate(queries):
        pair = [("package", package), ("raw", raw)]
        for name, fn in pair if i % 2 else reversed(pair):  # alternate who goes first
            start = time.perf_counter()
            fn(q)
            times[name].append((time.perf_counter() - start) * 1000)
    return statistics.median(times["package"]), statistics.median(times["raw"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"
    with connect() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    conn = connect(make_conninfo(database_url(), dbname=DB))
    queries = setup(conn, args.rows, args.dim)[: args.queries]
    k = args.k

    # Warm up caches and prepared statements before timing anything.
    for q in queries[:10]:
        search_by_vector(conn, q, k, table=TABLE)
        raw_plain(conn, q, k)
    def package(q):
        return search_by_vector(conn, q, k, table=TABLE)

    def package_filtered(q):
        return search_by_vector(conn, q, k, table=TABLE, category="c3")

    results = [("exact scan, no index", *measure(package, lambda q: raw_plain(conn, q, k), queries))]
    create_index(conn, "hnsw", table=TABLE, metric="cosine")
    results.append(("HNSW index", *measure(package, lambda q: raw_plain(conn, q, k), queries)))
    filtered = measure(package_filtered, lambda q: raw_filtered(conn, q, k, "c3"), queries)
    results.append(("HNSW + category filter (iterative scan)", *filtered))
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))
    conn.close()

    print(f"search_by_vector() vs the same SQL by hand: {args.rows:,} x {args.dim}, k={k}, "
          f"{len(queries)} queries, median latency\n")  # fmt: skip
    print(f"{'case':42} {'package ms':>11} {'raw SQL ms':>11} {'ratio':>7}")
    for name, package_ms, raw_ms in results:
        print(f"{name:42} {package_ms:11.3f} {raw_ms:11.3f} {package_ms / raw_ms:6.2f}x")


if __name__ == "__main__":
    main()
