"""``bench/results/report.html`` from the JSON files in ``bench/results`` alone.

    .venv/bin/python -m bench.report [RESULTS_DIR] [OUTPUT]

One self-contained page (inline SVG, no scripts, no downloads): every benchmark's headline
metrics against their targets, then the plots a reader needs to see the system's behaviour —
throughput over time, latency percentiles, the timeline's projection lag, the linking
precision-recall curve and the scaling runs. A benchmark or series that is missing is said to be
missing, never drawn from anything else.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
BENCHMARKS = ("ingest", "pipeline", "consent", "linking", "timeline", "notifications", "scaling")
SECTIONS = (
    "Headline metrics against targets",
    "Throughput over time",
    "Latency percentiles",
    "Projection lag",
    "Linking precision-recall",
    "Scaling",
    "All benchmark tables",
)
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")

Json = dict[str, Any]


def _get(data: Json | None, path: str) -> Any:
    """``a.b.c`` in nested dicts, or None."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def load(results: Path) -> dict[str, Json]:
    found: dict[str, Json] = {}
    for name in BENCHMARKS:
        path = results / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


# Headline table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    benchmark: str
    metric: str
    path: str
    unit: str
    target: float | None = None
    higher_is_better: bool = True

    def measured(self, data: dict[str, Json]) -> Any:
        return _get(data.get(self.benchmark), self.path)

    def verdict(self, value: Any) -> str:
        if self.target is None or not isinstance(value, int | float):
            return "—"
        met = value >= self.target if self.higher_is_better else value <= self.target
        return "PASS" if met else "MISS"

    def target_text(self) -> str:
        if self.target is None:
            return "no target"
        return f"{'≥' if self.higher_is_better else '≤'} {_number(self.target)} {self.unit}"


HEADLINES = (
    Headline("ingest", "accepted referrals/s (realistic bodies)", "referrals_per_s", "/s", 1000),
    Headline("ingest", "API p99", "api_p99_ms", "ms", 150, higher_is_better=False),
    Headline("ingest", "POST → MASH inbox p99", "e2e_p99_ms", "ms", 1000, higher_is_better=False),
    Headline("pipeline", "outbox relay publish + mark", "relay.relay_events_per_s", "events/s"),
    Headline("pipeline", "consumer apply (inbox)", "consumer.consumer_events_per_s", "events/s"),
    Headline(
        "pipeline", "POST /v1/referrals p99 (small body)", "intake.intake_latency_ms.p99", "ms"
    ),
    Headline("consent", "decide p99 (50/s offered)", "decide_p99_ms", "ms", 10, False),
    Headline("consent", "decisions/s (HTTP, 64 connections)", "decisions_per_s", "/s", 2000),
    Headline("consent", "verify 1M ledger entries", "verify_1m_s", "s", 30, False),
    Headline("linking", "F1 at auto-link (100k records)", "f1", "", 0.995),
    Headline("linking", "precision at auto-link", "precision_at_autolink", "", 0.999),
    Headline("linking", "resolve p99 in process (1M held)", "resolve_p99_ms", "ms", 10, False),
    Headline("linking", "resolve p99 over HTTP (1M held)", "resolve_http_p99_ms", "ms", 10, False),
    Headline("linking", "link-file 1M records", "batch_1m_s", "s", 600, False),
    Headline("timeline", "read p99, household (20/s)", "read_p99_ms", "ms", 50, False),
    Headline("timeline", "read p99, own (20/s)", "read_own_p99_ms", "ms", 50, False),
    Headline(
        "timeline", "projection lag p99 (1000 events/s)", "projection_lag_p99_ms", "ms", 1000, False
    ),
    Headline("notifications", "messages delivered", "messages_per_s", "msg/s", 500),
    Headline("notifications", "Encompass notices on time", "encompass_on_time_share", "", 1.0),
)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(str(value))
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def headline_table(data: dict[str, Json]) -> str:
    rows = []
    for headline in HEADLINES:
        value = headline.measured(data)
        if headline.benchmark not in data:
            shown, verdict = "not run (no JSON)", "—"
        elif value is None:
            shown, verdict = "not recorded", "—"
        else:
            shown, verdict = f"{_number(value)} {headline.unit}", headline.verdict(value)
        finished = _get(data.get(headline.benchmark), "finished_at") or ""
        rows.append(
            f"<tr><td>{headline.benchmark}</td><td>{html.escape(headline.metric)}</td>"
            f"<td class=num>{shown}</td><td class=num>{html.escape(headline.target_text())}</td>"
            f"<td class='verdict {verdict}'>{verdict}</td><td>{finished[:16]}</td></tr>"
        )
    return (
        "<table><tr><th>benchmark</th><th>metric</th><th>measured</th><th>target</th>"
        "<th>verdict</th><th>measured at (UTC)</th></tr>" + "".join(rows) + "</table>"
    )


