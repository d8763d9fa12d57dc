"""The data-prep job kind of ``launch.slurm.task``: one element of a prep, cluster or dedup array.

Rebuilds the PrepConfig from the plan and runs task INDEX of the plan's stage, unless that task's
completion marker already exists.
"""

from __future__ import annotations

from typing import Any

from data_prep.config import PrepConfig
from data_prep.prep import Task, is_done, run_stage_task


def run_element(plan: dict[str, Any], index: int) -> None:
    stage = plan["stage"]
    cfg = PrepConfig.from_dict(plan["config"])
    task = Task(**plan["tasks"][index])
    if is_done(cfg, stage, task):
        print(f"lmpipe: {stage} task {index} ({task.name}) is already done; skipped", flush=True)
        return
    print(
        f"lmpipe: {stage} task {index}: {task.path or task.name} ({task.format or 'all inputs'})", flush=True
    )
    result = run_stage_task(stage, cfg, task)
    if "error" in result:  # an input that could not be read: recorded in its marker, reported by the run
        print(f"lmpipe: {stage} task {index} failed: {result['error']}", flush=True)
        return
    stages = list(result.get("stages", {}).values())
    counts = f"{stages[0]['input']} in, {stages[-1]['kept']} kept, " if stages else ""
    print(f"lmpipe: {stage} task {index} done: {counts}{result['seconds']} s", flush=True)
