"""Approximate nearest-neighbour indexes: build HNSW or IVFFlat, size them, tune them per transaction."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["IndexInfo", "create_index", "drop_indexes", "index_settings", "estimate_build_memory"]

OPCLASSES = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}
KINDS = ("hnsw", "ivfflat")
ITERATIVE_SCAN = ("off", "relaxed_order", "strict_order")
_MB = 1024 * 1024
_ROWS_PER_PAGE = 291  # MaxHeapTuplesPerPage for 8 kB pages


@dataclass(frozen=True)
class IndexInfo:
    """What create_index built: its name, kind, build time, size on disk and parameters."""

    name: str
    kind: str
    build_seconds: float
    size_bytes: int
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (
            f"{self.kind} index {self.name} ({params}): built in {self.build_seconds:.2f} s, "
            f"{self.size_bytes / _MB:.1f} MB"
        )


def default_lists(rows: int) -> int:
    """Return the IVFFlat list count pgvector's docs advise: rows/1000 up to 1M rows, sqrt(rows) above."""
    lists = rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows))
    return max(1, lists)


def _item_bytes(dim: int) -> int:
    return (8 + 4 * dim + 7) // 8 * 8  # header (4) + dim and unused (2 + 2) + float4s, 8-byte aligned


def estimate_build_memory(
    n: int, dim: int, kind: str, m: int = 16, lists: int | None = None, *, heap_pages: int | None = None
) -> int:
    """Estimate the bytes of maintenance_work_mem that building an index on n vectors needs.

    Calibrated on pgvector 0.8.5: IVFFlat against the "memory required is X MB" it reports,
    HNSW against the tuple count at which it says the graph no longer fits.
    IVFFlat runs k-means on a sample of 50 rows per list (at least 10,000), reserving room
    for up to 291 rows per heap page: pass `heap_pages` when known, else n rows are assumed.
    """
    _check_kind(kind)
    item = _item_bytes(dim)
    if kind == "ivfflat":
        lists = lists or default_lists(n)
        reserved = max(lists * 50, 10_000)
        reserved = min(reserved, n if heap_pages is None else heap_pages * _ROWS_PER_PAGE)
        samples = min(reserved, n)
        arrays = (reserved + 2 * lists) * item + 3 * 24  # samples, centers and new centers
        kmeans = lists * dim * 8 + samples * (lists + 2) * 4 + lists * (lists + 3) * 4
        return arrays + kmeans
    # HNSW keeps the whole graph in memory while it fits: per element its vector, 2m layer-0
    # neighbours of 16 bytes and about 200 bytes more (fitted on 0.8.5 for m = 8..64).
    return n * (item + 32 * m + 200)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; use 'hnsw' or 'ivfflat'")


def _maintenance_work_mem(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()[0]


def _table_shape(conn: psycopg.Connection, table: str, column: str) -> tuple[int, int, int]:
    regclass = sql.Identifier(table).as_string(conn)
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
        (regclass, column),
    ).fetchone()
    if row is None:
        raise ValueError(f"table {table} has no column {column} (or does not exist); check the names")
    count = sql.SQL(
        "SELECT count(*), pg_relation_size(%s::regclass) / current_setting('block_size')::int FROM {}"
    ).format(sql.Identifier(table))
    rows, pages = conn.execute(count, (regclass,)).fetchone()
    return rows, row[0], pages


