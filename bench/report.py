"""What a bench run found: medians with min-max over the repetitions, ratios to Postfix, the
table printed to stdout, the JSON files and the chart. Pure functions of the samples, apart
from the writers."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REFERENCE = "postfix"


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


ROLE_PREFIX = "cpu_ms_"
REST_ROLE_PREFIX = "rest_cpu_pct_"
# The same colour for a system in every chart, so that charts of different runs compare.
COLOURS = {
    "direct": "tab:gray",
    "postfix": "tab:blue",
    "relay-postgres": "tab:red",
    "relay-embedded": "tab:green",
}
HIDDEN = ("open",)  # bookkeeping, in the JSON only


def shown(summary: Summary) -> bool:
    """The main table leaves out the CPU of each role (the CPU table has it), bookkeeping,
    and the count of failed messages when there were none."""
    if summary.metric.startswith((ROLE_PREFIX, REST_ROLE_PREFIX)) or summary.metric in HIDDEN:
        return False
    return not (summary.metric == "failed" and summary.high == 0)


def _system_key(order: Sequence[str]) -> Callable[[Summary], tuple[str, int, str, int, str]]:
    def key(s: Summary) -> tuple[str, int, str, int, str]:
        rank = order.index(s.system) if s.system in order else len(order)
        return (s.scenario, s.clients, s.metric, rank, s.system)

    return key


def table(summaries: Sequence[Summary], units: Mapping[str, str], order: Sequence[str] = ()) -> str:
    """Text table: one line per figure, median [min-max], and its ratio to Postfix."""
    lines = [
        f"{'scenario':<11} {'clients':>7} {'figure':<31} {'system':<15} "
        f"{'median':>8} {'[min - max]':>19} {'x Postfix':>9}"
    ]
    previous: tuple[str, int] | None = None
    for s in sorted(filter(shown, summaries), key=_system_key(order)):
        if previous is not None and (s.scenario, s.clients) != previous:
            lines.append("")
        previous = (s.scenario, s.clients)
        span = f"[{_number(s.low)} - {_number(s.high)}]"
        ratio = f"{s.ratio:.2f}" if s.ratio is not None else ""
        unit = units.get(s.metric, "")
        figure = f"{s.metric}{f' ({unit})' if unit else ''}"
        lines.append(
            f"{s.scenario:<11} {s.clients or '':>7} {figure:<31} {s.system:<15} "
            f"{_number(s.median):>8} {span:>19} {ratio:>9}"
        )
    return "\n".join(lines)


def cpu_table(
    summaries: Sequence[Summary],
    order: Sequence[str] = (),
    scenario: str = "throughput",
    prefix: str = ROLE_PREFIX,
    title: str = "CPU ms per message by process (median; trees incl. children)",
) -> str:
    """Median CPU of each process (tree) of each system in one scenario: by default the
    milliseconds per message in the throughput scenario. One line per clients and system, one
    column per role."""
    cells: dict[tuple[int, str], dict[str, float]] = {}
    roles: list[str] = []
    for s in summaries:
        if s.scenario != scenario or not s.metric.startswith(prefix):
            continue
        role = s.metric.removeprefix(prefix)
        if role not in roles:
            roles.append(role)
        cells.setdefault((s.clients, s.system), {})[role] = s.median
    if not cells:
        return ""
    header = f"{'clients':>7} {'system':<15} " + " ".join(f"{role:>9}" for role in roles)
    lines = [title, header]

    def rank(key: tuple[int, str]) -> tuple[int, int, str]:
        clients, system = key
        return (clients, order.index(system) if system in order else len(order), system)

    for key in sorted(cells, key=rank):
        row = cells[key]
        values = " ".join(f"{_number(row[r]) if r in row else '':>9}" for r in roles)
        lines.append(f"{key[0] or '':>7} {key[1]:<15} {values}")
    return "\n".join(lines)


DELIVERY_COLUMNS = (
    ("relay", "relay_cpu_ms"),
    ("delivery", "delivery_cpu_ms"),
    ("all", "cpu_ms"),
    ("x Postfix", ""),
    ("e2e msg/s", "e2e_rate"),
    ("max depth", "broker_max_depth"),
)


def delivery_table(
    summaries: Sequence[Summary], order: Sequence[str] = (), scenario: str = "throughput"
) -> str:
    """End to end by clients and system (medians): CPU ms per message of the relay and of the
    delivery side (Celery worker, beat, database, broker), of everything (Postfix: its whole
    cost) and that as a multiple of Postfix's, the end-to-end rate and the broker's maximum
    queue depth during the run."""
    cells: dict[tuple[int, str], dict[str, float]] = {}
    wanted = {metric for _, metric in DELIVERY_COLUMNS if metric}
    for s in summaries:
        if s.scenario == scenario and s.metric in wanted:
            cells.setdefault((s.clients, s.system), {})[s.metric] = s.median
    if not any("delivery_cpu_ms" in row for row in cells.values()):
        return ""
    header = f"{'clients':>7} {'system':<15} " + " ".join(
        f"{title:>9}" for title, _ in DELIVERY_COLUMNS
    )
    lines = ["End to end: CPU ms per message, relay and delivery side (median)", header]

    def rank(key: tuple[int, str]) -> tuple[int, int, str]:
        clients, system = key
        return (clients, order.index(system) if system in order else len(order), system)

    for key in sorted(cells, key=rank):
        row = dict(cells[key])
        reference = cells.get((key[0], REFERENCE), {}).get("cpu_ms")
        if key[1] != REFERENCE and reference and "cpu_ms" in row:
            row["x Postfix"] = row["cpu_ms"] / reference
        values = []
        for title, metric in DELIVERY_COLUMNS:
            value = row.get(metric or title)
            values.append(f"{_number(value) if value is not None else '':>9}")
        lines.append(f"{key[0] or '':>7} {key[1]:<15} " + " ".join(values))
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
    # matplotlib is the optional `bench` extra (the rest works without it), and the Agg
    # backend must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=False)
    for axis, (metric, label) in zip(
        axes, (("accept_rate", "acceptance"), ("e2e_rate", "end to end")), strict=True
    ):
        for system, points in chart_series(summaries, "throughput", metric).items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            below = [p[1] - p[2] for p in points]
            above = [p[3] - p[1] for p in points]
            axis.errorbar(
                xs,
                ys,
                yerr=[below, above],
                marker="o",
                capsize=3,
                label=system,
                color=COLOURS.get(system),
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        clients = sorted(
            {
                p[0]
                for points in chart_series(summaries, "throughput", metric).values()
                for p in points
            }
        )
        axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        axis.yaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xticks(clients, [str(c) for c in clients])
        axis.set_xlabel("concurrent clients (a new connection per message)")
        axis.set_ylabel("messages / second")
        axis.set_title(f"{label} rate")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for both, below them: it never hides a point
        figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
