"""One element of a ``data prep`` Slurm job array: ``python -m data_prep.executor.task_main PLAN INDEX``.

Loads plan.json (written by SlurmExecutor), rebuilds the PrepConfig and runs task INDEX of its
list, unless that task's completion marker already exists. Exit 0 on success; a failure prints
its traceback to the element's log and exits 1.
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
    from data_prep.prep import Task, marker_path, run_task

    plan = json.loads(Path(args[0]).read_text())
    index = int(args[1])
    cfg = PrepConfig.from_dict(plan["config"])
    task = Task(**plan["tasks"][index])
    if marker_path(Path(cfg.output), task).exists():
        print(f"lmpipe: task {index} ({task.name}) is already done; skipped", flush=True)
        return 0
    print(f"lmpipe: task {index}: {task.path} ({task.format})", flush=True)
    result = run_task(task, cfg)
    stages = list(result["stages"].values())
    print(f"lmpipe: task {index} done: {stages[0]['input']} read, {stages[-1]['kept']} kept, "
          f"{len(result['shards'])} shard(s), {result['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
