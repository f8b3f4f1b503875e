"""Hidden tests of exercise 3 (hybrid search), kept by the instructor: never in the learner's copy.

`reference_evaluation` is the instructor's own evaluation of the three methods on the labelled
queries, computed from the course corpus: the grader compares a learner's `evaluation` with it.
"""


def reference_evaluation(ctx):
    """Return recall@5 and MRR per method and query kind, computed from the corpus."""
    from pgvec_course.corpus import load_queries
    from pgvec_course.questions import fusion, hybrid
    from pgvec_course.questions.tables import cosine_distances, ranked

    queries = load_queries()
    corpus, vectors, ranks = hybrid.references(ctx, [q.query for q in queries])
    found = {"semantic": [], "weighted": [], "rrf": []}
    for vector, (text, _) in zip(vectors, ranks, strict=True):
        dist = cosine_distances(corpus.reference, vector)
        found["semantic"].append([int(i) for i in ranked(corpus.ids, dist)[:5]])
        found["weighted"].append(fusion.top(fusion.weighted_scores(corpus.ids, dist, text, 5, 0.7), 5))
        found["rrf"].append(fusion.top(fusion.rrf_scores(corpus.ids, dist, text, 60), 5))
    return hybrid.metrics(found)


INPUTS = {
    "hybrid.table": None,
    # weighted_hybrid(query, k, semantic_weight): in the first two and the last, a passage outside
    # the semantic top 2k would win a blend over every passage.
    "hybrid.weighted": (("error SQLSTATE 40001", 5, 0.3), ("fix SQLSTATE 42883", 4, 0.2),
                        ("python GIL threads", 5, 0.3), ("ON CONFLICT upsert", 5, 0.6),
                        ("error SQLSTATE 23505", 5, 0.3)),
    # rrf_hybrid(query, k, rrf_k)
    "hybrid.rrf": (("my sourdough starter", 5, 60), ("kubernetes pod restarts", 3, 10),
                   ("what is GELU", 4, 20), ("the planet closest to the sun", 5, 30)),
    "hybrid.eval": reference_evaluation,
}
