"""The course's embedder inside ChromaDB: documents and query texts embedded offline, ranked like pgvector."""

from __future__ import annotations

import numpy as np
import pytest

chromadb = pytest.importorskip("chromadb", reason="ChromaDB is the 'chroma' extra: pip install -e .[chroma]")

from chromadb.config import Settings  # noqa: E402

from pgvec_course.chroma import ChromaEmbeddingFunction  # noqa: E402
from pgvec_course.search import search_by_vector  # noqa: E402
from pgvec_course.store import create_documents_table, insert_documents  # noqa: E402

DOCS = [
    {"id": 1, "title": "Cats", "content": "cats purr and sleep all day", "category": "pets"},
    {"id": 2, "title": "Stars", "content": "stars burn hydrogen into helium", "category": "space"},
    {"id": 3, "title": "Dogs", "content": "dogs bark and fetch sticks", "category": "pets"},
    {"id": 4, "title": "Comets", "content": "comets grow tails near the sun", "category": "space"},
]


def test_documents_and_query_texts_are_embedded_by_the_course_embedder(conn, tiny_embedder):
    ef = ChromaEmbeddingFunction(tiny_embedder)
    assert ChromaEmbeddingFunction.name() == "pgvec-course" and ef.default_space() == "cosine"
    assert repr(ef) == "<ChromaEmbeddingFunction tiny-test-embedder (16 dims)>"
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection("tiny", embedding_function=ef,
                                          configuration={"hnsw": {"space": "cosine"}})
    texts = [f"{d['title']}\n{d['content']}" for d in DOCS]
    collection.add(ids=[str(d["id"]) for d in DOCS], documents=texts)
    stored = collection.get(ids=["2"], include=["embeddings"])["embeddings"][0]
    assert np.allclose(stored, tiny_embedder.embed([texts[1]])[0], atol=1e-6)

    create_documents_table(conn, embedder=tiny_embedder)
    insert_documents(conn, DOCS, embedder=tiny_embedder, progress=False)
    for question in ("do stars burn hydrogen", "which pets bark", "tails near the sun"):
        found = collection.query(query_texts=[question], n_results=4)
        pg = search_by_vector(conn, tiny_embedder.embed_one(question), k=4)
        assert [int(i) for i in found["ids"][0]] == pg.ids()
        assert np.allclose(found["distances"][0], [r.distance for r in pg], atol=1e-5)


def test_the_config_round_trip_rebuilds_the_same_kind():
    ef = ChromaEmbeddingFunction(kind="local")
    assert ef.get_config() == {"kind": "local"}
    again = ChromaEmbeddingFunction.build_from_config(ef.get_config())
    assert repr(again) == repr(ef) == "<ChromaEmbeddingFunction all-MiniLM-L6-v2 (384 dims)>"
