"""The corpus vectors shipped with the package: complete, the model's own, and served by the embedder."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from pgvec_course import corpus_vectors
from pgvec_course._embed_cache import CachedEmbedder
from pgvec_course.corpus import load_passages, load_queries
from pgvec_course.embed import MINILM_SHA256, LocalEmbedder
from pgvec_course.store import document_text

REBUILD = "run 'python -m pgvec_course.corpus_vectors' to rebuild the file"


@pytest.fixture(scope="module")
def shipped():
    with (resources.files("pgvec_course") / corpus_vectors.FILE).open("rb") as f, np.load(f) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def local():
    return LocalEmbedder()


def test_the_file_holds_every_corpus_text_once_for_this_model(shipped):
    texts = corpus_vectors.corpus_texts()
    passages, queries = load_passages(), load_queries()
    assert len(texts) == 2 * len(passages) + len(queries) == 794  # no passage equals a question
    assert str(shipped["model"]) == "all-MiniLM-L6-v2/384"
    assert str(shipped["model_sha256"]) == MINILM_SHA256, f"made by another model file; {REBUILD}"
    keys = [bytes(k) for k in shipped["keys"]]
    assert keys == [corpus_vectors.text_key(t) for t in texts], f"the corpus changed; {REBUILD}"
    assert shipped["vectors"].dtype == np.float32 and shipped["vectors"].shape == (794, 384)


def test_the_shipped_vectors_are_what_the_model_computes(shipped, local):
    # Every 5th text of each kind (titled passage, content alone, question): 159 texts in a few
    # seconds. A vector does not depend on the batch it was computed in (the test below), so a
    # sample checks the model; the keys test above checks that every text is there.
    texts = corpus_vectors.corpus_texts()
    rows = list(range(0, len(texts), 5))
    fresh = local.embed([texts[i] for i in rows])
    difference = np.abs(fresh - shipped["vectors"][rows]).max()
    assert difference <= 1e-6, f"the shipped vectors differ from the model's by up to {difference}; {REBUILD}"


def test_a_vector_does_not_depend_on_its_batch(local):
    texts = corpus_vectors.corpus_texts()[:40]
    together = local.embed(texts)
    alone = np.stack([local.embed([t])[0] for t in texts[::7]])
    assert np.array_equal(together[::7], alone)


def test_the_cached_local_embedder_serves_corpus_texts_without_the_model(tmp_path, monkeypatch):
    embedder = CachedEmbedder(LocalEmbedder(), path=tmp_path / "cache.sqlite")

    def refuse(texts):
        raise AssertionError(f"the model was asked to embed {len(texts)} texts")

    monkeypatch.setattr(embedder.inner, "embed", refuse)
    passages = load_passages()
    texts = [document_text(p.title, p.content) for p in passages] + [q.query for q in load_queries()]
    vectors = embedder.embed(texts)
    assert (embedder.hits, embedder.misses) == (518, 0)
    assert np.array_equal(vectors, np.stack([corpus_vectors.lookup(texts)[t] for t in texts]))
    assert embedder.store.get("all-MiniLM-L6-v2/384", texts, 384) == {}  # nothing copied into the cache


def test_other_texts_and_other_embedders_still_go_to_the_model(tmp_path, tiny_embedder):
    local = CachedEmbedder(LocalEmbedder(), path=tmp_path / "cache.sqlite")
    local.embed([load_passages()[0].content, "a sentence no lesson embeds"])
    assert (local.hits, local.misses) == (1, 1)
    # Another embedder never gets MiniLM's vectors, even if it claimed the same name.
    tiny_embedder.name = "all-MiniLM-L6-v2"
    other = CachedEmbedder(tiny_embedder, path=tmp_path / "other.sqlite")
    vector = other.embed([load_passages()[0].content])
    assert (other.hits, other.misses) == (0, 1) and vector.shape == (1, 16)
