"""Store documents and their embeddings: the table, single inserts and bulk loads with COPY."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from ._progress import progress_bar

__all__ = ["create_documents_table", "insert_document", "insert_documents", "copy_vectors", "table_lock"]

_CHUNK = 1000  # rows per progress-bar update while copying
_REBUILD = (
    "recreate the table with create_documents_table(conn, drop=True) or use the embedder it was built with"
)


def _embedder(embedder):
    if embedder is not None:
        return embedder
    from .embed import get_embedder  # imported late: loading a model is not free

    return get_embedder(quiet=True)


def document_text(title: str, content: str) -> str:
    """Return the text that is embedded for a document: its title, then its content."""
    return f"{title}\n{content}"


def create_documents_table(
    conn: psycopg.Connection,
    *,
    table: str = "documents",
    dim: int | None = None,
    embedder=None,
    fulltext: bool = False,
    drop: bool = False,
) -> int:
    """Create the documents table (if missing) with a vector column sized for the embedder; return N.

    `fulltext=True` adds a generated `tsv` column with a GIN index, for hybrid search.
    `drop=True` drops an existing table of that name first. Two notebooks creating the
    same table at once take turns (see `table_lock`) instead of failing.
    """
    if dim is None:
        dim = _embedder(embedder).dim
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, not {dim!r}")
    name = sql.Identifier(table)
    with conn.transaction():
        table_lock(conn, table)
        if drop:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(name))
        conn.execute(
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {} (
                    id SERIAL PRIMARY KEY,
                    title TEXT NOT NULL,
                    content TEXT NOT NULL,
                    category TEXT,
                    created_at TIMESTAMPTZ DEFAULT now(),
                    embedding vector({})
                )"""
            ).format(name, sql.Literal(dim))
        )
        if fulltext:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS "
                    "(to_tsvector('english', title || ' ' || content)) STORED"
                ).format(name)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (tsv)").format(
                    sql.Identifier(f"{table}_tsv_idx"), name
                )
            )
    existing = _columns(conn, table)["embedding"][1]
    if existing != dim:
        raise ValueError(
            f"table {table} already exists with vector({existing}), not vector({dim}); "
            f"recreate it with create_documents_table(conn, drop=True)"
        )
    return dim


