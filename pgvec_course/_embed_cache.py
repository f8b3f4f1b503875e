"""Embed each text once per machine: vectors kept in a SQLite file that every notebook shares."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from .config import settings
from .corpus_vectors import lookup as shipped_vectors
from .embed import Embedder, LocalEmbedder, check_texts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,        -- name/dimensions, e.g. 'text-embedding-3-small/1536'
    text_sha256 BLOB NOT NULL,  -- texts can be long and only equality matters
    vector BLOB NOT NULL,       -- float32, little-endian
    PRIMARY KEY (model, text_sha256)
) WITHOUT ROWID
"""
_CHUNK = 900  # SQLite before 3.32 allows 999 parameters in one statement


class CachedEmbedder(Embedder):
    """Wrap an embedder so that each (model, text) is embedded once on this machine.

    Vectors live in `settings().cache_dir / "embeddings.sqlite"` unless `path`
    is given; the local model's vectors of the course corpus ship with the package
    (`corpus_vectors.py`) and are served from there. `hits` counts texts served
    without the model, `misses` the distinct texts that had to be embedded.
    """

    def __init__(self, inner: Embedder, *, path: str | Path | None = None):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.store = EmbeddingStore(path or settings().cache_dir / "embeddings.sqlite")
        self.hits = self.misses = 0

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        texts = check_texts(texts)
        model = f"{self.name}/{self.dim}"
        found = shipped_vectors(texts) if isinstance(self.inner, LocalEmbedder) else {}
        rest = [t for t in texts if t not in found]
        if rest:
            found.update(self.store.get(model, rest, self.dim))
        todo = [t for t in dict.fromkeys(texts) if t not in found]  # distinct, in first-seen order
        self.hits += sum(1 for t in texts if t in found)
        self.misses += len(todo)
        if todo:
            vectors = self.inner.embed(todo)
            self.store.put(model, todo, vectors)
            found.update(zip(todo, vectors, strict=True))
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"<CachedEmbedder {self.inner!r} in {self.store.path}>"


class EmbeddingStore:
    """Vectors keyed by (model, text) in a SQLite file, safe for several processes at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Another notebook's write holds the lock for milliseconds: wait for it rather than fail.
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")  # readers go on while another process writes
        conn.execute(_SCHEMA)
        return conn

    def get(self, model: str, texts: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """Return the stored vectors of those texts that have one, by text."""
        by_key = {_key(text): text for text in texts}
        keys = list(by_key)
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as conn:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                rows = conn.execute(
                    "SELECT text_sha256, vector FROM embeddings"
                    f" WHERE model = ? AND text_sha256 IN ({','.join('?' * len(chunk))})",
                    [model, *chunk],
                )
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype="<f4")
                    if vector.size == dim:  # anything else is a damaged row: embed the text again
                        found[by_key[key]] = vector
        return found

    def put(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text, in one transaction."""
        rows = [
            (model, _key(t), np.asarray(v, dtype="<f4").tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        with closing(self._connect()) as conn, conn:
            conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()
