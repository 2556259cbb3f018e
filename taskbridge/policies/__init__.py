"""The policies of a job, one concern per module, and the order the runner applies them in.

A new policy is one module with a :class:`~taskbridge.policies.base.Policy` subclass (its options,
``parse`` and the hooks it needs) and one line registering it: in :data:`POLICIES` below for a
policy taskbridge ships, or ``taskbridge.policies.register(MyPolicy(), before="timeout")`` in a
project's own code. Its options are then ``@job`` options (``@job(my_option=...)``) and the values
its ``parse`` returns are read with :meth:`JobSpec.option <taskbridge.spec.JobSpec.option>`;
``job.py`` and ``spec.py`` do not change. Tests register one for a block with
``with taskbridge.policies.registered(MyPolicy()):``.
"""

from __future__ import annotations

from ..spec import JobSpec
from .arguments import Arguments
from .base import Policy
from .concurrency import Concurrency
from .delay import Delay
from .expiry import Expiry
from .lock import Lock
from .rate_limit import RateLimit
from .registry import RESERVED_OPTIONS, PolicyRegistry
from .retry import Retry
from .timeout import Timeout
from .unique import Unique

__all__ = [
    "POLICIES",
    "RESERVED_OPTIONS",
    "Policy",
    "PolicyRegistry",
    "for_job",
    "needs_coordination",
    "register",
    "registered",
    "unregister",
    "with_hook",
]

POLICIES = PolicyRegistry(
    Expiry(),
    Delay(),
    Arguments(),
    RateLimit(),
    Lock(),
    Concurrency(),
    Timeout(),
    Retry(),
    Unique(),
)
"""Every policy, in the order the runner asks them before a run (and releases them after, reversed):
the built-in ones listed here, then wherever :func:`register` put others."""

register = POLICIES.register
"""Add a policy: ``register(RequiresTag(), before="timeout")`` (last when no place is given)."""
unregister = POLICIES.unregister
"""Take a registered policy out by name."""
registered = POLICIES.registered
"""``with registered(RequiresTag()):`` the policy is registered for the block only (tests)."""


def needs_coordination(spec: JobSpec) -> bool:
    """Whether a policy that keeps state in the coordination store (:attr:`Policy.coordinated`) applies to ``spec``."""
    return POLICIES.needs_coordination(spec)


def with_hook(hook: str) -> tuple[Policy, ...]:
    """The policies that implement ``hook`` (``on_enqueue``, ``after_outcome``...), in order."""
    return POLICIES.with_hook(hook)


for_job = POLICIES.for_job
"""The policies that apply to a job, in order, and the key template options it sets
(``lock``, ``rate_key``...), rendered once per message; worked out once per job."""
