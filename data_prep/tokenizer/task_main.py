"""The tokenize job kind of ``launch.slurm.task``: one element of a ``data tokenize`` array.

Checks the plan's config as the submitting run did, and tokenizes task INDEX of the plan unless
that task's completion marker already matches.
"""

from __future__ import annotations

import time
from typing import Any

from data_prep.tokenizer.config import TokenizeConfig
from data_prep.tokenizer.tokenize import TokenizeTask, is_done, run_task


def run_element(plan: dict[str, Any], index: int) -> None:
    TokenizeConfig.from_dict(plan["config"])  # the same validation as the submitting run
    task = TokenizeTask(**plan["tasks"][index])
    if is_done(task):
        print(f"lmpipe: {plan['stage']} task {index} ({task.input}) is already done; skipped", flush=True)
        return
    print(f"lmpipe: {plan['stage']} task {index}: {task.input}", flush=True)
    start = time.perf_counter()
    docs = run_task(task)
    print(
        f"lmpipe: {plan['stage']} task {index} done: {docs} docs, {time.perf_counter() - start:.2f} s",
        flush=True,
    )
