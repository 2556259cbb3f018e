"""Error reporting: job exceptions reach Sentry with job name, id and attempt; nothing needed without it."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import command_env

pytest.importorskip("sentry_sdk")


class _SentryIngest(BaseHTTPRequestHandler):
    """A real HTTP endpoint speaking Sentry's envelope ingestion: records every event item."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            body = brotli.decompress(body)
        lines = body.split(b"\n")
        index = 1
        while index + 1 < len(lines):
            header = json.loads(lines[index]) if lines[index].strip() else {}
            payload = lines[index + 1]
            if header.get("type") == "event":
                self.server.received.append(json.loads(payload))  # type: ignore[attr-defined]
            index += 2
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_job_exceptions_are_reported_with_job_id_and_attempt(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SentryIngest)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log_path = tmp_path / "worker.log"
    try:
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "taskbridge", "worker", "test_metrics_jobs"],
                env=command_env(
                    TB_OBSERVED_SEED="1",
                    TASKBRIDGE_BROKER_URL="memory://?autostart=0",
                    TASKBRIDGE_DEFAULT_QUEUE="reported",
                    SENTRY_DSN=f"http://public@127.0.0.1:{server.server_port}/1",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        received: list[dict[str, Any]] = server.received  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while len(received) < 3 and time.monotonic() < deadline:
            assert worker.poll() is None, log_path.read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        worker.send_signal(signal.SIGINT)
        worker.wait(15)
    finally:
        server.shutdown()
        server.server_close()
    reports = sorted(
        (
            e["tags"]["taskbridge.job"],
            e["tags"]["taskbridge.attempt"],
            e["tags"]["taskbridge.outcome"],
            e["level"],
            e["exception"]["values"][-1]["type"],
        )
        for e in received
    )
    assert reports == [
        ("observed.fails", "1", "dead", "error", "ValueError"),
        ("observed.flaky", "1", "retried", "warning", "OSError"),
        ("observed.flaky", "2", "dead", "error", "OSError"),
    ], log_path.read_text()
    for event in received:
        context = event["contexts"]["taskbridge"]
        assert context["id"] == event["tags"]["taskbridge.id"] and len(context["id"]) == 32
        assert context["queue"] == "reported"
        assert event["exception"]["values"][-1]["stacktrace"]["frames"], "the traceback is reported"


def test_nothing_is_needed_without_sentry(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['sentry_sdk'] = None\n"
        "from taskbridge import error_reporting\n"
        "assert not error_reporting.available()\n"
        "assert error_reporting.install('http://public@127.0.0.1:9/1') is False\n"
        "from taskbridge.worker import init_process; init_process()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=command_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_not_configured_means_not_installed() -> None:
    from taskbridge import error_reporting

    script = (
        "from taskbridge import error_reporting\n"
        "assert error_reporting.available()\n"
        "assert error_reporting.install() is False\n"
        "print('ok')\n"
    )
    assert error_reporting.available()
    result = subprocess.run(
        [sys.executable, "-c", script], env=command_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