def full_tables(data: dict[str, Json]) -> str:
    parts = []
    for name, result in data.items():
        table = result.get("table")
        if not table:
            continue
        rows = "".join(
            f"<tr><td>{html.escape(metric)}</td><td class=num>{_number(value)}</td>"
            f"<td>{html.escape(str(unit))}</td></tr>"
            for metric, (value, unit) in table.items()
        )
        parts.append(
            f"<details><summary>{name} (bench/results/{name}.json)</summary>"
            f"<table><tr><th>metric</th><th>value</th><th>unit</th></tr>{rows}</table></details>"
        )
    return "".join(parts) or "<p class=missing>No benchmark tables.</p>"


# SVG ---------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    markers: bool = False


@dataclass
class Axis:
    label: str
    log: bool = False
    low: float | None = None
    high: float | None = None


WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 860, 330, 70, 250, 20, 45


def _scale(axis: Axis, values: Sequence[float], length: float) -> Callable[[float], float]:
    low = axis.low if axis.low is not None else min(values, default=0.0)
    high = axis.high if axis.high is not None else max(values, default=1.0)
    if axis.log:
        low, high = math.log10(max(low, 1e-9)), math.log10(max(high, 1e-9))
    if high == low:
        high = low + 1

    def place(value: float) -> float:
        v = math.log10(max(value, 1e-9)) if axis.log else value
        return (v - low) / (high - low) * length

    return place


def _ticks(axis: Axis, values: Sequence[float]) -> list[float]:
    low = axis.low if axis.low is not None else min(values, default=0.0)
    high = axis.high if axis.high is not None else max(values, default=1.0)
    if axis.log:
        first, last = math.floor(math.log10(max(low, 1e-9))), math.ceil(math.log10(high))
        return [10.0**e for e in range(first, last + 1) if low <= 10.0**e <= high * 1.0001]
    span = high - low or 1.0
    step = 10 ** math.floor(math.log10(span / 5))
    for multiple in (1, 2, 5, 10):
        if span / (step * multiple) <= 6:
            step *= multiple
            break
    start = math.ceil(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 1)]


def line_chart(
    title: str,
    series: Sequence[Series],
    x: Axis,
    y: Axis,
    *,
    hlines: Sequence[tuple[float, str]] = (),
) -> str:
    """A line (or marker) chart as inline SVG, with a legend and optional target lines."""
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points] + [value for value, _ in hlines]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    if y.low is None and not y.log:
        y = Axis(y.label, y.log, min(0.0, min(ys, default=0.0)), y.high)
    if y.high is None:
        y = Axis(y.label, y.log, y.low, max(ys, default=1.0) * 1.08)
    sx, sy = _scale(x, xs, plot_w), _scale(y, ys, plot_h)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img"><title>{html.escape(title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#999"/>',
    ]
    for tick in _ticks(x, xs):
        px = LEFT + sx(tick)
        parts.append(
            f'<line x1="{px:.1f}" y1="{TOP + plot_h}" x2="{px:.1f}" y2="{TOP + plot_h + 4}" '
            f'stroke="#666"/><text x="{px:.1f}" y="{TOP + plot_h + 16}" class="tick" '
            f'text-anchor="middle">{_tick(tick)}</text>'
        )
    for tick in _ticks(y, ys):
        py = TOP + plot_h - sy(tick)
        parts.append(
            f'<line x1="{LEFT}" y1="{py:.1f}" x2="{LEFT + plot_w}" y2="{py:.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 6}" y="{py + 4:.1f}" class="tick" '
            f'text-anchor="end">{_tick(tick)}</text>'
        )
    for value, label in hlines:
        py = TOP + plot_h - sy(value)
        parts.append(
            f'<line x1="{LEFT}" y1="{py:.1f}" x2="{LEFT + plot_w}" y2="{py:.1f}" '
            f'stroke="#000" stroke-dasharray="6 4"/><text x="{LEFT + plot_w - 4}" '
            f'y="{py - 4:.1f}" class="tick" text-anchor="end">{html.escape(label)}</text>'
        )
    for index, line in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        coords = [(LEFT + sx(px), TOP + plot_h - sy(py)) for px, py in line.points]
        if len(coords) > 1 and not line.markers:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        if line.markers or len(coords) <= 20:
            parts.extend(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}"/>'
                for cx, cy in coords
            )
        ly = TOP + 14 + index * 18
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 10}" y="{ly - 9}" width="12" height="12" '
            f'fill="{colour}"/><text x="{WIDTH - RIGHT + 26}" y="{ly + 1}" '
            f'class="legend">{html.escape(line.label)}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" class="axis" '
        f'text-anchor="middle">{html.escape(x.label)}</text>'
        f'<text transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" class="axis" '
        f'text-anchor="middle">{html.escape(y.label)}</text></svg>'
    )
    return "".join(parts)


