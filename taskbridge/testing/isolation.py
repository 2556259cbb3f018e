"""Jobs a test declares, forgotten when it ends: :func:`isolated_jobs` (the ``job_registry`` fixture)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from taskbridge.declared import scope

if TYPE_CHECKING:
    from taskbridge.job import Job


@contextlib.contextmanager
def isolated_jobs() -> Iterator[Mapping[str, Job[..., Any]]]:
    """Declare jobs with ``@job`` inside the block; they are forgotten when it ends.

    Yields the registry in force inside the block, by name. Jobs declared before the block (the
    modules a test file imports at its top) stay visible inside it and stay declared after it; a
    name declared inside may be declared again, with other options, by the next block. The
    registry is the process's: the embedded engine's worker threads run the jobs declared inside.

    A module imported for the first time inside the block declares its jobs there too, and they are
    forgotten with the block while the module stays in ``sys.modules``: import job modules that
    later tests need at the top of the test file (or remove the module from ``sys.modules`` as the
    block ends). Messages of a job declared inside that are still queued when the block ends find
    no job (their worker dead-letters them as an unknown job): let them run, or purge the queue,
    before the block ends.
    """
    with scope() as jobs:
        yield jobs
