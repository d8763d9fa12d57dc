"""Fault injection for tests/faults, loaded by every Python process of a job through PYTHONPATH.

``LMPIPE_FAULT=prune``: the first time a process deletes a checkpoint step that pruning set aside
(``.step_N.pruned``), it deletes one file of it, then SIGKILLs the whole job (the topmost process whose
environment carries ``LMPIPE_FAULT``, and everything below it) and itself: a job killed in the middle of
``checkpoint.keep`` pruning, a moment too short for a sleep-and-kill to aim at. Nothing outside the job
(the test process, servers it started) is touched.
"""

import os
import shutil

if os.environ.get("LMPIPE_FAULT") == "prune":
    _rmtree = shutil.rmtree

    def _job_root() -> int:
        """The job's first process: walk up the parents while their environment has the fault set."""
        pid, marker = os.getpid(), b"LMPIPE_FAULT=prune"
        while True:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            try:
                with open(f"/proc/{parent}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        return pid
            except OSError:
                return pid
            pid = parent

    def _rmtree_then_die(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = os.path.basename(os.fspath(path))
        if name.startswith(".step_") and name.endswith(".pruned"):
            for root, _, files in os.walk(path):
                if files:
                    os.remove(os.path.join(root, files[0]))
                    break
            from pipeline.testing import kill_tree

            kill_tree(_job_root())
        return _rmtree(path, *args, **kwargs)

    shutil.rmtree = _rmtree_then_die
