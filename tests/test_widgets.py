"""Widget callbacks, run without a browser: set the controls, check what the output shows."""

from __future__ import annotations

import pytest

from pgvec_course.bench import ground_truth, load_vectors, make_dataset, mean_recall, run_queries
from pgvec_course.corpus import load_passages
from pgvec_course.db import connect
from pgvec_course.hybrid import hybrid_search
from pgvec_course.index import create_index, drop_indexes, index_settings
from pgvec_course.search import explain, search
from pgvec_course.store import create_documents_table, insert_documents
from pgvec_course.widgets import IndexTuner, SearchBox


@pytest.fixture
def data(conn):
    data = make_dataset(2000, 64, kind="clustered", queries=30, seed=2)
    load_vectors(conn, data)
    return data


def _recall(conn, data, **setting) -> float:
    run = run_queries(conn, "bench_vectors", data.queries, 10, **setting)
    return mean_recall(run.found, ground_truth(data.vectors, data.queries, 10), 10)


def test_ef_search_slider_reruns_the_queries(conn, data):
    index = create_index(conn, "hnsw", table="bench_vectors").name
    tuner = IndexTuner(conn, data, value=10)
    assert list(tuner.history) == [10]
    tuner.slider.value = 40  # what dragging the slider does: the observer calls update()
    assert list(tuner.history) == [10, 40] and tuner.box.value == 40
    # HNSW search is deterministic for one graph: the widget's recall is what a plain run finds.
    assert [tuner.history[v][0] for v in (10, 40)] == [_recall(conn, data, ef_search=v) for v in (10, 40)]
    recall, p50, p95, used = tuner.history[40]
    assert used == index
    assert tuner.output.value == (
        f"<p><b>ef_search = 40</b>: recall@10 {recall:.3f}, p50 {p50:.2f} ms, p95 {p95:.2f} ms "
        f"over 30 queries; plan: {index}</p>"
        "<table><thead><tr><th>ef_search</th><th>recall@10</th><th>p50 ms</th><th>p95 ms</th><th>plan</th>"
        "</tr></thead><tbody>"
        + "".join(
            f"<tr><td>{v}</td><td>{r:.3f}</td><td>{a:.2f}</td><td>{b:.2f}</td><td>{u}</td></tr>"
            for v, (r, a, b, u) in sorted(tuner.history.items())
        )
        + "</tbody></table>"
    )
    tuner.box.value = 25  # what typing in the box does: the slider follows, the queries run once
    assert list(tuner.history) == [10, 40, 25] and tuner.slider.value == 25
    assert tuner.output.value.startswith("<p><b>ef_search = 25</b>: recall@10 ")


def _planned(conn, data, **setting) -> bool:
    with index_settings(conn, **setting):
        query = "SELECT id FROM bench_vectors ORDER BY embedding <=> %s LIMIT %s"
        return explain(conn, query, (data.queries[0], 10)).uses_index


def test_probes_stop_where_the_planner_stops_using_the_index(conn, data):
    create_index(conn, "ivfflat", table="bench_vectors", lists=20)
    tuner = IndexTuner(conn, data, param="probes", value=1)
    assert "plan: bench_vectors_embedding_ivfflat_cosine_idx</p>" in tuner.output.value
    top = tuner.slider.max
    assert 1 < top < 20 and tuner.box.max == top
    assert _planned(conn, data, probes=top) and not _planned(conn, data, probes=top + 1)
    assert tuner.note.value == (
        f"<p><i>probes from 1 to {top}: above {top} the planner expects an exact scan of the 2,000 rows "
        "to be cheaper than bench_vectors_embedding_ivfflat_cosine_idx, so the recall there would be the "
        "scan&#x27;s, not the index&#x27;s.</i></p>")
    tuner.box.value = 50  # typed: clamped to the range, and the slider follows
    assert (tuner.box.value, tuner.slider.value, list(tuner.history)) == (top, top, [1, top])


def test_tuner_says_when_the_planner_skips_the_index(conn, data):
    create_index(conn, "ivfflat", table="bench_vectors", lists=20)
    tuner = IndexTuner(conn, data, param="probes", value=1)
    conn.execute("SET enable_indexscan = off")  # as a learner experimenting in a cell below might
    tuner.slider.value = 2
    head = tuner.output.value.split("<table>")[0]
    assert head.startswith("<p><b>probes = 2</b>: recall@10 1.000, p50 ")
    assert head.endswith("plan: seq scan <b style='color:#b00'>(the planner skipped the index: these are the "
                         "exact scan's figures)</b></p>")
    assert tuner.history[2][0] == 1.0


def test_hnsw_range_fits_the_table_and_a_dropped_index_is_reported(conn):
    data = make_dataset(5000, 384, kind="uniform", queries=20, seed=0)  # lesson 5's table, fewer queries
    load_vectors(conn, data)
    index = create_index(conn, "hnsw", table="bench_vectors").name
    tuner = IndexTuner(conn, data, value=40)
    top = tuner.slider.max
    assert 40 < top < 1000
    assert _planned(conn, data, ef_search=top) and not _planned(conn, data, ef_search=top + 1)
    assert tuner.note.value.startswith(f"<p><i>ef_search from 1 to {top}: above {top} the planner expects an "
                                       f"exact scan of the 5,000 rows to be cheaper than {index}")
    drop_indexes(conn, "bench_vectors")
    tuner.slider.value = 41
    assert tuner.output.value == (
        "<p style='color:#b00'><b>✘ bench_vectors has no HNSW index (any more?), so ef_search changes "
        "nothing: every query is an exact scan</b>; build it again: CREATE INDEX ON bench_vectors USING hnsw "
        "(embedding vector_cosine_ops)</p>")
    assert list(tuner.history) == [40]


