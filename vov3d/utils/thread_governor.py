"""Intra-op threads that follow the machine's load, between one and the process's share.

The thread budget counts this job's own processes and workers; other jobs on the machine
are invisible to it. When one of them competes for the cores, OpenMP threads that wait for
each other at the end of every operation make each step many times slower (the toy
VoV3D-M step on two cores: 0.25 s alone with two threads, 1-15 s next to one busy process,
0.35 s with one thread either way). So between batches, at most every INTERVAL seconds,
the governor reads two kernel counters:

* CPU pressure (/proc/pressure/cpu, "some"): the share of the time in which a runnable
  task waited for a CPU. Above HIGH_PRESSURE the process halves its threads.
* the idle time of the cores this process may use (/proc/stat). When at least IDLE_CORE
  of a core stayed idle, with little pressure, for two readings in a row, the process
  takes the idle cores back, up to its share. If the added threads meet pressure within
  a few readings, the next attempt waits twice as many idle readings (up to a minute), so
  a job whose own loader workers come and go does not swing between the two.

Without these counters (not Linux, or a kernel without pressure stall information) the
threads stay where the budget put them.
"""
import logging
from dataclasses import dataclass
from time import monotonic
from typing import Callable, FrozenSet, Optional

logger = logging.getLogger(__name__)

INTERVAL = 2.0        # seconds between decisions
HIGH_PRESSURE = 0.3   # tasks waited for a CPU this share of the time: too many threads
LOW_PRESSURE = 0.15   # below this (and with an idle core) threads may be added
IDLE_CORE = 0.75      # "an idle core": loader workers and the process's own Python use the rest
FIRST_PATIENCE = 2    # idle readings in a row before threads are added ...
MAX_PATIENCE = 32     # ... doubled, up to this, each time added threads met pressure
RECENT = 3            # within this many readings of being added


@dataclass(frozen=True)
class LoadSample:
    seconds: float   # monotonic clock
    waiting: float   # cumulative seconds in which some runnable task waited for a CPU
    idle: int        # cumulative idle (and I/O wait) ticks of the usable cores
    total: int       # cumulative ticks of the usable cores


def read_load(cpus: FrozenSet[int]) -> Optional[LoadSample]:
    """The kernel's counters now, or None where it does not provide them."""
    try:
        with open("/proc/pressure/cpu") as f:
            waiting = int(f.readline().rsplit("total=", 1)[1]) / 1e6  # microseconds
        idle = total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
                    ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
                    idle += ticks[3] + ticks[4]
                    total += sum(ticks)
    except (OSError, ValueError, IndexError):
        return None
    return LoadSample(monotonic(), waiting, idle, total) if total else None


class ThreadGovernor:
    def __init__(self, threads: int, ceiling: int, cpus: FrozenSet[int],
                 set_threads: Callable[[int], None],
                 read: Optional[Callable[[FrozenSet[int]], Optional[LoadSample]]] = None,
                 clock: Optional[Callable[[], float]] = None):
        self.threads, self.ceiling, self.cpus = threads, ceiling, cpus
        self._set_threads = set_threads
        self._read = read or (lambda cpus_: read_load(cpus_))
        self._clock = clock or (lambda: monotonic())
        self._last = self._read(cpus) if ceiling > 1 else None
        self._idle_streak = 0            # consecutive idle intervals
        self._patience = FIRST_PATIENCE  # idle intervals needed before adding threads
        self._since_raise = RECENT + 1   # intervals since threads were last added
        self._reported = set()

    @property
    def active(self) -> bool:
        return self._last is not None

    def tick(self) -> None:
        """Called between batches; cheap until INTERVAL has passed since the last reading."""
        if self._last is None or self._clock() - self._last.seconds < INTERVAL:
            return
        now = self._read(self.cpus)
        if now is None or now.seconds <= self._last.seconds:
            return
        before, self._last = self._last, now
        span = now.seconds - before.seconds
        pressure = (now.waiting - before.waiting) / span
        idle_cores = len(self.cpus) * (now.idle - before.idle) / max(now.total - before.total, 1)
        target = self._decide(pressure, idle_cores)
        if target != self.threads:
            self._report(target, pressure, idle_cores, span)
            self.threads = target
            self._set_threads(target)

    def _decide(self, pressure: float, idle_cores: float) -> int:
        self._since_raise += 1
        idle = pressure < LOW_PRESSURE and idle_cores >= IDLE_CORE
        self._idle_streak = self._idle_streak + 1 if idle else 0
        if self.threads > 1 and pressure > HIGH_PRESSURE:
            if self._since_raise <= RECENT:
                # The cores that looked idle were not free for long (this job's own loader
                # workers, or a neighbour between bursts): wait longer before the next try.
                self._patience = min(2 * self._patience, MAX_PATIENCE)
            return max(1, self.threads // 2)
        if self.threads < self.ceiling and self._idle_streak >= self._patience:
            self._idle_streak, self._since_raise = 0, 0
            return min(self.ceiling, self.threads + max(1, int(idle_cores + 1 - IDLE_CORE)))
        return self.threads

    def _report(self, target: int, pressure: float, idle_cores: float, span: float) -> None:
        """The first change in each direction at INFO level, the others at DEBUG."""
        fewer = target < self.threads
        if fewer:
            why = (f"runnable tasks waited for a CPU {100 * pressure:.0f}% of the last {span:.1f} s "
                   "(other processes want these cores)")
        else:
            why = (f"{idle_cores:.1f} usable core(s) idle over the last {span:.1f} s, idle for "
                   f"{self._patience} readings in a row")
        level = logging.DEBUG if fewer in self._reported else logging.INFO
        more = "" if fewer in self._reported else "; further changes are logged at DEBUG level"
        self._reported.add(fewer)
        logger.log(level, "Threads: %d -> %d intra-op threads: %s%s.", self.threads, target, why, more)
