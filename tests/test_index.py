"""HNSW and IVFFlat indexes: building, sizing, memory estimates and per-transaction settings."""

from __future__ import annotations

import re
import warnings

import numpy as np
import psycopg
import pytest

from pgvec_course.index import (
    create_index,
    default_lists,
    drop_indexes,
    estimate_build_memory,
    index_settings,
)
from pgvec_course.store import copy_vectors


def _items(conn, n=300, dim=8, table="items"):
    conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, embedding vector({dim}))")
    copy_vectors(conn, table, np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32))


def _index_defs(conn, table="items"):
    return [
        row[0]
        for row in conn.execute(
            "SELECT regexp_replace(indexdef, ' ON \\S+', ' ON') FROM pg_indexes "
            "WHERE tablename = %s AND indexname <> %s ORDER BY indexname",
            (table, f"{table}_pkey"),
        )
    ]


def test_default_lists_follows_the_pgvector_advice():
    # rows / 1000 up to 1M rows, sqrt(rows) above, never below one list.
    rows = (0, 999, 2_500, 10_000, 1_000_000, 4_000_000)
    assert [default_lists(n) for n in rows] == [1, 1, 2, 10, 1000, 2000]


@pytest.mark.parametrize("kind", ["hnsw", "ivfflat"])
def test_create_index_for_each_metric_and_drop_them(conn, kind):
    _items(conn)
    infos = [create_index(conn, kind, table="items", metric=metric) for metric in ("cosine", "l2", "ip")]
    ops = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}
    options = "m='16', ef_construction='64'" if kind == "hnsw" else "lists='1'"
    if kind == "ivfflat":
        ops["l2"] = ""  # the default operator class of ivfflat, which pg_indexes leaves out
    assert _index_defs(conn) == [
        f"CREATE INDEX items_embedding_{kind}_{metric}_idx ON USING {kind} "
        f"(embedding{' ' * bool(ops[metric])}{ops[metric]}) WITH ({options})"
        for metric in ("cosine", "ip", "l2")
    ]
    for info, metric in zip(infos, ("cosine", "l2", "ip"), strict=True):
        assert (info.name, info.kind) == (f"items_embedding_{kind}_{metric}_idx", kind)
        size = conn.execute("SELECT pg_relation_size(%s::regclass)", (info.name,)).fetchone()[0]
        assert info.size_bytes == size > 0
        assert info.build_seconds > 0
    assert infos[0].params == ({"metric": "cosine", "m": 16, "ef_construction": 64} if kind == "hnsw"
                               else {"metric": "cosine", "lists": 1})  # fmt: skip
    names = drop_indexes(conn, "items")
    assert names == sorted(info.name for info in infos)
    assert _index_defs(conn) == []
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_pkey'").fetchone()[0] == 1


def test_ivfflat_lists_default_from_the_row_count_and_options_are_used(conn):
    _items(conn, n=2_500)
    info = create_index(conn, "ivfflat", table="items", metric="l2")
    assert info.params == {"metric": "l2", "lists": 2}
    info = create_index(conn, "hnsw", table="items", m=8, ef_construction=32, name="my_graph")
    assert str(info).startswith("hnsw index my_graph (metric=cosine, m=8, ef_construction=32): built in ")
    assert "WITH (m='8', ef_construction='32')" in _index_defs(conn)[-1]