def bar_chart(
    title: str, groups: Sequence[tuple[str, dict[str, float], float | None]], unit: str
) -> str:
    """Horizontal bars on a log axis: one group per operation, one bar per percentile, and the
    operation's target (if any) as a black tick."""
    keys = sorted({k for _, values, _ in groups for k in values}, key=_percentile_order)
    values = [v for _, vs, _ in groups for v in vs.values()] + [
        t for _, _, t in groups if t is not None
    ]
    label_w, bar_h, gap = 300, 9, 10
    plot_w = WIDTH - label_w - 30
    height = TOP + len(groups) * (len(keys) * bar_h + gap) + BOTTOM
    axis = Axis(unit, log=True, low=10 ** math.floor(math.log10(min(values))), high=max(values))
    scale = _scale(axis, values, plot_w)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img"><title>{html.escape(title)}</title>'
    ]
    for tick in _ticks(axis, values):
        px = label_w + scale(tick)
        parts.append(
            f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{height - BOTTOM}" stroke="#eee"/>'
            f'<text x="{px:.1f}" y="{height - BOTTOM + 14}" class="tick" '
            f'text-anchor="middle">{_tick(tick)}</text>'
        )
    y = TOP
    for name, percentiles, target in groups:
        group_h = len(keys) * bar_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + group_h / 2 + 4:.1f}" class="legend" '
            f'text-anchor="end">{html.escape(name)}</text>'
        )
        for index, key in enumerate(keys):
            if key in percentiles:
                parts.append(
                    f'<rect x="{label_w}" y="{y + index * bar_h}" '
                    f'width="{max(1.0, scale(percentiles[key])):.1f}" height="{bar_h - 1}" '
                    f'fill="{COLOURS[index % len(COLOURS)]}"><title>{html.escape(name)} {key}: '
                    f"{_number(percentiles[key])} {unit}</title></rect>"
                )
        if target is not None:
            px = label_w + scale(target)
            parts.append(
                f'<line x1="{px:.1f}" y1="{y - 2}" x2="{px:.1f}" y2="{y + group_h + 2}" '
                f'stroke="#000" stroke-width="3"/>'
            )
        y += group_h + gap
    legend_x = label_w
    for index, key in enumerate(keys):
        parts.append(
            f'<rect x="{legend_x}" y="{height - 22}" width="12" height="12" '
            f'fill="{COLOURS[index % len(COLOURS)]}"/><text x="{legend_x + 16}" '
            f'y="{height - 12}" class="legend">{key}</text>'
        )
        legend_x += 55
    parts.append(
        f'<rect x="{legend_x}" y="{height - 22}" width="3" height="12" fill="#000"/>'
        f'<text x="{legend_x + 8}" y="{height - 12}" class="legend">target (p99)</text>'
        f'<text x="{WIDTH - 10}" y="{height - 12}" class="axis" text-anchor="end">'
        f"{html.escape(unit)}, log scale</text></svg>"
    )
    return "".join(parts)


def _percentile_order(key: str) -> tuple[int, str]:
    order = {"p50": 0, "p90": 1, "p95": 2, "p99": 3, "max": 4}
    return (order.get(key, 9), key)


def _tick(value: float) -> str:
    if value >= 1000 and float(value).is_integer():
        return f"{int(value):,}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


