"""Stopping a training run cleanly when the job is asked to stop: SIGTERM (torchrun shutting
down, SLURM preemption, `kill`), SIGUSR1, and the signal a scheduler sends before a time
limit (submitit's, for a SLURM job).

While `StopSignals` is active those signals no longer end the process: they are recorded.
The trainer asks every iteration; all ranks then stop together at the next iteration
boundary, write a mid-epoch checkpoint and raise `TrainingStopped`. Running the same
command again (or the requeued job) resumes exactly there. The same signal a second time
does what it did before (by default: end the process at once), for when the stop itself
hangs.
"""
import logging
import os
import signal
import threading
from typing import Dict, Iterable, List, Optional, Sequence

from vov3d.utils.errors import UserError

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def signal_names(signals: Sequence[int]) -> str:
    return " and ".join(signal.Signals(s).name for s in signals) or "a signal to another rank"


class TrainingStopped(UserError):
    """Training stopped on request after saving where it was: not a failure. `signals`
    are the stop signals this process received (none when another rank was asked)."""

    def __init__(self, message: str, signals: Sequence[int] = ()):
        super().__init__(message, tuple(signals))

    def __str__(self) -> str:
        return self.args[0]

    @property
    def signals(self) -> tuple:
        return self.args[1]

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the status of a process that signal ended."""
        return 128 + (self.signals[0] if self.signals else signal.SIGTERM)


class _SignalHandlers:
    """While entered, `self._handle` answers the listed signals in place of their previous
    handlers, which come back on exit. Main thread only: Python runs signal handlers there."""

    def __init__(self, signals: Iterable[int]):
        self.signals = tuple(dict.fromkeys(signals))
        self._previous: Dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            logger.debug("Not in the main thread: %s keep their handlers.", signal_names(self.signals))
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        raise NotImplementedError


class StopSignals(_SignalHandlers):
    """Records the listed signals instead of letting them end the process."""

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS):
        super().__init__(signals)
        self.received: List[int] = []

    def _handle(self, signum: int, frame) -> None:
        if signum in self.received:  # asked twice: the stop is taking too long
            signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def describe(self) -> str:
        return signal_names(self.received)


def stopped_message(signals: Sequence[int], epoch: int, max_epoch: int, iteration: Optional[int],
                    iters: int, path: Optional[str]) -> str:
    """One line: why training stopped, where, what was saved, how to go on."""
    where = (f"at the end of epoch {epoch + 1}/{max_epoch}" if iteration is None else
             f"in epoch {epoch + 1}/{max_epoch} after iteration {iteration}/{iters}")
    saved = f"saved {path}" if path else "rank 0 saved the checkpoint"
    return (f"Training stopped by {signal_names(signals)} {where}; {saved}. Run the same command again "
            "(TRAIN.AUTO_RESUME True) to continue from there.")


class ForwardSignals(_SignalHandlers):
    """In a process that only waits for its children (the launcher of one process per GPU):
    pass the stop signals on to them, which stop cleanly, instead of dying and orphaning them."""

    def __init__(self, pids, signals: Iterable[int] = STOP_SIGNALS):
        super().__init__(signals)
        self.pids = pids

    def _handle(self, signum: int, frame) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
