"""The transport's own ceiling from Python: how fast raw bodies of an envelope's size go in.

    .venv/bin/python benchmarks/bench_ceiling.py --broker redis://127.0.0.1:6379/0 --jobs 20000
    .venv/bin/python benchmarks/bench_ceiling.py --broker amqp://guest:guest@127.0.0.1:5672//

Redis: ``LPUSH`` pipelined in batches of 1,000. RabbitMQ: ``basic_publish`` on one pika channel,
unconfirmed, then with publisher confirms (one round trip each, as a plain confirmed loop pays).
Queues and keys are fresh and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from measure import rate, timed

from taskbridge import Envelope

BATCH = 1000


def _body(index: int) -> bytes:
    return Envelope(job="bench.noop", queue="bench", args=[index]).encode().encode()


def redis_ceiling(url: str, n: int) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url)
    key = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    bodies = [_body(i) for i in range(n)]

    def push() -> None:
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, *bodies[start : start + BATCH])
            pipe.execute()

    try:
        return {"ceiling_publish": rate(n, timed(push))}
    finally:
        client.delete(key)
        client.close()


def amqp_ceiling(url: str, n: int) -> dict[str, float]:
    import pika
    from taskbridge_dramatiq.brokers import pika_url

    connection = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
    channel = connection.channel()
    queue = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=True)
    bodies = [_body(i) for i in range(n)]
    persistent = pika.BasicProperties(delivery_mode=2)

    def publish() -> None:
        for body in bodies:
            channel.basic_publish("", queue, body, persistent)

    try:
        unconfirmed = rate(n, timed(publish))
        channel.queue_purge(queue)
        channel.confirm_delivery()
        confirmed = rate(n, timed(publish))
        return {"ceiling_publish": unconfirmed, "ceiling_publish_confirmed": confirmed}
    finally:
        channel.queue_delete(queue)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis:// or amqp:// URL")
    parser.add_argument("--jobs", type=int, default=20_000, help="bodies to publish")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures (bodies/s) to this file")
    args = parser.parse_args()
    if args.broker.startswith("redis"):
        figures = redis_ceiling(args.broker, args.jobs)
    elif args.broker.startswith("amqp"):
        figures = amqp_ceiling(args.broker, args.jobs)
    else:
        print(f"no ceiling measurement for {args.broker}", file=sys.stderr)
        return 2
    for name, value in figures.items():
        print(f"{name:<28} {value:>10,.0f}/s")
    if args.json is not None:
        args.json.write_text(json.dumps({"broker": args.broker, "jobs": args.jobs, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
