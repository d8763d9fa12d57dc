"""What guards a ``data prep`` output directory: one run at a time (a lock), and a rerun only with the
config that started it, up to how it executes (its ``EXECUTION_KEYS``)."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from data_prep.config import PrepConfig
from pipeline.core.errors import ResumeError
from pipeline.core.files import CONFIG_FILE

EXECUTION_KEYS = ("workers", "executor", "slurm.", "dedup.keep_intermediate", "remote.")
"""Config keys that say how a run executes, not what it outputs: a rerun may change them."""


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<output>/.lock`` (flock) for the run: a second ``data prep`` on the
    same output fails at once, in one line, instead of racing the first one's tasks."""
    with open(out / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ResumeError(
                f"{out} is being written by another lmpipe data prep ({holder}); "
                "wait for it or use another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_same_run(out: Path, cfg: PrepConfig) -> None:
    """Resuming into ``out`` is only exact with the config that started it; execution keys may differ."""
    saved = out / CONFIG_FILE
    if not saved.exists():
        return
    before = _output_keys(type(cfg).load(saved).flat())
    now = _output_keys(cfg.flat())
    changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
    if changed:
        shown = ", ".join(changed[:5]) + (f" (and {len(changed) - 5} more)" if len(changed) > 5 else "")
        raise ResumeError(
            f"{out} holds a data prep run with another config (differs in {shown}); "
            "rerun with the same config to resume, or use another --output"
        )


def _output_keys(flat: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in flat.items()
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in EXECUTION_KEYS)
    }