# Sections ---------------------------------------------------------------------------------


def _missing(text: str) -> str:
    return f"<p class=missing>{html.escape(text)}</p>"


def throughput_section(data: dict[str, Json]) -> str:
    parts = []
    series = _get(data.get("ingest"), "intake.series")
    if series:
        accepted, consumed = [], []
        for before, after in itertools.pairwise(series):
            span = after["t"] - before["t"]
            if span > 0:
                accepted.append((after["t"], (after["accepted"] - before["accepted"]) / span))
                consumed.append((after["t"], (after["consumed"] - before["consumed"]) / span))
        parts.append(
            line_chart(
                "ingest: referrals per second during the main run",
                [Series("accepted (referrals)", accepted), Series("consumed (inbox)", consumed)],
                Axis("seconds into the main run"),
                Axis("referrals/s"),
                hlines=[(1000.0, "target 1,000/s")],
            )
        )
        parts.append(
            "<p>Ingest: realistic referrals from concurrent authenticated clients (wrk), "
            "sampled from the database about once a second; the consumer keeps pace with the "
            f"intake, which stays far below its target. Mean "
            f"{_number(data['ingest'].get('referrals_per_s'))}/s.</p>"
        )
    else:
        parts.append(_missing("ingest.json has no per-second series (intake.series)."))
    points = _get(data.get("scaling"), "pipeline.points") or {}
    if points:
        lines = [
            Series(
                f"{n} partition(s), {n} consumer(s)",
                [(p["t_s"], p["events_per_s"]) for p in point.get("throughput_per_second", [])],
            )
            for n, point in sorted(points.items(), key=lambda item: int(item[0]))
        ]
        parts.append(
            line_chart(
                "scaling: events applied per second while a group drains a backlog",
                lines,
                Axis("seconds since the consumer processes started"),
                Axis("events applied/s"),
            )
        )
        parts.append(
            "<p>The scaling run: the first seconds are process start-up and the group's join "
            "(no events applied); the plateau is the group's drain rate.</p>"
        )
    else:
        parts.append(_missing("scaling.json has no pipeline points yet."))
    return "".join(parts)


def latency_section(data: dict[str, Json]) -> str:
    wanted = (
        ("ingest: API (POST, wrk)", "ingest", "intake.api_ms", 150.0),
        ("ingest: POST → inbox (server, all)", "ingest", "intake.server_e2e.total_ms", 1000.0),
        ("pipeline: POST, small body", "pipeline", "intake.intake_latency_ms", None),
        ("pipeline: POST → inbox, idle", "pipeline", "intake.end_to_end_ms", None),
        ("consent: decide (50/s offered)", "consent", "http.paced", 10.0),
        ("consent: decide (64 conns, saturated)", "consent", "http.saturated", None),
        ("linking: resolve in process", "linking", "resolve_in_process.latency_ms", 10.0),
        ("linking: resolve over HTTP", "linking", "resolve_http.latency_ms", 10.0),
        ("timeline: read, own", "timeline", "reads.own.latency_ms", 50.0),
        ("timeline: read, household", "timeline", "reads.household.latency_ms", 50.0),
        ("timeline: projection lag", "timeline", "projection.lag_ms", 1000.0),
        (
            "notifications: created → delivered",
            "notifications",
            "throughput.created_to_delivered_ms",
            None,
        ),
        (
            "notifications: Encompass contact → webhook",
            "notifications",
            "encompass_week.contact_to_webhook_ms",
            None,
        ),
    )
    groups = []
    absent = []
    for label, name, path, target in wanted:
        found = _get(data.get(name), path)
        if not isinstance(found, dict):
            absent.append(label)
            continue
        percentiles = {
            key.removesuffix("_ms"): float(value)
            for key, value in found.items()
            if key.removesuffix("_ms") in {"p50", "p90", "p95", "p99", "max"}
            and isinstance(value, int | float)
            and value > 0
        }
        if percentiles:
            groups.append((label, percentiles, target))
    if not groups:
        return _missing("No latency percentiles recorded.")
    note = (
        "<p>Percentiles per operation, log scale; the black tick is the operation's p99 "
        "target where it has one. Hover a bar for its value.</p>"
    )
    if absent:
        note += _missing("Not recorded: " + ", ".join(absent) + ".")
    return note + bar_chart("latency percentiles", groups, "ms")


