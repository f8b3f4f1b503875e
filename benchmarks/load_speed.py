"""How fast do 10,000 x 1536 vectors load? The tutorial's way, psycopg2 done right, executemany, COPY.

    .venv/bin/python benchmarks/load_speed.py [--rows 10000] [--dim 1536] [--repeat 3]

Uses psycopg2 for the tutorial's way (a dependency of the course: the tools lesson teaches it).
Every way loads the same seeded random vectors into a fresh table `id SERIAL, embedding
vector(dim)` in database pgvec_bench, and commits. The fast ways take the best of --repeat
runs; the two psycopg2 ways run once (the tutorial's takes half a minute).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgvec_course.db import connect, database_url
from pgvec_course.store import copy_vectors

DB = "pgvec_bench"
TABLE = "load_speed"


def fresh_table(conn: psycopg.Connection, dim: int) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
    conn.execute(sql.SQL("CREATE TABLE {} (id SERIAL PRIMARY KEY, embedding vector({}))").format(
        sql.Identifier(TABLE), sql.Literal(dim)))  # fmt: skip


def tutorial_way(url: str, vectors: np.ndarray) -> float:
    """psycopg2 execute_values, batches of 50, each vector sent as text cast with %s::vector."""
    import psycopg2
    import psycopg2.extras

    rows = [(v,) for v in vectors.tolist()]  # the tutorial gets plain lists from the API
    pg2 = psycopg2.connect(url)
    try:
        start = time.perf_counter()
        with pg2.cursor() as cur:
            for i in range(0, len(rows), 50):
                batch = rows[i : i + 50]
                psycopg2.extras.execute_values(
                    cur, f"INSERT INTO {TABLE} (embedding) VALUES %s", batch, template="(%s::vector)"
                )
        pg2.commit()
        return time.perf_counter() - start
    finally:
        pg2.close()


def psycopg2_done_right(url: str, vectors: np.ndarray) -> float:
    """psycopg2 with register_vector: NumPy arrays as parameters, one execute_values, one commit."""
    import psycopg2
    import psycopg2.extras
    from pgvector.psycopg2 import register_vector

    pg2 = psycopg2.connect(url)
    try:
        register_vector(pg2)
        start = time.perf_counter()
        with pg2.cursor() as cur:
            psycopg2.extras.execute_values(cur, f"INSERT INTO {TABLE} (embedding) VALUES %s",
                                           [(v,) for v in vectors], page_size=1000)
        pg2.commit()
        return time.perf_counter() - start
    finally:
        pg2.close()


def executemany_way(conn: psycopg.Connection, vectors: np.ndarray) -> float:
    """psycopg 3 executemany (pipelined) with vectors in binary (%b)."""
    start = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {TABLE} (embedding) VALUES (%b)", [(v,) for v in vectors])
    return time.perf_counter() - start


def bare_copy(conn: psycopg.Connection, vectors: np.ndarray) -> float:
    """The plainest COPY ... FORMAT BINARY loop, with pgvector's own dumper."""
    start = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(f"COPY {TABLE} (embedding) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["vector"])
            for v in vectors:
                copy.write_row((v,))
    return time.perf_counter() - start


def package_way(conn: psycopg.Connection, vectors: np.ndarray) -> float:
    """This package's copy_vectors()."""
    start = time.perf_counter()
    with conn.transaction():
        copy_vectors(conn, TABLE, vectors)
    return time.perf_counter() - start


def check(conn: psycopg.Connection, vectors: np.ndarray) -> None:
    count, first, last = conn.execute(
        sql.SQL("SELECT count(*), min(id), max(id) FROM {}").format(sql.Identifier(TABLE))
    ).fetchone()
    offset = 1234 % count
    probe = conn.execute(
        sql.SQL("SELECT embedding FROM {} WHERE id = %s").format(sql.Identifier(TABLE)), (first + offset,)
    ).fetchone()[0]
    assert count == len(vectors), f"loaded {count} rows, expected {len(vectors)}"
    assert np.allclose(probe.to_numpy(), vectors[offset], atol=1e-6), "a stored vector differs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each fast way; the best counts")
    parser.add_argument("--skip-tutorial", action="store_true", help="leave out the slow psycopg2 way")
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"
    vectors = np.random.default_rng(0).random((args.rows, args.dim), dtype=np.float32)

    with connect() as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    url = make_conninfo(database_url(), dbname=DB)
    conn = connect(url)

    results: dict[str, float] = {}
    ways = [("psycopg 3 executemany, binary", executemany_way), ("bare COPY BINARY loop", bare_copy),
            ("pgvec_course copy_vectors", package_way)]  # fmt: skip
    if not args.skip_tutorial:
        fresh_table(conn, args.dim)
        results["tutorial: psycopg2 execute_values"] = tutorial_way(url, vectors)
        check(conn, vectors)
        fresh_table(conn, args.dim)
        results["psycopg2 register_vector, page 1000"] = psycopg2_done_right(url, vectors)
        check(conn, vectors)
    for run in range(args.repeat):
        # Interleaved, in a rotating order, so a slow moment (a checkpoint) hits every way alike.
        for name, way in ways[run % 3 :] + ways[: run % 3]:
            fresh_table(conn, args.dim)
            seconds = way(conn, vectors)
            check(conn, vectors)
            results[name] = min(results.get(name, float("inf")), seconds)
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))
    conn.close()

    baseline = results.get("tutorial: psycopg2 execute_values")
    bare = results["bare COPY BINARY loop"]
    print(f"Loading {args.rows:,} x {args.dim} float32 vectors (best of {args.repeat} for the fast ways)\n")
    print(f"{'way':36} {'seconds':>8} {'rows/s':>9} {'vs tutorial':>12} {'vs bare COPY':>13}")
    for name, seconds in results.items():
        speedup = f"{baseline / seconds:.1f}x faster" if baseline else "-"
        print(f"{name:36} {seconds:8.2f} {args.rows / seconds:9,.0f} {speedup:>12} {seconds / bare:12.2f}x")


if __name__ == "__main__":
    main()