def create_index(
    conn: psycopg.Connection,
    kind: str = "hnsw",
    *,
    table: str = "documents",
    column: str = "embedding",
    metric: str = "cosine",
    m: int = 16,
    ef_construction: int = 64,
    lists: int | None = None,
    name: str | None = None,
) -> IndexInfo:
    """Build an HNSW or IVFFlat index for one distance metric and report its build time and size.

    IVFFlat's `lists` defaults to the row count / 1000 (sqrt of it above 1M rows), at least 1.
    Warns first when the build is likely to need more than maintenance_work_mem.
    """
    _check_kind(kind)
    if metric not in OPCLASSES:
        raise ValueError(f"unknown metric {metric!r}; use 'cosine', 'l2' or 'ip'")
    rows, dim, pages = _table_shape(conn, table, column)
    if kind == "hnsw":
        _positive(m=m, ef_construction=ef_construction)
        params: dict[str, Any] = {"m": m, "ef_construction": ef_construction}
    else:
        lists = default_lists(rows) if lists is None else lists
        _positive(lists=lists)
        params = {"lists": lists}
    name = name or f"{table}_{column}_{kind}_{metric}_idx"
    _warn_memory(conn, kind, rows, dim, m, lists, pages)
    with_ = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.SQL(key), sql.Literal(value)) for key, value in params.items()
    )
    statement = sql.SQL("CREATE INDEX {} ON {} USING {} ({} {}) WITH ({})").format(
        sql.Identifier(name), sql.Identifier(table), sql.SQL(kind), sql.Identifier(column),
        sql.SQL(OPCLASSES[metric]), with_,
    )  # fmt: skip
    start = time.perf_counter()
    conn.execute(statement)
    seconds = time.perf_counter() - start
    size = conn.execute(
        "SELECT pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND c.relname = %s",
        (sql.Identifier(table).as_string(conn), name),
    ).fetchone()[0]
    return IndexInfo(name, kind, seconds, size, {"metric": metric, **params})


def _warn_memory(conn, kind: str, rows: int, dim: int, m: int, lists: int | None, pages: int) -> None:
    if dim <= 0:
        return
    need = estimate_build_memory(rows, dim, kind, m=m, lists=lists, heap_pages=pages)
    have = _maintenance_work_mem(conn)
    if need > have:
        wanted = math.ceil(need * 1.25 / _MB)
        warnings.warn(
            f"this {kind} build needs about {math.ceil(need / _MB)} MB but maintenance_work_mem is "
            f"{have // _MB} MB; raise it first with SET maintenance_work_mem = '{wanted}MB'",
            stacklevel=3,
        )


def drop_indexes(conn: psycopg.Connection, table: str = "documents") -> list[str]:
    """Drop every HNSW and IVFFlat index on a table and return their names."""
    rows = conn.execute(
        # ::regclass::text is the name as the server would quote (and, if needed, qualify) it.
        "SELECT c.relname, c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = to_regclass(%s) "
        "AND a.amname IN ('hnsw', 'ivfflat') ORDER BY c.relname",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    for _, qualified in rows:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(qualified)))
    names = [name for name, _ in rows]
    return names


def _positive(**values: Any) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")


@contextmanager
def index_settings(
    conn: psycopg.Connection,
    *,
    ef_search: int | None = None,
    probes: int | None = None,
    iterative_scan: str | bool | None = None,
) -> Iterator[psycopg.Connection]:
    """Open a transaction with hnsw.ef_search, ivfflat.probes and iterative scans set for it alone.

    `iterative_scan` is "off", "relaxed_order" or "strict_order" (True means relaxed_order);
    it sets both hnsw.iterative_scan and ivfflat.iterative_scan. Settings end with the block.
    """
    settings: dict[str, str] = {}
    if ef_search is not None:
        _positive(ef_search=ef_search)
        if ef_search > 1000:
            raise ValueError(f"ef_search must be between 1 and 1000 (pgvector's limit), not {ef_search}")
        settings["hnsw.ef_search"] = str(ef_search)
    if probes is not None:
        _positive(probes=probes)
        settings["ivfflat.probes"] = str(probes)
    if iterative_scan is not None:
        mode = {True: "relaxed_order", False: "off"}.get(iterative_scan, iterative_scan)
        if mode not in ITERATIVE_SCAN:
            raise ValueError(
                f"iterative_scan must be 'off', 'relaxed_order' or 'strict_order', not {iterative_scan!r}"
            )
        settings["hnsw.iterative_scan"] = mode
        # IVFFlat has no strict order; relaxed is the closest it offers.
        settings["ivfflat.iterative_scan"] = "off" if mode == "off" else "relaxed_order"
    with conn.transaction():
        for key, value in settings.items():
            # set_config(..., true) is SET LOCAL, and unlike SET it takes parameters.
            conn.execute("SELECT set_config(%s, %s, true)", (key, value))
        yield conn
