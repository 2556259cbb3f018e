"""What each ``@app.task`` / ``@dramatiq.actor`` option becomes in ``@job``, as libcst expressions.

A mapping returns the ``@job`` keywords, notes on behaviour that changes, and - when an option
cannot be carried over safely - the reason, in which case the decorator is left as it is.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

import libcst as cst

_EMPTY = cst.Module([])

CELERY_DROPPED = {
    "acks_late": "taskbridge always acknowledges after the job ran (at least once)",
    "reject_on_worker_lost": "a job whose worker died is always delivered again",
    "acks_on_failure_or_timeout": "a failed job is retried or dead-lettered, then acknowledged",
    "ignore_result": "taskbridge stores no results",
    "store_errors_even_if_ignored": "taskbridge stores no results; failures go to the dead-letter queue",
    "track_started": "taskbridge reports 'started' as an event and a metric",
    "send_events": "taskbridge emits events and Prometheus metrics for every job",
    "typing": "arguments are checked against the signature at enqueue",
}
"""Celery options taskbridge makes unnecessary: removed, with why."""

DRAMATIQ_RETRY_DEFAULTS = {"max_retries": 20, "min_backoff": 15_000, "max_backoff": 7 * 86_400_000}
"""Dramatiq's Retries middleware retries every actor by default; the codemod writes that out."""


