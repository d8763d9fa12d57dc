"""One element of a ``data tokenize`` Slurm job array: ``python -m data_prep.tokenizer.task_main PLAN INDEX``.

Loads plan.json (written by SlurmExecutor), checks its config, and tokenizes task INDEX of the
plan unless that task's completion marker already matches. Exit 0 on success; a failure prints
its traceback to the element's log and exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m data_prep.tokenizer.task_main PLAN.json INDEX", file=sys.stderr)
        return 2
    from data_prep.tokenizer.config import TokenizeConfig
    from data_prep.tokenizer.tokenize import TokenizeTask, is_done, run_task

    plan = json.loads(Path(args[0]).read_text())
    index = int(args[1])
    TokenizeConfig.from_dict(plan["config"])  # the same validation as the submitting run
    task = TokenizeTask(**plan["tasks"][index])
    if is_done(task):
        print(f"lmpipe: {plan['stage']} task {index} ({task.input}) is already done; skipped", flush=True)
        return 0
    print(f"lmpipe: {plan['stage']} task {index}: {task.input}", flush=True)
    start = time.perf_counter()
    docs = run_task(task)
    print(
        f"lmpipe: {plan['stage']} task {index} done: {docs} docs, {time.perf_counter() - start:.2f} s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
