"""Session-wide test settings: keep MLflow offline and quiet, keep caches inside the test run.

A test that needs an optional module or a shared fixture asks ``pipeline.testing.require_module`` /
``require_fixture``: they skip locally and fail under ``CI=true``, so CI never passes by skipping.
"""

import os

# One intra-op thread in the test processes and every process they start: two xdist workers already
# fill the two cores, and a torch process with two OpenMP threads next to a busy neighbour spins in
# its barriers (measured: 5x the CPU seconds for the same eval test beside two busy processes).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
if not torch.cuda.is_available():  # on a GPU machine DeepSpeed must pick CUDA (tests/gpu run ZeRO there)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_STATE_GROUPS = {
    "slurm": "slurm",  # one local Slurm node: its tests queue behind each other and read its queue
}
"""Under ``pytest -n N --dist loadgroup`` (``make test``), tests that share one outside resource or one
session fixture costly to build run on the same worker."""
TRAIN_JOBS_MODULES = ("test_resume_world_size.py", "test_kill_resume.py")
"""They compare against the reference runs of the ``train_jobs`` session fixture, trained once per worker."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, group in SHARED_STATE_GROUPS.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.xdist_group(group))
        if item.path.name in TRAIN_JOBS_MODULES:
            item.add_marker(pytest.mark.xdist_group("train_jobs"))
