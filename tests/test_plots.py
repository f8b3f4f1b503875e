"""Benchmark plots: the right axes, titles, points and labels, saved as PNG."""

from __future__ import annotations

from pgvec_course.bench import BenchResults, BenchRow
from pgvec_course.plots import plot_build_times, plot_index_sizes, plot_recall_latency, save_plots

MB = 1024 * 1024


def _row(index, value, p50, recall, *, plan_ok=True, build_s=0.0, size=0):
    param = {"none": "", "ivfflat": "probes", "hnsw": "ef_search"}[index]
    build = {"none": "", "ivfflat": "lists=100", "hnsw": "m=16,ef_construction=64"}[index]
    plan = "seq scan" if index == "none" or not plan_ok else f"{index}_idx"
    return BenchRow(index, param, value, build_s, size, p50, p50 * 1.5, p50 * 2, 1000 / p50, recall,
                    plan_ok, build, plan)  # fmt: skip


RESULTS = BenchResults(
    [
        _row("none", None, 40.0, 1.0),
        _row("ivfflat", 1, 1.0, 0.2, build_s=2.5, size=80 * MB),
        _row("ivfflat", 10, 4.0, 0.6, build_s=2.5, size=80 * MB),
        _row("ivfflat", 50, 45.0, 1.0, build_s=2.5, size=80 * MB, plan_ok=False),
        _row("hnsw", 10, 0.8, 0.3, build_s=12.0, size=78 * MB),
        _row("hnsw", 40, 2.0, 0.5, build_s=12.0, size=78 * MB),
    ],
    k=10,
    title="uniform 10000x1536, 100 queries",
)


def test_recall_latency_axes_points_and_labels():
    ax = plot_recall_latency(RESULTS).axes[0]
    assert ax.get_title() == "Recall vs latency\nuniform 10000x1536, 100 queries"
    assert ax.get_xlabel() == "median latency per query, p50 (ms, log scale)"
    assert ax.get_ylabel() == "recall@10 (share of the true top 10 found)"
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(lines) == [
        "no index (exact)",
        "IVFFlat (lists=100), labels: probes",
        "HNSW (m=16, ef_construction=64), labels: ef_search",
        "flagged: plan did not use the index",
    ]
    hnsw = lines["HNSW (m=16, ef_construction=64), labels: ef_search"]
    assert hnsw.get_xdata().tolist() == [0.8, 2.0] and hnsw.get_ydata().tolist() == [0.3, 0.5]
    assert [t.get_text() for t in ax.texts] == ["1", "10", "50 (seq scan!)", "10", "40"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)


def test_bars_show_one_bar_per_index_build():
    for fig, title, ylabel, values, texts in [
        (plot_build_times(RESULTS), "Index build time", "build time (s)", [2.5, 12.0], ["2.50 s", "12.00 s"]),
        (plot_index_sizes(RESULTS), "Index size on disk", "index size (MB)", [80.0, 78.0],
         ["80.0 MB", "78.0 MB"]),
    ]:  # fmt: skip
        ax = fig.axes[0]
        assert ax.get_title() == f"{title}\nuniform 10000x1536, 100 queries"
        assert ax.get_xlabel() == "index (build parameters)"
        assert ax.get_ylabel() == ylabel
        assert [p.get_height() for p in ax.patches] == values
        assert [t.get_text() for t in ax.get_xticklabels()] == ["IVFFlat\nlists=100",
                                                                "HNSW\nm=16, ef_construction=64"]
        assert [t.get_text() for t in ax.texts] == texts


def test_bars_without_indexes_say_so():
    ax = plot_build_times(BenchResults([_row("none", None, 40.0, 1.0)])).axes[0]
    assert len(ax.patches) == 0 and [t.get_text() for t in ax.texts] == ["no index was built"]
    assert ax.get_title() == "Index build time"


def test_save_plots_writes_pngs(tmp_path):
    paths = save_plots(RESULTS, tmp_path / "plots")
    assert [p.name for p in paths] == ["recall_latency.png", "build_time.png", "index_size.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
