"""The policies of a job, one concern per module, and the order the runner applies them in.

A new policy is a module with a :class:`~taskbridge.policies.base.Policy` subclass and one line in
:data:`POLICIES`; its options become ``@job`` options and :class:`~taskbridge.spec.JobSpec` fields.
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
from .retry import Retry
from .timeout import Timeout
from .unique import Unique

POLICIES: tuple[Policy, ...] = (
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
"""Every policy, in the order the runner asks them before a run (and releases them after, reversed)."""

OPTIONS: frozenset[str] = frozenset(option for policy in POLICIES for option in policy.options)
"""The ``@job`` options the policies own."""


def needs_coordination(spec: JobSpec) -> bool:
    """Whether a policy that keeps state in the coordination store (:attr:`Policy.coordinated`) applies to ``spec``."""
    return any(policy.coordinated and policy.applies(spec) for policy in POLICIES)


def with_hook(hook: str) -> tuple[Policy, ...]:
    """The policies that implement ``hook`` (``on_enqueue``, ``after_outcome``...), in order."""
    return tuple(policy for policy in POLICIES if getattr(type(policy), hook) is not getattr(Policy, hook))


_AT_RUN = tuple(policy for policy in POLICIES if policy in with_hook("before_run") or policy.holds)
"""The policies the runner asks before a run (or that give something back after it)."""

_of_job: dict[int, tuple[JobSpec, tuple[Policy, ...], tuple[str, ...]]] = {}


def for_job(spec: JobSpec) -> tuple[tuple[Policy, ...], tuple[str, ...]]:
    """The policies that apply to ``spec``, in order, and the key template options it sets
    (``lock``, ``rate_key``...), rendered once per message; worked out once per job."""
    known = _of_job.get(id(spec))
    if known is None or known[0] is not spec:
        policies = tuple(policy for policy in _AT_RUN if policy.applies(spec))
        templates = tuple(option for policy in policies for option in policy.templates if getattr(spec, option))
        known = _of_job[id(spec)] = (spec, policies, templates)
    return known[1], known[2]
