"""The dashboard's per-minute figures: read from the counter rows (every label set summed, the
delivery results kept apart), one value per minute of the window with empty minutes as zero,
queue depth as a gauge beat sets (gaps stay gaps), and the SVG paths drawn from them."""

from __future__ import annotations

from typing import Any

import pytest

from relay import dashboard
from relay.dashboard import QUEUE_DEPTH, Flow, Window
from relay.metrics import DELIVERIES, RECEIVED
from smtpadmin import counters
from smtpadmin.models import MinuteCount
from tests.relay.dashboard_world import WriteCounts
from tests.relay.queue_world import Queues, deliver, entry, fail

pytestmark = pytest.mark.django_db


def series_by_key(moment: float, window: Window = Window.HOUR) -> dict[str, dashboard.Series]:
    return {s.key: s for s in dashboard.flow_series(window, moment)}


def test_each_line_sums_its_counter_over_every_label_set_minute_by_minute(
    counts: WriteCounts, moment: float
) -> None:
    counts(RECEIVED, {0: 3, 2: 1}, {"virtual_server": "Default"})
    counts(RECEIVED, {0: 2}, {"virtual_server": "Submission"})
    counts(DELIVERIES, {1: 4}, {"connector": "Internet", "result": "delivered"})
    counts(DELIVERIES, {1: 1}, {"connector": "Partner", "result": "delivered"})
    counts(DELIVERIES, {1: 2, 3: 5}, {"connector": "Internet", "result": "deferred"})
    counts(DELIVERIES, {59: 7}, {"connector": "Internet", "result": "failed"})
    counts(DELIVERIES, {60: 100}, {"connector": "Internet", "result": "failed"})  # too old
    counts("dsns_sent", {0: 9}, {"kind": "failure"})  # another counter

    lines = series_by_key(moment)
    assert [s.key for s in dashboard.flow_series(Window.HOUR, moment)] == [f.value for f in Flow]
    assert lines["received"].points[-3:] == (1, 0, 5)
    assert lines["delivered"].points[-2:] == (5, 0)
    assert lines["deferred"].points[-4:] == (5, 0, 2, 0)
    assert lines["failed"].points[0] == 7
    assert (lines["received"].total, lines["delivered"].total) == (6, 5)
    assert (lines["deferred"].total, lines["failed"].total) == (7, 7)
    assert lines["received"].peak == 5


def test_a_connector_named_like_a_result_is_not_counted_as_that_result(
    counts: WriteCounts, moment: float
) -> None:
    counts(DELIVERIES, {0: 4}, {"connector": '"result", "delivered"', "result": "failed"})
    lines = series_by_key(moment)
    assert (lines["delivered"].total, lines["failed"].total) == (0, 4)


@pytest.mark.parametrize("window", list(Window))
def test_every_minute_of_the_window_has_a_value_zero_when_nothing_happened(
    counts: WriteCounts, window: Window, moment: float
) -> None:
    counts(RECEIVED, {window.minutes - 1: 2, window.minutes: 50})
    lines = series_by_key(moment, window)
    for series in lines.values():
        assert len(series.points) == window.value * 60
    assert lines["received"].points == (2,) + (0,) * (window.value * 60 - 1)
    assert lines["failed"].points == (0,) * (window.value * 60)


def test_the_window_comes_from_the_query_string_and_anything_else_is_an_hour() -> None:
    assert [Window.parse(t) for t in ("1", "6", "24")] == [
        Window.HOUR,
        Window.SIX_HOURS,
        Window.DAY,
    ]
    assert [Window.parse(t) for t in ("", "12", "x", None, "6.0")] == [Window.HOUR] * 5


def test_counts_flushed_by_the_counters_show_on_the_chart(moment: float) -> None:
    counters.add(RECEIVED, {"virtual_server": "Default"}, n=3, at=moment - 120)
    counters.add(DELIVERIES, {"connector": "Internet", "result": "delivered"}, at=moment)
    counters.flush()
    lines = series_by_key(moment)
    assert lines["received"].points[-3] == 3
    assert lines["delivered"].points[-1] == 1


# --- queue depth --------------------------------------------------------------------------


def test_queue_depth_is_set_per_minute_from_the_open_entries(queues: Queues, moment: float) -> None:
    first = queues.send(["a@example.org", "b@example.net"])
    second = queues.send(["c@example.org"])
    fail(entry(first, "example.net"))  # Retry stays open
    assert dashboard.record_queue_depth(moment) == 3
    deliver(entry(second))
    assert dashboard.record_queue_depth(moment) == 2  # set, not added
    minute = dashboard.current_minute(moment)
    assert MinuteCount.objects.get(name=QUEUE_DEPTH, minute=minute).value == 2
    assert dashboard.depth_series(Window.HOUR, moment).points[-1] == 2


def test_the_beat_task_samples_queue_depth(queues: Queues, settings: Any) -> None:
    queues.send(["a@example.org"])
    assert dashboard.sample_queue_depth.apply().get() == 1
    assert settings.CELERY_BEAT_SCHEDULE["dashboard-queue-depth"]["task"] == (
        dashboard.sample_queue_depth.name
    )
    assert dashboard.sample_queue_depth.name == "relay.dashboard.sample_queue_depth"


def test_a_minute_without_a_queue_depth_sample_is_a_gap_not_zero(
    counts: WriteCounts, moment: float
) -> None:
    counts(QUEUE_DEPTH, {0: 4, 1: 0, 3: 6})
    depth = dashboard.depth_series(Window.HOUR, moment)
    assert depth.points[-4:] == (6, None, 0, 4)
    assert depth.points[0] is None
    assert (depth.last, depth.peak) == (4, 6)


# --- the SVG ------------------------------------------------------------------------------


def test_the_scale_is_a_round_number_at_or_above_the_peak() -> None:
    assert [dashboard.scale_top(p) for p in (0, 1, 2, 3, 7, 10, 11, 260, 5001)] == [
        1,
        1,
        2,
        5,
        10,
        10,
        20,
        500,
        10000,
    ]


def test_the_path_runs_left_to_right_with_the_pen_lifted_over_gaps(moment: float) -> None:
    w, h = dashboard.WIDTH, dashboard.HEIGHT
    assert dashboard.path_of([0, 5, 10], 10) == f"M0 {h} L{w // 2} {h // 2} L{w} 0"
    assert dashboard.path_of([4, None, 4], 4) == f"M0 0 M{w} 0"
    assert dashboard.path_of([None, None], 1) == ""
    chart = dashboard.chart("Messages per minute", series_by_key(moment).values())
    assert chart.top == 1 and len(chart.lines) == 4
