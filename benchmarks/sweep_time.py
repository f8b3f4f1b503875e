"""Where does the default benchmark sweep spend its time? Load, ground truth, builds and queries.

    .venv/bin/python benchmarks/sweep_time.py [--n 10000] [--dim 1536] [--data uniform] [--no-naive]

Runs the sweep `python -m pgvec_course.bench` runs (budget: 2 minutes for 10,000 x 1536
on 2 cores), in the benchmark database, and prints its own time split. Then, for scale,
it loads the same vectors the tutorial's way (one INSERT per row, the vector sent as text
with a ::vector cast) next to the COPY ... FORMAT BINARY load the sweep uses.
"""

from __future__ import annotations

import argparse
import time

from psycopg import sql

from pgvec_course.bench import make_dataset, run_benchmark
from pgvec_course.bench.__main__ import connect_bench

BUDGET_S = 120.0


def naive_load(conn, data, table: str) -> float:
    """Load row by row with text vectors, as the tutorial does; return the seconds it took."""
    name = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}))").format(
        name, sql.Literal(data.vectors.shape[1])))
    insert = sql.SQL("INSERT INTO {} (id, embedding) VALUES (%s, %s::vector)").format(name)
    start = time.perf_counter()
    for i, vector in zip(data.ids.tolist(), data.vectors, strict=True):
        conn.execute(insert, (i, str(vector.tolist())))
    seconds = time.perf_counter() - start
    conn.execute(sql.SQL("DROP TABLE {}").format(name))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--data", default="uniform")
    parser.add_argument("--no-naive", action="store_true", help="skip the row-by-row load")
    args = parser.parse_args()

    data = make_dataset(args.n, args.dim, kind=args.data, queries=100, seed=0)
    with connect_bench() as conn:
        start = time.perf_counter()
        results = run_benchmark(conn, data, table="sweep_time_vectors", progress=False)
        total = time.perf_counter() - start
        naive = None if args.no_naive else naive_load(conn, data, "sweep_time_naive")

    t = results.timings
    print(f"default sweep on {data.name}: {len(results)} configurations, 100 queries each (+10 warm-up)\n")
    print(f"{'part':<48}{'seconds':>9}{'share':>8}")
    parts = [("load (COPY BINARY + ANALYZE + distinct check)", t["load_s"]),
             ("ground truth (numpy, exact)", t["truth_s"])]  # fmt: skip
    for kind, split in results.by_index.items():
        if kind != "none":
            parts.append((f"build {kind}", split["build_s"]))
    for kind, split in results.by_index.items():
        parts.append((f"queries {kind} (all settings)", split["query_s"]))
    for label, seconds in parts:
        print(f"{label:<48}{seconds:>9.1f}{seconds / total:>8.0%}")
    other = total - sum(s for _, s in parts)
    print(f"{'other (drops, bookkeeping)':<48}{other:>9.1f}{other / total:>8.0%}")
    verdict = "within" if total <= BUDGET_S else "OVER"
    print(f"{'total':<48}{total:>9.1f}   ({verdict} the {BUDGET_S:.0f} s budget)")
    if naive is not None:
        print(f"\nloading {args.n} x {args.dim}: COPY BINARY {t['load_s']:.1f} s (incl. checks) vs "
              f"row-by-row text INSERTs {naive:.1f} s ({naive / t['load_s']:.0f}x slower)")


if __name__ == "__main__":
    main()
