"""The documents table, single and bulk inserts, and copy_vectors, on the real server."""

from __future__ import annotations

import numpy as np
import pytest

from pgvec_course.store import copy_vectors, create_documents_table, insert_document, insert_documents

DOCS = [
    {"title": "Neural networks", "content": "layers of weights learn from data", "category": "ml"},
    {"title": "Postgres", "content": "a relational database with extensions", "category": "db"},
    {"title": "Soup", "content": "simmer vegetables in stock", "category": None},
]


def _columns(conn, table="documents"):
    return conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()


def _indexes(conn, table="documents"):
    return conn.execute(
        "SELECT c.relname, a.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE i.indrelid = to_regclass(%s) ORDER BY 1",
        (table,),
    ).fetchall()


def test_create_table_takes_its_dimension_from_the_embedder(conn, tiny_embedder):
    assert create_documents_table(conn, embedder=tiny_embedder) == 16
    assert _columns(conn) == [
        ("id", "integer"),
        ("title", "text"),
        ("content", "text"),
        ("category", "text"),
        ("created_at", "timestamp with time zone"),
        ("embedding", "vector(16)"),
    ]
    assert _indexes(conn) == [("documents_pkey", "btree")]


def test_fulltext_adds_a_generated_tsvector_with_a_gin_index(conn):
    create_documents_table(conn, table="notes", dim=3, fulltext=True)
    assert _columns(conn, "notes")[-1] == ("tsv", "tsvector")
    assert _indexes(conn, "notes") == [("notes_pkey", "btree"), ("notes_tsv_idx", "gin")]
    conn.execute("INSERT INTO notes (title, content) VALUES ('Running', 'cats were running')")
    # 'were' is a stop word: dropped, but it still takes position 3.
    assert conn.execute("SELECT tsv::text FROM notes").fetchone()[0] == "'cat':2 'run':1,4"


def test_an_existing_table_of_another_size_is_reported(conn):
    create_documents_table(conn, dim=1536)
    with pytest.raises(ValueError) as err:
        create_documents_table(conn, dim=384)
    assert str(err.value) == (
        "table documents already exists with vector(1536), not vector(384); "
        "recreate it with create_documents_table(conn, drop=True)"
    )
    assert create_documents_table(conn, dim=384, drop=True) == 384


def test_insert_document_stores_the_embedding_of_title_and_content(conn, tiny_embedder):
    create_documents_table(conn, embedder=tiny_embedder)
    new_id = insert_document(conn, "Postgres", "a relational database", "db", embedder=tiny_embedder)
    assert new_id == 1
    title, category, embedding = conn.execute("SELECT title, category, embedding FROM documents").fetchone()
    assert (title, category) == ("Postgres", "db")
    expected = tiny_embedder.embed_one("Postgres\na relational database")
    assert np.array_equal(embedding.to_numpy(), expected)


def test_dimension_mismatch_names_both_sizes_and_the_embedder(conn, tiny_embedder):
    create_documents_table(conn, dim=1536)
    message = (
        "table documents has vector(1536) but the embedder local tiny-test-embedder makes 16-dim vectors; "
        "recreate the table with create_documents_table(conn, drop=True) "
        "or use the embedder it was built with"
    )
    with pytest.raises(ValueError) as err:
        insert_document(conn, "t", "c", embedder=tiny_embedder)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        insert_documents(conn, DOCS, embedder=tiny_embedder)
    assert str(err.value) == message


def test_insert_documents_copies_rows_in_order_without_an_ann_index(conn, tiny_embedder, capsys):
    create_documents_table(conn, embedder=tiny_embedder, fulltext=True)
    assert insert_documents(conn, DOCS, embedder=tiny_embedder, batch_size=2) == 3
    rows = conn.execute("SELECT id, title, category, embedding FROM documents ORDER BY id").fetchall()
    assert [r[:3] for r in rows] == [(1, "Neural networks", "ml"), (2, "Postgres", "db"), (3, "Soup", None)]
    expected = tiny_embedder.embed([f"{d['title']}\n{d['content']}" for d in DOCS])
    assert np.array_equal(np.stack([r[3].to_numpy() for r in rows]), expected)
    assert [amname for _, amname in _indexes(conn)] == ["btree", "gin"]  # no hnsw/ivfflat
    assert capsys.readouterr().err == ""  # done before a progress bar would appear


