"""One element of a ``data prep`` Slurm job array: ``python -m data_prep.executor.task_main PLAN INDEX``.

Loads plan.json (written by SlurmExecutor), rebuilds the PrepConfig and runs task INDEX of the
plan's stage, unless that task's completion marker already exists. Exit 0 on success; a failure
prints its traceback to the element's log and exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m data_prep.executor.task_main PLAN.json INDEX", file=sys.stderr)
        return 2
    from data_prep.config import PrepConfig
    from data_prep.prep import Task, is_done, run_stage_task

    plan = json.loads(Path(args[0]).read_text())
    index, stage = int(args[1]), plan["stage"]
    cfg = PrepConfig.from_dict(plan["config"])
    task = Task(**plan["tasks"][index])
    if is_done(cfg, stage, task):
        print(f"lmpipe: {stage} task {index} ({task.name}) is already done; skipped", flush=True)
        return 0
    print(
        f"lmpipe: {stage} task {index}: {task.path or task.name} ({task.format or 'all inputs'})", flush=True
    )
    result = run_stage_task(stage, cfg, task)
    stages = list(result.get("stages", {}).values())
    counts = f"{stages[0]['input']} in, {stages[-1]['kept']} kept, " if stages else ""
    print(f"lmpipe: {stage} task {index} done: {counts}{result['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