def table_lock(conn: psycopg.Connection, table: str) -> None:
    """Wait for, then hold until the transaction ends, a lock that other set-ups of `table` also take.

    CREATE TABLE / ADD COLUMN / CREATE INDEX ... IF NOT EXISTS check and create in two steps,
    so two sessions doing them at once can both pass the check and one then fails
    (UniqueViolation, DuplicateColumn). An advisory lock named after the table in the current
    schema makes them take turns.
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s || current_schema() || '.' || %s, 0))",
                 ("pgvec_course.table:", table))


def _columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[int, int]]:
    """Return {column: (type oid, typmod)} for a table, or raise a readable error."""
    rows = conn.execute(
        "SELECT a.attname, a.atttypid::int, a.atttypmod FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    if not rows:
        raise ValueError(
            f"table {table} does not exist; create it first, e.g. with create_documents_table(conn)"
        )
    return {name: (oid, mod) for name, oid, mod in rows}


def _check_dim(conn, table: str, column: str, dim: int, who: str, fix: str = _REBUILD) -> tuple[int, int]:
    columns = _columns(conn, table)
    if column not in columns:
        raise ValueError(f"table {table} has no column {column}; pass column= with its vector column")
    oid, width = columns[column]
    if width > 0 and width != dim:
        raise ValueError(
            f"table {table} has vector({width}) but {who.format(dim=dim)}; {fix.format(width=width, dim=dim)}"
        )
    return oid, width


def _describe(embedder) -> str:
    kind = "OpenAI" if str(embedder.name).startswith("text-embedding") else "local"
    return f"the embedder {kind} {embedder.name} makes {{dim}}-dim vectors"


def insert_document(
    conn: psycopg.Connection,
    title: str,
    content: str,
    category: str | None = None,
    *,
    table: str = "documents",
    embedder=None,
) -> int:
    """Embed one document, insert it, and return its new id."""
    embedder = _embedder(embedder)
    _check_dim(conn, table, "embedding", embedder.dim, _describe(embedder))
    vector = embedder.embed_one(document_text(title, content))
    query = sql.SQL(
        "INSERT INTO {} (title, content, category, embedding) VALUES (%s, %s, %s, %s) RETURNING id"
    ).format(sql.Identifier(table))
    return conn.execute(query, (title, content, category, vector)).fetchone()[0]


def _as_row(doc: Any) -> tuple[Any, str, str, str | None]:
    if isinstance(doc, Mapping):
        return doc.get("id"), doc["title"], doc["content"], doc.get("category")
    return getattr(doc, "id", None), doc.title, doc.content, getattr(doc, "category", None)


def insert_documents(
    conn: psycopg.Connection,
    docs: Iterable[Any],
    *,
    table: str = "documents",
    embedder=None,
    batch_size: int = 64,
    progress: bool = True,
) -> int:
    """Embed documents in batches and load them with one COPY ... FORMAT BINARY; return the row count.

    `docs` are Passage objects or dicts with title, content, optional category and id
    (give an id for every document or for none). No index is built: create indexes
    after a bulk load, which is much faster than keeping them up to date row by row.
    """
    rows = [_as_row(doc) for doc in docs]
    if not rows:
        return 0
    with_ids = [row[0] is not None for row in rows]
    if any(with_ids) and not all(with_ids):
        raise ValueError("some documents have an id and some do not; give an id to every document or none")
    embedder = _embedder(embedder)
    columns = _columns(conn, table)
    vec_oid, _ = _check_dim(conn, table, "embedding", embedder.dim, _describe(embedder))
    names = ["title", "content", "category", "embedding"]
    if all(with_ids):
        names.insert(0, "id")
    else:
        rows = [row[1:] for row in rows]
    types = [columns[name][0] for name in names]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    text_at = 1 if all(with_ids) else 0
    with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types(types)
        with progress_bar(total=len(rows), desc=f"Loading {table}", unit="doc", show=progress) as bar:
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                texts = [document_text(row[text_at], row[text_at + 1]) for row in batch]
                vectors = embedder.embed(texts)
                for row, vector in zip(batch, vectors, strict=True):
                    copy.write_row((*row, vector))
                bar.update(len(batch))
    if all(with_ids):
        _sync_sequence(conn, table)
    return len(rows)


def _sync_sequence(conn: psycopg.Connection, table: str) -> None:
    # Explicit ids leave the SERIAL sequence behind; the next insert_document would collide.
    conn.execute(
        sql.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(max(id), 0) + 1, false) FROM {}"
        ).format(sql.Identifier(table)),
        (sql.Identifier(table).as_string(conn),),
    )


# COPY's binary format: a signature, flags and header-extension length, then rows, then -1.
_COPY_START = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_END = b"\xff\xff"
_ID_TYPES = {20: ">i8", 23: ">i4"}  # bigint, integer (SERIAL / BIGSERIAL)


def _binary_rows(array: np.ndarray, ids: Sequence[int] | None, id_oid: int | None) -> np.ndarray:
    """Lay out every row of a binary COPY in one numpy record array (packed, big-endian)."""
    n, dim = array.shape
    fields: list[tuple] = [("fields", ">i2")]
    if ids is not None:
        fields += [("id_size", ">i4"), ("id", _ID_TYPES[id_oid])]
    # pgvector's binary vector: int16 dimensions, int16 unused, then float4 values.
    fields += [("vec_size", ">i4"), ("dim", ">u2"), ("unused", ">u2"), ("vec", ">f4", (dim,))]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["fields"] = 1 if ids is None else 2
    if ids is not None:
        rows["id_size"] = rows.dtype["id"].itemsize
        rows["id"] = np.asarray(ids)
    rows["vec_size"] = 4 + 4 * dim
    rows["dim"], rows["unused"], rows["vec"] = dim, 0, array
    return rows


def copy_vectors(
    conn: psycopg.Connection,
    table: str,
    vectors: np.ndarray | Sequence[Sequence[float]],
    ids: Sequence[int] | None = None,
    *,
    column: str = "embedding",
    progress: bool = False,
) -> int:
    """Load vectors (and optional ids) into an existing table with COPY ... FORMAT BINARY; return the count.

    Without `ids` the id column takes its default (e.g. SERIAL); other columns must allow NULL.
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"vectors must be 2-dimensional (rows x dims), not shape {array.shape}")
    n, dim = array.shape
    if ids is not None and len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} vectors; pass one id per vector")
    _check_dim(
        conn, table, column, dim, "the vectors given have {dim} dimensions",
        "pass {width}-dim vectors, or recreate the column as vector({dim})",
    )  # fmt: skip
    id_oid = None if ids is None else _columns(conn, table)["id"][0]
    if ids is not None and id_oid not in _ID_TYPES:
        raise ValueError(f"copy_vectors needs an integer or bigint id column in {table}; leave ids out "
                         "to let the column's default fill it")  # fmt: skip
    # The whole payload is built by numpy: no Python work per row, so the load runs at the
    # server's speed (a write_row() loop spends about as long in Python as the server does).
    rows = _binary_rows(array, ids, id_oid)
    names = [column] if ids is None else ["id", column]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.write(_COPY_START)
        with progress_bar(total=n, desc=f"Copying into {table}", unit="row", show=progress) as bar:
            for start in range(0, n, _CHUNK):
                copy.write(rows[start : start + _CHUNK].tobytes())
                bar.update(min(_CHUNK, n - start))
        copy.write(_COPY_END)
    return n
