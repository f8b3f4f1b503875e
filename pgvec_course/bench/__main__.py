"""Run the default index benchmark sweep and write results.csv plus PNG plots.

    python -m pgvec_course.bench --n 10000 --dim 1536 --data uniform --out bench-out
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

from .. import db, server
from .data import KINDS, corpus_dataset, make_dataset
from .runner import EF_SEARCH, PROBES, default_configs, run_benchmark

BENCH_DB = "pgvec_bench"  # its own database, so a learner's documents table is never touched


def connect_bench() -> psycopg.Connection:
    """Connect to the benchmark database (created on first use) with prepared statements off."""
    with db.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone()
    if not exists:
        try:
            server.create_database(BENCH_DB)
        except db.CourseDatabaseError:
            # A shared server may not give us a database with pgvector: the course database will do.
            return db.connect(prepare=False)
        except psycopg.errors.DuplicateDatabase:
            pass  # created by another run a moment ago
    return db.connect(dbname=BENCH_DB, prepare=False)


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected integers separated by commas, like 10,20,40, not {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--n", type=int, default=10_000, help="rows to index (default 10000)")
    parser.add_argument("--dim", type=int, default=1536, help="dimensions (default 1536)")
    parser.add_argument("--data", choices=[*KINDS, "corpus"], default="uniform",
                        help="vector distribution; corpus embeds the course passages (ignores --n/--dim)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for the CSV and PNGs")
    parser.add_argument("--queries", type=int, default=100, help="timed queries per configuration")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query; recall is recall@k")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data")
    parser.add_argument("--table", default="bench_vectors", help="table to (re)create in pgvec_bench")
    parser.add_argument("--probes", type=_ints, default=list(PROBES), help="IVFFlat probes to sweep")
    parser.add_argument("--ef-search", type=_ints, default=list(EF_SEARCH), help="HNSW ef_search to sweep")
    parser.set_defaults(func=run)
    return parser


def add_parser(subparsers) -> None:
    """Add `pgvec-course bench` to the course's command line."""
    add_arguments(subparsers.add_parser("bench", help="run the index benchmark sweep", description=__doc__))


def run(args: argparse.Namespace) -> int:
    from ..plots import save_plots

    started = time.perf_counter()
    if args.data == "corpus":
        data = corpus_dataset()
    else:
        data = make_dataset(args.n, args.dim, kind=args.data, queries=args.queries, seed=args.seed)
    configs = default_configs(len(data.vectors), probes=args.probes, ef_search=args.ef_search)
    with connect_bench() as conn:
        results = run_benchmark(conn, data, configs=configs, table=args.table, k=args.k)
    csv_path = results.to_csv(args.out / "results.csv")
    pngs = save_plots(results, args.out)
    print(results)
    split = ", ".join(f"{name[:-2]} {secs:.1f} s" for name, secs in results.timings.items())
    print(f"\ntook {time.perf_counter() - started:.1f} s ({split})")
    print(f"wrote {csv_path}")
    for png in pngs:
        print(f"wrote {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `pgvec-course bench` with these arguments (the command line's by default)."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
