"""queue.admit: which queued jobs start now, and every waiting job's place."""

from __future__ import annotations

import itertools
import random

import pytest
from img2img_operator.queue import Admission, Limits, QueueEntry, admit


def e(name, priority=0, submitted=0, gpu="l4", ns="a", running=False, eligible=True) -> QueueEntry:
    return QueueEntry(uid=name, namespace=ns, name=name, gpu_class=gpu, priority=priority, submitted_at=submitted,
                      running=running, eligible=eligible)


ORDER_CASES = [
    # (entries, limits, admitted in order, positions)
    ("no limits: everyone", [e("x"), e("y")], Limits(), ["x", "y"], {}),
    ("global limit, priority first", [e("low", 0, 1), e("high", 5, 2), e("mid", 1, 0)], Limits(max_concurrent=2),
     ["high", "mid"], {"low": 1}),
    ("same priority: first submitted first", [e("b", 0, 20), e("a", 0, 10), e("c", 0, 30)],
     Limits(max_concurrent=1), ["a"], {"b": 1, "c": 2}),
    ("same priority and time: by namespace then name", [e("b", ns="y"), e("a", ns="y"), e("z", ns="x")],
     Limits(max_concurrent=1), ["z"], {"a": 1, "b": 2}),
    ("running jobs hold slots", [e("r1", running=True), e("r2", running=True), e("q")], Limits(max_concurrent=2),
     [], {"q": 1}),
    ("limit zero: nothing starts", [e("q")], Limits(max_concurrent=0), [], {"q": 1}),
    ("negative priorities go last", [e("neg", -5, 0), e("zero", 0, 9)], Limits(max_concurrent=1), ["zero"],
     {"neg": 1}),
    ("per-class limit", [e("a1", gpu="a100"), e("a2", gpu="a100", submitted=1), e("l1", gpu="l4")],
     Limits(max_concurrent_per_class={"a100": 1}), ["a1", "l1"], {"a2": 1}),
    ("a full class does not stop another class", [e("a1", 9, gpu="a100"), e("l1", 0, gpu="l4")],
     Limits(max_concurrent_per_class={"a100": 0, "l4": 1}), ["l1"], {"a1": 1}),
    ("per-namespace limit", [e("t1", ns="team"), e("t2", ns="team", submitted=1), e("o1", ns="other", submitted=2)],
     Limits(max_concurrent_per_namespace=1), ["t1", "o1"], {"t2": 1}),
    ("a namespace at its limit does not stop another",
     [e("t0", ns="team", running=True), e("t1", 9, ns="team"), e("o1", 0, ns="other")],
     Limits(max_concurrent_per_namespace=1), ["o1"], {"t1": 1}),
    ("all three limits", [e("a", 3, 0, "l4", "x"), e("b", 2, 0, "l4", "x"), e("c", 1, 0, "a100", "y"),
                          e("d", 0, 0, "l4", "y")],
     Limits(max_concurrent=3, max_concurrent_per_namespace=1, max_concurrent_per_class={"l4": 2}),
     ["a", "c"], {"b": 1, "d": 2}),
    ("a job in back-off keeps its place but does not start", [e("backoff", 5, eligible=False), e("next", 0)],
     Limits(max_concurrent=1), ["next"], {"backoff": 1}),
    ("positions count per GPU class", [e("l1", 0, 1), e("a1", 0, 2, "a100"), e("l2", 0, 3), e("a2", 0, 4, "a100")],
     Limits(max_concurrent=0), [], {"l1": 1, "l2": 2, "a1": 1, "a2": 2}),
]


@pytest.mark.parametrize("name,entries,limits,admitted,positions", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_admit(name, entries, limits, admitted, positions):
    result = admit(entries, limits)
    assert list(result.admit) == admitted
    assert dict(result.positions) == positions


def test_admission_never_exceeds_any_limit_and_is_work_conserving():
    rng = random.Random(7)
    for _ in range(500):
        entries = [e(f"j{i}", rng.randint(-2, 2), rng.randint(0, 5), rng.choice(["l4", "a100"]), rng.choice("xyz"),
                     running=rng.random() < 0.3, eligible=rng.random() < 0.8) for i in range(rng.randint(0, 12))]
        limits = Limits(max_concurrent=rng.choice([None, 0, 2, 4]),
                        max_concurrent_per_namespace=rng.choice([None, 1, 2]),
                        max_concurrent_per_class={"l4": rng.choice([None, 1, 3]), "a100": rng.choice([None, 0, 1])})
        result = admit(entries, limits)
        after = [x for x in entries if x.running or x.uid in result.admit]
        if limits.max_concurrent is not None:
            assert len(after) <= max(limits.max_concurrent, sum(x.running for x in entries))
        for gpu, limit in limits.max_concurrent_per_class.items():
            if limit is not None:
                started = [x for x in after if x.gpu_class == gpu and x.uid in result.admit]
                assert not started or len([x for x in after if x.gpu_class == gpu]) <= limit
        # every eligible waiting job left out is blocked by a limit it would exceed
        for x in entries:
            if x.running or x.uid in result.admit or not x.eligible:
                continue
            total = len(after)
            by_class = sum(1 for y in after if y.gpu_class == x.gpu_class)
            by_ns = sum(1 for y in after if y.namespace == x.namespace)
            cls_limit = limits.max_concurrent_per_class.get(x.gpu_class)
            assert ((limits.max_concurrent is not None and total >= limits.max_concurrent)
                    or (cls_limit is not None and by_class >= cls_limit)
                    or (limits.max_concurrent_per_namespace is not None
                        and by_ns >= limits.max_concurrent_per_namespace))
        # admitted in queue order; positions 1..n per class, in queue order
        waiting = sorted((x for x in entries if not x.running and x.uid not in result.admit), key=lambda x: x.sort_key)
        for gpu in ("l4", "a100"):
            places = [result.positions[x.uid] for x in waiting if x.gpu_class == gpu]
            assert places == list(range(1, len(places) + 1))


def test_six_jobs_of_mixed_priority_with_two_slots_start_by_priority_then_submission():
    jobs = {f"j{i}": e(f"j{i}", p, i) for i, p in enumerate([0, 5, 0, 5, 1, 0])}
    running: list[str] = []
    started: list[str] = []
    done: set[str] = set()
    while len(done) < 6:
        entries = [QueueEntry(**{**j.__dict__, "running": j.uid in running}) for j in jobs.values() if j.uid not in done]
        result = admit(entries, Limits(max_concurrent=2))
        running += result.admit
        started += result.admit
        assert len(running) <= 2
        positions = sorted(result.positions.items(), key=lambda kv: kv[1])
        assert [p for _, p in positions] == list(range(1, len(positions) + 1))
        finished = running.pop(0)  # the oldest run finishes first
        done.add(finished)
    assert started == ["j1", "j3", "j4", "j0", "j2", "j5"]


def test_admission_is_deterministic_whatever_the_input_order():
    entries = [e("a", 1, 5), e("b", 1, 5, ns="b"), e("c", 2, 9), e("d", 0, 0)]
    results = [admit(list(p), Limits(max_concurrent=2)) for p in itertools.permutations(entries)]
    assert len({(r.admit, tuple(sorted(r.positions.items()))) for r in results}) == 1
    assert isinstance(results[0], Admission) and results[0].admit == ("c", "a")
