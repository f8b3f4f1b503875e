"""How fast is the local embedder? Load time, texts/second by batch size, cached vs not.

    .venv/bin/python benchmarks/embed_speed.py [--texts 512]

Runs offline. The texts are made here from a fixed seed: mostly short (like
titles and questions), some paragraphs, a few over the model's 256-token limit.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

WORDS = (
    "postgres vector index query search embedding table column row distance cosine nearest "
    "neighbour recall latency graph list cluster centroid probe filter planner scan sort limit "
    "order the a of to and in is that for with on as by it this from be are at or an which we "
    "data model text document chunk token batch cache notebook lesson learner result score rank"
).split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Return n texts: 70% of 5-30 words, 25% of 40-150, 5% of 250-400."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        low, high = rng.choices([(5, 30), (40, 150), (250, 400)], weights=[70, 25, 5])[0]
        length = rng.randint(low, high)
        texts.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
    return texts


def timed(fn, repeat: int = 1) -> tuple[float, float]:
    """Return (wall, CPU) seconds of the fastest of `repeat` calls."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars would garble the table
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="how many texts to embed (default 512)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is shown")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the long texts' truncation warning, once per run
    texts = make_texts(args.texts)

    start = time.perf_counter()
    from pgvec_course.embed import LocalEmbedder

    imported = time.perf_counter()
    model = LocalEmbedder()
    loaded = time.perf_counter()
    model.embed(texts[:8])  # the first run allocates onnxruntime's buffers: keep it out of the figures
    from tokenizers import Tokenizer  # here, so that the load time above includes its import

    counter = Tokenizer.from_file(str(resources.files("pgvec_course") / "data/minilm/tokenizer.json"))
    counter.no_padding()
    counter.enable_truncation(max_length=256)
    tokens = sum(len(e.ids) for e in counter.encode_batch(texts))

    rows = []
    for batch_size in (8, 16, 32, 64):
        embedder = LocalEmbedder(batch_size=batch_size)
        rows.append((f"local, batch {batch_size}", *timed(lambda e=embedder: e.embed(texts), args.repeat)))

    from pgvec_course._embed_cache import CachedEmbedder

    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEmbedder(LocalEmbedder(), path=Path(tmp) / "embeddings.sqlite")
        rows.append(("cached, all misses (embed + write)", *timed(lambda: cached.embed(texts))))
        rows.append(("cached, all hits (read only)", *timed(lambda: cached.embed(texts), args.repeat)))

    print(f"import pgvec_course.embed      {imported - start:7.3f} s")
    print(f"load model (sha256 + session)  {loaded - imported:7.3f} s\n")
    print(f"{'what':<36}{'wall s':>8}{'texts/s':>9}{'CPU s':>8}")
    for what, wall, cpu in rows:
        print(f"{what:<36}{wall:8.3f}{len(texts) / wall:9.0f}{cpu:8.2f}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{len(texts)} texts, {tokens} tokens after truncation; best of {args.repeat} runs "
        f"(all misses: one run); load average {load} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
