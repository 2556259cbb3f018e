"""The ordered registry of policies: the built-in ones, and any a project registers beside them."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import TypeVar, overload

from ..spec import POLICY_FIELDS, JobSpec
from .base import Policy

P = TypeVar("P", bound=Policy)

RESERVED_OPTIONS = frozenset(
    {"func", "name", "queue", "result_ttl", "aliases", "schedule", "schedule_tz", "missed"}  # @job's own keywords
    | {f.name for f in fields(JobSpec) if f.name not in POLICY_FIELDS}  # the JobSpec fields @job sets itself
)
"""Names no policy may own as an option: ``@job``'s own keywords and the fields it sets itself."""


class PolicyRegistry(Sequence[Policy]):
    """The policies in the order the runner asks them before a run (and releases them after, reversed).

    It reads like the tuple it replaces (iterate, index, ``len``); :meth:`register` adds a policy at
    a chosen place, and everything that reads the registry (``@job``, the producer, the runner)
    sees it from then on. Register before the jobs that use the policy's options are declared.
    """

    def __init__(self, *policies: Policy) -> None:
        self._lock = threading.Lock()
        self._order: tuple[Policy, ...] = ()
        self._derived: dict[str, tuple[Policy, ...]] = {}
        self._hooked: dict[str, list[Policy]] = {}
        self._of_job: dict[int, tuple[JobSpec, tuple[Policy, ...], tuple[str, ...]]] = {}
        for policy in policies:
            self.register(policy)

    @overload
    def __getitem__(self, index: int) -> Policy: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Policy, ...]: ...
    def __getitem__(self, index: int | slice) -> Policy | tuple[Policy, ...]:
        return self._order[index]

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._order)

    def __repr__(self) -> str:
        return f"PolicyRegistry({', '.join(policy.name for policy in self._order)})"

    @property
    def names(self) -> tuple[str, ...]:
        """The registered policies' names, in order."""
        return tuple(policy.name for policy in self._order)

    @property
    def options(self) -> frozenset[str]:
        """Every ``@job`` option a registered policy owns."""
        return frozenset(option for policy in self._order for option in policy.options)

    def register(self, policy: P, *, before: str | None = None, after: str | None = None) -> P:
        """Add ``policy`` to the order: just before or after the policy of that name, or last.

        Its options become ``@job`` options (passed to its :meth:`~Policy.parse`); the values it
        returns that are not :class:`~taskbridge.spec.JobSpec` fields are kept in
        :attr:`JobSpec.policy_options <taskbridge.spec.JobSpec.policy_options>`. Raises ValueError
        for a name already registered or an option another policy (or ``@job`` itself) owns.
        """
        if not isinstance(policy, Policy):
            raise TypeError(f"a policy must be an instance of a Policy subclass, got {policy!r}")
        if before is not None and after is not None:
            raise ValueError("pass before= or after=, not both")
        with self._lock:
            self._check(policy)
            order = list(self._order)
            anchor = before if before is not None else after
            if anchor is None:
                order.append(policy)
            else:
                if anchor not in self.names:
                    raise ValueError(f"no policy named {anchor!r} is registered; registered: {', '.join(self.names)}")
                at = self.names.index(anchor)
                order.insert(at if before is not None else at + 1, policy)
            self._set(tuple(order))
        return policy

    def unregister(self, name: str) -> Policy:
        """Take the policy called ``name`` out of the order; jobs keep the options they parsed."""
        with self._lock:
            if name not in self.names:
                raise ValueError(f"no policy named {name!r} is registered")
            policy = self._order[self.names.index(name)]
            self._set(tuple(p for p in self._order if p is not policy))
        return policy

    @contextlib.contextmanager
    def registered(
        self, policy: Policy | None = None, *, before: str | None = None, after: str | None = None
    ) -> Iterator[None]:
        """Register ``policy`` for the duration of the block (tests); on the way out the order is
        put back as it was, which also undoes what the block registered (a jobs module imported
        in it, say)."""
        with self._lock:
            saved = self._order
        try:
            if policy is not None:
                self.register(policy, before=before, after=after)
            yield
        finally:
            with self._lock:
                self._set(saved)

    def with_hook(self, hook: str) -> tuple[Policy, ...]:
        """The policies that implement ``hook`` (``on_enqueue``, ``after_outcome``...), in order."""
        found = self._derived.get(hook)
        if found is None:
            base = getattr(Policy, hook)
            found = self._derived[hook] = tuple(p for p in self._order if getattr(type(p), hook) is not base)
        return found

    def hooked(self, hook: str) -> Sequence[Policy]:
        """:meth:`with_hook` as a list kept up to date in place, for a caller that holds it once
        and reads it on every message (the runner)."""
        with self._lock:
            return self._hooked.setdefault(hook, list(self.with_hook(hook)))

    def needs_coordination(self, spec: JobSpec) -> bool:
        """Whether a policy that keeps state in the coordination store applies to ``spec``."""
        return any(policy.coordinated and policy.applies(spec) for policy in self._order)

    def for_job(self, spec: JobSpec) -> tuple[tuple[Policy, ...], tuple[str, ...]]:
        """The policies the runner asks for ``spec``, in order, and the key template options it sets
        (``lock``, ``rate_key``...), rendered once per message; worked out once per job."""
        known = self._of_job.get(id(spec))
        if known is None or known[0] is not spec:
            at_run = set(self.with_hook("before_run"))
            policies = tuple(p for p in self._order if (p in at_run or p.holds) and p.applies(spec))
            templates = tuple(option for policy in policies for option in policy.templates if spec.option(option))
            known = self._of_job[id(spec)] = (spec, policies, templates)
        return known[1], known[2]

    def _check(self, policy: Policy) -> None:
        if not policy.name or not isinstance(policy.name, str):
            raise ValueError(f"policy {type(policy).__qualname__} needs a name")
        if policy.name in self.names or policy in self._order:
            raise ValueError(f"a policy named {policy.name!r} is already registered")
        for option in policy.options:
            if not option.isidentifier():
                raise ValueError(f"policy {policy.name!r}: option {option!r} is not a keyword name")
            if option in RESERVED_OPTIONS:
                raise ValueError(f"policy {policy.name!r}: option {option!r} is @job's own")
            owner = next((p.name for p in self._order if option in p.options), None)
            if owner is not None:
                raise ValueError(f"policy {policy.name!r}: option {option!r} is already owned by policy {owner!r}")

    def _set(self, order: tuple[Policy, ...]) -> None:
        self._order = order
        # Fresh caches swapped in whole: a worker thread reading the old ones meanwhile is fine.
        self._derived = {}
        self._of_job = {}
        for hook, hooked in self._hooked.items():
            hooked[:] = self.with_hook(hook)
