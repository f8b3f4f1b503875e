"""The local model's vectors of the course corpus, shipped with the package so nobody waits for them.

    python -m pgvec_course.corpus_vectors      # rebuild data/corpus_vectors.npz after editing data/

The file holds all-MiniLM-L6-v2's vector of every passage (title and content, as the lessons
embed it, and content alone, as the exercises do) and of every labelled question, keyed by
the sha256 of the text. The cached local embedder serves these texts from here instead of
running the model; `tests/test_corpus_vectors.py` embeds them all again and compares.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

FILE = "data/corpus_vectors.npz"
MODEL = "all-MiniLM-L6-v2/384"  # the cache's model key: name/dimensions


def corpus_texts() -> list[str]:
    """Return every text the course embeds from its corpus, distinct, in a fixed order."""
    from .corpus import load_passages, load_queries
    from .store import document_text

    passages = load_passages()
    texts = [document_text(p.title, p.content) for p in passages]
    texts += [p.content for p in passages]
    texts += [q.query for q in load_queries()]
    return list(dict.fromkeys(texts))


def text_key(text: str) -> bytes:
    """Return the key a text is stored under: the sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@lru_cache(maxsize=1)
def _shipped() -> tuple[dict[bytes, int], np.ndarray]:
    path = resources.files("pgvec_course") / FILE
    try:
        with path.open("rb") as f, np.load(f) as data:
            keys, vectors, model = data["keys"], data["vectors"], str(data["model"])
    except FileNotFoundError:
        return {}, np.empty((0, 0), dtype=np.float32)
    if model != MODEL:
        return {}, np.empty((0, 0), dtype=np.float32)
    return {bytes(key): row for row, key in enumerate(keys)}, vectors


def lookup(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Return the shipped vectors of those texts that have one, by text."""
    index, vectors = _shipped()
    found = {}
    for text in texts:
        row = index.get(text_key(text))
        if row is not None:
            found[text] = vectors[row]
    return found


def build(path: str | Path | None = None) -> Path:
    """Embed every corpus text with the local model and write the vectors file; return its path."""
    from .embed import MINILM_SHA256, LocalEmbedder

    embedder = LocalEmbedder()
    if f"{embedder.name}/{embedder.dim}" != MODEL:
        raise RuntimeError(f"the local model is {embedder.name}/{embedder.dim}, not {MODEL}; update MODEL")
    texts = corpus_texts()
    vectors = embedder.embed(texts)
    keys = np.frombuffer(b"".join(text_key(t) for t in texts), dtype=np.uint8).reshape(len(texts), 32)
    path = Path(path) if path else Path(str(resources.files("pgvec_course") / FILE))
    with path.open("wb") as f:
        np.savez_compressed(f, keys=keys, vectors=vectors, model=np.array(MODEL),
                            model_sha256=np.array(MINILM_SHA256))  # fmt: skip
    _shipped.cache_clear()
    return path


def main() -> int:
    path = build(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"wrote {len(corpus_texts())} vectors to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