def lag_section(data: dict[str, Json]) -> str:
    projection = _get(data.get("timeline"), "projection")
    parts = []
    if not projection:
        parts.append(_missing("timeline.json has no projection measurement."))
    else:
        by_second = projection.get("lag_ms_by_1_s")
        buckets = by_second or projection.get("lag_ms_by_10_s") or []
        width = 1 if by_second else 10
        lines = [
            Series(key, [(b["from_s"] + width / 2, b[key]) for b in buckets if key in b])
            for key in ("p50", "p99", "max")
        ]
        parts.append(
            line_chart(
                "timeline: projection lag over the measured window",
                lines,
                Axis(
                    "seconds into the measured window",
                    low=0.0,
                    high=float(projection.get("seconds") or 0) or None,
                ),
                Axis("lag, ms (event sent → applied)"),
                hlines=[(1000.0, "p99 target 1,000 ms")],
            )
        )
        parts.append(
            f"<p>Events offered at {_number(projection.get('offered_per_s'))}/s for "
            f"{_number(projection.get('seconds'))} s after a warm-up; lag from the event's "
            "send to the timeline consumer's inbox row. "
            + (
                "Per second."
                if by_second
                else "This timeline.json predates the per-second series (lag_ms_by_1_s): the "
                "points are its 10-second buckets; the next run of the timeline bench records "
                "every second."
            )
            + "</p>"
        )
    points = _get(data.get("scaling"), "pipeline.points") or {}
    if points:
        lines = [
            Series(
                f"{n} partition(s), {n} consumer(s)",
                [(p["t_s"], p["lag"]) for p in point.get("series", [])],
            )
            for n, point in sorted(points.items(), key=lambda item: int(item[0]))
        ]
        parts.append(
            line_chart(
                "scaling: consumer-group lag while draining the backlog",
                lines,
                Axis("seconds since the consumer processes started"),
                Axis("events on the topic not yet applied"),
            )
        )
    return "".join(parts)


def linking_section(data: dict[str, Json]) -> str:
    linking = data.get("linking")
    curve = _get(linking, "precision_recall_curve")
    if not curve:
        return _missing(
            "linking.json has no precision_recall_curve; run "
            "THREADLINE_BENCH_LINKING_ONLY=curve or the full linking bench."
        )
    lines = [
        Series(
            "scored pairs ≥ threshold",
            [(p["recall"], p["precision"]) for p in curve["points"]],
        )
    ]
    operating = []
    for label, path in (
        ("clustered, auto-link 0.99", "accuracy.overall"),
        ("clustered, review queue decided", "accuracy.with_review_decided"),
        ("Splink (DuckDB), same file", "splink"),
    ):
        point = _get(linking, path)
        if isinstance(point, dict) and "recall" in point:
            operating.append(Series(label, [(point["recall"], point["precision"])], markers=True))
    all_points = lines[0].points + [p for s in operating for p in s.points]
    low_x = math.floor(min(x for x, _ in all_points) * 100) / 100
    low_y = math.floor(min(y for _, y in all_points) * 100) / 100
    chart = line_chart(
        "linking: precision against recall",
        lines + operating,
        Axis("recall (pairwise, of every true pair)", low=low_x, high=1.0),
        Axis("precision (pairwise)", low=low_y, high=1.0),
    )
    rows = "".join(
        f"<tr><td class=num>{p['threshold']}</td><td class=num>{p['pairs']:,}</td>"
        f"<td class=num>{p['precision']:.4f}</td><td class=num>{p['recall']:.4f}</td></tr>"
        for p in curve["points"]
    )
    return (
        chart + f"<p>{html.escape(curve.get('what', ''))}; {curve['records']:,} generated records "
        f"(seed 1), {curve['true_pairs']:,} true pairs, {curve['scored_pairs']:,} pairs scored. "
        "The clustered points are what the service links: clustering adds pairs by "
        "transitivity and drops some on conflicts, so they sit off the pair curve.</p>"
        "<details><summary>curve points</summary><table><tr><th>threshold</th><th>pairs</th>"
        f"<th>precision</th><th>recall</th></tr>{rows}</table></details>"
    )


