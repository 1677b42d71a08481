"""What a bench run found: medians with min-max over the repetitions, ratios to Postfix, the
table printed to stdout, the JSON files and the chart. Pure functions of the samples, apart
from the writers."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REFERENCE = "postfix"
# Metrics where less is better (shown so in the table; the ratio is still system/Postfix).
LOWER_IS_BETTER = ("_ms", "cpu", "rss", "kb_per", "ratio_time", "seconds")


@dataclass(frozen=True)
class Sample:
    """One measurement of one system in one scenario and repetition."""

    scenario: str
    system: str
    rep: int
    clients: int
    metrics: Mapping[str, float]
    note: str = ""


@dataclass(frozen=True)
class Summary:
    scenario: str
    clients: int
    system: str
    metric: str
    median: float
    low: float
    high: float
    count: int
    ratio: float | None = None  # median / Postfix's median of the same figure


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(samples: Iterable[Sample]) -> list[Summary]:
    groups: dict[tuple[str, int, str, str], list[float]] = {}
    for sample in samples:
        for metric, value in sample.metrics.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            groups.setdefault((sample.scenario, sample.clients, sample.system, metric), []).append(
                float(value)
            )
    medians = {key: statistics.median(values) for key, values in groups.items()}
    result = []
    for key, values in groups.items():
        scenario, clients, system, metric = key
        reference = medians.get((scenario, clients, REFERENCE, metric))
        ratio = (
            medians[key] / reference
            if reference not in (None, 0.0) and system != REFERENCE
            else None
        )
        result.append(
            Summary(
                scenario,
                clients,
                system,
                metric,
                medians[key],
                min(values),
                max(values),
                len(values),
                ratio,
            )
        )
    return sorted(result, key=lambda s: (s.scenario, s.clients, s.metric, s.system))


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(summaries: Sequence[Summary], units: Mapping[str, str]) -> str:
    """Text table: one line per figure, median [min-max], and its ratio to Postfix."""
    lines = [
        f"{'scenario':<12} {'clients':>7} {'figure':<24} {'system':<16} "
        f"{'median':>9} {'[min - max]':>21} {'x Postfix':>9}"
    ]
    previous: tuple[str, int, str] | None = None
    for s in summaries:
        group = (s.scenario, s.clients, s.metric)
        if previous is not None and group[:2] != previous[:2]:
            lines.append("")
        previous = group
        span = f"[{_number(s.low)} - {_number(s.high)}]"
        ratio = f"{s.ratio:.2f}" if s.ratio is not None else ""
        unit = units.get(s.metric, "")
        figure = f"{s.metric}{f' ({unit})' if unit else ''}"
        lines.append(
            f"{s.scenario:<12} {s.clients or '':>7} {figure:<24} {s.system:<16} "
            f"{_number(s.median):>9} {span:>21} {ratio:>9}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class RunRecord:
    started: str
    finished: str
    options: Mapping[str, Any]
    environment: Mapping[str, Any]
    systems: Mapping[str, Any]
    samples: Sequence[Sample]
    skipped: Mapping[str, str] = field(default_factory=dict)


def as_json(record: RunRecord, summaries: Sequence[Summary]) -> dict[str, Any]:
    data = asdict(record)
    data["summary"] = [asdict(s) for s in summaries]
    return data


def write_results(
    folder: Path, stamp: str, record: RunRecord, summaries: Sequence[Summary]
) -> tuple[Path, Path]:
    """``<stamp>.json`` and ``latest.json`` (the same content) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(as_json(record, summaries), indent=1, sort_keys=True, default=str) + "\n"
    stamped = folder / f"{stamp}.json"
    latest = folder / "latest.json"
    stamped.write_text(text)
    latest.write_text(text)
    return stamped, latest


def chart_series(
    summaries: Sequence[Summary], scenario: str, metric: str
) -> dict[str, list[tuple[int, float, float, float]]]:
    """system -> [(clients, median, min, max)] sorted by clients."""
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for s in summaries:
        if s.scenario == scenario and s.metric == metric:
            series.setdefault(s.system, []).append((s.clients, s.median, s.low, s.high))
    return {system: sorted(points) for system, points in sorted(series.items())}


def write_chart(path: Path, summaries: Sequence[Summary], title: str) -> Path:
    """Messages per second against clients for each system: acceptance and end to end, with
    the min-max of the repetitions as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    for axis, (metric, label) in zip(
        axes, (("accept_rate", "acceptance"), ("e2e_rate", "end to end")), strict=True
    ):
        for system, points in chart_series(summaries, "throughput", metric).items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            below = [p[1] - p[2] for p in points]
            above = [p[3] - p[1] for p in points]
            axis.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=3, label=system)
        axis.set_xscale("log")
        axis.set_xlabel("concurrent clients (a new connection per message)")
        axis.set_ylabel("messages / second")
        axis.set_title(f"{label} rate")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
