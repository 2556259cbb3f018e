"""``taskbridge status``: depths and dead letters from the broker, rates and wait from /metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_metrics_jobs as jobs
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from test_metrics import harness_for

from taskbridge import events
from taskbridge import metrics as tb_metrics
from taskbridge.cli import main
from taskbridge.dispatch import publish_dead_letter
from taskbridge.layout import dead_letter_queue
from taskbridge.status import QueueCounters, Snapshot, compare, quantile
from taskbridge.testing import KNOWN

BROKER_COMBINATIONS = [name for name in KNOWN if name != "memory"]


def test_quantile_interpolates_inside_the_bucket_like_promql() -> None:
    buckets = {0.1: 0.0, 0.5: 50.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.25, buckets) == pytest.approx(0.3)
    assert quantile(0.95, buckets) == pytest.approx(0.95)
    assert quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, float("inf"): 2.0}) == 1.0  # beyond the last bound: that bound


def test_rates_and_wait_are_measured_between_two_snapshots() -> None:
    older = Snapshot(
        100.0,
        {"q": 5},
        {"q": 1},
        {"q": QueueCounters(ran=10, failed=2, wait_buckets={0.5: 0, 1.0: 10, float("inf"): 10})},
    )
    newer = Snapshot(
        110.0,
        {"q": 7},
        {"q": 2},
        {"q": QueueCounters(ran=30, failed=4, running=3, wait_buckets={0.5: 0, 1.0: 30, float("inf"): 30})},
    )
    [row] = compare(older, newer)
    assert (row.queue, row.depth, row.dead_letters, row.running) == ("q", 7, 2, 3)
    assert row.throughput == pytest.approx(2.0)
    assert row.failures == pytest.approx(0.2)
    assert row.wait_p50 == pytest.approx(0.75)  # the 20 new starts all waited 0.5-1s
    [alone] = compare(None, newer)
    assert alone.throughput is None and alone.wait_p50 is None


def test_status_once_json_on_the_embedded_engine(tmp_path: Path) -> None:
    with harness_for("memory", tmp_path) as h:
        for n in range(4):
            jobs.ok.enqueue(n)
        publish_dead_letter(h.engine, queue=h.queue, reason="test", envelope=None, raw="{}")
        result = CliRunner().invoke(main, ["status", "--once", "--json", "--queues", h.queue])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        [row] = report["queues"]
        assert (row["queue"], row["depth"], row["dead_letters"]) == (h.queue, 4, 1)
        assert row["throughput"] is None  # no --metrics: no rates


def test_status_reads_throughput_and_wait_from_a_workers_metrics(tmp_path: Path) -> None:
    with harness_for("memory", tmp_path) as h:
        observed = tb_metrics.Metrics(CollectorRegistry())
        events.subscribe(observed.handle)
        depth = tb_metrics.QueueDepthCollector([h.queue], h.engine.depth, dead_letter_queue)
        server = tb_metrics.serve(0, "127.0.0.1", registry=observed.registry, depth=depth)
        try:
            jobs.ok.enqueue_many({"n": n, "pause": 0.1} for n in range(15))
            h.start_workers(1, concurrency=1)
            url = f"http://127.0.0.1:{server.port}/metrics"
            args = ["status", "--json", "--queues", h.queue, "--metrics", url, "--interval", "1"]
            result = CliRunner().invoke(main, args)
            assert result.exit_code == 0, result.output
            report = json.loads(result.output)
            [row] = report["queues"]
            window = report["window_seconds"]
            assert window >= 1.0, "the two readings are at least --interval apart"
            ran = round(row["throughput"] * window)
            # one at a time and 0.1 s each: at most one more than fits in the window, however busy the machine
            assert 1 <= ran <= min(15, window / 0.1 + 1), (ran, window)
            assert row["failures"] == 0
            assert row["wait_p50"] is not None and row["wait_p95"] >= row["wait_p50"]
            assert row["running"] in (0, 1)
        finally:
            events.unsubscribe(observed.handle)
            server.stop()


@pytest.mark.parametrize("name", BROKER_COMBINATIONS)
def test_status_once_json_reflects_the_brokers_queue_depth(name: str, tmp_path: Path) -> None:
    with harness_for(name, tmp_path) as h:
        for n in range(3):
            jobs.ok.enqueue(n)
        publish_dead_letter(h.engine, queue=h.queue, reason="test", envelope=None, raw="{}")
        result = subprocess.run(
            [sys.executable, "-m", "taskbridge", "status", "--once", "--json", "--queues", h.queue],
            env={**os.environ, **h.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        [row] = report["queues"]
        assert (row["queue"], row["depth"], row["dead_letters"]) == (h.queue, 3, 1), report
        assert report["errors"] == []
        assert "guest:guest" not in result.stdout + result.stderr