def test_a_slow_load_shows_a_progress_bar(conn, tiny_embedder, capsys, monkeypatch):
    import time

    from pgvec_course import _progress

    monkeypatch.setattr(_progress, "SHOW_AFTER", 0.2)
    embed = tiny_embedder.embed
    monkeypatch.setattr(tiny_embedder, "embed", lambda texts: time.sleep(0.15) or embed(texts))
    create_documents_table(conn, embedder=tiny_embedder)
    assert insert_documents(conn, DOCS, embedder=tiny_embedder, batch_size=1) == 3
    err = capsys.readouterr().err
    assert "Loading documents: 100%" in err and "3/3" in err


def test_insert_documents_keeps_given_ids_and_moves_the_sequence_on(conn, tiny_embedder):
    create_documents_table(conn, embedder=tiny_embedder)
    docs = [dict(doc, id=10 + i) for i, doc in enumerate(DOCS)]
    insert_documents(conn, docs, embedder=tiny_embedder, progress=False)
    assert insert_document(conn, "Later", "added afterwards", embedder=tiny_embedder) == 13
    assert [r[0] for r in conn.execute("SELECT id FROM documents ORDER BY id")] == [10, 11, 12, 13]


def test_insert_documents_refuses_a_mix_of_ids_and_no_ids(conn, tiny_embedder):
    create_documents_table(conn, embedder=tiny_embedder)
    with pytest.raises(ValueError, match="^some documents have an id and some do not; give an id to every"):
        insert_documents(conn, [dict(DOCS[0], id=1), DOCS[1]], embedder=tiny_embedder)


def test_copy_vectors_round_trips_exact_float32_values(conn):
    conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, embedding vector(64))")
    vectors = np.random.default_rng(1).standard_normal((2500, 64)).astype(np.float32)
    assert copy_vectors(conn, "items", vectors) == 2500
    assert copy_vectors(conn, "items", vectors[:3], ids=[9001, 9002, 9003]) == 3
    rows = conn.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [*range(1, 2501), 9001, 9002, 9003]
    stored = np.stack([r[1].to_numpy() for r in rows])
    assert np.array_equal(stored, np.concatenate([vectors, vectors[:3]]))


def test_copy_vectors_into_an_int_id_column_and_from_lists(conn):
    create_documents_table(conn, table="docs", dim=2)
    conn.execute("ALTER TABLE docs ALTER COLUMN title DROP NOT NULL, ALTER COLUMN content DROP NOT NULL")
    copy_vectors(conn, "docs", [[1.0, 2.0], [3.0, 4.5]], ids=[7, 8])
    assert conn.execute("SELECT id, embedding::text FROM docs ORDER BY id").fetchall() == [
        (7, "[1,2]"),
        (8, "[3,4.5]"),
    ]


def test_copy_vectors_explains_wrong_shapes(conn):
    conn.execute("CREATE TABLE items (id bigserial, embedding vector(4))")
    with pytest.raises(ValueError) as err:
        copy_vectors(conn, "items", np.zeros((2, 3)))
    assert str(err.value) == (
        "table items has vector(4) but the vectors given have 3 dimensions; "
        "pass 4-dim vectors, or recreate the column as vector(3)"
    )
    with pytest.raises(ValueError) as err:
        copy_vectors(conn, "items", np.zeros(4))
    assert str(err.value) == "vectors must be 2-dimensional (rows x dims), not shape (4,)"
    with pytest.raises(ValueError, match="^got 1 ids for 2 vectors; pass one id per vector$"):
        copy_vectors(conn, "items", np.zeros((2, 4)), ids=[1])
    with pytest.raises(ValueError) as err:
        copy_vectors(conn, "missing", np.zeros((2, 4)))
    assert str(err.value) == (
        "table missing does not exist; create it first, e.g. with create_documents_table(conn)"
    )


def test_copy_vectors_needs_an_integer_id_column_for_ids(conn):
    conn.execute("CREATE TABLE tagged (id text, embedding vector(2))")
    with pytest.raises(ValueError) as err:
        copy_vectors(conn, "tagged", [[1.0, 2.0]], ids=["a"])
    assert str(err.value) == (
        "copy_vectors needs an integer or bigint id column in tagged; "
        "leave ids out to let the column's default fill it"
    )
    assert copy_vectors(conn, "tagged", [[1.0, 2.0]]) == 1
