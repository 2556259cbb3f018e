"""Jobs the Dramatiq broker-fault tests drain while the broker connection is cut; each records a run."""

from __future__ import annotations

import time

from taskbridge import job
from taskbridge.testing.jobs import record


@job(name="dqfault.paced")
def paced(n: int, seconds: float = 0.03) -> None:
    """Takes ``seconds``, so a drain lasts long enough to be cut several times, then records ``n``."""
    time.sleep(seconds)
    record("ran", job="paced", n=n)
