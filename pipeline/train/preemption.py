"""Turn SIGTERM / SIGUSR2 into "checkpoint at the end of this step, then exit for a requeue".

Slurm sends SIGTERM before it kills a job at its time limit or on preemption, and
``sbatch --signal=B:USR2@<s>`` sends USR2 a set time before; a handler that checkpoints on
the spot could run in the middle of a collective. So the handler only raises a flag; the
loop polls it once per step, and all ranks agree (the flags are summed in the step's reduction of its
loss, ``train.loop.step_stats``) so that every rank saves the same step together. The process then
exits with ``core.files.EXIT_PREEMPTED``, which a launcher reads as "requeue me": the rerun resumes
from that checkpoint (``checkpoint.resume``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Preempted(Exception):
    """The job stopped on a signal after writing a checkpoint; exit with ``core.files.EXIT_PREEMPTED``."""

    def __init__(self, step: int, checkpoint: str, signal_name: str | None):
        signal_name = signal_name or "a signal to another rank"
        super().__init__(
            f"stopped by {signal_name} after step {step}; checkpoint {checkpoint}; "
            f"rerun with checkpoint.resume=auto to continue"
        )
        self.step, self.checkpoint = step, checkpoint


class PreemptionWatch:
    """Installs the handlers on entry (main thread only; elsewhere it watches nothing) and puts the
    previous ones back on exit."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def signalled(self) -> bool:
        """Whether this rank got a signal (``hooks.PreemptionHook`` shares it with the other ranks)."""
        return self.signal_name is not None
