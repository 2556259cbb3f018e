"""Stage timestamps of ``bench_latency.py --stages`` (Dramatiq on RabbitMQ), loaded by every process
whose ``PYTHONPATH`` starts with this directory.

Each worker appends, per message, how long after its enqueue (the sender's clock, the job's
argument) it reached each stage: ``arrived`` (pika hands the delivery to the channel),
``dequeued`` (a Dramatiq worker thread starts ``process_message``) and, on taskbridge's side,
``runner`` (``Runner.run`` starts). The job's own start is what ``bench_latency.py`` measures.
Each stamp costs a regular expression and a write, a few microseconds, on every side alike.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

_OUT = os.environ.get("BENCH_LATENCY_STAGES")
_SIDE = os.path.basename(os.environ.get("BENCH_LATENCY_FILE", "sender")).removesuffix(".txt")
_SENT = re.compile(rb"\[(1\d{9}\.\d+)\]")
"""The job's only argument: the sender's ``time.time()`` at enqueue."""


def _stamp(stage: str, body: Any) -> None:
    now = time.time()
    found = _SENT.search(body if isinstance(body, bytes | bytearray) else str(body).encode())
    if found is None or _OUT is None:
        return
    fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{_SIDE} {stage} {now - float(found.group(1))}\n".encode())
    finally:
        os.close(fd)


def _install() -> None:
    import pika.channel

    on_deliver = pika.channel.Channel._on_deliver

    def arrived(self: Any, method_frame: Any, header_frame: Any, body: bytes) -> Any:
        _stamp("arrived", body)
        return on_deliver(self, method_frame, header_frame, body)

    pika.channel.Channel._on_deliver = arrived

    import dramatiq.worker

    process_message = dramatiq.worker._WorkerThread.process_message

    def dequeued(self: Any, message: Any) -> Any:
        _stamp("dequeued", message._message.encode())
        return process_message(self, message)

    dramatiq.worker._WorkerThread.process_message = dequeued

    import taskbridge.runner

    run = taskbridge.runner.Runner.run

    def runner(self: Any, raw: Any, *args: Any, **kwargs: Any) -> Any:
        _stamp("runner", raw)
        return run(self, raw, *args, **kwargs)

    taskbridge.runner.Runner.run = runner  # type: ignore[method-assign]


if _OUT and "BENCH_LATENCY_FILE" in os.environ:
    _install()
