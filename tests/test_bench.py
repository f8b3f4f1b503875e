"""The benchmark toolkit against the real server: data, duplicate guard, ground truth, sweep, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from pgvec_course.bench import (
    BenchResults,
    Config,
    DuplicateVectorsError,
    check_distinct,
    default_configs,
    ground_truth,
    load_vectors,
    make_dataset,
    mean_recall,
    run_benchmark,
    run_queries,
)
from pgvec_course.bench.__main__ import main
from pgvec_course.index import create_index, index_settings
from pgvec_course.search import explain

CSV_HEADER = ["index", "param", "value", "build_s", "index_bytes", "p50_ms", "p95_ms", "p99_ms", "qps",
              "recall", "plan_ok", "build", "plan"]  # fmt: skip


def test_datasets_are_seeded_and_shaped():
    a = make_dataset(300, 16, kind="clustered", queries=7, seed=3)
    b = make_dataset(300, 16, kind="clustered", queries=7, seed=3)
    assert a.vectors.shape == (300, 16) and a.queries.shape == (7, 16)
    assert a.vectors.dtype == np.float32
    assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.queries, b.queries)
    assert not np.array_equal(a.vectors, make_dataset(300, 16, kind="clustered", queries=7, seed=4).vectors)
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-6)
    assert a.ids.tolist() == list(range(1, 301))
    uniform = make_dataset(1000, 8, kind="uniform").vectors
    assert uniform.min() >= 0.0 and uniform.max() < 1.0
    assert repr(a) == "<Dataset clustered 300x16: 300 x 16 vectors, 7 queries>"


def test_unknown_kind_is_refused():
    message = r"^unknown data kind 'normal'; choose one of uniform, gaussian, clustered$"
    with pytest.raises(ValueError, match=message):
        make_dataset(10, 4, kind="normal")


def test_ground_truth_breaks_ties_by_id_and_follows_the_metric():
    vectors = np.array([[1, 0], [2, 0], [0, 1], [1, 1]], dtype=np.float32)
    query = np.array([[1, 0]], dtype=np.float32)
    # ids 1 and 2 point the same way: equal cosine distance, so the smaller id comes first.
    assert ground_truth(vectors, query, 3).tolist() == [[1, 2, 4]]
    assert ground_truth(vectors, np.array([[0.9, 0.9]]), 3, metric="l2").tolist() == [[4, 1, 3]]
    assert ground_truth(vectors, query, 2, metric="ip").tolist() == [[2, 1]]
    assert ground_truth(vectors, query, 2, ids=[40, 30, 20, 10]).tolist() == [[30, 40]]


def test_mean_recall_counts_ids():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert mean_recall([[4, 3, 2, 1], [5, 9, 10, 11]], truth, k=4) == 0.625
    with pytest.raises(ValueError, match=r"^got results for 1 queries but ground truth for 2$"):
        mean_recall([[1]], truth, k=4)


def test_same_vector_in_every_row_is_detected(conn):
    conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, embedding vector(8))")
    # The classic mistake: the subquery does not refer to g, so Postgres runs it once.
    conn.execute(
        "INSERT INTO items SELECT g, (SELECT array_agg(random()) FROM generate_series(1, 8))::vector "
        "FROM generate_series(1, 50) g"
    )
    with pytest.raises(DuplicateVectorsError) as err:
        check_distinct(conn, "items")
    assert str(err.value) == (
        "all 50 rows of items have the same embedding: an uncorrelated subquery such as "
        "(SELECT array_agg(random()) FROM generate_series(1, dim)) runs once and its result is "
        "reused for every row; make the subquery refer to the outer row, or generate the "
        "vectors in Python and load them with copy_vectors()"
    )


def test_some_repeated_vectors_are_detected(conn):
    data = make_dataset(20, 4, queries=1)
    data.vectors[5] = data.vectors[6]
    message = r"^bench_vectors has 20 rows but only 19 distinct values of embedding; repeated vectors"
    with pytest.raises(DuplicateVectorsError, match=message):
        load_vectors(conn, data)
    assert load_vectors(conn, make_dataset(20, 4, queries=1)) == 20


@pytest.fixture
def sweep(conn) -> BenchResults:
    data = make_dataset(2000, 64, kind="uniform", queries=100, seed=0)
    return run_benchmark(conn, data, progress=False)


def test_default_sweep_on_a_small_table(sweep):
    assert [(r.index, r.value) for r in sweep] == [
        ("none", None), *[("ivfflat", p) for p in (1, 2, 5, 10, 20)],
        *[("hnsw", ef) for ef in (10, 20, 40, 80, 160, 400)],
    ]  # fmt: skip
    exact = sweep[0]
    assert exact.recall == 1.0 and exact.plan_ok and exact.plan == "seq scan" and exact.index_bytes == 0
    for kind in ("ivfflat", "hnsw"):
        rows = [r for r in sweep if r.index == kind]
        assert rows[0].plan_ok, f"{kind} at its smallest setting should use the index"
        assert rows[0].index_bytes > 0 and rows[0].build_s > 0
        for before, after in zip(rows, rows[1:], strict=False):
            assert after.recall >= before.recall - 0.02, (before, after)
    for row in sweep:
        assert row.p50_ms <= row.p95_ms <= row.p99_ms and row.qps > 0
    assert set(sweep.timings) == {"load_s", "truth_s", "build_s", "query_s"}


def test_results_as_csv_text_and_html(sweep, tmp_path):
    path = sweep.to_csv(tmp_path / "out" / "results.csv")
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_HEADER
    assert rows[1][:3] == ["none", "", ""] and rows[1][9:11] == ["1.0", "True"]
    text = str(sweep).splitlines()
    assert text[0] == "uniform 2000x64, 100 queries"
    assert text[1].split() == ["index", "param", "value", "build", "s", "size", "MB", "p50", "ms", "p95",
                               "ms", "p99", "ms", "QPS", "recall", "plan"]  # fmt: skip
    assert text[2].split()[:3] == ["none", "-", "-"] and text[2].split()[-2:] == ["1.000", "ok"]
    assert sweep._repr_html_().startswith("<table><caption>uniform 2000x64, 100 queries</caption>")


def test_config_when_the_planner_skips_the_index_is_flagged(conn):
    data = make_dataset(2000, 64, kind="uniform", queries=100, seed=1)
    configs = [Config("ivfflat", 1, lists=20), Config("ivfflat", 20, lists=20)]
    results = run_benchmark(conn, data, configs=configs, progress=False)
    assert [(r.value, r.plan_ok, r.plan) for r in results] == [
        (1, True, "bench_vectors_embedding_ivfflat_cosine_idx"),
        (20, False, "seq scan"),
    ]
    assert results.flagged() == [results[1]]
    assert results[1].recall == 1.0  # the sequential scan it fell back to is exact
    assert str(results).splitlines()[-2].endswith("FLAGGED (seq scan)")
    assert str(results).splitlines()[-1] == (
        "FLAGGED: the plan did not use the intended index, so the row measures another plan"
    )
    # What EXPLAIN shows on its own: probes = lists costs more than reading the table.
    load_vectors(conn, data)
    create_index(conn, "ivfflat", table="bench_vectors", lists=20)
    query = "SELECT id FROM bench_vectors ORDER BY embedding <=> %s LIMIT 10"
    with index_settings(conn, probes=20):
        plan = explain(conn, query, (data.queries[0],))
    assert not plan.uses_index and "Seq Scan on bench_vectors" in plan.text


def test_default_configs_fit_the_table():
    configs = default_configs(10_000)
    assert [c.build for c in configs[:2]] == ["", "lists=100"]
    assert [c.value for c in configs if c.index == "ivfflat"] == [1, 2, 5, 10, 20, 50]
    assert [c.value for c in configs if c.index == "hnsw"] == [10, 20, 40, 80, 160, 400]
    assert configs[-1].build == "m=16,ef_construction=64"
    assert [c.value for c in default_configs(500) if c.index == "ivfflat"] == [1, 2, 5]
    with pytest.raises(ValueError, match=r"^an ivfflat Config needs lists=N"):
        Config("ivfflat", 5)


def test_cli_writes_csv_and_plots(test_db_url, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["--n", "1000", "--dim", "32", "--data", "clustered", "--queries", "20", "--out", str(out),
                 "--probes", "1,10", "--ef-search", "10,40"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("clustered 1000x32, 20 queries\n")
    assert f"wrote {out / 'results.csv'}\n" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "build_time.png", "index_size.png", "recall_latency.png", "results.csv"
    ]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["index"], r["value"]) for r in rows] == [
        ("none", ""), ("ivfflat", "1"), ("ivfflat", "10"), ("hnsw", "10"), ("hnsw", "40")
    ]


def test_queries_are_planned_afresh_on_a_preparing_connection(conn):
    # The conn fixture keeps psycopg's default: statements are prepared after 5 runs, and a
    # cached plan would survive a change of ivfflat.probes.
    assert conn.prepare_threshold == 5
    data = make_dataset(2000, 64, kind="uniform", queries=50, seed=5)
    load_vectors(conn, data)
    create_index(conn, "ivfflat", table="bench_vectors", lists=20)
    truth = ground_truth(data.vectors, data.queries, 10)
    few = run_queries(conn, "bench_vectors", data.queries, probes=1)
    every = run_queries(conn, "bench_vectors", data.queries, probes=20)
    assert few.plan.uses_index and not every.plan.uses_index
    assert mean_recall(few.found, truth) < 0.5 and mean_recall(every.found, truth) == 1.0
    assert conn.prepare_threshold == 5
