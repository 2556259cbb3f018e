"""The jobs declared in this process, by name (filled by the ``@job`` decorator).

One registry is current for the whole process at a time: every thread reads the same one, since
the embedded engine's workers (and a worker's threads) look jobs up by name from threads other
than the one that declared them. :func:`scope` puts a fresh registry in place for a while (a test,
with ``taskbridge.testing.isolated_jobs`` or the pytest fixture ``job_registry``); the jobs
declared inside it are forgotten when it ends.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job

_registry: dict[str, Job[..., Any]] = {}
# Held while a declaration checks the names taken and adds its own, and while a scope swaps the
# registry, so neither sees the other half done. Reentrant: a declaration reads registry() inside.
_changing = threading.RLock()


def registry() -> dict[str, Job[..., Any]]:
    """Every job declared in this process (in the innermost :func:`scope`), by name."""
    return _registry


def lookup(name: str) -> Job[..., Any] | None:
    """The job declared under ``name`` in the current registry, or None."""
    return _registry.get(name)


@contextlib.contextmanager
def declaring() -> Iterator[dict[str, Job[..., Any]]]:
    """The current registry, held against other declarations and scope changes until the block ends."""
    with _changing:
        yield _registry


@contextlib.contextmanager
def scope() -> Iterator[dict[str, Job[..., Any]]]:
    """Declare jobs in a fresh registry until the block ends, then forget them.

    The jobs declared before the block stay visible inside it (the job modules a test file imports
    at its top); the jobs declared inside are gone afterwards, and a name taken inside may be taken
    again by the next scope. The registry is the process's, not the thread's: worker threads see
    the jobs declared inside. Scopes nest; each must end before the one around it.
    """
    global _registry
    with _changing:
        outer = _registry
        inner = dict(outer)
        _registry = inner
    try:
        yield inner
    finally:
        with _changing:
            if _registry is not inner:
                raise RuntimeError("job registry scopes must end in the reverse order they began")
            _registry = outer
