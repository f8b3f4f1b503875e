"""Index benchmarks: seeded data, exact ground truth, and a sweep over no index, IVFFlat and HNSW.

A run in three lines (`python -m pgvec_course.bench --help` does the same from a terminal)::

    data = pvc.make_dataset(10_000, 1536, kind="uniform")
    results = pvc.run_benchmark(pvc.connect(prepare=False), data)
    pvc.save_plots(results, "bench-out")
"""

from .data import (
    KINDS,
    Dataset,
    DuplicateVectorsError,
    check_distinct,
    corpus_dataset,
    ground_truth,
    load_vectors,
    make_dataset,
    mean_recall,
)
from .results import BenchResults, BenchRow
from .runner import Config, QueryRun, default_configs, run_benchmark, run_queries

__all__ = [
    "KINDS",
    "BenchResults",
    "BenchRow",
    "Config",
    "Dataset",
    "DuplicateVectorsError",
    "QueryRun",
    "check_distinct",
    "corpus_dataset",
    "default_configs",
    "ground_truth",
    "load_vectors",
    "make_dataset",
    "mean_recall",
    "run_benchmark",
    "run_queries",
]
