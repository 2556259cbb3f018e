"""The transport's own ceiling from Python: how fast raw bodies of an envelope's size go in.

    .venv/bin/python benchmarks/bench_ceiling.py --broker redis://127.0.0.1:6379/0 --jobs 20000
    .venv/bin/python benchmarks/bench_ceiling.py --broker amqp://guest:guest@127.0.0.1:5672//

    .venv/bin/python benchmarks/bench_ceiling.py --broker redis://127.0.0.1:6379/0 --engine celery

Redis: ``LPUSH`` pipelined in batches of 1,000 (the median of three pushes, as the engine
benchmarks take the median of three ``enqueue_many`` calls); with ``--engine dramatiq`` also the same bodies
stored as Dramatiq stores a message (``HSET`` into the queue's hash, ``RPUSH`` of the id, one
transaction per 1,000: ``ceiling_dramatiq_layout``). RabbitMQ: ``basic_publish`` on one pika channel,
unconfirmed, then with publisher confirms (one round trip each, as a plain confirmed loop pays);
and what the broker itself takes when the Python client costs nothing: frames marshalled beforehand,
written 1,000 at a time, unconfirmed (``ceiling_frames``), in one transaction per write
(``ceiling_frames_tx``) and with publisher confirms awaited one write behind
(``ceiling_frames_confirmed``); not for Celery's bodies, whose headers differ per message.
Queues and keys are fresh and removed afterwards.

The bodies are rendered before the clock starts. Without ``--engine`` each is a bare envelope of a
no-op job. With ``--engine`` each is exactly what that engine's ``enqueue_many`` writes for one
(taskbridge's default expiry, a queue name as long as the benchmarks'): on Redis, Celery's stored
kombu message (base64 body, headers, properties) or Dramatiq's message; on RabbitMQ the same body
and, for Celery, the same message headers. A ceiling of smaller bodies than the engine writes
would not be a ceiling for that engine. ``ceiling_body_bytes`` reports the size used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from measure import median_timed_cpu, rate, timed, timed_cpu

from taskbridge import Envelope
from taskbridge.envelope import EnvelopeBatch, encode_json

BATCH = 1000
QUEUE = "bench-many-00000000-0"
"""A queue name as long as the ones ``bench_celery.py`` and ``bench_dramatiq.py`` publish to."""
EXPIRES = 86400.0
"""taskbridge's default expiry: every envelope of a no-op job carries ``expires_at``."""


def _envelopes(n: int) -> EnvelopeBatch:
    now = time.time()
    batch = EnvelopeBatch("bench.noop", QUEUE, enqueued_at=now, expires_at=now + EXPIRES, not_before=None, headers={})
    for index in range(n):
        batch.add((index,), {}, encode_json([index]), "{}")
    return batch


def _plain(n: int) -> list[tuple[bytes, dict[str, Any] | None]]:
    return [(Envelope(job="bench.noop", queue="bench", args=[i]).encode().encode(), None) for i in range(n)]


def _celery_redis(n: int) -> list[tuple[bytes, dict[str, Any] | None]]:
    from taskbridge_celery.redis_batch import stored_messages

    return [(text.encode(), None) for _, texts in stored_messages(_envelopes(n), None) for text in texts]


def _celery_amqp(n: int) -> list[tuple[bytes, dict[str, Any] | None]]:
    from taskbridge_celery.wire import message_body, message_headers

    batch = _envelopes(n)
    return [
        (message_body(text), message_headers(envelope, envelope.id, None))
        for envelope, text in zip(batch, batch.texts, strict=True)
    ]


def _dramatiq(n: int) -> list[tuple[bytes, dict[str, Any] | None]]:
    from taskbridge_dramatiq.brokers.common import message_bodies

    batch = _envelopes(n)
    options = [f'{{"redis_message_id":"{uuid.uuid4().hex}-{i}"}}' for i in range(n)]
    return [(body, None) for body in message_bodies(batch, QUEUE, options)]


def bodies_for(engine: str | None, scheme: str, n: int) -> list[tuple[bytes, dict[str, Any] | None]]:
    """``n`` bodies (and AMQP headers) as ``engine`` writes them on ``scheme``; bare envelopes for None."""
    if engine is None:
        return _plain(n)
    if engine == "celery":
        return _celery_redis(n) if scheme == "redis" else _celery_amqp(n)
    return _dramatiq(n)


def redis_ceiling(url: str, n: int, engine: str | None = None) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url)
    key = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    bodies = [body for body, _ in bodies_for(engine, "redis", n)]

    def push() -> None:
        for start in range(0, n, BATCH):
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, *bodies[start : start + BATCH])
            pipe.execute()

    def push_as_dramatiq() -> None:
        # Dramatiq's own layout: each body into the queue's hash under its id, the ids onto the list.
        for start in range(0, n, BATCH):
            ids = [f"{key}-{index}" for index in range(start, min(start + BATCH, n))]
            pipe = client.pipeline(transaction=True)
            pipe.hset(f"{key}.msgs", mapping=dict(zip(ids, bodies[start : start + BATCH], strict=True)))
            pipe.rpush(key, *ids)
            pipe.execute()

    try:
        seconds, cpu = median_timed_cpu(push, lambda: client.delete(key))
        figures = {"ceiling_publish": rate(n, seconds), "ceiling_cpu": cpu / n, "ceiling_body_bytes": len(bodies[0])}
        if engine == "dramatiq":
            client.delete(key)
            figures["ceiling_dramatiq_layout"] = rate(n, timed(push_as_dramatiq))
        return figures
    finally:
        client.delete(key, f"{key}.msgs")
        client.close()