def scaling_section(data: dict[str, Json]) -> str:
    scaling = data.get("scaling")
    if not scaling:
        return _missing("No scaling.json: run python -m bench.scaling.")
    parts = [
        f"<p>Machine: {html.escape(json.dumps(scaling.get('machine', {})))}</p>",
    ]
    pipeline = _get(scaling, "pipeline.points") or {}
    if pipeline:
        ordered = sorted(pipeline.values(), key=lambda p: p["partitions"])
        repeat = sorted(
            (_get(scaling, "pipeline.repeat_points") or {}).values(), key=lambda p: p["partitions"]
        )
        rows = "".join(
            f"<tr><td>{run}</td><td class=num>{p['partitions']}</td>"
            f"<td class=num>{p['consumer_instances']}</td><td class=num>{p['events']:,}</td>"
            f"<td class=num>{p['drain_seconds']}</td><td class=num>{p['events_per_s']}</td>"
            f"<td class=num>{p.get('events_per_s_after_first_applied')}</td>"
            f"<td class=num>{p.get('peak_events_per_s')}</td>"
            f"<td class=num>{p['group_join_to_first_applied_s']}</td>"
            f"<td class=num>{p.get('consumer_cpu_seconds')}</td></tr>"
            for run, points in (("1", ordered), ("2", repeat))
            for p in points
        )
        parts.append(
            "<h3>Partitions and consumer instances</h3>"
            f"<p>{html.escape(_get(scaling, 'pipeline.what') or '')}</p>"
            "<table><tr><th>run</th><th>partitions</th><th>consumers</th><th>events</th>"
            "<th>drain s</th><th>events/s (whole drain)</th><th>events/s after the first "
            "applied</th><th>best second</th><th>start + join s</th><th>consumer CPU s</th></tr>"
            f"{rows}</table>"
        )
        if _get(scaling, "pipeline.reading"):
            parts.append(f"<p>{html.escape(scaling['pipeline']['reading'])}</p>")
        parts.extend(
            f"<p>Run 1, {p['partitions']} partition(s): {html.escape(str(p['incidents']))}</p>"
            for p in ordered
            if p.get("incidents") and p["incidents"] != "none logged"
        )
        parts.append(
            line_chart(
                "scaling: drain rate against partitions and consumers",
                [
                    Series(
                        "run 1: events/s after the first applied",
                        [
                            (p["partitions"], p.get("events_per_s_after_first_applied") or 0)
                            for p in ordered
                        ],
                    ),
                    Series(
                        "run 1: events/s, whole drain",
                        [(p["partitions"], p["events_per_s"]) for p in ordered],
                    ),
                    *(
                        [
                            Series(
                                "run 2: events/s after the first applied",
                                [
                                    (
                                        p["partitions"],
                                        p.get("events_per_s_after_first_applied") or 0,
                                    )
                                    for p in repeat
                                ],
                            ),
                            Series(
                                "run 2: events/s, whole drain",
                                [(p["partitions"], p["events_per_s"]) for p in repeat],
                            ),
                        ]
                        if repeat
                        else []
                    ),
                ],
                Axis("partitions = consumer processes", low=0.0),
                Axis("events/s"),
            )
        )
    else:
        parts.append(_missing("The partition scaling run has not been recorded."))
    linking = _get(scaling, "linking.points") or {}
    measured = [p for p in linking.values() if p.get("status") == "measured"]
    rows = "".join(
        f"<tr><td class=num>{int(size):,}</td><td>{html.escape(str(p.get('status')))}</td>"
        f"<td class=num>{_number(p.get('seconds', '—'))}</td>"
        f"<td class=num>{_number(p.get('records_per_s', '—'))}</td>"
        f"<td class=num>{_number(p.get('peak_rss_largest_process_mb', '—'))}</td>"
        f"<td class=num>{_number(p.get('peak_rss_tree_mb', '—'))}</td>"
        f"<td class=num>{_number(p.get('cpu_seconds', '—'))}</td>"
        f"<td class=num>{_number(_get(p, 'accuracy.f1') or '—')}</td>"
        f"<td>{html.escape(str(p.get('source') or 'scaling run ' + p.get('run', '')))}</td></tr>"
        for size, p in sorted(
            [*linking.items(), *(_get(scaling, "linking.repeat_points") or {}).items()],
            key=lambda item: (int(item[0]), str(item[1].get("run", ""))),
        )
    )
    parts.append(
        "<h3>Linking: link-file at growing sizes</h3>"
        f"<p>{html.escape(_get(scaling, 'linking.what') or '')}</p>"
        "<table><tr><th>records</th><th>status</th><th>seconds</th><th>records/s</th>"
        "<th>peak RSS, largest process MB</th><th>peak RSS, process tree MB (shared pages "
        "counted per process)</th><th>CPU s (all its processes)</th><th>F1</th><th>source</th></tr>"
        f"{rows}</table>"
    )
    for size, point in sorted(linking.items(), key=lambda item: int(item[0])):
        notes = [
            f"{key.replace('_', ' ')}: "
            + (
                ", ".join(f"{k}: {v}" for k, v in value.items())
                if isinstance(value, dict)
                else value
            )
            for key, value in point.items()
            if key in {"reached", "why", "rerun_stopped", "rerun_stopped_again", "previous", "note"}
        ]
        earlier = point.get("earlier_attempts") or []
        if earlier:
            notes.append(
                f"{len(earlier)} earlier attempts stopped before they finished (scaling.json): "
                + " | ".join(str(attempt.get("why", "")) for attempt in earlier)
            )
        if notes:
            parts.append(
                f"<p>{int(size):,} records — " + html.escape("; ".join(map(str, notes))) + "</p>"
            )
    # Only points of one run share the machine's conditions: a curve across runs would show the
    # load of the day, not the growth of the cost.
    same_run = sorted((p for p in measured if not p.get("source")), key=lambda p: p["records"])
    if len(same_run) >= 2:
        parts.append(
            line_chart(
                "scaling: link-file time against records (log-log)",
                [Series("measured", [(p["records"], p["seconds"]) for p in same_run])],
                Axis("records", log=True),
                Axis("seconds", log=True),
            )
        )
    else:
        parts.append(
            _missing(
                "No growth curve of wall time is drawn: fewer than two sizes were measured in one "
                "run, and points from different runs differ in the machine's load more than in "
                "size."
            )
        )
    # CPU seconds (all of link-file's processes) hardly depend on the machine's load, so points
    # from different runs can share a curve.
    by_cpu = sorted((p for p in measured if p.get("cpu_seconds")), key=lambda p: p["records"])
    if len(by_cpu) >= 2:
        parts.append(
            line_chart(
                "scaling: link-file CPU seconds against records (log-log, one point a run)",
                [Series("CPU seconds", [(p["records"], p["cpu_seconds"]) for p in by_cpu])],
                Axis("records", log=True),
                Axis("CPU seconds", log=True),
            )
        )
    return "".join(parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Threadline benchmark report</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222 }}
