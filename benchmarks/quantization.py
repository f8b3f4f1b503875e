"""What do halfvec and binary quantisation cost and save? Sizes, build times and recall@10, side by side.

    .venv/bin/python benchmarks/quantization.py [--n 10000] [--queries 50] [--candidates 40]

For each data set it loads one table of full-precision vectors, builds three HNSW indexes on it
(vector, halfvec expression, binary_quantize expression) and asks the same queries five ways:
full precision, halfvec, bits only (Hamming order), and bits then re-ranked by exact cosine
over the top `--candidates` (and 4x that). Recall is against the exact top 10 from numpy.
Storage compares a table holding each type. Runs offline against the built-in server.

Data sets: the course corpus embedded by the local model (real, 384 dims, small), the benchmark
toolkit's clustered vectors, and "latent" vectors: a 64-dimensional clustered signal spread over
384 or 1536 dimensions by a random projection, which is how real embedding models behave when it
comes to sign bits; the same signal with more dimensions gives more bits to quantise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from psycopg import sql

import pgvec_course as pvc
from pgvec_course.bench import Dataset, corpus_dataset, ground_truth, make_dataset, mean_recall

TABLE = "quant_bench"


def latent_dataset(n: int, dim: int, *, queries: int, latent: int = 64, seed: int = 0) -> Dataset:
    """Return clustered `latent`-dim points projected to `dim` dims (same points for every dim)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, round(n**0.5)), latent))
    points = centres[rng.integers(len(centres), size=n + queries)]
    points = points + 0.6 * rng.standard_normal(points.shape)
    projection = np.random.default_rng(seed + dim).standard_normal((latent, dim))
    x = points @ projection
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return Dataset(f"latent-64 {n}x{dim}", x[:n], x[n:])


def load(conn, data: Dataset) -> int:
    dim = data.vectors.shape[1]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(TABLE)))
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}))").format(
        sql.Identifier(TABLE), sql.Literal(dim)))
    pvc.copy_vectors(conn, TABLE, data.vectors, data.ids.tolist())
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(TABLE)))
    return dim


def storage(conn, dim: int) -> dict[str, int]:
    """Return bytes on disk (with TOAST) of a copy of the table for each column type."""
    sizes = {}
    for kind, expr in (("vector", "embedding"), ("halfvec", f"embedding::halfvec({dim})"),
                       ("bit", f"binary_quantize(embedding)::bit({dim})")):
        conn.execute(f"DROP TABLE IF EXISTS quant_copy; CREATE TABLE quant_copy AS "
                     f"SELECT id, {expr} AS embedding FROM {TABLE}")
        sizes[kind] = conn.execute("SELECT pg_table_size('quant_copy')").fetchone()[0]
    conn.execute("DROP TABLE quant_copy")
    return sizes


def build(conn, dim: int) -> dict[str, tuple[float, int]]:
    """Build the three HNSW indexes; return {kind: (seconds, bytes)}."""
    specs = {
        "vector": "(embedding vector_cosine_ops)",
        "halfvec": f"((embedding::halfvec({dim})) halfvec_cosine_ops)",
        "bit": f"((binary_quantize(embedding)::bit({dim})) bit_hamming_ops)",
    }
    out = {}
    for kind, spec in specs.items():
        start = time.perf_counter()
        conn.execute(f"CREATE INDEX quant_{kind}_idx ON {TABLE} USING hnsw {spec}")
        seconds = time.perf_counter() - start
        out[kind] = (seconds, conn.execute(f"SELECT pg_relation_size('quant_{kind}_idx')").fetchone()[0])
    return out


def queries(dim: int, candidates: int) -> dict[str, str]:
    bits = f"binary_quantize(embedding)::bit({dim}) <~> binary_quantize(%(q)s)"
    rerank = (f"SELECT id FROM (SELECT id, embedding FROM {TABLE} ORDER BY {bits} LIMIT {{c}}) AS candidates "
              "ORDER BY embedding <=> %(q)s LIMIT 10")
    return {
        "vector": f"SELECT id FROM {TABLE} ORDER BY embedding <=> %(q)s LIMIT 10",
        "halfvec": f"SELECT id FROM {TABLE} ORDER BY embedding::halfvec({dim}) <=> %(q)s::halfvec({dim}) "
                   "LIMIT 10",
        "bits only": f"SELECT id FROM {TABLE} ORDER BY {bits} LIMIT 10",
        f"bits+rerank {candidates}": rerank.format(c=candidates),
        f"bits+rerank {4 * candidates}": rerank.format(c=4 * candidates),
    }


def measure(conn, data: Dataset, candidates: int) -> list[tuple]:
    dim = load(conn, data)
    sizes = storage(conn, dim)
    built = build(conn, dim)
    truth = ground_truth(data.vectors, data.queries, 10, ids=data.ids)
    rows = []
    for method, query in queries(dim, candidates).items():
        found, start = [], time.perf_counter()
        with pvc.index_settings(conn, ef_search=min(1000, max(40, 4 * candidates))):
            for q in data.queries:
                found.append([r[0] for r in conn.execute(query, {"q": q}).fetchall()])
        ms = (time.perf_counter() - start) * 1000 / len(data.queries)
        kind = "bit" if method.startswith("bits") else method
        rows.append((data.name, method, sizes[kind], *built[kind], mean_recall(found, truth), ms))
    conn.execute(f"DROP TABLE {TABLE}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="vectors per synthetic data set")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=40, help="rows re-ranked after the bit search")
    args = parser.parse_args()
    sets = [corpus_dataset()]
    for dim in (384, 1536):
        sets.append(make_dataset(args.n, dim, kind="clustered", queries=args.queries))
        sets.append(latent_dataset(args.n, dim, queries=args.queries))
    conn = pvc.connect(prepare=False)
    print(f"{'data set':<34} {'method':<17} {'table MB':>9} {'index s':>8} {'index MB':>9} "
          f"{'recall@10':>9} {'ms/query':>9}")
    for data in sets:
        for name, method, table, secs, index, recall, ms in measure(conn, data, args.candidates):
            print(f"{name:<34} {method:<17} {table / 1e6:9.2f} {secs:8.2f} {index / 1e6:9.2f} "
                  f"{recall:9.3f} {ms:9.2f}")
        print()


if __name__ == "__main__":
    main()
