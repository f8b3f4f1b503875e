"""Run a sweep of index configurations and measure build time, size, latency, throughput and recall."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import numpy as np
import psycopg
from psycopg import sql

from .data import Dataset, ground_truth, load_vectors, mean_recall
from .results import BenchResults, BenchRow

__all__ = ["Config", "QueryRun", "default_configs", "run_benchmark", "run_queries"]

OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}
PARAMS = {"none": "", "ivfflat": "probes", "hnsw": "ef_search"}
PROBES = (1, 2, 5, 10, 20, 50)
EF_SEARCH = (10, 20, 40, 80, 160, 400)


@dataclass(frozen=True)
class Config:
    """One point of a sweep: an index kind, its build parameters and the query-time setting."""

    index: str = "none"
    value: int | None = None
    _: KW_ONLY
    lists: int | None = None
    m: int = 16
    ef_construction: int = 64

    def __post_init__(self) -> None:
        if self.index not in PARAMS:
            raise ValueError(f"unknown index {self.index!r}; use 'none', 'ivfflat' or 'hnsw'")
        if self.index == "ivfflat" and self.lists is None:
            raise ValueError("an ivfflat Config needs lists=N (the number of clusters to build)")

    @property
    def param(self) -> str:
        return PARAMS[self.index]

    @property
    def build(self) -> str:
        """The build parameters as text: configs with equal `build` share one index."""
        if self.index == "ivfflat":
            return f"lists={self.lists}"
        if self.index == "hnsw":
            return f"m={self.m},ef_construction={self.ef_construction}"
        return ""


def default_configs(
    n: int, *, probes: Sequence[int] = PROBES, ef_search: Sequence[int] = EF_SEARCH
) -> list[Config]:
    """Return the default sweep: no index, IVFFlat over `probes`, HNSW m=16 over `ef_search`.

    IVFFlat gets about 100 rows per list, at most 100 lists; probes above the list count are dropped.
    """
    lists = min(100, max(1, n // 100))
    return [
        Config("none"),
        *(Config("ivfflat", p, lists=lists) for p in probes if p <= lists),
        *(Config("hnsw", ef) for ef in ef_search),
    ]


def _query(conn: psycopg.Connection, table: str, metric: str) -> str:
    if metric not in OPERATORS:
        raise ValueError(f"unknown metric {metric!r}; use 'cosine', 'l2' or 'ip'")
    return sql.SQL("SELECT id FROM {} ORDER BY embedding {} %s LIMIT %s").format(
        sql.Identifier(table), sql.SQL(OPERATORS[metric])
    ).as_string(conn)


@dataclass(frozen=True, eq=False)
class QueryRun:
    """The ids each query returned, each query's latency in seconds, and the plan of the first query."""

    found: list[list[int]]
    latencies: np.ndarray
    plan: object


def run_queries(
    conn: psycopg.Connection,
    table: str,
    queries: np.ndarray,
    k: int = 10,
    *,
    metric: str = "cosine",
    ef_search: int | None = None,
    probes: int | None = None,
    warmup: int = 10,
) -> QueryRun:
    """Run every query once in one transaction with the given settings, after `warmup` untimed ones.

    Automatic prepared statements are off while it runs, so each query is planned with its settings.
    """
    from ..index import index_settings
    from ..search import explain

    query = _query(conn, table, metric)
    latencies = np.empty(len(queries))
    found: list[list[int]] = []
    # A prepared statement could keep a plan made before the settings changed: plan every query afresh.
    threshold, conn.prepare_threshold = conn.prepare_threshold, None
    try:
        with index_settings(conn, ef_search=ef_search, probes=probes), conn.cursor() as cur:
            plan = explain(conn, query, (queries[0], k))
            for q in queries[:warmup]:  # fills the buffer cache, so the first timed queries are not outliers
                cur.execute(query, (q, k)).fetchall()
            for i, q in enumerate(queries):
                start = time.perf_counter()
                rows = cur.execute(query, (q, k)).fetchall()
                latencies[i] = time.perf_counter() - start
                found.append([row[0] for row in rows])
    finally:
        conn.prepare_threshold = threshold
    return QueryRun(found, latencies, plan)


def _plan_ok(config: Config, plan, index_name: str | None) -> tuple[bool, str]:
    used = ", ".join(plan.vector_indexes) or "seq scan"
    if config.index == "none":
        return not plan.uses_index, used
    return index_name in plan.vector_indexes, used


def run_benchmark(
    conn: psycopg.Connection,
    data: Dataset,
    *,
    configs: Sequence[Config] | None = None,
    table: str = "bench_vectors",
    k: int = 10,
    metric: str = "cosine",
    warmup: int = 10,
    progress: bool = True,
) -> BenchResults:
    """Load `data` into `table`, then build and query each configuration; return one row per config.

    Prepared statements are off while queries run (as with `connect(prepare=False)`).
    Configurations sharing a build (kind and parameters) share one index, built once.
    """
    from .._progress import progress_bar
    from ..index import create_index, drop_indexes

    configs = list(configs) if configs is not None else default_configs(len(data.vectors))
    timings = dict.fromkeys(("load_s", "truth_s", "build_s", "query_s"), 0.0)
    by_index: dict[str, dict[str, float]] = {}
    start = time.perf_counter()
    load_vectors(conn, data, table=table)
    timings["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    truth = ground_truth(data.vectors, data.queries, k, metric=metric, ids=data.ids)
    timings["truth_s"] = time.perf_counter() - start
    rows: list[BenchRow] = []
    built: tuple[str, str] | None = None
    info = None
    with progress_bar(total=len(configs), desc="Benchmark", unit="config", show=progress) as bar:
        for config in configs:
            if built != (config.index, config.build):
                start = time.perf_counter()
                drop_indexes(conn, table)
                info = None
                if config.index != "none":
                    info = create_index(
                        conn, config.index, table=table, metric=metric, m=config.m,
                        ef_construction=config.ef_construction, lists=config.lists,
                    )  # fmt: skip
                built = (config.index, config.build)
                seconds = time.perf_counter() - start
                timings["build_s"] += seconds
                by_index.setdefault(config.index, {"build_s": 0.0, "query_s": 0.0})["build_s"] += seconds
            start = time.perf_counter()
            setting = {config.param: config.value} if config.param and config.value is not None else {}
            run = run_queries(conn, table, data.queries, k, metric=metric, warmup=warmup, **setting)
            seconds = time.perf_counter() - start
            timings["query_s"] += seconds
            by_index[config.index]["query_s"] += seconds
            plan_ok, used = _plan_ok(config, run.plan, info.name if info else None)
            ms = run.latencies * 1000
            rows.append(BenchRow(
                index=config.index, param=config.param, value=config.value,
                build_s=info.build_seconds if info else 0.0, index_bytes=info.size_bytes if info else 0,
                p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)),
                p99_ms=float(np.percentile(ms, 99)), qps=len(ms) / run.latencies.sum(),
                recall=mean_recall(run.found, truth, k), plan_ok=plan_ok, build=config.build, plan=used,
            ))  # fmt: skip
            bar.update(1)
    drop_indexes(conn, table)
    results = BenchResults(rows, k=k, timings=timings, title=f"{data.name}, {len(data.queries)} queries")
    results.by_index = by_index
    return results
