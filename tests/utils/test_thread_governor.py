"""The governor: fewer threads when tasks wait for a CPU, the idle cores back when they stay
idle; every decision from the kernel's counters, between batches."""
import logging
import os

import pytest

from vov3d.utils import thread_governor, threads
from vov3d.utils.thread_governor import INTERVAL, LoadSample, ThreadGovernor, read_load
from vov3d.utils.threads import apply_budget, governed, plan_threads


class Machine:
    """Scripted counters: each interval adds `pressure` x seconds of waiting and leaves
    `idle` of `cores` cores idle."""

    def __init__(self, cores):
        self.cores, self.now = cores, LoadSample(0.0, 0.0, 0, 0)

    def advance(self, pressure, idle, seconds=INTERVAL):
        ticks = int(100 * seconds)
        last = self.now
        self.now = LoadSample(last.seconds + seconds, last.waiting + pressure * seconds,
                              last.idle + int(ticks * idle), last.total + ticks * self.cores)

    def read(self, cpus):
        return self.now

    def clock(self):
        return self.now.seconds


def governor(machine, threads_, ceiling):
    calls = []
    gov = ThreadGovernor(threads_, ceiling, frozenset(range(machine.cores)), calls.append,
                         read=machine.read, clock=machine.clock)
    return gov, calls


def test_another_process_halves_the_threads_and_an_idle_core_brings_them_back():
    machine = Machine(2)
    gov, calls = governor(machine, 2, 2)
    machine.advance(pressure=0.06, idle=0.0)  # alone: two threads and a loader worker
    gov.tick()
    assert gov.threads == 2 and calls == []
    machine.advance(pressure=0.52, idle=0.0)  # a competitor: our threads wait for the CPUs
    gov.tick()
    assert gov.threads == 1 and calls == [1]
    machine.advance(pressure=0.05, idle=0.0)  # one thread next to it: no idle core, stay
    gov.tick()
    machine.advance(pressure=0.0, idle=0.94)  # it left: one idle interval is not enough
    gov.tick()
    assert calls == [1]
    machine.advance(pressure=0.0, idle=0.9)
    gov.tick()
    assert gov.threads == 2 and calls == [1, 2]


def test_threads_never_leave_one_to_the_share():
    machine = Machine(8)
    gov, calls = governor(machine, 8, 8)
    for _ in range(5):
        machine.advance(pressure=0.9, idle=0.0)
        gov.tick()
    assert calls == [4, 2, 1]
    for _ in range(2):
        machine.advance(pressure=0.0, idle=3.8)  # 3.8 of 8 cores idle: take 4 of them
        gov.tick()
    assert calls[-1] == 5
    for _ in range(6):
        machine.advance(pressure=0.0, idle=7.0)
        gov.tick()
    assert gov.threads == 8 and max(calls) == 8


def test_added_threads_that_meet_pressure_wait_longer_next_time():
    """Loader workers that decode in bursts leave cores idle, then want them back."""
    machine = Machine(4)
    gov, calls = governor(machine, 2, 4)
    waits = []
    for _ in range(4):
        idle_readings = 0
        while gov.threads == 2:
            machine.advance(pressure=0.0, idle=2.0)
            gov.tick()
            idle_readings += 1
        waits.append(idle_readings)
        machine.advance(pressure=0.5, idle=0.0)  # the workers are back: too many threads
        gov.tick()
        assert gov.threads == 2
    assert waits == [2, 4, 8, 16]
    assert calls == [4, 2] * 4


def test_pressure_without_an_idle_core_or_below_the_threshold_changes_nothing():
    machine = Machine(4)
    gov, calls = governor(machine, 2, 4)
    for pressure, idle in [(0.2, 0.5), (0.29, 0.0), (0.2, 2.0), (0.1, 0.5), (0.1, 0.5)]:
        machine.advance(pressure, idle)
        gov.tick()
    assert calls == []


def test_counters_are_read_at_most_once_per_interval():
    machine = Machine(2)
    reads = []
    gov = ThreadGovernor(2, 2, frozenset({0, 1}), lambda n: None,
                         read=lambda cpus: reads.append(1) or machine.now, clock=machine.clock)
    machine.advance(pressure=0.9, idle=0.0, seconds=INTERVAL / 4)
    for _ in range(3):
        gov.tick()
    assert len(reads) == 1 and gov.threads == 2  # only the reading at the start
    machine.advance(pressure=0.9, idle=0.0, seconds=INTERVAL)
    gov.tick()
    assert len(reads) == 2 and gov.threads == 1


def test_without_counters_or_room_the_governor_does_nothing():
    assert not ThreadGovernor(2, 2, frozenset({0}), print, read=lambda cpus: None).active
    never = ThreadGovernor(1, 1, frozenset({0}), print, read=lambda cpus: pytest.fail("read"))
    never.tick()
    assert not never.active


def test_the_first_change_each_way_is_logged_at_info(caplog):
    machine = Machine(2)
    gov, _ = governor(machine, 2, 2)
    caplog.set_level(logging.DEBUG, logger=thread_governor.__name__)
    for pressure, idle in [(0.6, 0.0), (0.0, 1.0), (0.0, 1.0), (0.6, 0.0)]:
        machine.advance(pressure, idle)
        gov.tick()
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in records] == [logging.INFO, logging.INFO, logging.DEBUG]
    assert records[0][1] == ("Threads: 2 -> 1 intra-op threads: runnable tasks waited for a CPU 60% of "
                             "the last 2.0 s (other processes want these cores); further changes are "
                             "logged at DEBUG level.")
    assert records[1][1] == ("Threads: 1 -> 2 intra-op threads: 1.0 usable core(s) idle over the last 2.0 s, "
                             "idle for 2 readings in a row; further changes are logged at DEBUG level.")


def test_governed_loops_steer_this_process(monkeypatch):
    machine = Machine(2)
    seen = []
    monkeypatch.setattr(thread_governor, "read_load", machine.read)
    monkeypatch.setattr(thread_governor, "monotonic", machine.clock)
    monkeypatch.setattr(threads, "set_process_threads", seen.append)
    apply_budget(plan_threads(2, 1, 0, {}), log=False)
    assert seen == [2]
    for _ in governed(range(3)):
        machine.advance(pressure=0.7, idle=0.0)
    assert seen == [2, 1]
    apply_budget(plan_threads(2, 1, 0, {"OMP_NUM_THREADS": "2"}), log=False)  # the user's word: fixed
    for _ in governed(range(3)):
        machine.advance(pressure=0.7, idle=0.0)
    assert seen == [2, 1, 2]
    monkeypatch.setattr(threads, "_governor", None)


@pytest.mark.skipif(not os.path.exists("/proc/pressure/cpu"),
                    reason="this kernel has no CPU pressure counters (/proc/pressure/cpu)")
def test_the_kernel_counters_are_read_for_the_usable_cores_only():
    everything = read_load(frozenset(os.sched_getaffinity(0)))
    one = read_load(frozenset({min(os.sched_getaffinity(0))}))
    assert everything.total > 0 and everything.waiting >= 0
    assert 0 < one.total < everything.total or len(os.sched_getaffinity(0)) == 1
    assert read_load(frozenset()) is None  # no usable core listed: no reading
