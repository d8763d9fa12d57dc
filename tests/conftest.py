"""Session-wide test settings: keep MLflow offline and quiet, keep caches inside the test run.

A test that needs an optional module or a shared fixture asks ``pipeline.testing.require_module`` /
``require_fixture``: they skip locally and fail under ``CI=true``, so CI never passes by skipping.
"""

import os
import sys

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


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One xdist group per shared cost, so that it is paid once: the Slurm node, the ``train_jobs``
    references (trained once per worker), and each module whose module-scoped fixture a worker would
    otherwise build again (the tensor-parallel launch of 4 ranks took ~100 s on each worker)."""
    for item in items:
        group = next((g for marker, g in SHARED_STATE_GROUPS.items() if item.get_closest_marker(marker)), "")
        if not group and "train_jobs" in getattr(item, "fixturenames", ()):
            group = "train_jobs"
        if not group and _uses_module_fixture(item):
            group = item.nodeid.split("::")[0]
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(tryfirst=True)  # before the worker reports its collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker under ``--dist loadgroup``: fail if a grouped test's id lacks its group, i.e. if
    xdist could not add it (pytest 9.2 with xdist 3.8) and the groups would silently split."""
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist workers only
        return
    lost = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if lost:
        message = f"xdist dropped the group of {len(lost)} tests, e.g. {lost[0]}: see pyproject's pins"
        print(f"conftest: {message}", file=sys.stderr)  # a worker's own report is not shown
        pytest.exit(message, 4)


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        definitions[-1].scope == "module" for definitions in info.name2fixturedefs.values()
    )
