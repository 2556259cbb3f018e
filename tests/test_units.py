"""Durations ("30s", "5m") and rates ("70/s", "1000/m") as users write them."""

from __future__ import annotations

import math

import pytest

from taskbridge.units import Rate, parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        (0, 0.0),
        ("30", 30.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 10 s ", 10.0),
    ],
)
def test_durations(text: float | str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", r"timeout: cannot read 'soon' as a duration; use seconds or '250ms', '30s'"),
        ("5 minutes", r"cannot read '5 minutes'"),
        ("-5s", r"cannot read '-5s'"),
        ("", r"cannot read ''"),
        (-1, r"timeout: must not be negative, got -1"),
        (True, r"timeout: expected seconds or a string like '30s', got True"),
        ([5], r"timeout: expected seconds or a string like '30s', got list"),
        (None, r"got NoneType"),
        (math.nan, r"timeout: must be a finite number of seconds"),
        (math.inf, r"must be a finite number of seconds"),
    ],
)
def test_bad_durations_say_what_and_how(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value, what="timeout")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("70/s", 70, 1),
        ("1000/m", 1000, 60),
        ("10/h", 10, 3600),
        ("5/10s", 5, 10),
        ("2/d", 2, 86400),
        ("0.5/s", 0.5, 1),
        (" 3 / 500ms ", 3, 0.5),
    ],
)
def test_rates(text: str, count: float, period: float) -> None:
    rate = parse_rate(text)
    assert (rate.count, rate.period) == (count, period)
    assert rate.interval == pytest.approx(period / count)


def test_rate_interval_and_text() -> None:
    rate = parse_rate("70/s")
    assert rate.interval == pytest.approx(1 / 70)
    assert str(rate) == "70/1s"
    assert parse_rate(rate) is rate


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("70", r"rate_limit: cannot read '70'; use 'N/s', 'N/m', 'N/h' or 'N/10s'"),
        ("70/week", r"cannot read '70/week'"),
        ("fast", r"cannot read 'fast'"),
        ("-1/s", r"cannot read '-1/s'"),
        ("0/s", r"rate_limit: '0/s' must allow at least some jobs per period"),
        ("5/0s", r"'5/0s' must allow at least some jobs per period"),
        (70, r"rate_limit: expected a string like '70/s' or '1000/m', got 70"),
        (None, r"got None"),
    ],
)
def test_bad_rates_say_what_and_how(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "period"), [(0, 1), (5, 0), (-1, 1), (math.inf, 1), (1, math.nan)])
def test_a_rate_built_directly_is_validated_too(count: float, period: float) -> None:
    with pytest.raises(ValueError, match=r"Rate\.(count|period) must be a positive number"):
        Rate(count=count, period=period)
