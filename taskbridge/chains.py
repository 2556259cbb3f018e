"""Chains: each step's return value becomes the next step's first argument (unless made with ``.si()``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .config import get_settings
from .envelope import TAKES_RESULT, Envelope
from .errors import EnqueueError
from .outcomes import Dead, DeadCause, Done, Outcome

if TYPE_CHECKING:
    from .job import Signature


def step_of(signature: Signature) -> dict[str, Any]:
    """The chain step a signature becomes when it follows another one."""
    step: dict[str, Any] = {"job": signature.job, "args": signature.args, "kwargs": signature.kwargs}
    if not signature.immutable:
        step[TAKES_RESULT] = True
    return step


def check_length(signature: Signature) -> None:
    """Refuse, at enqueue, a chain longer than the ``chain_max_steps`` setting."""
    limit = get_settings().chain_max_steps
    steps = 1 + len(signature.chain)
    if steps > limit:
        raise EnqueueError(
            f"chain starting with job {signature.job!r} has {steps} steps, over the limit of {limit} "
            "(TASKBRIDGE_CHAIN_MAX_STEPS); split the work, or use fan_out/group for many similar jobs"
        )


def takes_result(envelope: Envelope) -> bool:
    """Whether the next step of ``envelope``'s chain receives its return value."""
    return bool(envelope.chain) and envelope.chain[0].get(TAKES_RESULT, False) is True


def next_call(envelope: Envelope, value: Any) -> tuple[dict[str, Any], list[Any], list[dict[str, Any]]]:
    """The next step, its positional arguments (the result first when it takes it) and the rest of the chain."""
    step, *rest = envelope.chain
    args = list(step.get("args", ()))
    if step.get(TAKES_RESULT, False) is True:
        args.insert(0, value)
    return step, args, rest


def checked(outcome: Outcome) -> Outcome:
    """A finished step whose result the next step needs but which is not JSON becomes a dead letter
    (replaying it runs the step again and resumes the chain)."""
    if not isinstance(outcome, Done) or not takes_result(outcome.envelope):
        return outcome
    value = outcome.value
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        same = False
    if same:
        return outcome
    envelope = outcome.envelope
    return Dead(
        envelope,
        f"job {envelope.job!r} returned a {type(value).__name__}, which is not JSON, so it cannot be passed "
        f"to the next chain step {envelope.chain[0]['job']!r}; return plain JSON (e.g. an id), or make the "
        "next step with .si() so it takes no result",
        duration=outcome.duration,
        error_type="ChainResultError",
        cause=DeadCause.BAD_RESULT,
    )
