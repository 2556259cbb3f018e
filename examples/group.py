"""Fan-in: resize many images, then notify once with the counts: python examples/group.py

Runs on the embedded engine with no configuration. With a multi-process engine, set
TASKBRIDGE_COORDINATION_URL=redis://... : the group's counter lives in the coordination store.
"""

from __future__ import annotations

from taskbridge import get_engine, job
from taskbridge.workflows import group


@job
def resize(image_id: int) -> None:
    """A member; every 50th image is broken and ends in the dead letters."""
    if image_id % 50 == 0:
        raise ValueError(f"image {image_id} is broken")


@job
def notify(counts: dict[str, int], album: str) -> None:
    """Runs once, after every member is done or dead, with the counts first."""
    print(f"album {album}: {counts['done']} of {counts['total']} resized, {counts['dead']} dead")


if __name__ == "__main__":
    ref = group(resize.s(i) for i in range(1, 1001)).then(notify.s("holidays")).enqueue()
    print(f"group {ref.id}: {ref.total} jobs enqueued in batches")
    get_engine().join(timeout=60)