table {{ border-collapse: collapse; margin: .6em 0 1.2em }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums }}
.verdict.PASS {{ color: #176117; font-weight: bold }}
.verdict.MISS {{ color: #b00; font-weight: bold }}
.missing {{ color: #8a5a00; font-style: italic }}
svg {{ display: block; margin: .5em 0; max-width: 100% }}
svg .tick {{ font-size: 11px; fill: #444 }} svg .legend {{ font-size: 12px }}
svg .axis {{ font-size: 12px; fill: #222 }}
</style></head><body>
<h1>Threadline benchmark report</h1>
<p>Built {built} from the JSON files in <code>bench/results/</code> alone
(<code>python -m bench.report</code>); <code>make bench</code> runs every benchmark and writes it.
Machine: 2 cores, shared with other engineers' test suites and benchmarks, so every figure is
noisy; each benchmark's JSON says when it was measured. Targets are the issues' targets, shown
against what was measured, met or not.</p>
{sections}
</body></html>
"""


def build(results: Path = RESULTS) -> str:
    data = load(results)
    bodies = (
        headline_table(data),
        throughput_section(data),
        latency_section(data),
        lag_section(data),
        linking_section(data),
        scaling_section(data),
        full_tables(data),
    )
    sections = "".join(
        f'<section id="s{index}"><h2>{html.escape(title)}</h2>{body}</section>'
        for index, (title, body) in enumerate(zip(SECTIONS, bodies, strict=True))
    )
    return PAGE.format(built=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), sections=sections)


def main(argv: Sequence[str]) -> int:
    results = Path(argv[0]) if argv else RESULTS
    output = Path(argv[1]) if len(argv) > 1 else results / "report.html"
    output.write_text(build(results))
    print(f"report  →  {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
