"""Shows, with boto3 alone, that moto's SQS server hands out messages it should not.

Several processes receive from one queue and delete each message at once, checking every answer,
and note the client's time of each call. A message received again counts as:

- *late*: its delete was answered after the visibility timeout; any SQS may deliver it again;
- *while invisible*: received again before its visibility timeout could have ended: two receives
  running at once in moto's threaded server both took it (``receive_message`` marks a message
  received without a lock);
- *after a timely delete*: received again, asked for after a delete that was answered 200 before
  the visibility timeout could end: moto lost the delete (``Queue.delete_message`` rebuilds the
  queue's message list without a lock, so a concurrent delete can put the message back).

Usage, with a moto server running (``moto_server -p 4566``):

    python benchmarks/moto_lost_delete.py --endpoint http://127.0.0.1:4566 --messages 1000 --consumers 8

On SQS itself the last two counts stay 0 short of SQS's rare duplicate deliveries.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import boto3


def _client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _consume(endpoint: str, url: str, receive: int, visibility: int, idle: float, batch_delete: bool, out: Any) -> None:
    """Receive and delete at once until the queue stays empty for ``idle`` seconds; put a list of
    ``(body, receive_asked_at, receive_answered_at, delete_answered_at, delete_answer)`` for every message received."""
    client = _client(endpoint)
    seen: list[tuple[str, float, float, float, str]] = []
    last = time.monotonic()
    while time.monotonic() - last < idle:
        asked_at = time.time()
        messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=receive, VisibilityTimeout=visibility).get(
            "Messages", []
        )
        got_at = time.time()
        if not messages:
            time.sleep(0.1)
            continue
        last = time.monotonic()
        answers: dict[str, tuple[float, str]] = {}
        if batch_delete:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            answer = client.delete_message_batch(QueueUrl=url, Entries=entries)
            answered_at = time.time()
            answers = {e["Id"]: (answered_at, "deleted") for e in answer.get("Successful", [])}
            answers.update({f["Id"]: (answered_at, f["Code"]) for f in answer.get("Failed", [])})
        else:
            for i, message in enumerate(messages):
                try:
                    client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                    answers[str(i)] = (time.time(), "deleted")
                except client.exceptions.ClientError as exc:
                    answers[str(i)] = (time.time(), exc.response["Error"]["Code"])
        seen.extend((m["Body"], asked_at, got_at, *answers[str(i)]) for i, m in enumerate(messages))
    out.put(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:4566")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--receive", type=int, default=1, help="MaxNumberOfMessages per ReceiveMessage")
    parser.add_argument("--visibility", type=int, default=10, help="seconds")
    parser.add_argument("--batch-delete", action="store_true", help="DeleteMessageBatch instead of DeleteMessage")
    args = parser.parse_args()

    client = _client(args.endpoint)
    url = client.create_queue(QueueName=f"lost-delete-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for start in range(0, args.messages, 10):
        entries = [{"Id": str(i), "MessageBody": str(start + i)} for i in range(min(10, args.messages - start))]
        assert not client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")

    out: Any = multiprocessing.Queue()
    # A consumer stops after twice the visibility timeout with nothing received, so a lost delete
    # has had time to come back.
    idle = 2.0 * args.visibility + 2.0
    workers = [
        multiprocessing.Process(
            target=_consume, args=(args.endpoint, url, args.receive, args.visibility, idle, args.batch_delete, out)
        )
        for _ in range(args.consumers)
    ]
    for worker in workers:
        worker.start()
    deliveries: dict[str, list[tuple[float, float, float, str]]] = defaultdict(list)
    for _ in workers:
        for body, *times_and_answer in out.get():
            deliveries[body].append(tuple(times_and_answer))  # type: ignore[arg-type]
    for worker in workers:
        worker.join()
    client.delete_queue(QueueUrl=url)

    # Times are the client's. A receive asked at t is marked by the server after t, so its message is
    # invisible until after t + visibility; a delete answered before then was done in time.
    vt = args.visibility
    refused = Counter(run[-1] for runs in deliveries.values() for run in runs if run[-1] != "deleted")
    late: list[int] = []  # the delete came after the visibility timeout: any SQS may deliver it again
    invisible: list[int] = []  # handed out again while it was still invisible to every receive
    lost: list[int] = []  # handed out again after a delete done in time was answered 200
    for body, runs in deliveries.items():
        runs.sort()
        for (asked, _, answered, answer), (asked_again, got_again, *_) in pairwise(runs):
            if answered >= asked + vt:
                late.append(int(body))
            elif got_again < asked + vt and got_again < answered:
                invisible.append(int(body))
            elif answer == "deleted" and asked_again > answered:
                lost.append(int(body))
    total = sum(len(runs) for runs in deliveries.values())
    print(f"messages sent: {args.messages}, distinct received: {len(deliveries)}, receives: {total}")
    print(f"deletes refused for a handle just received: {dict(refused)}")
    print(f"deleted after the visibility timeout, then received again (any SQS may): {len(late)}")
    print(f"received again while still invisible (a server fault): {len(invisible)} {sorted(invisible)[:10]}")
    print(f"received again after a timely delete answered 200 (a server fault): {len(lost)} {sorted(lost)[:10]}")


if __name__ == "__main__":
    main()
