"""Benchmark data: seeded vectors, the bulk load with a duplicate guard, exact ground truth and recall."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import psycopg
from psycopg import sql

__all__ = [
    "KINDS",
    "Dataset",
    "DuplicateVectorsError",
    "check_distinct",
    "corpus_dataset",
    "ground_truth",
    "load_vectors",
    "make_dataset",
    "mean_recall",
]

Kind = Literal["uniform", "gaussian", "clustered"]
KINDS: tuple[str, ...] = ("uniform", "gaussian", "clustered")
# Clustered data lives near a 32-dimensional subspace, as real embeddings do (low intrinsic
# dimension). Isotropic clusters in 1536 dimensions would be perfectly separated, which makes
# IVFFlat exact at probes = 1 and teaches nothing; these overlap like topics do.
LATENT_DIM = 32
CLUSTER_SPREAD = 1.0  # per latent axis, as wide as the spread of the cluster centres themselves
NOISE = 0.1  # full-dimensional noise, relative to each vector's norm


@dataclass(frozen=True, eq=False)
class Dataset:
    """Vectors to index (ids 1..N unless given) and query vectors drawn from the same distribution."""

    name: str
    vectors: np.ndarray
    queries: np.ndarray
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.ids is None:
            object.__setattr__(self, "ids", np.arange(1, len(self.vectors) + 1, dtype=np.int64))

    def __repr__(self) -> str:
        n, dim = self.vectors.shape
        return f"<Dataset {self.name}: {n} x {dim} vectors, {len(self.queries)} queries>"


def make_dataset(n: int, dim: int, *, kind: Kind = "uniform", queries: int = 100, seed: int = 0) -> Dataset:
    """Generate N x dim float32 vectors and query vectors of one kind, the same for the same seed.

    `uniform`: every value in [0, 1), as the tutorial's exercise asks; `gaussian`: standard
    normal values; `clustered`: a mixture of about sqrt(N) Gaussian clusters in a 32-dimensional
    subspace plus a little noise, normalised, which behaves much more like real embeddings.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; choose one of {', '.join(KINDS)}")
    if n < 1 or dim < 1 or queries < 1:
        raise ValueError(f"n, dim and queries must be positive, not {n}, {dim}, {queries}")
    rng = np.random.default_rng(seed)
    total = n + queries  # one draw, split afterwards: queries follow the data's distribution
    if kind == "uniform":
        data = rng.random((total, dim), dtype=np.float32)
    elif kind == "gaussian":
        data = rng.standard_normal((total, dim), dtype=np.float32)
    else:
        latent = min(LATENT_DIM, dim)
        centres = rng.standard_normal((max(1, round(math.sqrt(n))), latent))
        points = centres[rng.integers(len(centres), size=total)]
        points = points + CLUSTER_SPREAD * rng.standard_normal((total, latent))
        projected = points @ (rng.standard_normal((latent, dim)) / math.sqrt(latent))
        noise = rng.standard_normal((total, dim)) / math.sqrt(dim)
        data = _unit(projected + NOISE * np.linalg.norm(projected, axis=1, keepdims=True) * noise)
        data = data.astype(np.float32)
    return Dataset(f"{kind} {n}x{dim}", data[:n], data[n:])


def corpus_dataset(*, embedder=None) -> Dataset:
    """Embed the course's passages (ids as in the corpus) and its labelled queries."""
    from ..corpus import load_passages, load_queries
    from ..embed import get_embedder
    from ..store import document_text

    embedder = embedder or get_embedder(quiet=True)
    passages = load_passages()
    vectors = embedder.embed([document_text(p.title, p.content) for p in passages])
    queries = embedder.embed([q.query for q in load_queries()])
    ids = np.array([p.id for p in passages], dtype=np.int64)
    return Dataset(f"course corpus ({embedder.name})", vectors, queries, ids)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class DuplicateVectorsError(ValueError):
    """The table holds repeated vectors, so a benchmark on it would measure nothing useful."""


def load_vectors(conn: psycopg.Connection, data: Dataset, *, table: str = "bench_vectors") -> int:
    """Create `table` afresh (id, embedding), bulk-load the data set, check its rows are distinct."""
    from ..store import copy_vectors

    name = sql.Identifier(table)
    dim = data.vectors.shape[1]
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(name))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}) NOT NULL)").format(
            name, sql.Literal(dim)
        )
    )
    count = copy_vectors(conn, table, data.vectors, data.ids.tolist())
    # Fresh statistics, or the planner costs index scans against a table it thinks is empty.
    conn.execute(sql.SQL("ANALYZE {}").format(name))
    check_distinct(conn, table)
    return count


def check_distinct(conn: psycopg.Connection, table: str, *, column: str = "embedding") -> int:
    """Return the row count, or raise DuplicateVectorsError if some rows share a vector."""
    # md5 of the text form: comparing the vectors themselves sorts them and is ~10x slower.
    rows, distinct = conn.execute(
        sql.SQL("SELECT count(*), count(DISTINCT md5({}::text)) FROM {}").format(
            sql.Identifier(column), sql.Identifier(table)
        )
    ).fetchone()
    if rows > 1 and distinct == 1:
        raise DuplicateVectorsError(
            f"all {rows} rows of {table} have the same {column}: an uncorrelated subquery such as "
            "(SELECT array_agg(random()) FROM generate_series(1, dim)) runs once and its result is "
            "reused for every row; make the subquery refer to the outer row, or generate the "
            "vectors in Python and load them with copy_vectors()"
        )
    if distinct < rows:
        raise DuplicateVectorsError(
            f"{table} has {rows} rows but only {distinct} distinct values of {column}; "
            "repeated vectors make recall meaningless (ties), so remove the duplicates or reload the data"
        )
    return rows


def _distances(vectors: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    if metric == "cosine":
        return 1.0 - _unit(q) @ _unit(x).T
    if metric == "l2":
        # |q - x|^2 expanded; the square root keeps the order, so it is skipped.
        return (q * q).sum(1)[:, None] - 2.0 * q @ x.T + (x * x).sum(1)[None, :]
    if metric == "ip":
        return -(q @ x.T)  # pgvector's <#> is the negative inner product
    raise ValueError(f"unknown metric {metric!r}; choose cosine, l2 or ip")


def ground_truth(
    vectors: np.ndarray, queries: np.ndarray, k: int = 10, *, metric: str = "cosine", ids=None
) -> np.ndarray:
    """Return the ids of each query's exact k nearest vectors, shape (queries, k), ties broken by id."""
    ids = np.arange(1, len(vectors) + 1) if ids is None else np.asarray(ids)
    k = min(k, len(vectors))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 256):  # bounds memory at 256 x N distances
        dist = _distances(vectors, queries[start : start + 256], metric)
        for row, d in enumerate(dist):
            out[start + row] = ids[np.lexsort((ids, d))[:k]]
    return out


def mean_recall(found: list[list[int]], truth: np.ndarray, k: int = 10) -> float:
    """Return recall@k averaged over queries: the share of the true k nearest ids that were found."""
    if len(found) != len(truth):
        raise ValueError(f"got results for {len(found)} queries but ground truth for {len(truth)}")
    from ..metrics import recall_at_k

    return float(np.mean([recall_at_k(f, t[:k].tolist(), k) for f, t in zip(found, truth, strict=True)]))
