"""Fault injection for tests/faults, loaded by every Python process of a job through PYTHONPATH.

``LMPIPE_FAULT=prune``: the first time a process deletes a checkpoint step that pruning set aside
(``.step_N.pruned``), it deletes one file of it, then SIGKILLs every process below
``LMPIPE_FAULT_ROOT`` (the test's: the whole job) and itself: a job killed in the middle of
``checkpoint.keep`` pruning, a moment too short for a sleep-and-kill to aim at.
"""

import os
import shutil

if os.environ.get("LMPIPE_FAULT") == "prune":
    _rmtree = shutil.rmtree

    def _rmtree_then_die(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = os.path.basename(os.fspath(path))
        if name.startswith(".step_") and name.endswith(".pruned"):
            for root, _, files in os.walk(path):
                if files:
                    os.remove(os.path.join(root, files[0]))
                    break
            from pipeline.testing import kill_tree

            kill_tree(int(os.environ["LMPIPE_FAULT_ROOT"]), including_root=False)
        return _rmtree(path, *args, **kwargs)

    shutil.rmtree = _rmtree_then_die
