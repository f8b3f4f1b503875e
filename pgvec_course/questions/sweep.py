"""Re-measure a learner's index sweep: their configurations, on their indexes, in the scorer's session.

For each index kind the learner reports, the scorer finds their index of that kind on bench_items,
drops every other vector index inside a transaction it rolls back (DDL is transactional in
Postgres, so nothing changes), and for each reported setting checks with EXPLAIN that the index
answers the query and measures recall@k against exact search done in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from .tables import cosine_distances, nearest_set

SETTING = {"probes": "ivfflat.probes", "ef_search": "hnsw.ef_search"}


@dataclass(frozen=True)
class Measured:
    """One re-measured configuration: whether the index answered, and the recall the scorer found."""

    value: int
    used_index: bool
    recall: float


def vector_indexes(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, str]]:
    """Return {access method: (schema, index name)} of the table's cosine vector indexes."""
    rows = conn.execute(
        "SELECT am.amname, n.nspname, c.relname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.indrelid = %s::regclass AND am.amname IN ('ivfflat', 'hnsw') "
        "AND pg_get_indexdef(i.indexrelid) LIKE '%%vector_cosine_ops%%' ORDER BY c.relname",
        (table,)).fetchall()
    found: dict[str, tuple[str, str]] = {}
    for am, schema, name in rows:
        found.setdefault(am, (schema, name))
    return found


def all_vector_indexes(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """Return (schema, name) of every ivfflat or hnsw index on the table, whatever its operator class."""
    return conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.indrelid = %s::regclass AND am.amname IN ('ivfflat', 'hnsw')", (table,)).fetchall()


def _uses(plan: Any, name: str) -> bool:
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if node.get("Index Name") == name:
            return True
        nodes.extend(node.get("Plans", []))
    return False


def remeasure(conn: psycopg.Connection, table: str, kind: str, param: str, values: list[int],
              queries: Any, truth: list[set[int]], k: int) -> list[Measured] | None:
    """Measure recall@k of each setting on the learner's `kind` index alone; None if there is none."""
    index = vector_indexes(conn, table).get(kind)
    if index is None:
        return None
    measured = []
    query_sql = sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %s LIMIT %s").format(sql.Identifier(table))
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL lock_timeout = '5s'")
        for schema, name in all_vector_indexes(conn, table):
            if (schema, name) != index:
                conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        for value in values:
            conn.execute("SELECT set_config(%s, %s, true)", (SETTING[param], str(int(value))))
            plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query_sql, (queries[0], k)).fetchone()[0]
            recalls = []
            for query, true_ids in zip(queries, truth, strict=True):
                found = [r[0] for r in conn.execute(query_sql, (query, k))]
                recalls.append(len(set(found) & true_ids) / k)
            measured.append(Measured(int(value), _uses(plan, index[1]), float(np.mean(recalls))))
    return measured


def exact_truth(ids: Any, matrix: Any, queries: Any, k: int, *, norms: Any = None) -> list[set[int]]:
    """Return each query's true top k ids by cosine distance (ties at the k-th distance included)."""
    norms = np.linalg.norm(matrix, axis=1) if norms is None else norms
    return [nearest_set(ids, cosine_distances(matrix, q, norms=norms), k, tol=1e-9) for q in queries]