def test_tuner_without_a_table_or_connection_says_what_to_do(conn, data):
    tuner = IndexTuner(conn, data, table="no_such_table")
    assert tuner.note.value == tuner.output.value == (
        "<p style='color:#b00'><b>✘ table no_such_table does not exist</b>; load the data first: "
        "pvc.load_vectors(conn, data, table=...)</p>")
    create_index(conn, "hnsw", table="bench_vectors")
    notebook = connect(conn.info.dsn)  # a connection of the widget's own, to close under it
    path = conn.execute("SHOW search_path").fetchone()[0]
    notebook.execute("SELECT set_config('search_path', %s, false)", (path,))
    tuner = IndexTuner(notebook, data)
    notebook.close()
    tuner.slider.value = 41
    assert tuner.output.value == (
        "<p style='color:#b00'><b>✘ the connection to Postgres is closed or broken (did the server "
        "restart?)</b>; run conn = pvc.connect(), then create this widget again with the new conn</p>")


def test_tuner_refuses_an_unknown_setting(conn, data):
    message = r"^param must be 'ef_search' \(HNSW\) or 'probes' \(IVFFlat\), not 'm'$"
    with pytest.raises(ValueError, match=message):
        IndexTuner(conn, data, param="m")


@pytest.fixture
def knowledge_base(conn):
    create_documents_table(conn, fulltext=True)
    insert_documents(conn, load_passages(), progress=False)
    return conn


def test_search_box_follows_query_category_and_mode(knowledge_base):
    conn = knowledge_base
    box = SearchBox(conn, k=3)
    assert box.output.value == "<p><i>Type a question and press Enter.</i></p>"
    assert box.category.options[0] == ("all categories", None) and len(box.category.options) == 8

    box.query.value = "how do I avoid a unique violation when inserting?"
    semantic = search(conn, "how do I avoid a unique violation when inserting?", 3)
    assert box.output.value == "<p>3 semantic results</p>" + semantic._repr_html_()
    assert semantic.ids()[0] == 1  # "Duplicate keys and upserts"

    box.category.value = "cooking"
    in_cooking = search(conn, "how do I avoid a unique violation when inserting?", 3, category="cooking")
    assert box.output.value == "<p>3 semantic results in cooking</p>" + in_cooking._repr_html_()
    assert {r.category for r in in_cooking} == {"cooking"}

    box.category.value = None
    box.mode.value = "keyword"
    box.query.value = "SQLSTATE 23505"
    keyword = box.results()
    assert keyword.ids() == [1] and keyword.value == "score"
    assert box.output.value == "<p>1 keyword result</p>" + keyword._repr_html_()

    box.mode.value = "hybrid"
    hybrid = hybrid_search(conn, "SQLSTATE 23505", 3)
    assert box.output.value == "<p>3 hybrid results</p>" + hybrid._repr_html_()
    assert hybrid.ids()[0] == 1

    box.category.value = "databases"
    assert box.output.value.startswith("<p>3 hybrid results in databases</p>")
    assert box.results().ids()[0] == 1 and {r.category for r in box.results()} == {"databases"}

    box.query.value = "  "
    assert box.output.value == "<p><i>Type a question and press Enter.</i></p>"


def test_saved_notebooks_show_the_latest_results_as_html(knowledge_base):
    box = SearchBox(knowledge_base, k=2)
    box.query.value = "sourdough starter"
    bundle = box._repr_mimebundle_()
    assert bundle["text/html"] == box.output.value
    assert bundle["text/html"].startswith("<p>2 semantic results</p><table>")
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a live kernel still draws the widget


def test_search_box_shows_its_errors_and_the_fix(conn):
    create_documents_table(conn, table="plain_docs")  # no tsv column
    insert_documents(conn, load_passages()[:20], table="plain_docs", progress=False)
    box = SearchBox(conn, table="plain_docs", k=3)
    box.query.value = "SQLSTATE 23505"
    assert box.output.value.startswith("<p>3 semantic results</p><table>")
    box.mode.value = "keyword"  # the button a learner clicks
    assert box.output.value == (
        "<p style='color:#b00'><b>✘ table plain_docs has no tsv column for full-text search; recreate it "
        "with create_documents_table(conn, fulltext=True, drop=True) and load the documents again</b></p>")
    gone = SearchBox(conn, table="dropped_docs")
    gone.query.value = "anything"
    assert gone.output.value == (
        "<p style='color:#b00'><b>✘ table dropped_docs does not exist</b>; create it first: "
        "pvc.create_corpus_table(conn, &#x27;dropped_docs&#x27;, fulltext=True)</p>")