def test_bad_index_arguments_are_explained(conn):
    _items(conn, n=10)
    cases = [
        (dict(kind="annoy"), "unknown index kind 'annoy'; use 'hnsw' or 'ivfflat'"),
        (dict(metric="dot"), "unknown metric 'dot'; use 'cosine', 'l2' or 'ip'"),
        (dict(m=0), "m must be a positive integer, not 0"),
        (dict(kind="ivfflat", lists=2.5), "lists must be a positive integer, not 2.5"),
        (dict(column="vec"), "table items has no column vec (or does not exist); check the names"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            create_index(conn, table="items", **kwargs)
        assert str(err.value) == message


def _required_mb(conn, lists):
    try:
        conn.execute(f"CREATE INDEX ON items USING ivfflat (embedding vector_l2_ops) WITH (lists = {lists})")
    except psycopg.errors.ProgramLimitExceeded as exc:
        return int(re.search(r"memory required is (\d+) MB", str(exc)).group(1))
    return None


def test_ivfflat_estimate_matches_what_pgvector_reports(conn):
    # pgvector checks memory in steps and reports the running total that first exceeds
    # maintenance_work_mem; set it to the first step's figure to read the full requirement.
    _items(conn, n=10_000, dim=1536)
    pages = conn.execute("SELECT pg_relation_size('items') / 8192").fetchone()[0]
    conn.execute("SET maintenance_work_mem = '1MB'")
    first_step = _required_mb(conn, 100)
    conn.execute(f"SET maintenance_work_mem = '{first_step}MB'")
    total = _required_mb(conn, 100)
    estimate = estimate_build_memory(10_000, 1536, "ivfflat", lists=100, heap_pages=pages)
    assert total == estimate // 2**20 + 1 == 65


def test_warns_before_maintenance_work_mem_is_exceeded(conn):
    _items(conn, n=1_500, dim=64)
    conn.execute("SET maintenance_work_mem = '1MB'")
    with pytest.warns(UserWarning) as record:
        create_index(conn, "hnsw", table="items")
    assert str(record[0].message) == (
        "this hnsw build needs about 2 MB but maintenance_work_mem is 1 MB; "
        "raise it first with SET maintenance_work_mem = '2MB'"
    )
    conn.execute("SET maintenance_work_mem = '64MB'")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_index(conn, "ivfflat", table="items")


def _setting(conn, name):
    return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]


def test_index_settings_apply_to_one_transaction(conn):
    conn.execute("SELECT '[1]'::vector")  # loads pgvector so its settings exist
    names = ("hnsw.ef_search", "ivfflat.probes", "hnsw.iterative_scan", "ivfflat.iterative_scan")
    before = [_setting(conn, name) for name in names]
    assert before == ["40", "1", "off", "off"]
    with index_settings(conn, ef_search=200, probes=7, iterative_scan="strict_order") as c:
        assert c is conn and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert [_setting(conn, name) for name in names] == ["200", "7", "strict_order", "relaxed_order"]
    assert [_setting(conn, name) for name in names] == before
    with index_settings(conn, iterative_scan=True):
        assert _setting(conn, "hnsw.iterative_scan") == "relaxed_order"


def test_index_settings_validate_values(conn):
    cases = [
        (dict(ef_search=0), "ef_search must be a positive integer, not 0"),
        (dict(ef_search="40"), "ef_search must be a positive integer, not '40'"),
        (dict(ef_search=5000), "ef_search must be between 1 and 1000 (pgvector's limit), not 5000"),
        (dict(probes=-1), "probes must be a positive integer, not -1"),
        (dict(iterative_scan="on"),
         "iterative_scan must be 'off', 'relaxed_order' or 'strict_order', not 'on'"),  # fmt: skip
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            with index_settings(conn, **kwargs):
                pass
        assert str(err.value) == message


def test_hnsw_estimate_matches_where_pgvector_runs_out_of_memory(conn):
    # pgvector says after how many tuples the graph stopped fitting in maintenance_work_mem;
    # the estimate per element should put that point within 3%.
    _items(conn, n=2_000, dim=128)
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    conn.execute("SET maintenance_work_mem = '2MB'")
    with pytest.warns(UserWarning):
        create_index(conn, "hnsw", table="items", metric="l2", m=16, ef_construction=32)
    fitted = int(re.search(r"after (\d+) tuples", " ".join(notices)).group(1))
    per_element = estimate_build_memory(1, 128, "hnsw", m=16)
    assert per_element == 520 + 32 * 16 + 200
    assert abs(2 * 2**20 / per_element - fitted) / fitted < 0.03