def amqp_ceiling(url: str, n: int, engine: str | None = None) -> dict[str, float]:
    import pika
    from taskbridge_dramatiq.brokers import pika_url

    connection = pika.BlockingConnection(pika.URLParameters(pika_url(url)))
    channel = connection.channel()
    queue = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue, durable=True)
    persistent = pika.BasicProperties(delivery_mode=2)
    messages = [
        (body, _properties(pika, headers) if headers is not None else persistent)
        for body, headers in bodies_for(engine, "amqp", n)
    ]

    def publish() -> None:
        for body, properties in messages:
            channel.basic_publish("", queue, body, properties)

    try:
        seconds, cpu = timed_cpu(publish)
        unconfirmed = rate(n, seconds)
        channel.queue_purge(queue)
        plain = all(headers is None for _, headers in bodies_for(engine, "amqp", 1))
        # Celery's headers differ per message: its frames cannot be marshalled once for all.
        frames = _frames_ceilings(pika, connection, channel, queue, [body for body, _ in messages]) if plain else {}
        channel.confirm_delivery()
        confirmed = rate(n, timed(publish))
        return {
            "ceiling_publish": unconfirmed,
            "ceiling_publish_confirmed": confirmed,
            **frames,
            "ceiling_cpu": cpu / n,
            "ceiling_body_bytes": len(messages[0][0]),
        }
    finally:
        channel.queue_delete(queue)
        connection.close()


def _frames_ceilings(pika: Any, connection: Any, channel: Any, queue: str, bodies: list[bytes]) -> dict[str, float]:
    """What the broker itself takes: the bodies' frames marshalled before the clock starts and
    written 1,000 at a time, unconfirmed (until the queue holds them all) and with one AMQP
    transaction per write (how taskbridge confirms a batch)."""
    from taskbridge_dramatiq.brokers.amqp_frames import publish_frames

    persistent = pika.BasicProperties(delivery_mode=2)
    n = len(bodies)

    def marshalled(number: int) -> list[bytes]:
        return [
            publish_frames(number, queue, bodies[start : start + BATCH], persistent, 1 << 30) or b""
            for start in range(0, n, BATCH)
        ]

    plain = marshalled(channel.channel_number)

    def unconfirmed() -> None:
        for data in plain:
            connection._impl._output_marshaled_frames([data])
        connection.process_data_events(0)
        while channel.queue_declare(queue, passive=True).method.message_count < n:
            time.sleep(0.001)

    figures = {"ceiling_frames": rate(n, timed(unconfirmed))}
    channel.queue_purge(queue)
    tx = connection.channel()
    tx.tx_select()
    pieces = marshalled(tx.channel_number)

    def transactions() -> None:
        for data in pieces:
            connection._impl._output_marshaled_frames([data])
            tx.tx_commit()

    figures["ceiling_frames_tx"] = rate(n, timed(transactions))
    tx.close()
    channel.queue_purge(queue)
    figures["ceiling_frames_confirmed"] = _confirmed_frames(pika, connection, queue, bodies, marshalled)
    channel.queue_purge(queue)
    return figures


def _confirmed_frames(pika: Any, connection: Any, queue: str, bodies: list[bytes], marshalled: Any) -> float:
    """Frames written 1,000 at a time on a channel in publisher-confirm mode, each write's confirms
    awaited after the next write (one batch always in flight): what the broker takes when it must
    store persistent messages before it answers, with no client cost and no round trip per batch."""
    confirmed = connection.channel()
    state = {"acked": 0, "selected": False}

    def on_confirm(frame: Any) -> None:
        if isinstance(frame.method, pika.spec.Basic.Nack):
            raise RuntimeError("RabbitMQ refused a message of the ceiling run")
        state["acked"] = max(state["acked"], frame.method.delivery_tag)

    confirmed._impl.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _: state.update(selected=True))
    connection._flush_output(lambda: state["selected"])
    pieces = marshalled(confirmed.channel_number)

    def publish() -> None:
        written = 0
        for data in pieces:
            before = written
            connection._impl._output_marshaled_frames([data])
            written += min(BATCH, len(bodies) - written)
            connection._flush_output(lambda before=before: state["acked"] >= before)
        connection._flush_output(lambda: state["acked"] >= written)

    try:
        return rate(len(bodies), timed(publish))
    finally:
        confirmed.close()


def _properties(pika: Any, headers: dict[str, Any]) -> Any:
    """What Celery's message carries besides its body."""
    from taskbridge_celery.wire import CONTENT_ENCODING, CONTENT_TYPE

    return pika.BasicProperties(
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
        headers=headers,
        correlation_id=headers["id"],
        reply_to="",
        delivery_mode=2,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0", help="redis:// or amqp:// URL")
    parser.add_argument("--jobs", type=int, default=20_000, help="bodies to publish")
    parser.add_argument(
        "--engine", choices=("celery", "dramatiq"), default=None, help="bodies as this engine writes them"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures (bodies/s) to this file")
    args = parser.parse_args()
    if args.broker.startswith("redis"):
        figures = redis_ceiling(args.broker, args.jobs, args.engine)
    elif args.broker.startswith("amqp"):
        figures = amqp_ceiling(args.broker, args.jobs, args.engine)
    else:
        print(f"no ceiling measurement for {args.broker}", file=sys.stderr)
        return 2
    for name, value in figures.items():
        if name.endswith("cpu"):
            print(f"{name:<28} {value * 1e6:>10.2f} us/body (this process)")
        else:
            print(f"{name:<28} {value:>10,.0f}{'' if name.endswith('bytes') else '/s'}")
    if args.json is not None:
        record = {"broker": args.broker, "engine": args.engine, "jobs": args.jobs, **figures}
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
