"""Hidden tests of exercise 2 (an index benchmark), kept by the instructor: never in the learner's copy.

The sweep has no hidden inputs: the grader re-measures the learner's own configurations.
"""

INPUTS = {
    "bench.table": None,
    # exact_top_k(query(seed), k): (seed, k)
    "bench.truth": ((201, 10), (202, 3), (203, 10)),
    # recall_at_k(found, truth, k)
    "bench.recall": (([7, 8, 9], [9, 8, 7], 3), ([4, 1, 0, 2], [0, 1, 2, 3], 4),
                     ([10, 11, 1, 2], [1, 2, 10, 11], 2), ([3], [3, 4, 5, 6, 7], 5), ([1, 2], [3, 4], 2)),
    "bench.sweep": None,
}
