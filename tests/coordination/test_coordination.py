"""The coordination stores keep the port's promises, in memory and on a real Redis server."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from taskbridge.config import load_settings, set_settings
from taskbridge.coordination import (
    Coordination,
    MemoryCoordination,
    RedisCoordination,
    get_coordination,
    open_coordination,
    set_coordination,
)
from taskbridge.coordination.base import slot_margin, slot_spacing_microseconds
from taskbridge.coordination.clock import ServerClock
from taskbridge.duplicates import NEWEST_LOST_ACK_MARKS, finished_marks_for, flush_finished_marks, record_key
from taskbridge.engine import TransportFacts
from taskbridge.envelope import Envelope
from taskbridge.units import Rate

RATE = Rate(count=20, period=1.0)
T = slot_spacing_microseconds(RATE) / 1_000_000  # one interval and its share of the slot margin
MICROSECOND = 1e-6  # both stores keep slot times in whole microseconds


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def coordination(request: pytest.FixtureRequest, namespace: str) -> Iterator[Coordination]:
    if request.param == "memory":
        store: Coordination = MemoryCoordination()
    else:
        store = RedisCoordination(request.getfixturevalue("redis_url"), namespace)
    yield store
    store.close()


@dataclass(frozen=True)
class Slot:
    """When a reservation may run, on this process's monotonic clock: the store read its own clock
    at some moment between ``earliest`` and ``latest`` minus the wait it returned."""

    earliest: float
    latest: float

    def gap_may_be(self, later: Slot, seconds: float) -> bool:
        """Whether ``later`` may be ``seconds`` after this slot, however long each call took."""
        return later.earliest - self.latest - MICROSECOND <= seconds <= later.latest - self.earliest + MICROSECOND


def reserve_slots(coordination: Coordination, key: str, count: int, burst: int = 1) -> list[Slot]:
    """``count`` successive reservations, each as the times its slot may be at."""
    slots = []
    for _ in range(count):
        before = time.monotonic()
        wait = coordination.reserve_rate(key, RATE, burst)
        slots.append(Slot(before + wait, time.monotonic() + wait))
    return slots


def test_isinstance_of_the_port(coordination: Coordination) -> None:
    assert isinstance(coordination, Coordination)
    assert coordination.shared is isinstance(coordination, RedisCoordination)


# rate limits


def test_first_reservation_is_immediate(coordination: Coordination) -> None:
    assert coordination.reserve_rate("jobs", RATE) == 0


def test_reservations_are_spaced_one_interval_apart(coordination: Coordination) -> None:
    slots = reserve_slots(coordination, "jobs", 6)
    for earlier, later in itertools.pairwise(slots):
        assert earlier.gap_may_be(later, T), f"{earlier} then {later}: not {T}s apart"


def test_burst_admits_that_many_at_once(coordination: Coordination) -> None:
    waits = [coordination.reserve_rate("jobs", RATE, burst=3) for _ in range(4)]
    assert waits[:3] == [0, 0, 0]
    assert 0 < waits[3] <= T
    first, second = reserve_slots(coordination, "jobs", 2, burst=3)
    assert first.gap_may_be(second, T), f"{first} then {second}: not {T}s apart"


def test_idle_limiter_refills(coordination: Coordination) -> None:
    waits = [coordination.reserve_rate("jobs", RATE, burst=2) for _ in range(3)]
    assert waits[:2] == [0, 0]
    assert waits[2] > 0
    time.sleep(3 * T + 0.02)
    assert [coordination.reserve_rate("jobs", RATE, burst=2) for _ in range(2)] == [0, 0]


class _StoppedClock(MemoryCoordination):
    """The memory store with time standing still: every reservation is asked at the same moment."""

    def _now(self) -> float:
        return 1000.0


@pytest.mark.parametrize("count", [13, 7, 200])
def test_one_more_slot_than_the_limit_never_fits_in_one_period(count: int) -> None:
    # count + 1 slots closer than one period apart would let count + 1 jobs start in one period.
    store = _StoppedClock()
    waits = [store.reserve_rate("jobs", Rate(count, 1.0)) for _ in range(count + 1)]
    assert waits[0] == 0
    assert waits[count] >= 1.0


@pytest.mark.parametrize("count", [13, 7, 200])
def test_slots_leave_a_margin_for_late_starts_and_keep_the_rate(count: int) -> None:
    # count + 1 slots span one period and its margin: a first start late by up to the margin still
    # leaves a whole period before the (count + 1)-th; the rate given up is the margin's share.
    rate = Rate(count, 1.0)
    store = _StoppedClock()
    waits = [store.reserve_rate("jobs", rate) for _ in range(count + 1)]
    assert waits[count] >= rate.period + slot_margin(rate)
    assert waits[count] <= (rate.period + slot_margin(rate)) * 1.0001


def test_reserved_slots_are_placed_on_this_hosts_clock(coordination: Coordination) -> None:
    asked = time.time()
    first = coordination.reserve_slot("jobs", RATE)
    second = coordination.reserve_slot("jobs", RATE)
    answered = time.time()
    for earliest, latest in (first, second):
        assert earliest <= latest <= earliest + slot_margin(RATE) * 0.5, "placed within part of the margin"
    # placed where the store has them: the first one now (the store read its clock between the two
    # calls of time.time()), the next one a spacing later (give or take an NTP slew of time.time())
    assert first[0] <= answered and first[1] >= asked
    assert second[0] - first[1] - 0.005 <= T <= second[1] - first[0] + 0.005


def test_the_server_clock_is_placed_by_the_quickest_recent_reply() -> None:
    clock = ServerClock()
    clock.observe(1000.0, sent=10.0, received=10.5)  # a slow reply: the offset is 989.5 to 990
    clock.observe(1001.0, sent=11.0, received=11.001)  # a quick one: 989.999 to 990
    earliest, latest = clock.local(1010.0, now=11.001)
    assert (earliest, latest) == pytest.approx((20.0, 20.001))
    clock.observe(1002.0, sent=12.0, received=12.1)  # slower than the quick one, even aged a second
    assert clock.local(1010.0, now=12.1) == pytest.approx((20.0 - 0.0011, 20.001 + 0.0011))
    later = 11.001 + 100  # a quick reply 100 s ago is worth less than a 10 ms one now
    clock.observe(1101.01, sent=later - 0.01, received=later)
    earliest, latest = clock.local(1110.0, now=later)
    assert latest - earliest == pytest.approx(0.01)


@pytest.mark.redis
def test_redis_slots_of_one_more_than_the_limit_span_a_period(redis_url: str, namespace: str) -> None:
    import redis

    # 13/s: an interval rounded down to whole microseconds (76,923) fitted 14 slots in 0.999999 s.
    store = RedisCoordination(redis_url, namespace)
    client = redis.Redis.from_url(redis_url)
    try:
        store.reserve_rate("jobs", Rate(13, 1.0))
        second_slot = int(client.get(f"{namespace}:rate:jobs") or 0)  # server microseconds
        for _ in range(13):
            store.reserve_rate("jobs", Rate(13, 1.0))
        fifteenth_slot = int(client.get(f"{namespace}:rate:jobs") or 0)
        assert fifteenth_slot - second_slot >= 1_000_000, "14 slots (the 2nd to the 15th) fit in one second"
    finally:
        client.close()
        store.close()


def test_limiters_with_different_keys_are_independent(coordination: Coordination) -> None:
    assert coordination.reserve_rate("a", RATE) == 0
    assert coordination.reserve_rate("b", RATE) == 0
    assert coordination.reserve_rate("a", RATE) > 0


# locks


def test_held_lock_is_refused(coordination: Coordination) -> None:
    token = coordination.acquire_lock("user:1", ttl=5)
    assert isinstance(token, str)
    assert coordination.acquire_lock("user:1", ttl=5) is None
    assert coordination.acquire_lock("user:2", ttl=5) is not None


def test_release_with_wrong_token_keeps_the_lock(coordination: Coordination) -> None:
    token = coordination.acquire_lock("user:1", ttl=5)
    assert token is not None
    assert coordination.release_lock("user:1", "not-the-owner") is False
    assert coordination.acquire_lock("user:1", ttl=5) is None
    assert coordination.release_lock("user:1", token) is True
    assert coordination.release_lock("user:1", token) is False
    assert coordination.acquire_lock("user:1", ttl=5) is not None


def test_lock_expires_after_its_ttl(coordination: Coordination) -> None:
    first = coordination.acquire_lock("user:1", ttl=0.1)
    assert first is not None
    time.sleep(0.15)
    second = coordination.acquire_lock("user:1", ttl=5)
    assert second is not None
    assert coordination.release_lock("user:1", first) is False
    assert coordination.lock_ttl("user:1") is not None


def test_lock_ttl_is_the_time_left(coordination: Coordination) -> None:
    assert coordination.lock_ttl("user:1") is None
    token = coordination.acquire_lock("user:1", ttl=5)
    assert token is not None
    ttl = coordination.lock_ttl("user:1")
    assert ttl is not None and 4.9 < ttl <= 5
    coordination.release_lock("user:1", token)
    assert coordination.lock_ttl("user:1") is None


def test_renewing_a_lock_extends_it_for_its_owner_only(coordination: Coordination) -> None:
    token = coordination.acquire_lock("leader", ttl=1)
    assert token is not None
    assert coordination.renew_lock("leader", token, ttl=30) is True
    ttl = coordination.lock_ttl("leader")
    assert ttl is not None and 29 < ttl <= 30
    assert coordination.renew_lock("leader", "not-the-owner", ttl=30) is False
    assert coordination.release_lock("leader", token) is True
    assert coordination.renew_lock("leader", token, ttl=30) is False, "a released lock cannot be renewed"


def test_an_expired_lock_cannot_be_renewed(coordination: Coordination) -> None:
    token = coordination.acquire_lock("leader", ttl=0.1)
    assert token is not None
    time.sleep(0.15)
    assert coordination.renew_lock("leader", token, ttl=5) is False
    assert coordination.acquire_lock("leader", ttl=5) is not None


# concurrency leases


def test_semaphore_grants_limit_leases(coordination: Coordination) -> None:
    tokens = [coordination.acquire_lease("reports", limit=3, ttl=5) for _ in range(3)]
    assert None not in tokens
    assert len(set(tokens)) == 3
    assert coordination.acquire_lease("reports", limit=3, ttl=5) is None


def test_a_released_lease_frees_room_for_one_more(coordination: Coordination) -> None:
    tokens = [coordination.acquire_lease("reports", limit=2, ttl=5) for _ in range(2)]
    assert tokens[0] is not None
    coordination.release_lease("reports", tokens[0])
    assert coordination.acquire_lease("reports", limit=2, ttl=5) is not None
    assert coordination.acquire_lease("reports", limit=2, ttl=5) is None
    coordination.release_lease("reports", "unknown-token")


def test_an_expired_lease_frees_its_room(coordination: Coordination) -> None:
    assert coordination.acquire_lease("reports", limit=1, ttl=0.1) is not None
    assert coordination.acquire_lease("reports", limit=1, ttl=0.1) is None
    time.sleep(0.15)
    assert coordination.acquire_lease("reports", limit=1, ttl=5) is not None


def test_concurrent_threads_never_exceed_the_limit(coordination: Coordination) -> None:
    start = threading.Barrier(16)
    granted: list[str | None] = []

    def take() -> None:
        start.wait()
        granted.append(coordination.acquire_lease("reports", limit=5, ttl=5))

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([token for token in granted if token is not None]) == 5


# uniqueness


def test_second_unique_claim_is_refused(coordination: Coordination) -> None:
    assert coordination.claim_unique("report:42", ttl=5) is True
    assert coordination.claim_unique("report:42", ttl=5) is False
    assert coordination.claim_unique("report:43", ttl=5) is True


def test_released_unique_mark_can_be_claimed_again(coordination: Coordination) -> None:
    assert coordination.claim_unique("report:42", ttl=5) is True
    coordination.release_unique("report:42")
    assert coordination.claim_unique("report:42", ttl=5) is True


def test_unique_mark_expires(coordination: Coordination) -> None:
    assert coordination.claim_unique("report:42", ttl=0.1) is True
    time.sleep(0.15)
    assert coordination.claim_unique("report:42", ttl=5) is True


# Redis keys


@pytest.mark.redis
def test_redis_keys_are_namespaced_and_vanish_when_idle(redis_url: str, namespace: str) -> None:
    import redis

    store = RedisCoordination(redis_url, namespace)
    client = redis.Redis.from_url(redis_url)
    try:
        slow = Rate(count=1, period=1.0)  # its key lives one interval: long enough to see on a loaded machine
        store.reserve_rate("jobs", slow)
        store.acquire_lock("user:1", ttl=5)
        store.acquire_lease("reports", limit=2, ttl=5)
        store.claim_unique("report:42", ttl=5)
        keys = {key.decode() for key in client.scan_iter(f"{namespace}:*")}
        assert keys == {
            f"{namespace}:rate:jobs",
            f"{namespace}:lock:user:1",
            f"{namespace}:slots:reports",
            f"{namespace}:unique:report:42",
        }
        assert all(0 < client.pttl(key) <= 5000 for key in keys)
        spacing = slot_spacing_microseconds(slow) / 1_000_000
        assert 0 < client.pttl(f"{namespace}:rate:jobs") <= spacing * 1000
        time.sleep(spacing + 0.05)
        assert not client.exists(f"{namespace}:rate:jobs")
    finally:
        client.close()
        store.close()


# opening a store


def test_memory_url_opens_an_in_process_store() -> None:
    store = open_coordination("memory://")
    assert isinstance(store, MemoryCoordination)
    assert store.shared is False


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/1", "rediss://:pw@example.com:6380/0", "unix:///run/redis.sock"]
)
def test_redis_urls_open_a_shared_store(url: str) -> None:
    store = open_coordination(url, namespace="app")
    assert isinstance(store, RedisCoordination)
    assert store.shared is True
    assert store.namespace == "app"
    store.close()


def test_unknown_scheme_is_refused_with_the_password_masked() -> None:
    with pytest.raises(ValueError, match=r"amqp://guest:\*\*\*@rabbit:5672//") as error:
        open_coordination("amqp://guest:secret@rabbit:5672//")
    assert "secret" not in str(error.value)


def test_missing_redis_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "taskbridge.coordination.redis")
    with pytest.raises(ImportError, match=r"pip install 'taskbridge-jobs\[redis\]'"):
        open_coordination("redis://127.0.0.1:6379/0")


@pytest.fixture
def process_wide() -> Iterator[None]:
    set_coordination(None)
    yield
    set_coordination(None)
    set_settings(None)


@pytest.mark.usefixtures("process_wide")
def test_process_wide_store_is_opened_from_the_settings() -> None:
    set_settings(load_settings(coordination_url="redis://127.0.0.1:6379/3", namespace="shop"))
    store = get_coordination()
    assert isinstance(store, RedisCoordination)
    assert store.namespace == "shop"
    assert get_coordination() is store


@pytest.mark.usefixtures("process_wide")
def test_process_wide_store_is_one_instance_across_threads() -> None:
    set_settings(load_settings(coordination_url="memory://"))
    seen: list[Coordination] = []
    threads = [threading.Thread(target=lambda: seen.append(get_coordination())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(store is seen[0] for store in seen)


@pytest.mark.usefixtures("process_wide")
def test_set_coordination_replaces_the_process_wide_store() -> None:
    set_settings(load_settings(coordination_url="memory://"))
    mine = MemoryCoordination()
    set_coordination(mine)
    assert get_coordination() is mine
    set_coordination(None)
    rebuilt = get_coordination()
    assert isinstance(rebuilt, MemoryCoordination)
    assert rebuilt is not mine


def test_lock_and_lease_taken_with_a_given_token_are_released_with_it(coordination: Coordination) -> None:
    assert coordination.acquire_lock("user:9", ttl=5, token="run-1:1") == "run-1:1"
    assert coordination.acquire_lock("user:9", ttl=5, token="run-1:1") is None
    assert coordination.release_lock("user:9", "run-2:1") is False
    assert coordination.release_lock("user:9", "run-1:1") is True
    assert coordination.acquire_lease("jobs", 1, ttl=5, token="run-1:1") == "run-1:1"
    assert coordination.acquire_lease("jobs", 1, ttl=5) is None
    coordination.release_lease("jobs", "run-1:1")
    assert coordination.acquire_lease("jobs", 1, ttl=5) is not None


# groups: each member's end counted once; the end of a sealed group reported to one caller


def test_a_group_ends_once_when_every_member_has_ended(coordination: Coordination) -> None:
    assert coordination.group_record("g1", "m1", "done", 60) is None
    assert coordination.group_record("g1", "m1", "done", 60) is None, "a redelivered member counts once"
    assert coordination.group_record("g1", "m2", "dead", 60) is None, "not sealed yet"
    assert coordination.group_seal("g1", 3, 60) is None
    counts = coordination.group_record("g1", "m3", "done", 60)
    assert counts == {"total": 3, "done": 2, "dead": 1, "expired": 0, "skipped": 0}
    assert coordination.group_record("g1", "m2", "dead", 60) is None, "reported to no other member"
    again = coordination.group_record("g1", "m3", "done", 60)
    assert again == counts, "a redelivery of the member that ended it is told again (its callback may not be out)"


def test_sealing_a_group_whose_members_all_ended_reports_it(coordination: Coordination) -> None:
    coordination.group_record("g2", "m1", "expired", 60)
    assert coordination.group_seal("g2", 1, 60) == {"total": 1, "done": 0, "dead": 0, "expired": 1, "skipped": 0}
    assert coordination.group_record("g2", "m1", "expired", 60) is None, "reported to the sealer only"


def test_concurrent_members_end_a_group_exactly_once(coordination: Coordination) -> None:
    coordination.group_seal("g3", 200, 60)
    reports: list[object] = []

    def end(start: int) -> None:
        for i in range(start, 200, 4):
            counts = coordination.group_record("g3", f"m{i}", "done", 60)
            if counts is not None:
                reports.append(counts)

    threads = [threading.Thread(target=end, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reports == [{"total": 200, "done": 200, "dead": 0, "expired": 0, "skipped": 0}]


# records: compare and set


def test_a_record_is_swapped_only_from_the_value_expected(coordination: Coordination) -> None:
    assert coordination.read_record("r") is None
    assert coordination.swap_record("r", None, "a", 60)
    assert not coordination.swap_record("r", None, "b", 60), "it exists"
    assert not coordination.swap_record("r", "x", "b", 60)
    assert coordination.swap_record("r", "a", "b", 60)
    assert coordination.read_record("r") == "b"


def test_a_record_expires(coordination: Coordination) -> None:
    assert coordination.swap_record("short", None, "a", 0.2)
    time.sleep(0.4)
    assert coordination.read_record("short") is None
    assert coordination.swap_record("short", None, "b", 60)


def test_records_are_written_together_whatever_they_held_and_expire(coordination: Coordination) -> None:
    assert coordination.swap_record("w1", None, "running", 60)
    coordination.write_records(["w1", "w2"], "done", 0.3)
    assert coordination.read_record("w1") == coordination.read_record("w2") == "done"
    time.sleep(0.5)
    assert coordination.read_record("w1") is None and coordination.read_record("w2") is None


def test_the_in_process_store_keeps_only_the_newest_records_written_with_a_bound() -> None:
    store = MemoryCoordination()
    store.swap_record("delivery:claimed:1", None, "run", 300)
    store.write_records(["delivery:unbounded:1"], "done", 300)
    keys = [f"delivery:{n}:1" for n in range(1_050)]
    for start in range(0, len(keys), 100):
        store.write_records(keys[start : start + 100], "done", 300, newest=1_000)
    assert store.read_record(keys[-1]) == "done"
    assert store.read_record(keys[-1_000]) == "done"
    assert store.read_record(keys[-1_001]) is None
    assert store.read_record(keys[0]) is None
    assert store.read_record("delivery:claimed:1") == "run"  # swapped in, not written with a bound
    assert store.read_record("delivery:unbounded:1") == "done"


def test_a_record_written_again_counts_as_new() -> None:
    store = MemoryCoordination()
    store.write_records(["delivery:first:1"], "done", 300, newest=100)
    store.write_records([f"delivery:{n}:1" for n in range(99)], "done", 300, newest=100)
    store.write_records(["delivery:first:1"], "done", 300, newest=100)
    store.write_records(["delivery:last:1"], "done", 300, newest=100)
    assert store.read_record("delivery:first:1") == "done"
    assert store.read_record("delivery:0:1") is None


def test_lost_ack_marks_are_bounded_in_process_and_sqs_marks_are_not() -> None:
    facts = TransportFacts(max_native_delay=0.0, max_message_size=262_144, multi_process=False)
    rabbitmq = finished_marks_for(replace(facts, flags_lost_acks=True), MemoryCoordination(), 30.0)
    sqs = finished_marks_for(replace(facts, delivers_finished_again=True), MemoryCoordination(), 30.0)
    assert rabbitmq is not None and rabbitmq.newest == NEWEST_LOST_ACK_MARKS
    assert sqs is not None and sqs.newest is None


def test_marks_not_yet_written_are_written_when_the_process_stops() -> None:
    """A pool child ends without atexit handlers: the engine flushes the marks as it stops, before
    the writer thread's next round (every 50 ms)."""
    facts = TransportFacts(max_native_delay=0.0, max_message_size=262_144, multi_process=False)
    store = MemoryCoordination()
    marks = finished_marks_for(replace(facts, flags_lost_acks=True), store, 30.0)
    assert marks is not None
    envelopes = [Envelope(job="j", queue="q") for _ in range(3)]
    for envelope in envelopes:
        marks.add(envelope)
    flush_finished_marks()
    assert [store.read_record(record_key(envelope)) for envelope in envelopes] == ["done"] * 3
