"""The learner's tables as scorers see them: structure, vectors, and references from verified data.

A learner's stored vectors are never trusted as the reference: scorers re-embed the rows' content
with the reference embedder (`verified_rows`) or use the course corpus (`corpus_reference`), so a
broken table cannot make a wrong answer look right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from .spec import Context

MATCH = 1e-3  # cosine distance under which a stored vector is the embedder's vector of the text
# What the grader reads of a learner's table into its own process, which no cap bounds: a text
# column compresses (1 MB of repeated words takes a few kB on disk), so 1,000 huge passages would
# otherwise cost it gigabytes and minutes of tokenising. The embedder keeps only the first 256 word
# pieces of a text, which 20,000 characters hold in any real passage.
MAX_TEXT = 20_000
MAX_VECTORS = 50_000  # rows (1,536 dimensions: 1.2 GB at most while read); a benchmark has 10,000


def table_problem(conn: psycopg.Connection, table: str, columns: Sequence[str],
                  data: Any = None) -> str | None:
    """Return what is missing from `table` (the table or some columns), or None.

    `data` is what the table probe saw: a table that exists only inside a learner's uncommitted
    transaction is reported as such, not as missing.
    """
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        open_ = data.get("open", []) if isinstance(data, dict) else []
        if open_:
            name = open_[0]["name"]
            return (f"there is no committed table {table}: the rows were never committed (an open "
                    f"transaction on `{name}`); call {name}.commit() after creating and filling it")
        return f"there is no table {table}: run the cell that creates it"
    have = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (table,))}
    missing = [c for c in columns if c not in have]
    if missing:
        return f"{table} has no column {', '.join(missing)}; the contract at the top lists its columns"
    return None


def column_type(conn: psycopg.Connection, table: str, column: str) -> str:
    """Return the SQL type of a column as Postgres spells it, for example 'vector(384)'."""
    return conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = %s", (table, column)).fetchone()[0]


def text_column(column: str) -> sql.Composable:
    """Return SQL for a text column as the grader reads it: NULL as '', cut at MAX_TEXT characters."""
    return sql.SQL("left(coalesce({}::text, ''), {})").format(sql.Identifier(column), sql.Literal(MAX_TEXT))


def fetch_vectors(conn: psycopg.Connection, table: str, column: str = "embedding", *,
                  limit: int | None = None) -> tuple[Any, Any]:
    """Return (ids, matrix) of a table's first `limit` non-null vectors by id, as numpy arrays.

    Without a limit, raise ValueError for a table of more than MAX_VECTORS vectors.
    """
    query = sql.SQL("SELECT id::int8, {} FROM {} WHERE {} IS NOT NULL ORDER BY id LIMIT {}").format(
        sql.Identifier(column), sql.Identifier(table), sql.Identifier(column),
        sql.Literal(limit if limit is not None else MAX_VECTORS + 1))
    # Binary COPY parsed by numpy takes a quarter of a second for 10,000 x 1536 values, where
    # building a pgvector.Vector per row takes several seconds.
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)) as copy:
        for chunk in copy:
            buf += chunk
    body = bytes(buf[19:-2])  # 19-byte header, 2-byte trailer
    if not body:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    dim = int.from_bytes(body[18:20], "big")
    row = np.dtype([("fields", ">i2"), ("n1", ">i4"), ("id", ">i8"), ("n2", ">i4"), ("dim", ">i2"),
                    ("unused", ">i2"), ("v", ">f4", (dim,))])
    if len(body) % row.itemsize == 0:
        rows = np.frombuffer(body, dtype=row)
        if limit is None and len(rows) > MAX_VECTORS:
            raise ValueError(f"{table} holds more than {MAX_VECTORS:,} vectors, more than the grader reads: "
                             "keep to the size the exercise asks for")
        if np.all(rows["dim"] == dim):
            return rows["id"].astype(np.int64), rows["v"].astype(np.float64)
    raise ValueError(f"the vectors in {table}.{column} do not all have the same dimension: "
                     "declare the column with one, for example vector(384)")


def cosine_distances(matrix: Any, query: Any, *, norms: Any = None) -> Any:
    """Return the cosine distance of every row of `matrix` to `query`, in float64.

    Pass `norms` (the rows' norms) when asking many queries of one big matrix.
    """
    q = np.asarray(query, dtype=np.float64)
    norms = (np.linalg.norm(matrix, axis=1) if norms is None else norms) * np.linalg.norm(q)
    return 1.0 - (matrix @ q) / np.where(norms == 0, 1.0, norms)


def table_vectors(ctx: Context, table: str) -> tuple[Any, Any, Any]:
    """Return (ids, matrix, row norms) of a table's vectors, read once per context."""
    key = f"vectors:{table}"
    if key not in ctx.memo:
        ids, matrix = fetch_vectors(ctx.conn, table)
        ctx.memo[key] = (ids, matrix, np.linalg.norm(matrix, axis=1) if matrix.size else np.zeros(0))
    return ctx.memo[key]


def ranked(ids: Any, keys: Any) -> Any:
    """Return ids sorted by key ascending, ties broken by the smaller id."""
    return ids[np.lexsort((ids, keys))]


def nearest_set(ids: Any, dist: Any, k: int, tol: float = 1e-4) -> set[int]:
    """Return every id within `tol` of the k-th smallest distance: the true top k, ties included."""
    if len(ids) == 0:
        return set()
    bound = np.sort(dist)[min(k, len(dist)) - 1] + tol
    return {int(i) for i in ids[dist <= bound]}


@dataclass(frozen=True)
class Rows:
    """A text table's rows by id: the stored vectors, and the reference embedder's vectors of the content."""

    ids: Any  # int64, sorted
    titles: list[str]
    contents: list[str]
    stored: Any  # float64 (n, dim); NaN rows where the embedding is NULL or of another size
    reference: Any  # float64 (n, dim) of the reference embedder


def verified_rows(ctx: Context, table: str, *, limit: int = 1000) -> Rows:
    """Return the table's first `limit` rows with stored and re-embedded vectors (memoised per context)."""
    key = f"rows:{table}:{limit}"
    if key not in ctx.memo:
        query = sql.SQL("SELECT id::int8, {}, {} FROM {} ORDER BY id LIMIT %s").format(
            text_column("title"), text_column("content"), sql.Identifier(table))
        rows = ctx.conn.execute(query, (limit,)).fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        stored = np.full((len(ids), ctx.embedder.dim), np.nan)
        have_ids, matrix = fetch_vectors(ctx.conn, table, limit=limit)  # the same first rows, or fewer
        if matrix.size and matrix.shape[1] == ctx.embedder.dim:
            where = {int(i): n for n, i in enumerate(have_ids)}
            for n, pid in enumerate(ids):
                if int(pid) in where:
                    stored[n] = matrix[where[int(pid)]]
        contents = [r[2] for r in rows]
        reference = embed_all(ctx, contents)
        ctx.memo[key] = Rows(ids, [r[1] for r in rows], contents, stored, reference)
    return ctx.memo[key]


def embed_all(ctx: Context, texts: list[str]) -> Any:
    """Return the reference embedder's vectors of `texts` (empty strings get zero vectors)."""
    out = np.zeros((len(texts), ctx.embedder.dim))
    todo = [n for n, t in enumerate(texts) if t.strip()]
    if todo:
        out[todo] = ctx.embedder.embed([texts[n] for n in todo])
    return out


def row_matches(rows: Rows) -> Any:
    """Return, per row, whether its stored vector is the reference embedder's vector of its content."""
    with np.errstate(invalid="ignore"):
        dots = np.einsum("ij,ij->i", rows.stored, rows.reference)
        norms = np.linalg.norm(rows.stored, axis=1) * np.linalg.norm(rows.reference, axis=1)
        dist = 1.0 - dots / np.where(norms == 0, 1.0, norms)
    return np.nan_to_num(dist, nan=2.0) <= MATCH


def embedding_hint(ctx: Context, rows: Rows, matches: Any) -> str | None:
    """Explain why stored vectors are not the embedder's vectors of the content, or None if they are."""
    bad = np.flatnonzero(~matches)
    if len(bad) == 0:
        return None
    stored = rows.stored[~np.isnan(rows.stored).any(axis=1)]
    if len(stored) > 1 and len({v.tobytes() for v in stored}) == 1:
        return "every row has the same embedding: embed each passage's own content, one vector per row"
    titles = embed_all(ctx, [rows.titles[n] for n in bad[:5]])
    stored_bad = rows.stored[bad[:5]]
    if np.all(np.abs(np.nan_to_num(stored_bad) - titles).max(axis=1) < 1e-3):
        return "the embeddings are of the titles, not of the content: embed the content column"
    first = int(rows.ids[bad[0]])
    return (f"{len(bad)} of {len(rows.ids)} rows' embeddings are not {ctx.embedder.name}'s vector of their "
            f"content (passage {first}, for one): embed the content with pvc.get_embedder(), "
            "one vector per passage, in the same order")


def corpus_reference(ctx: Context) -> Rows:
    """Return the course corpus with the reference embedder's vectors: the reference for exercise 3."""
    if "corpus" not in ctx.memo:
        from ..corpus import load_passages

        passages = load_passages()
        contents = [p.content for p in passages]
        reference = embed_all(ctx, contents)
        ctx.memo["corpus"] = Rows(np.array([p.id for p in passages], dtype=np.int64),
                                  [p.title for p in passages], contents, reference, reference)
    return ctx.memo["corpus"]
