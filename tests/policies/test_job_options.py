"""Every @job option: good values are parsed once, bad ones fail at decoration naming the job and option."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest
from support import Embedded, EmbeddedFactory

from taskbridge import Backoff, Done, EnqueueError, JobDefinitionError, JobTimeout, job
from taskbridge.job import DEFAULT, Signature, lookup
from taskbridge.outcomes import Dead
from taskbridge.policies import POLICIES, RESERVED_OPTIONS
from taskbridge.units import Rate

# Every test here declares its own jobs: each is forgotten when its test ends.
pytestmark = pytest.mark.usefixtures("job_registry")


def test_every_option_is_parsed() -> None:
    policy = Backoff(max_retries=5, base="2s", on=(OSError,))

    @job(
        name="opts.all",
        queue="emails",
        timeout="30s",
        hard_timeout="1m",
        expires="10m",
        retry=policy,
        lock="user:{user_id}",
        lock_ttl="2m",
        on_lock="skip",
        unique="report:{user_id}:{day}",
        unique_ttl="1h",
        concurrency=3,
        rate_limit="70/s",
        rate_key="{user_id}",
        drop_unknown_kwargs=False,
    )
    def send_report(user_id: int, day: str = "today") -> None: ...

    spec = send_report.spec
    assert spec.name == "opts.all" and send_report.name == "opts.all"
    assert (spec.queue, spec.timeout, spec.hard_timeout, spec.expires) == ("emails", 30.0, 60.0, 600.0)
    assert spec.retry is policy
    assert (spec.lock, spec.lock_ttl, spec.on_lock) == ("user:{user_id}", 120.0, "skip")
    assert (spec.unique, spec.unique_ttl, spec.concurrency) == ("report:{user_id}:{day}", 3600.0, 3)
    assert spec.rate_limit == Rate(70, 1) and spec.rate_key == "{user_id}"
    assert spec.drop_unknown_kwargs is False
    assert spec.needs_coordination
    assert lookup("opts.all") is send_report


def test_defaults_of_a_bare_job() -> None:
    @job
    def bare(x: int) -> int:
        return x

    spec = bare.spec
    assert spec.name == f"{__name__}.test_defaults_of_a_bare_job.<locals>.bare"
    assert spec.queue is None and spec.resolved_queue("default") == "default"
    assert spec.timeout is DEFAULT and spec.expires is DEFAULT
    assert spec.retry.max_retries == 0
    assert spec.lock is None and spec.unique is None and spec.rate_limit is None and spec.concurrency is None
    assert not spec.needs_coordination
    assert spec.drop_unknown_kwargs is True


def test_unique_true_uses_the_arguments_and_needs_coordination() -> None:
    @job(name="opts.unique_true", unique=True)
    def once(x: int) -> None: ...

    assert once.spec.unique == ""
    assert once.spec.needs_coordination


def test_numbers_are_seconds_and_none_means_no_limit() -> None:
    @job(name="opts.numbers", timeout=1.5, expires=None, hard_timeout=None)
    def numbers() -> None: ...

    assert (numbers.spec.timeout, numbers.spec.expires, numbers.spec.hard_timeout) == (1.5, None, None)
    assert numbers.spec.resolved_timeout(300.0) == 1.5
    assert numbers.spec.resolved_expires(86400.0) is None


def bad_option_cases() -> list[Any]:
    def case(options: dict[str, Any], message: str, id: str) -> Any:
        return pytest.param(options, message, id=id)

    return [
        case({"timeout": "soon"}, r"option timeout: cannot read 'soon' as a duration", "timeout-text"),
        case({"timeout": 0}, r"option timeout= must be greater than zero, got 0", "timeout-zero"),
        case({"timeout": -3}, r"option timeout: must not be negative", "timeout-negative"),
        case({"expires": "1 week"}, r"option expires: cannot read '1 week'", "expires-text"),
        case({"hard_timeout": "x"}, r"option hard_timeout: cannot read 'x'", "hard-text"),
        case(
            {"timeout": 30, "hard_timeout": 30}, r"hard_timeout \(30s\) must be longer than timeout \(30s\)", "hard-eq"
        ),
        case(
            {"timeout": "1m", "hard_timeout": "30s"},
            r"hard_timeout \(30s\) must be longer than timeout \(60s\)",
            "hard-lt",
        ),
        case({"lock_ttl": "forever"}, r"option lock_ttl: cannot read 'forever'", "lock-ttl"),
        case({"unique_ttl": 0}, r"option unique_ttl= must be greater than zero", "unique-ttl"),
        case({"rate_limit": "70"}, r"option rate_limit: cannot read '70'; use 'N/s'", "rate-no-period"),
        case({"rate_limit": "fast"}, r"option rate_limit: cannot read 'fast'", "rate-text"),
        case({"rate_limit": "0/s"}, r"option rate_limit: '0/s' must allow at least some jobs", "rate-zero"),
        case({"rate_limit": 70}, r"option rate_limit: expected a string like '70/s'", "rate-number"),
        case({"on_lock": "wait"}, r"option on_lock= must be 'defer' or 'skip', got 'wait'", "on-lock"),
        case({"concurrency": 0}, r"option concurrency= must be a whole number >= 1, got 0", "concurrency-0"),
        case({"concurrency": 2.5}, r"option concurrency= must be a whole number >= 1, got 2\.5", "concurrency-float"),
        case({"concurrency": True}, r"option concurrency= must be a whole number >= 1, got True", "concurrency-bool"),
        case({"retry": 3}, r"option retry= must be a Backoff\(\.\.\.\), got 3", "retry-int"),
        case({"retry": {"max_retries": 3}}, r"option retry= must be a Backoff", "retry-dict"),
        case(
            {"lock": "user:{uid}"},
            r"option lock='user:\{uid\}' uses \{uid\}, which is not an argument of",
            "lock-field",
        ),
        case({"lock": "user:{}"}, r"option lock='user:\{\}' may only use plain argument names", "lock-positional"),
        case({"lock": "user:{user_id.name}"}, r"option lock=.* may only use plain argument names", "lock-attr"),
        case({"lock": "user:{user_id"}, r"option lock='user:\{user_id' is not a valid template", "lock-syntax"),
        case({"lock": ""}, r"option lock= must be a non-empty string", "lock-empty"),
        case({"lock": 5}, r"option lock= must be a non-empty string, got 5", "lock-int"),
        case({"unique": "r:{day}"}, r"option unique='r:\{day\}' uses \{day\}, which is not an argument", "unique"),
        case({"unique": 1}, r"option unique= must be True or a key template, got 1", "unique-int"),
        case(
            {"rate_limit": "5/s", "rate_key": "{tenant}"},
            r"option rate_key='\{tenant\}' uses \{tenant\}, which is not an argument",
            "rate-key-field",
        ),
        case({"rate_key": "{user_id}"}, r"option rate_key= needs rate_limit= as well", "rate-key-alone"),
        case({"queue": "a b"}, r"option queue= must be letters, digits, '-', '_' or '\.', got 'a b'", "queue"),
        case({"queue": ""}, r"option queue= must be letters", "queue-empty"),
        case({"queue": "café"}, r"option queue= must be letters", "queue-unicode"),
        case({"drop_unknown_kwargs": "no"}, r"option drop_unknown_kwargs= must be True or False", "drop-kwargs"),
    ]


@pytest.mark.parametrize(("options", "message"), bad_option_cases())
def test_bad_options_fail_at_decoration_naming_the_job_and_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(JobDefinitionError, match=r"^job 'opts\.bad': " + message):

        @job(name="opts.bad", **options)
        def bad(user_id: int) -> None: ...

    assert lookup("opts.bad") is None


def test_templates_may_use_any_name_when_the_job_takes_kwargs() -> None:
    @job(name="opts.kwargs_lock", lock="tenant:{tenant}")
    def flexible(**kwargs: Any) -> None: ...

    assert flexible.spec.lock == "tenant:{tenant}"


def test_job_options_must_be_keywords() -> None:
    with pytest.raises(JobDefinitionError, match=r"@job must decorate a function \(options go in as keywords\)"):
        job("emails")  # type: ignore[arg-type]


def test_two_jobs_with_one_name_are_refused() -> None:
    @job(name="opts.twice")
    def first() -> None: ...

    with pytest.raises(JobDefinitionError, match=r"job 'opts\.twice' is declared twice"):
        job(name="opts.twice")(len)


# defaults from the settings


def test_default_timeout_and_expiry_come_from_the_settings(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(default_timeout=0.3, default_expires="2m")
    steps: list[int] = []
    seen: list[str] = []

    @job(name="opts.slow_default")
    def slow() -> None:
        try:
            for step in range(500):
                steps.append(step)
                time.sleep(0.01)
        except JobTimeout:
            seen.append("timeout")
            raise

    envelope = slow.enqueue()
    assert envelope is not None and envelope.expires_at == pytest.approx(envelope.enqueued_at + 120, abs=0.01)
    outcome = tb.runner.run(tb.engine.messages("default")[0])
    assert isinstance(outcome, Dead) and outcome.timed_out
    assert seen == ["timeout"]
    assert len(steps) < 500, "the job was stopped before its last step"


def test_timeout_none_must_be_explicit_and_then_there_is_none(make_embedded: EmbeddedFactory) -> None:
    tb = make_embedded(default_timeout=0.1, default_expires=None)

    @job(name="opts.no_timeout", timeout=None, expires="1h")
    def patient() -> None:
        time.sleep(0.3)

    envelope = patient.enqueue()
    assert envelope is not None and envelope.expires_at == pytest.approx(envelope.enqueued_at + 3600, abs=0.01)
    assert isinstance(tb.runner.run(envelope.encode()), Done)

    @job(name="opts.no_expiry")
    def fresh() -> None: ...

    never = fresh.enqueue()
    assert never is not None and never.expires_at is None


# the handle


def test_a_plain_call_runs_inline_and_enqueues_nothing(embedded: Embedded) -> None:
    calls: list[int] = []

    @job(name="opts.inline", queue="inline", lock="k:{x}", rate_limit="1/h")
    def double(x: int) -> int:
        calls.append(threading.get_ident())
        return x * 2

    assert double(21) == 42
    assert double(x=2) == 4
    assert calls == [threading.get_ident()] * 2
    assert embedded.engine.depth("inline") == 0
    assert double.__name__ == "double" and double.__wrapped__ is double.spec.func  # type: ignore[attr-defined]


def test_enqueue_delay_and_send_all_publish(embedded: Embedded) -> None:
    @job(name="opts.aliases", queue="aliases")
    def greet(name: str) -> None: ...

    sent = [greet.enqueue("a"), greet.delay("b"), greet.send(name="c"), greet.options(queue="other").delay("d")]
    assert all(e is not None for e in sent)
    assert [(e.args, e.kwargs) for e in embedded.queued("aliases")] == [(["a"], {}), (["b"], {}), ([], {"name": "c"})]
    assert [e.args for e in embedded.queued("other")] == [["d"]]


def test_chains_run_in_order_on_the_memory_engine(embedded: Embedded) -> None:
    order: list[str] = []

    @job(name="opts.chain_a", queue="chains")
    def step_a(x: int) -> None:
        time.sleep(0.05)
        order.append(f"a{x}")

    @job(name="opts.chain_b", queue="chains")
    def step_b(x: int, label: str = "") -> None:
        order.append(f"b{x}{label}")

    chain = step_a.s(1).then(step_b.si(2, label="!")).then(step_a.si(3).then(step_b.si(4)))
    assert isinstance(chain, Signature)
    assert [step["job"] for step in chain.chain] == ["opts.chain_b", "opts.chain_a", "opts.chain_b"]
    first = chain.enqueue()
    assert first is not None and first.job == "opts.chain_a" and len(first.chain) == 3
    assert embedded.engine.depth("chains") == 1, "only the first step is published up front"
    embedded.engine.start(concurrency=4)
    assert embedded.engine.join(timeout=10)
    assert order == ["a1", "b2!", "a3", "b4"]


def test_a_failing_step_stops_its_chain(embedded: Embedded) -> None:
    order: list[str] = []

    @job(name="opts.chain_fail", queue="chains")
    def boom() -> None:
        order.append("boom")
        raise RuntimeError("no")

    @job(name="opts.chain_after", queue="chains")
    def after() -> None:
        order.append("after")

    boom.s().then(after.si()).enqueue()
    embedded.engine.start()
    assert embedded.engine.join(timeout=10)
    assert order == ["boom"]
    [dead] = embedded.dead_letters("chains")
    assert dead.headers["job"] == "opts.chain_fail"


def test_signatures_check_arguments_when_made() -> None:
    @job(name="opts.sig")
    def sig(x: Any) -> None: ...

    with pytest.raises(EnqueueError, match=r"job 'opts\.sig': positional argument 0 is not JSON-serializable"):
        sig.s({1, 2})
    with pytest.raises(
        EnqueueError, match=r"job 'opts\.sig': arguments do not match .*sig\(x\): missing a required argument: 'x'"
    ):
        sig.si()
    assert sig.s().args == [], "a chain step may leave its first argument to the previous step's result"
    with pytest.raises(EnqueueError, match=r"arguments do not match.*unexpected keyword argument 'y'"):
        sig.s(1, y=2)


def test_every_keyword_of_job_reaches_a_policy_or_is_its_own() -> None:
    parameters = inspect.signature(job).parameters
    named = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert named - POLICIES.options <= RESERVED_OPTIONS, "a keyword of @job that no policy parses"
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD, "a registered policy's options go in **options"
