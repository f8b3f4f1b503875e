"""Benchmark results: one typed row per configuration, as CSV, a text table or an HTML table."""

from __future__ import annotations

import csv
import html
from dataclasses import astuple, dataclass, fields
from pathlib import Path

__all__ = ["BenchResults", "BenchRow"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class BenchRow:
    """What one configuration measured; `plan_ok` is False when the plan did not use the intended index."""

    index: str
    param: str
    value: int | None
    build_s: float
    index_bytes: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float
    recall: float
    plan_ok: bool
    build: str = ""
    plan: str = ""

    @property
    def label(self) -> str:
        """The configuration in a few words, e.g. 'hnsw ef_search=40'."""
        return f"{self.index} {self.param}={self.value}" if self.param else self.index


COLUMNS = [f.name for f in fields(BenchRow)]
# Text-table header, width and format per column.
_TEXT = [
    ("index", 7, "{}"), ("param", 9, "{}"), ("value", 5, "{}"), ("build s", 7, "{:.2f}"),
    ("size MB", 7, "{:.1f}"), ("p50 ms", 7, "{:.2f}"), ("p95 ms", 7, "{:.2f}"), ("p99 ms", 7, "{:.2f}"),
    ("QPS", 7, "{:.0f}"), ("recall", 6, "{:.3f}"), ("plan", 0, "{}"),
]  # fmt: skip


def _cells(row: BenchRow) -> list[str]:
    plan = "ok" if row.plan_ok else f"FLAGGED ({row.plan})"
    values = [row.index, row.param or "-", "-" if row.value is None else row.value, row.build_s,
              row.index_bytes / _MB, row.p50_ms, row.p95_ms, row.p99_ms, row.qps, row.recall,
              plan]  # fmt: skip
    return [v if isinstance(v, str) else fmt.format(v) for (_, _, fmt), v in zip(_TEXT, values, strict=True)]


class BenchResults(list):
    """A list of BenchRow with `to_csv()`, a text table (`str()`) and an HTML table in notebooks.

    `k` is the k of recall@k; `timings` splits the run's own time into load_s, truth_s, build_s
    and query_s, and `by_index` splits builds and queries by index kind; `title` names the data.
    """

    def __init__(self, rows=(), *, k: int = 10, timings: dict[str, float] | None = None, title: str = ""):
        super().__init__(rows)
        self.k = k
        self.timings = dict(timings or {})
        self.by_index: dict[str, dict[str, float]] = {}
        self.title = title

    def flagged(self) -> list[BenchRow]:
        """Return the rows whose plan did not use the intended index (or used one when none was wanted)."""
        return [row for row in self if not row.plan_ok]

    def to_csv(self, path: str | Path) -> Path:
        """Write one line per configuration to a CSV file and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            # Six decimals: enough for microseconds, and recall prints as 0.5, not 0.49999999999999994.
            for row in self:
                writer.writerow([round(v, 6) if isinstance(v, float) else v for v in astuple(row)])
        return path

    def __str__(self) -> str:
        lines = [self.title] if self.title else []
        lines.append("  ".join(h.rjust(w) for h, w, _ in _TEXT).rstrip())
        for row in self:
            cells = zip(_cells(row), _TEXT, strict=True)
            lines.append("  ".join(c.rjust(w) for c, (_, w, _) in cells).rstrip())
        if self.flagged():
            lines.append("FLAGGED: the plan did not use the intended index, so the row measures another plan")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<BenchResults: {len(self)} configurations>"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in _TEXT)
        body = []
        for row in self:
            style = "" if row.plan_ok else ' style="background:#fde2e1"'
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row))
            body.append(f"<tr{style}>{cells}</tr>")
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