@dataclass
class Mapped:
    """The ``@job`` keywords for one decorator, or why it cannot be mapped."""

    keywords: list[tuple[str, cst.BaseExpression]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: str | None = None
    uses_backoff: bool = False
    aliases: list[str] = field(default_factory=list)


def literal(node: cst.BaseExpression) -> Any:
    """The Python value of a literal expression; raises ValueError for anything else."""
    return ast.literal_eval(_EMPTY.code_for_node(node))


def _number(node: cst.BaseExpression, option: str) -> float | int:
    try:
        value = literal(node)
    except (ValueError, SyntaxError):
        raise ValueError(f"{option}= is not a literal number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{option}= is not a number")
    return value


def _string(value: str) -> cst.SimpleString:
    return cst.SimpleString(repr(value).replace("'", '"') if '"' not in value else repr(value))


def millis(ms: float) -> cst.BaseExpression:
    """A duration in milliseconds as taskbridge reads it: ``"15s"``, ``"7d"``, ``"250ms"``."""
    if ms % 1000:
        return _string(f"{ms:g}ms")
    seconds = int(ms // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return _string(f"{seconds // size}{unit}")
    return _string(f"{seconds}s")


def _backoff(
    max_retries: cst.BaseExpression,
    base: cst.BaseExpression,
    cap: cst.BaseExpression,
    jitter: bool,
    on: cst.BaseExpression | None,
) -> cst.Call:
    parts = {"max_retries": max_retries, "base": base, "cap": cap, "jitter": cst.Name(str(jitter))}
    if on is not None:
        parts["on"] = on
    text = ", ".join(f"{key}={_EMPTY.code_for_node(value)}" for key, value in parts.items())
    return cst.ensure_type(cst.parse_expression(f"Backoff({text})"), cst.Call)


def map_celery(options: dict[str, cst.BaseExpression]) -> Mapped:
    """Map the options of ``@app.task(...)`` / ``@shared_task(...)`` (``bind`` is handled by the caller)."""
    out = Mapped()
    try:
        _celery(options, out)
    except ValueError as exc:
        out.problem = str(exc)
    return out


def _celery(options: dict[str, cst.BaseExpression], out: Mapped) -> None:
    retry_options = {
        "autoretry_for",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "retry_jitter",
        "default_retry_delay",
        "retry_kwargs",
    }
    for name, node in options.items():
        if name in retry_options or name == "bind":
            continue
        if name == "name":
            value = _literal_str(node, "name")
            out.aliases.append(value)
        elif name == "queue":
            out.keywords.append(("queue", node))
        elif name == "soft_time_limit":
            out.keywords.append(("timeout", node))
        elif name == "time_limit":
            if "soft_time_limit" not in options:
                out.keywords.append(("timeout", cst.Name("None")))
            out.keywords.append(("hard_timeout", node))
        elif name == "expires":
            _number(node, "expires")
            out.keywords.append(("expires", node))
            out.notes.append("expires now counts from when the job is due, not from sending")
        elif name == "rate_limit":
            out.keywords.append(("rate_limit", _celery_rate(node)))
            out.notes.append("rate_limit was per worker in Celery; in taskbridge it is global across all workers")
        elif name == "serializer":
            if _literal_str(node, "serializer") != "json":
                raise ValueError("serializer= is not 'json': taskbridge only sends JSON arguments")
        elif name in CELERY_DROPPED:
            out.notes.append(f"{name}= removed: {CELERY_DROPPED[name]}")
        elif name == "priority":
            raise ValueError("priority= has no equivalent: send urgent work to its own queue with its own workers")
        elif name == "base":
            raise ValueError(f"custom Task base class ({_EMPTY.code_for_node(node)}): move its hooks into the job")
        else:
            raise ValueError(f"unknown option {name}=; map it by hand (see migration_guide/from_celery.md)")
    if "retry_kwargs" in options:
        raise ValueError("retry_kwargs= cannot be mapped; write retry=Backoff(...) by hand")
    if "autoretry_for" not in options:
        unused = sorted(set(options) & (retry_options - {"autoretry_for"}))
        if unused:
            out.notes.append(f"{', '.join(unused)} removed: without autoretry_for they only applied to self.retry()")
        return
    max_retries = options.get("max_retries", cst.Integer("3"))
    if isinstance(max_retries, cst.Name) and max_retries.value == "None":
        raise ValueError("max_retries=None retries forever; pick a number for retry=Backoff(max_retries=...)")
    backoff = options.get("retry_backoff")
    backoff_value = literal(backoff) if backoff is not None else False
    if backoff_value is False:
        delay = options.get("default_retry_delay", cst.Integer("180"))
        base: cst.BaseExpression = delay
        cap: cst.BaseExpression = delay
        jitter = False
    else:
        base = cst.Integer("1") if backoff_value is True else backoff  # type: ignore[assignment]
        cap = options.get("retry_backoff_max", cst.Integer("600"))
        jitter_node = options.get("retry_jitter")
        jitter = bool(literal(jitter_node)) if jitter_node is not None else True
    out.keywords.append(("retry", _backoff(max_retries, base, cap, jitter, options["autoretry_for"])))
    out.uses_backoff = True


def _celery_rate(node: cst.BaseExpression) -> cst.BaseExpression:
    try:
        value = literal(node)
    except (ValueError, SyntaxError):
        raise ValueError("rate_limit= is not a literal") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _string(f"{value:g}/s")
    if isinstance(value, str):
        return node
    raise ValueError(f"rate_limit={value!r} is neither a number nor a rate like '10/m'")


def _literal_str(node: cst.BaseExpression, option: str) -> str:
    try:
        value = literal(node)
    except (ValueError, SyntaxError):
        raise ValueError(f"{option}= is not a literal string") from None
    if not isinstance(value, str):
        raise ValueError(f"{option}= is not a string")
    return value


def map_dramatiq(options: dict[str, cst.BaseExpression]) -> Mapped:
    """Map the options of ``@dramatiq.actor(...)``."""
    out = Mapped()
    try:
        _dramatiq(options, out)
    except ValueError as exc:
        out.problem = str(exc)
    return out


def _dramatiq(options: dict[str, cst.BaseExpression], out: Mapped) -> None:
    retry_options = {"max_retries", "min_backoff", "max_backoff"}
    for name, node in options.items():
        if name in retry_options:
            continue
        if name == "actor_name":
            out.aliases.append(_literal_str(node, "actor_name"))
        elif name == "queue_name":
            out.keywords.append(("queue", node))
        elif name == "time_limit":
            out.keywords.append(("timeout", millis(_number(node, "time_limit"))))
        elif name == "max_age":
            out.keywords.append(("expires", millis(_number(node, "max_age"))))
            out.notes.append("max_age becomes expires, counted from when the job is due, not from sending")
        elif name == "retry_when":
            raise ValueError("retry_when= is a function: express it as retry=Backoff(on=(...)) by hand")
        elif name == "throws":
            raise ValueError(
                "throws= lists exceptions not to retry; taskbridge lists the ones to retry: Backoff(on=(...))"
            )
        elif name == "priority":
            raise ValueError("priority= has no equivalent: send urgent work to its own queue with its own workers")
        elif name == "broker":
            raise ValueError("broker= is chosen by TASKBRIDGE_BROKER_URL in taskbridge; remove it by hand")
        else:
            raise ValueError(f"unknown option {name}= (a middleware's?); map it by hand (see migration_guide/)")
    values: dict[str, int | float] = {}
    for name, default in DRAMATIQ_RETRY_DEFAULTS.items():
        values[name] = _number(options[name], name) if name in options else default
    if values["max_retries"] == 0:
        return
    if not set(options) & retry_options:
        out.notes.append("Dramatiq's default retries (20, from 15s up to 7d) are written out; lower them if you like")
    out.keywords.append(
        (
            "retry",
            _backoff(
                cst.Integer(str(int(values["max_retries"]))),
                millis(values["min_backoff"]),
                millis(values["max_backoff"]),
                True,
                None,
            ),
        )
    )
    out.uses_backoff = True
