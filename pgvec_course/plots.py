"""Plots of benchmark results: recall against latency, build times and index sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .bench.results import BenchRow

__all__ = ["plot_build_times", "plot_index_sizes", "plot_recall_latency", "save_plots"]

_MB = 1024 * 1024
_COLOURS = {"none": "black", "ivfflat": "tab:blue", "hnsw": "tab:orange"}
_NAMES = {"none": "no index (exact)", "ivfflat": "IVFFlat", "hnsw": "HNSW"}
_LABEL_OFFSET = {"ivfflat": (5, -12), "hnsw": (-4, 7)}  # points: IVFFlat labels below, HNSW above


def _figure(size=(7.5, 5)) -> Figure:
    # pyplot picks Agg by itself when there is no display; closing the figure right away keeps
    # notebooks from drawing it twice (once at the end of the cell, once as the cell's value).
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, layout="constrained")
    plt.close(fig)
    return fig


def _suffix(results: Sequence[BenchRow]) -> str:
    title = getattr(results, "title", "")
    return f"\n{title}" if title else ""


def _groups(results: Sequence[BenchRow]) -> dict[tuple[str, str], list[BenchRow]]:
    groups: dict[tuple[str, str], list[BenchRow]] = {}
    for row in results:
        groups.setdefault((row.index, row.build), []).append(row)
    return groups


def _build_label(index: str, build: str) -> str:
    return f"{_NAMES.get(index, index)}\n{build.replace(',', ', ')}" if build else _NAMES.get(index, index)


def plot_recall_latency(results: Sequence[BenchRow]) -> Figure:
    """Draw recall@k against median latency, one line per index build, each point labelled by its setting."""
    k = getattr(results, "k", 10)
    fig = _figure()
    ax = fig.add_subplot()
    for (index, build), rows in _groups(results).items():
        rows = sorted(rows, key=lambda r: (r.value is None, r.value))
        label = _NAMES.get(index, index) + (f" ({build.replace(',', ', ')})" if build else "")
        if rows[0].param:
            label += f", labels: {rows[0].param}"
        colour = _COLOURS.get(index)
        ax.plot([r.p50_ms for r in rows], [r.recall for r in rows], marker="o", color=colour, label=label)
        for r in rows:
            text = "" if r.value is None else str(r.value)
            if not r.plan_ok:
                # A flagged point measured another plan; say so where the reader looks.
                text = f"{text} ({r.plan}!)".strip()
                ax.plot([r.p50_ms], [r.recall], marker="x", color="red", markersize=12)
            if text:
                ax.annotate(text, (r.p50_ms, r.recall), textcoords="offset points", fontsize=8,
                            xytext=_LABEL_OFFSET.get(index, (5, -12)), color=colour)
    if any(not r.plan_ok for r in results):
        ax.plot([], [], "x", color="red", markersize=10, label="flagged: plan did not use the index")
    ax.set_xscale("log")
    # Plain numbers (0.5, 1, 2, 5 ms) read better than 5 x 10^-1.
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("median latency per query, p50 (ms, log scale)")
    ax.set_ylabel(f"recall@{k} (share of the true top {k} found)")
    # Zoom on the recalls measured (in steps of 0.1), or easy data would sit in a thin band at the top.
    low = math.floor((min((r.recall for r in results), default=0.0) - 0.02) * 10) / 10
    ax.set_ylim(max(0.0, low) - 0.02, 1.03)
    ax.set_title("Recall vs latency" + _suffix(results))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _bars(results: Sequence[BenchRow], value, ylabel: str, title: str, fmt: str) -> Figure:
    builds = [(key, rows[0]) for key, rows in _groups(results).items() if key[0] != "none"]
    fig = _figure((6, 4.5))
    ax = fig.add_subplot()
    labels = [_build_label(*key) for key, _ in builds]
    heights = [value(row) for _, row in builds]
    bars = ax.bar(labels, heights, width=0.5, color=[_COLOURS.get(key[0]) for key, _ in builds])
    ax.bar_label(bars, labels=[fmt.format(h) for h in heights])
    if not builds:
        ax.text(0.5, 0.5, "no index was built", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("index (build parameters)")
    ax.set_ylabel(ylabel)
    ax.set_title(title + _suffix(results))
    ax.margins(y=0.15)
    return fig


def plot_build_times(results: Sequence[BenchRow]) -> Figure:
    """Draw one bar per index build: the seconds CREATE INDEX took."""
    return _bars(results, lambda r: r.build_s, "build time (s)", "Index build time", "{:.2f} s")


def plot_index_sizes(results: Sequence[BenchRow]) -> Figure:
    """Draw one bar per index build: its size on disk in MB."""
    return _bars(results, lambda r: r.index_bytes / _MB, "index size (MB)", "Index size on disk", "{:.1f} MB")


PLOTS = {
    "recall_latency.png": plot_recall_latency,
    "build_time.png": plot_build_times,
    "index_size.png": plot_index_sizes,
}


def save_plots(results: Sequence[BenchRow], out_dir: str | Path) -> list[Path]:
    """Draw every plot and save each as a PNG in `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, plot in PLOTS.items():
        path = out / name
        plot(results).savefig(path, dpi=120)
        paths.append(path)
    return paths
